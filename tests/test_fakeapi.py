"""The fake API server must behave like kube-apiserver + kubelet, or the exporter's
tests prove nothing.  These tests pin that behaviour, partly with the real kubectl."""
from __future__ import annotations

import base64
import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time

import pytest
import yaml

from conftest import SA_USER, ApiClient, wait_for
from fakeapi import (BASE_TIME_NS, NS, FakeAPIServer, FakeCluster, authorizer_from_rbac, format_ts,
                     parse_label_selector, ts)

LOG = "/api/v1/namespaces/{ns}/pods/{pod}/log"


def log_path(ns, pod, **q):
    qs = "&".join(f"{k}={v}" for k, v in q.items())
    return LOG.format(ns=ns, pod=pod) + ("?" + qs if qs else "")


def text(body: bytes) -> list:
    return body.decode().splitlines()


# ---------------------------------------------------------------- timestamps

def test_timestamp_helpers():
    assert ts("2026-11-29T10:00:00Z") == BASE_TIME_NS
    assert ts("2026-11-29T10:00:00.5Z") == BASE_TIME_NS + NS // 2
    assert ts("2026-11-29T11:00:00.000000001+01:00") == BASE_TIME_NS + 1
    assert format_ts(BASE_TIME_NS + 120_000_000) == "2026-11-29T10:00:00.120000000Z"
    assert format_ts(BASE_TIME_NS + 120_000_000, "trimmed") == "2026-11-29T10:00:00.12Z"
    assert format_ts(BASE_TIME_NS, "trimmed") == "2026-11-29T10:00:00Z"
    assert format_ts(BASE_TIME_NS + 1, "trimmed") == "2026-11-29T10:00:00.000000001Z"


def test_append_log_timestamps(cluster):
    cluster.add_pod("ns", "p")
    assert cluster.append_log("ns", "p", "app", ["a", "b"]) == [BASE_TIME_NS, BASE_TIME_NS + 1_000_000]
    assert cluster.append_log("ns", "p", "app", ["c"], step_ns=5) == [BASE_TIME_NS + 1_000_005]
    assert cluster.append_log("ns", "p", "app", ["d", "e"], step_ns=0) == [BASE_TIME_NS + 1_000_005] * 2
    assert cluster.append_log("ns", "p", "app", ["f"], at=42) == [42]
    assert cluster.append_log("ns", "p", "app", ["g", "h"], timestamps=[7, 8]) == [7, 8]
    with pytest.raises(ValueError):
        cluster.append_log("ns", "p", "app", ["x\ny"])


# ---------------------------------------------------------------- discovery, objects, lists

def test_discovery(api):
    assert api.json("/version")[1]["major"] == "1"
    assert api.json("/api")[1]["versions"] == ["v1"]
    assert api.json("/apis")[1] == {"kind": "APIGroupList", "apiVersion": "v1", "groups": []}
    names = {r["name"] for r in api.json("/api/v1")[1]["resources"]}
    assert {"pods", "pods/log", "namespaces"} <= names
    status, body = api.json("/openapi/v2")
    assert status == 404 and body["kind"] == "Status" and body["reason"] == "NotFound"


def test_pod_json(cluster, api):
    cluster.add_pod("ns", "p", containers=("app", "side"), init_containers=("init",),
                    ephemeral_containers=("debug",), uid="uid-1", labels={"app": "web"})
    status, pod = api.json("/api/v1/namespaces/ns/pods/p")
    assert status == 200 and pod["kind"] == "Pod" and pod["apiVersion"] == "v1"
    md = pod["metadata"]
    assert (md["name"], md["namespace"], md["uid"], md["labels"]) == ("p", "ns", "uid-1", {"app": "web"})
    assert md["resourceVersion"].isdigit() and md["creationTimestamp"].endswith("Z")
    assert pod["spec"]["nodeName"] == "node-1"
    assert [c["name"] for c in pod["spec"]["containers"]] == ["app", "side"]
    assert [c["name"] for c in pod["spec"]["initContainers"]] == ["init"]
    assert [c["name"] for c in pod["spec"]["ephemeralContainers"]] == ["debug"]
    st = pod["status"]
    assert st["phase"] == "Running"
    app = st["containerStatuses"][0]
    assert app["restartCount"] == 0 and "running" in app["state"] and app["lastState"] == {}
    assert app["containerID"].startswith("containerd://")
    assert "terminated" in st["initContainerStatuses"][0]["state"]
    assert st["ephemeralContainerStatuses"][0]["name"] == "debug"

    cluster.restart_container("ns", "p", "app")
    pod2 = api.json("/api/v1/namespaces/ns/pods/p")[1]
    app2 = pod2["status"]["containerStatuses"][0]
    assert app2["restartCount"] == 1 and app2["containerID"] != app["containerID"]
    assert app2["lastState"]["terminated"]["containerID"] == app["containerID"]
    assert int(pod2["metadata"]["resourceVersion"]) > int(md["resourceVersion"])


def test_unscheduled_pod_json(cluster, api):
    cluster.add_pod("ns", "p", scheduled=False)
    pod = api.json("/api/v1/namespaces/ns/pods/p")[1]
    assert "nodeName" not in pod["spec"] and pod["status"]["phase"] == "Pending"
    assert "containerStatuses" not in pod["status"]


def test_get_missing_pod(api):
    status, body = api.json("/api/v1/namespaces/ns/pods/nope")
    assert status == 404
    assert body == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": 'pods "nope" not found', "reason": "NotFound",
                    "details": {"name": "nope", "kind": "pods"}, "code": 404}


def test_list_paging(cluster, api):
    for i in range(5):
        cluster.add_pod("b", f"p{i}")
    cluster.add_pod("a", "x")
    names, token, pages = [], None, 0
    while True:
        path = "/api/v1/pods?limit=2" + (f"&continue={token}" if token else "")
        status, lst = api.json(path)
        assert status == 200 and lst["kind"] == "PodList" and lst["apiVersion"] == "v1"
        assert lst["metadata"]["resourceVersion"]
        names += [f'{p["metadata"]["namespace"]}/{p["metadata"]["name"]}' for p in lst["items"]]
        pages += 1
        token = lst["metadata"].get("continue")
        if not token:
            assert "remainingItemCount" not in lst["metadata"]
            break
        assert lst["metadata"]["remainingItemCount"] == 6 - len(names)
        json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))  # opaque, but base64 JSON
    assert pages == 3
    assert names == ["a/x"] + [f"b/p{i}" for i in range(5)]
    assert len(api.json("/api/v1/namespaces/b/pods")[1]["items"]) == 5
    assert api.json("/api/v1/namespaces/empty/pods")[1]["items"] == []
    nss = api.json("/api/v1/namespaces")[1]
    assert nss["kind"] == "NamespaceList" and [n["metadata"]["name"] for n in nss["items"]] == ["a", "b"]


def test_continued_pages_show_the_first_pages_snapshot(cluster, api, apiserver):
    """As kube-apiserver (tests/e2e/test_e2e_rbac.py checks it): a pod changed or added after the first page is
    shown as it was, or not at all, on the pages that continue it."""
    for i in range(3):
        cluster.add_pod("ns", f"p{i}")
    first = api.json("/api/v1/namespaces/ns/pods?limit=1")[1]
    cluster.restart_container("ns", "p2", "app")
    cluster.add_pod("ns", "p3")
    rest = api.json("/api/v1/namespaces/ns/pods?limit=5&continue=" + first["metadata"]["continue"])[1]
    assert [p["metadata"]["name"] for p in rest["items"]] == ["p1", "p2"]
    assert rest["items"][1]["status"]["containerStatuses"][0]["restartCount"] == 0
    fresh = api.json("/api/v1/namespaces/ns/pods")[1]["items"]
    assert len(fresh) == 4 and fresh[2]["status"]["containerStatuses"][0]["restartCount"] == 1


def test_continue_expired(cluster, api, apiserver):
    for i in range(3):
        cluster.add_pod("ns", f"p{i}")
    token = api.json("/api/v1/pods?limit=1")[1]["metadata"]["continue"]
    apiserver.faults.expire_continue()
    status, body = api.json(f"/api/v1/pods?limit=1&continue={token}")
    assert status == 410 and body["reason"] == "Expired"
    assert body["message"] == ("The provided continue parameter is too old to display a consistent list result. "
                               "You can start a new list without the continue parameter.")
    assert api.json(f"/api/v1/pods?limit=1&continue={token}")[0] == 200  # one-shot
    assert api.json("/api/v1/pods?limit=1&continue=garbage")[0] == 400


def test_selectors(cluster, api):
    cluster.add_pod("ns", "a", labels={"app": "web", "tier": "fe"})
    cluster.add_pod("ns", "b", labels={"app": "db"}, node_name="node-2")
    cluster.add_pod("ns", "c", labels={}, phase="Succeeded")
    cluster.add_pod("other", "d", labels={"app": "web"})

    def names(q):
        status, lst = api.json("/api/v1/pods?" + q)
        assert status == 200, lst
        return sorted(p["metadata"]["name"] for p in lst["items"])

    assert names("labelSelector=app%3Dweb") == ["a", "d"]
    assert names("labelSelector=app!%3Dweb") == ["b", "c"]
    assert names("labelSelector=tier") == ["a"]
    assert names("labelSelector=!app") == ["c"]
    assert names("labelSelector=app+in+(web,db),!tier") == ["b", "d"]
    assert names("labelSelector=app+notin+(web)") == ["b", "c"]
    assert names("fieldSelector=metadata.namespace%3Dother") == ["d"]
    assert names("fieldSelector=spec.nodeName%3Dnode-2") == ["b"]
    assert names("fieldSelector=status.phase!%3DRunning") == ["c"]
    assert names("fieldSelector=metadata.name%3Da,metadata.namespace%3Dns") == ["a"]
    status, body = api.json("/api/v1/pods?fieldSelector=spec.bogus%3Dx")
    assert status == 400 and body["reason"] == "BadRequest"
    assert body["message"] == "field label not supported: spec.bogus"
    # paging with a selector: continue works, remainingItemCount is omitted like the real server
    lst = api.json("/api/v1/pods?labelSelector=app&limit=1")[1]
    assert lst["metadata"]["continue"] and "remainingItemCount" not in lst["metadata"]
    assert parse_label_selector("a=1,b in (x, y)")({"a": "1", "b": "y"})


def test_table_output(cluster, api):
    cluster.add_pod("ns", "p", containers=("a", "b"))
    accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
    status, table = api.json("/api/v1/pods?limit=500", headers={"Accept": accept})
    assert status == 200 and table["kind"] == "Table" and table["apiVersion"] == "meta.k8s.io/v1"
    assert table["columnDefinitions"][0]["name"] == "Name"
    row = table["rows"][0]
    assert row["cells"][:3] == ["p", "2/2", "Running"]
    assert row["object"]["metadata"]["namespace"] == "ns"


# ---------------------------------------------------------------- logs

@pytest.fixture
def web(cluster):
    """ns/web: one container, lines at 10:00:00.5, 01.2, 01.7, 02.0."""
    cluster.add_pod("ns", "web")
    cluster.append_log("ns", "web", "app", ["one", "two", "three", "four"],
                       timestamps=[ts("2026-11-29T10:00:00.5Z"), ts("2026-11-29T10:00:01.2Z"),
                                   ts("2026-11-29T10:00:01.7Z"), ts("2026-11-29T10:00:02Z")])
    return cluster


def test_log_fixed_timestamps(web, api):
    status, headers, body = api.request(log_path("ns", "web", timestamps="true"))
    assert status == 200
    assert headers["Content-Type"] == "text/plain" and headers["Transfer-Encoding"] == "chunked"
    assert text(body) == ["2026-11-29T10:00:00.500000000Z one", "2026-11-29T10:00:01.200000000Z two",
                          "2026-11-29T10:00:01.700000000Z three", "2026-11-29T10:00:02.000000000Z four"]
    assert api.request(log_path("ns", "web"))[2] == b"one\ntwo\nthree\nfour\n"


def test_log_trimmed_timestamps(web, server_ssl_context, client_ssl_context):
    with FakeAPIServer(web, ssl_context=server_ssl_context, ts_format="trimmed") as srv:
        body = ApiClient(srv, client_ssl_context, token=None).request(log_path("ns", "web", timestamps="true"))[2]
    assert text(body) == ["2026-11-29T10:00:00.5Z one", "2026-11-29T10:00:01.2Z two",
                          "2026-11-29T10:00:01.7Z three", "2026-11-29T10:00:02Z four"]


@pytest.mark.parametrize("since, expected", [
    ("2026-11-29T10:00:01.9Z", ["two", "three", "four"]),       # truncated to 10:00:01
    ("2026-11-29T10:00:01Z", ["two", "three", "four"]),
    ("2026-11-29T10:00:02.999999999Z", ["four"]),
    ("2026-11-29T11:00:00.7%2B01:00", ["one", "two", "three", "four"]),  # 10:00:00 UTC
    ("2026-11-29T10:00:03Z", []),
])
def test_log_since_time_truncated_to_seconds(web, api, since, expected):
    assert text(api.request(log_path("ns", "web", sinceTime=since))[2]) == expected


def test_log_since_time_non_monotonic(cluster, api):
    cluster.add_pod("ns", "p")
    cluster.append_log("ns", "p", "app", ["late", "early", "late2"],
                       timestamps=[BASE_TIME_NS + 5 * NS, BASE_TIME_NS, BASE_TIME_NS + 6 * NS])
    assert text(api.request(log_path("ns", "p", sinceTime="2026-11-29T10:00:03Z"))[2]) == ["late", "late2"]


def test_log_tail_limit_since_seconds(cluster, server_ssl_context, client_ssl_context):
    now = [BASE_TIME_NS + 100 * NS]
    cl = FakeCluster(clock=lambda: now[0])
    cl.add_pod("ns", "p")
    cl.append_log("ns", "p", "app", [f"l{i}" for i in range(10)], step_ns=10 * NS)  # at +0s .. +90s
    with FakeAPIServer(cl, ssl_context=server_ssl_context) as srv:
        api = ApiClient(srv, client_ssl_context, token=None)
        assert text(api.request(log_path("ns", "p", tailLines=3))[2]) == ["l7", "l8", "l9"]
        assert api.request(log_path("ns", "p", tailLines=0))[2] == b""
        assert text(api.request(log_path("ns", "p", sinceSeconds=25))[2]) == ["l8", "l9"]
        assert api.request(log_path("ns", "p", limitBytes=7))[2] == b"l0\nl1\nl"
        # tail first, then since (kubelet order)
        assert text(api.request(log_path("ns", "p", tailLines=5, sinceTime="2026-11-29T10:01:10Z"))[2]) == \
            ["l7", "l8", "l9"]
        status, body = api.json(log_path("ns", "p", sinceSeconds=5, sinceTime="2026-11-29T10:00:00Z"))
        assert status == 422 and body["reason"] == "Invalid"


def test_log_big_raw_body(cluster, api):
    """set_log_bytes bodies: chunking, tail and sinceTime (binary search) on raw bytes."""
    cluster.add_pod("ns", "big")
    lines = [f"{format_ts(BASE_TIME_NS + i * 1000)} line {i:07d} {'x' * 60}\n".encode() for i in range(40_000)]
    body = b"".join(lines)  # ~3.6 MB, several chunks and flushes
    cluster.set_log_bytes("ns", "big", "app", body)
    assert api.request(log_path("ns", "big", timestamps="true"))[2] == body
    assert api.request(log_path("ns", "big", timestamps="true", tailLines=2))[2] == b"".join(lines[-2:])
    # 10:00:00.012 truncates to 10:00:00: everything
    assert len(api.request(log_path("ns", "big", sinceTime="2026-11-29T10:00:00.012Z"))[2].splitlines()) == 40_000
    cluster.set_log_bytes("ns", "big", "app", body + f"{format_ts(BASE_TIME_NS + 2 * NS)} later\n".encode())
    assert api.request(log_path("ns", "big", timestamps="1", sinceTime="2026-11-29T10:00:01Z"))[2] == \
        f"{format_ts(BASE_TIME_NS + 2 * NS)} later\n".encode()
    # appending after raw bytes continues from the last raw timestamp
    assert cluster.append_log("ns", "big", "app", ["next"]) == [BASE_TIME_NS + 2 * NS + 1_000_000]


def test_log_errors(cluster, api):
    cluster.add_pod("ns", "multi", containers=("a", "b"), init_containers=("init",))
    cluster.add_pod("ns", "pending", scheduled=False)
    cluster.add_pod("ns", "creating")
    cluster.set_waiting("ns", "creating", "app")

    def err(path):
        status, body = api.json(path)
        assert body["kind"] == "Status" and body["status"] == "Failure" and body["code"] == status
        return status, body["reason"], body["message"]

    assert err(log_path("ns", "multi")) == (
        400, "BadRequest", "a container name must be specified for pod multi, choose one of: [init a b]")
    assert err(log_path("ns", "multi", container="zz")) == (
        400, "BadRequest", "container zz is not valid for pod multi")
    assert err(log_path("ns", "multi", container="a", previous="true")) == (
        400, "BadRequest", 'previous terminated container "a" in pod "multi" not found')
    assert err(log_path("ns", "creating")) == (
        400, "BadRequest", 'container "app" in pod "creating" is waiting to start: ContainerCreating')
    assert err(log_path("ns", "gone")) == (404, "NotFound", 'pods "gone" not found')
    status, headers, body = api.request(log_path("ns", "pending"))
    assert (status, body) == (204, b"")
    assert api.request(log_path("ns", "multi", container="init"))[0] == 200  # init containers have logs


def test_restart_previous_rotate(cluster, api):
    cluster.add_pod("ns", "p")
    cluster.append_log("ns", "p", "app", ["run0"])
    cluster.restart_container("ns", "p", "app")
    cluster.append_log("ns", "p", "app", ["run1"])
    assert text(api.request(log_path("ns", "p"))[2]) == ["run1"]
    assert text(api.request(log_path("ns", "p", previous="true"))[2]) == ["run0"]
    cluster.restart_container("ns", "p", "app")  # only one previous run is kept
    assert text(api.request(log_path("ns", "p", previous="true"))[2]) == ["run1"]
    cluster.append_log("ns", "p", "app", ["a", "b"])
    cluster.rotate_log("ns", "p", "app")
    stamps = cluster.append_log("ns", "p", "app", ["c"])
    assert text(api.request(log_path("ns", "p"))[2]) == ["c"]
    assert stamps[0] > cluster.append_log("ns", "p", "app", ["x"], at=0)[0]  # continues after "b"
    # CrashLoopBackOff: waiting, but the kubelet serves the last terminated run
    cluster.set_waiting("ns", "p", "app", "CrashLoopBackOff")
    assert text(api.request(log_path("ns", "p"))[2]) == ["run1"]


def test_keep_alive(web, api, apiserver):
    conn = api.connect()
    try:
        for _ in range(3):
            assert api.request(log_path("ns", "web"), conn=conn)[0] == 200
            assert api.request("/api/v1/pods", conn=conn)[0] == 200
            assert api.request("/nope", conn=conn)[0] == 404
    finally:
        conn.close()
    assert apiserver.connections_accepted == 1


def test_follow(cluster, api):
    cluster.add_pod("ns", "p")
    cluster.append_log("ns", "p", "app", ["before"])
    got = []
    conn = api.connect()
    conn.request("GET", log_path("ns", "p", follow="true"), headers={"Authorization": "Bearer token-1"})
    resp = conn.getresponse()
    got.append(resp.readline())
    cluster.append_log("ns", "p", "app", ["after"])
    got.append(resp.readline())
    cluster.terminate_container("ns", "p", "app")
    assert resp.read() == b""  # the stream ends when the container does
    assert got == [b"before\n", b"after\n"]
    conn.close()


# ---------------------------------------------------------------- auth

def test_unauthorized(web, apiserver, client_ssl_context):
    """As the real API server answers (tests/e2e/test_e2e_rbac.py): no credentials are system:anonymous, whom
    RBAC grants nothing (403); credentials it rejects are 401."""
    status, body = ApiClient(apiserver, client_ssl_context, token=None).json("/api/v1/pods")
    assert (status, body["reason"], body["message"]) == (403, "Forbidden", 'pods is forbidden: User '
                                                         '"system:anonymous" cannot list resource "pods" in API '
                                                         'group "" at the cluster scope')
    status, body = ApiClient(apiserver, client_ssl_context, token="wrong").json("/api/v1/pods")
    assert status == 401
    assert body == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": "Unauthorized", "reason": "Unauthorized", "code": 401}
    api = ApiClient(apiserver, client_ssl_context)
    assert api.json("/api/v1/pods")[0] == 200
    apiserver.faults.revoke_token("token-1")
    assert api.json("/api/v1/pods")[0] == 401
    assert apiserver.requests[-1].status == 401 and apiserver.requests[-1].user is None


def test_client_certificate_authenticates_its_common_name(web, apiserver, ca):
    import trustme
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    ca.issue_cert("jane@example.com", common_name="jane").configure_cert(ctx)
    status, _ = ApiClient(apiserver, ctx, token=None).json("/api/v1/pods")
    assert status == 200 and apiserver.requests[-1].user == "jane"
    stranger = ssl.create_default_context()
    ca.configure_trust(stranger)
    trustme.CA().issue_cert("jane@example.com", common_name="jane").configure_cert(stranger)
    with pytest.raises((ssl.SSLError, OSError)):  # an unknown issuer fails the handshake, as on a real server
        ApiClient(apiserver, stranger, token=None).json("/api/v1/pods")


RBAC_YAML = """
apiVersion: v1
kind: ServiceAccount
metadata: {name: log-exporter-sa, namespace: logging}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: pod-lister}
rules:
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: log-reader}
rules:
- apiGroups: [""]
  resources: [pods, pods/log]
  verbs: [get, list]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: lister}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: pod-lister}
subjects:
- {kind: ServiceAccount, name: log-exporter-sa, namespace: logging}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: logs, namespace: apps}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: log-reader}
subjects:
- {kind: ServiceAccount, name: log-exporter-sa, namespace: logging}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: one-pod, namespace: other}
rules:
- apiGroups: [""]
  resources: [pods/log]
  resourceNames: [special]
  verbs: [get]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: one-pod, namespace: other}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: one-pod}
subjects:
- {kind: Group, name: "system:serviceaccounts:logging"}
"""


def test_rbac_authorizer(cluster, api, apiserver):
    for ns, pod in (("apps", "web"), ("other", "special"), ("other", "plain"), ("kube-system", "dns")):
        cluster.add_pod(ns, pod)
    apiserver.authorize = authorizer_from_rbac(yaml.safe_load_all(RBAC_YAML))
    assert api.json("/api/v1/pods")[0] == 200                      # ClusterRoleBinding: everywhere
    assert api.request(log_path("apps", "web"))[0] == 200          # RoleBinding -> ClusterRole, in apps
    assert api.request(log_path("other", "special"))[0] == 200     # Role with resourceNames, via Group
    status, body = api.json(log_path("kube-system", "dns"))         # "pods" does not grant "pods/log"
    assert status == 403 and body["reason"] == "Forbidden"
    assert body["message"] == (f'pods "dns" is forbidden: User "{SA_USER}" cannot get resource "pods/log" '
                               'in API group "" in the namespace "kube-system"')
    assert body["details"] == {"name": "dns", "kind": "pods"}
    assert api.json(log_path("other", "plain"))[0] == 403
    status, body = api.json("/api/v1/namespaces")
    assert status == 403 and body["message"] == (
        f'namespaces is forbidden: User "{SA_USER}" cannot list resource "namespaces" in API group "" '
        'at the cluster scope')
    assert body["details"] == {"kind": "namespaces"}

    apiserver.authorize = lambda user, verb, resource, sub, ns: (resource, ns) == ("pods", "default")
    assert api.json("/api/v1/namespaces/default/pods")[0] == 200
    status, body = api.json("/api/v1/pods")
    assert status == 403 and body["message"] == (
        f'pods is forbidden: User "{SA_USER}" cannot list resource "pods" in API group "" at the cluster scope')
    status, body = api.json("/api/v1/namespaces/apps/pods")
    assert body["message"] == (f'pods is forbidden: User "{SA_USER}" cannot list resource "pods" '
                               'in API group "" in the namespace "apps"')


# ---------------------------------------------------------------- faults

def raw_get(api, path) -> bytes:
    """Everything the server sends on one connection until it closes."""
    sock = socket.create_connection((api.server.host, api.server.port))
    with api.ctx.wrap_socket(sock, server_hostname=api.server.host) as tls:
        tls.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer token-1\r\n\r\n".encode())
        data = b""
        while True:
            try:
                part = tls.recv(1 << 20)
            except ssl.SSLError:  # no close_notify: the connection was just dropped
                break
            if not part:
                break
            data += part
    return data


def test_cut_log_incomplete_read(cluster, api, apiserver):
    cluster.add_pod("ns", "p")
    body = b"".join(f"{format_ts(BASE_TIME_NS + i)} {'y' * 90}\n".encode() for i in range(3000))  # ~360 KB
    cluster.set_log_bytes("ns", "p", "app", body)
    for at in (100_000, 65536, 0):  # mid-chunk, on a chunk boundary, before any byte
        apiserver.faults.cut_log("ns", "p", at_byte=at)
        conn = api.connect()
        conn.request("GET", log_path("ns", "p", timestamps="true"), headers={"Authorization": "Bearer token-1"})
        resp = conn.getresponse()
        assert resp.status == 200
        with pytest.raises(http.client.IncompleteRead) as exc:
            resp.read()
        # http.client keeps only the complete chunks in .partial
        assert body.startswith(exc.value.partial) and at - 65536 < len(exc.value.partial) <= at
        conn.close()
        assert apiserver.requests[-1].bytes_sent == at
    # On the wire: exactly 100000 body bytes, the second chunk's header promising more, no 0-chunk.
    apiserver.faults.cut_log("ns", "p", "app", at_byte=100_000)
    wire = raw_get(api, log_path("ns", "p", timestamps="true"))
    head, _, rest = wire.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head
    assert rest == b"10000\r\n" + body[:65536] + b"\r\n10000\r\n" + body[65536:100_000]
    assert api.request(log_path("ns", "p", timestamps="true"))[2] == body  # one-shot


def test_throttle_and_fail(web, api, apiserver):
    apiserver.faults.throttle(retry_after=1)
    status, headers, body = api.request("/api/v1/pods")
    assert status == 429 and headers["Retry-After"] == "1"
    assert headers["Content-Type"].startswith("text/plain") and body == b"Too many requests, please try again later.\n"
    apiserver.faults.throttle(retry_after=2, path_contains="/log")
    assert api.request("/api/v1/pods")[0] == 200
    status, headers, body = api.request(log_path("ns", "web"))
    assert status == 429 and headers["Retry-After"] == "2"
    assert json.loads(body)["reason"] == "TooManyRequests"
    apiserver.faults.throttle(times=2)
    assert [api.request("/version")[0] for _ in range(3)] == [429, 429, 200]
    for code, reason in ((500, "InternalError"), (503, "ServiceUnavailable"), (504, "Timeout")):
        apiserver.faults.fail(status=code, path_contains="pods/web")
        status, body = api.json(log_path("ns", "web"))
        assert (status, body["reason"], body["code"]) == (code, reason, code)
    assert api.request(log_path("ns", "web"))[0] == 200


def test_redirect_hang_trickle_and_loop_continue(cluster, web, api, apiserver):
    apiserver.faults.redirect("https://elsewhere:6443/api/v1/pods", status=302)
    status, headers, body = api.request("/api/v1/pods")
    assert (status, headers["Location"], body) == (302, "https://elsewhere:6443/api/v1/pods", b"moved\n")
    apiserver.faults.trickle(0.01, after_bytes=340, path_contains="/version")
    started = time.monotonic()
    status, _, body = api.request("/version")
    assert status == 200 and json.loads(body)["major"] == "1" and time.monotonic() - started > 0.1  # 10 ms a byte
    cluster.add_pod("ns", "other")
    status, first = api.json("/api/v1/pods?limit=1")
    apiserver.faults.loop_continue()
    token = first["metadata"]["continue"]
    status, page = api.json("/api/v1/pods?limit=1&continue=" + token)
    assert status == 200 and page["metadata"]["continue"] == token
    apiserver.faults.hang(path_contains="/version")
    conn = api.connect()
    conn.timeout = 0.2
    with pytest.raises(socket.timeout):
        api.request("/version", conn=conn)
    conn.close()


def test_before_mid_and_error_tail(web, api, apiserver):
    apiserver.faults.before_log(lambda ns, pod, c, q: web.delete_pod(ns, pod))
    assert api.json(log_path("ns", "web"))[0] == 404

    web.add_pod("ns", "p")
    web.append_log("ns", "p", "app", ["aaaa", "bbbb"])
    calls = []
    apiserver.faults.mid_log(lambda *a: calls.append(a), at_byte=5)
    assert text(api.request(log_path("ns", "p"))[2]) == ["aaaa", "bbbb"]
    assert calls == [("ns", "p", "app", {})]
    apiserver.faults.log_error_tail("ns", "p", "app", "unable to retrieve container logs for containerd://abc")
    assert api.request(log_path("ns", "p"))[2] == \
        b"aaaa\nbbbb\nunable to retrieve container logs for containerd://abc"


def test_mid_log_revoke_token_keeps_stream(cluster, api, apiserver):
    cluster.add_pod("ns", "p")
    cluster.append_log("ns", "p", "app", [f"line{i}" for i in range(1000)])
    apiserver.faults.mid_log(lambda *a: apiserver.faults.revoke_token("token-1"), at_byte=100)
    assert len(text(api.request(log_path("ns", "p"))[2])) == 1000
    assert api.request(log_path("ns", "p"))[0] == 401


def test_max_active_log_streams(web, api, apiserver):
    api.request(log_path("ns", "web"))
    assert apiserver.max_active_log_streams == 1
    barrier = threading.Barrier(3, timeout=5)
    apiserver.faults.before_log(lambda *a: barrier.wait(), times=3)
    threads = [threading.Thread(target=api.request, args=(log_path("ns", "web"),)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert apiserver.wait_idle()
    assert apiserver.max_active_log_streams == 3 and apiserver.active_log_streams == 0
    assert len(apiserver.log_requests()) == 4


def test_request_records(web, api, apiserver):
    api.request(log_path("ns", "web", container="app", timestamps="true"))
    rec = apiserver.requests[-1]
    assert (rec.method, rec.path, rec.user, rec.status) == ("GET", LOG.format(ns="ns", pod="web"), SA_USER, 200)
    assert rec.query == {"container": ["app"], "timestamps": ["true"]} and rec.bytes_sent > 0


def test_plain_http_and_fixtures(web, client_ssl_context, service_account, sa_environ, apiserver):
    with FakeAPIServer(web) as srv:
        assert srv.url.startswith("http://")
        assert ApiClient(srv, client_ssl_context, token=None).request(log_path("ns", "web"))[0] == 200
    assert (service_account / "token").read_text() == "token-1"
    assert (service_account / "namespace").read_text() == "logging"
    assert b"BEGIN CERTIFICATE" in (service_account / "ca.crt").read_bytes()
    assert sa_environ == {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(apiserver.port)}


# ---------------------------------------------------------------- the real kubectl

KUBECTL = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl not installed")


@pytest.fixture
def kubectl(tmp_path, apiserver, ca):
    ca_file = tmp_path / "ca.crt"
    ca_file.write_bytes(ca.cert_pem.bytes())
    config = {"apiVersion": "v1", "kind": "Config", "current-context": "fake",
              "clusters": [{"name": "fake", "cluster": {"server": apiserver.url,
                                                        "certificate-authority": str(ca_file)}}],
              "users": [{"name": "sa", "user": {"token": "token-1"}}],
              "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "sa"}}]}
    (tmp_path / "kubeconfig").write_text(json.dumps(config))
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path),  # own discovery cache
           "KUBECONFIG": str(tmp_path / "kubeconfig")}

    def run(*args):
        return subprocess.run([KUBECTL, *args], env=env, capture_output=True, text=True, timeout=30)
    return run


@needs_kubectl
def test_kubectl_get_pods(cluster, kubectl, apiserver):
    cluster.add_pod("default", "web", containers=("app", "side"))
    cluster.add_pod("kube-system", "dns")
    r = kubectl("get", "pods", "-A")
    assert r.returncode == 0, r.stderr
    rows = [line.split() for line in r.stdout.splitlines()]
    assert rows[0][:3] == ["NAMESPACE", "NAME", "READY"]
    assert [row[:4] for row in rows[1:]] == [["default", "web", "2/2", "Running"],
                                              ["kube-system", "dns", "1/1", "Running"]]
    assert any(r.path == "/api/v1/pods" and r.query.get("limit") for r in apiserver.requests)


@needs_kubectl
def test_kubectl_logs(web, kubectl, apiserver):
    r = kubectl("logs", "-n", "ns", "web", "-c", "app", "--timestamps")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["2026-11-29T10:00:00.500000000Z one", "2026-11-29T10:00:01.200000000Z two",
                                     "2026-11-29T10:00:01.700000000Z three", "2026-11-29T10:00:02.000000000Z four"]
    r = kubectl("logs", "-n", "ns", "web", "-c", "app", "--since-time=2026-11-29T10:00:01.9Z")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["two", "three", "four"]
    assert apiserver.log_requests()[-1].query["sinceTime"] == ["2026-11-29T10:00:01Z"]  # kubectl truncates too


@needs_kubectl
def test_kubectl_unauthorized(kubectl, apiserver):
    # With a cold discovery cache kubectl fails on /api and prints client-go's generic
    # "the server has asked for the client to provide credentials" (same with a real
    # server); with a warm one it reaches /api/v1/.../pods and prints our Status message.
    assert kubectl("get", "pods").returncode == 0
    r = kubectl("get", "pods", "--token=bad-token")
    assert r.returncode != 0
    assert "error: You must be logged in to the server (Unauthorized)" in r.stderr
    assert apiserver.requests[-1].status == 401


def test_hook_exception_is_recorded(web, api, apiserver):
    apiserver.faults.before_log(lambda *a: 1 / 0)
    status, body = api.json(log_path("ns", "web"))
    assert status == 500 and "ZeroDivisionError" in body["message"]
    assert isinstance(apiserver.errors.pop(), ZeroDivisionError)  # the fixture fails on leftovers


# ---------------------------------------------------------------- watch

AUTH = {"Authorization": "Bearer token-1"}


def open_watch(api, path):
    """-> (connection, response) of a watch request, headers read."""
    conn = api.connect()
    conn.request("GET", path, headers=AUTH)
    resp = conn.getresponse()
    conn.sock.settimeout(5)
    return conn, resp


def next_events(resp, n) -> list:
    out = []
    for _ in range(n):
        line = resp.readline()
        assert line.endswith(b"\n"), line
        out.append(json.loads(line))
    return out


def summary(events) -> list:
    return [(e["type"], e["object"]["metadata"].get("name"), int(e["object"]["metadata"]["resourceVersion"]))
            for e in events]



def test_watch_initial_state_then_live_events(cluster, api, apiserver):
    a = cluster.add_pod("ns", "a")
    conn, resp = open_watch(api, "/api/v1/pods?watch=true")
    assert resp.status == 200 and resp.headers["Content-Type"] == "application/json"
    assert resp.headers["Transfer-Encoding"] == "chunked"
    assert summary(next_events(resp, 1)) == [("ADDED", "a", a.resource_version)]
    assert apiserver.active_watches == 1
    b = cluster.add_pod("other", "b")
    (ev,) = next_events(resp, 1)
    assert ev["type"] == "ADDED" and ev["object"] == b.to_json()
    cluster.append_log("other", "b", "app", ["not a pod change"])
    cluster.restart_container("other", "b", "app")
    (ev,) = next_events(resp, 1)
    assert ev["type"] == "MODIFIED" and ev["object"]["status"]["containerStatuses"][0]["restartCount"] == 1
    assert ev["object"]["metadata"]["resourceVersion"] == str(b.resource_version)
    cluster.delete_pod("ns", "a")
    (ev,) = next_events(resp, 1)
    assert ev["type"] == "DELETED" and ev["object"]["metadata"]["name"] == "a"
    assert ev["object"]["metadata"]["resourceVersion"] == str(cluster._rv)  # last state, new resourceVersion
    conn.close()


def test_watch_replay_from_resource_version(cluster, api):
    cluster.add_pod("ns", "a")
    rv = int(api.json("/api/v1/pods")[1]["metadata"]["resourceVersion"])
    cluster.add_pod("ns", "b", init_containers=("init",))
    cluster.set_phase("ns", "a", "Failed")
    cluster.set_waiting("ns", "b", "app", "CrashLoopBackOff")
    cluster.start_container("ns", "b", "app")
    cluster.terminate_container("ns", "b", "app", exit_code=2, reason="Error")
    cluster.append_log("ns", "b", "app", ["x"])
    cluster.delete_pod("ns", "b")
    cluster.add_pod("kube-system", "dns")
    expected = [("ADDED", "b", rv + 1), ("MODIFIED", "a", rv + 2), ("MODIFIED", "b", rv + 3),
                ("MODIFIED", "b", rv + 4), ("MODIFIED", "b", rv + 5), ("DELETED", "b", rv + 6),
                ("ADDED", "dns", rv + 8)]  # rv + 7: the new namespace
    conn, resp = open_watch(api, f"/api/v1/pods?watch=1&resourceVersion={rv}")
    events = next_events(resp, 7)
    assert summary(events) == expected
    assert events[1]["object"]["status"]["phase"] == "Failed"
    assert events[4]["object"]["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 2
    cluster.set_phase("ns", "a", "Running")  # then it goes on live
    assert summary(next_events(resp, 1)) == [("MODIFIED", "a", rv + 9)]
    conn.close()
    # from an event's resourceVersion, namespaced, and the deprecated /watch/ path
    conn, resp = open_watch(api, f"/api/v1/namespaces/ns/pods?watch=true&resourceVersion={rv + 5}")
    assert summary(next_events(resp, 2)) == [("DELETED", "b", rv + 6), ("MODIFIED", "a", rv + 9)]
    conn.close()
    conn, resp = open_watch(api, f"/api/v1/watch/namespaces/kube-system/pods?resourceVersion={rv}")
    assert summary(next_events(resp, 1)) == [("ADDED", "dns", rv + 8)]
    conn.close()
    # resourceVersion=0: the current state as ADDED events
    conn, resp = open_watch(api, "/api/v1/pods?watch=true&resourceVersion=0")
    assert summary(next_events(resp, 2)) == [("ADDED", "dns", rv + 8), ("ADDED", "a", rv + 9)]
    conn.close()
    assert api.json("/api/v1/pods?watch=true&resourceVersion=abc")[0] == 400


def test_watch_selectors(cluster, api):
    cluster.add_pod("ns", "web", labels={"app": "web"})
    cluster.add_pod("ns", "db", labels={"app": "db"})
    conn, resp = open_watch(api, "/api/v1/namespaces/ns/pods?watch=true&labelSelector=app%3Dweb"
                                 "&fieldSelector=status.phase%3DRunning")
    assert summary(next_events(resp, 1))[0][:2] == ("ADDED", "web")
    cluster.set_phase("ns", "db", "Failed")        # other labels: not seen
    cluster.add_pod("other", "web", labels={"app": "web"})  # other namespace: not seen
    cluster.set_phase("ns", "web", "Failed")       # no longer matches: DELETED (old object, new RV)
    (ev,) = next_events(resp, 1)
    assert (ev["type"], ev["object"]["status"]["phase"]) == ("DELETED", "Running")
    assert ev["object"]["metadata"]["resourceVersion"] == str(cluster._rv)
    cluster.set_phase("ns", "web", "Running")      # matches again: ADDED
    cluster.restart_container("ns", "web", "app")  # MODIFIED
    assert [e["type"] for e in next_events(resp, 2)] == ["ADDED", "MODIFIED"]
    conn.close()
    status, body = api.json("/api/v1/pods?watch=true&fieldSelector=spec.bogus%3Dx")
    assert status == 400 and body["message"] == "field label not supported: spec.bogus"


def test_watch_bookmarks_timeout_and_stop(cluster, client_ssl_context):
    cluster.add_pod("ns", "a")
    with FakeAPIServer(cluster, bookmark_interval=0.1) as srv:
        api = ApiClient(srv, client_ssl_context, token=None)
        results = {}

        def run(key, path):
            t0 = time.monotonic()
            status, _, body = api.request(path)  # the whole body: it must end cleanly
            results[key] = (status, time.monotonic() - t0, [json.loads(ln) for ln in body.splitlines()])

        threads = [threading.Thread(target=run, args=(k, p)) for k, p in (
            ("bm", "/api/v1/pods?watch=true&allowWatchBookmarks=true&timeoutSeconds=1"),
            ("plain", "/api/v1/pods?watch=true&timeoutSeconds=1"))]
        for t in threads:
            t.start()
        wait_for(lambda: srv.active_watches == 2)
        cluster.set_phase("ns", "a", "Succeeded")
        for t in threads:
            t.join(5)
        for key in ("bm", "plain"):
            status, elapsed, events = results[key]
            assert status == 200 and 0.9 < elapsed < 2.5
            assert [e["type"] for e in events if e["type"] != "BOOKMARK"] == ["ADDED", "MODIFIED"]
        bookmarks = [e for e in results["bm"][2] if e["type"] == "BOOKMARK"]
        assert not [e for e in results["plain"][2] if e["type"] == "BOOKMARK"]
        assert len(bookmarks) >= 5
        assert bookmarks[-1] == {"type": "BOOKMARK", "object": {"kind": "Pod", "apiVersion": "v1", "metadata": {
            "resourceVersion": str(cluster._rv)}}}
        assert srv.wait_idle() and srv.max_active_watches == 2 and srv.active_watches == 0
        # without timeoutSeconds the watch lasts until the server stops, then ends cleanly
        conn, resp = open_watch(api, "/api/v1/pods?watch=true")
        next_events(resp, 1)
    assert resp.read() == b"" and srv.active_watches == 0
    conn.close()


def test_watch_expired(cluster, api, apiserver):
    cluster.watch_history = 3
    cluster.add_pod("ns", "a")
    rv0 = cluster._rv
    for phase in ("Pending", "Running", "Failed", "Running"):
        cluster.set_phase("ns", "a", phase)
    status, _, body = api.request(f"/api/v1/pods?watch=true&resourceVersion={rv0}")  # ends: readable whole
    assert status == 200
    assert [json.loads(ln) for ln in body.splitlines()] == [{"type": "ERROR", "object": {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": f"too old resource version: {rv0} ({rv0 + 1})", "reason": "Expired", "code": 410}}]
    conn, resp = open_watch(api, f"/api/v1/pods?watch=true&resourceVersion={rv0 + 1}")  # oldest kept
    assert [e["type"] for e in next_events(resp, 3)] == ["MODIFIED"] * 3
    conn.close()
    cluster.compact_watch_history()
    body = api.request(f"/api/v1/pods?watch=true&resourceVersion={rv0 + 1}")[2]
    assert json.loads(body)["object"]["code"] == 410
    apiserver.faults.expire_watch()
    body = api.request(f"/api/v1/pods?watch=true&resourceVersion={cluster._rv}")[2]
    assert json.loads(body)["object"]["reason"] == "Expired"
    conn, resp = open_watch(api, f"/api/v1/pods?watch=true&resourceVersion={cluster._rv}")  # one-shot
    cluster.set_phase("ns", "a", "Failed")
    assert next_events(resp, 1)[0]["type"] == "MODIFIED"
    conn.close()


def test_cut_watch(cluster, api, apiserver):
    for name in ("a", "b", "c"):
        cluster.add_pod("ns", name)
    apiserver.faults.cut_watch(after_events=2)
    conn, resp = open_watch(api, "/api/v1/pods?watch=true")
    with pytest.raises(http.client.IncompleteRead) as exc:
        resp.read()
    assert [json.loads(ln)["object"]["metadata"]["name"] for ln in exc.value.partial.splitlines()] == ["a", "b"]
    conn.close()
    # On the wire: one chunk per event, then nothing (no terminating 0-chunk).
    apiserver.faults.cut_watch(after_events=1)
    head, _, rest = raw_get(api, "/api/v1/pods?watch=true&fieldSelector=metadata.name%3Dc").partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head
    size, _, chunk = rest.partition(b"\r\n")
    assert len(chunk) == int(size, 16) + 2 and chunk.endswith(b"}\n\r\n")
    assert json.loads(chunk)["object"]["metadata"]["name"] == "c"
    # A watch that ends before the cut point (here: the 410 ERROR event) is cut all the same.
    apiserver.faults.cut_watch(after_events=5)
    apiserver.faults.expire_watch()
    rest = raw_get(api, "/api/v1/pods?watch=true").partition(b"\r\n\r\n")[2]
    assert b'"code":410}}\n\r\n' in rest and not rest.endswith(b"0\r\n\r\n")
    assert rest.endswith(b"\n\r\n")


def test_watch_forbidden(cluster, api, apiserver):
    apiserver.authorize = authorizer_from_rbac(yaml.safe_load_all(RBAC_YAML))  # get, list: no watch
    assert api.json("/api/v1/pods")[0] == 200
    status, body = api.json("/api/v1/pods?watch=true")
    assert status == 403 and body["kind"] == "Status" and body["reason"] == "Forbidden"
    assert body["message"] == (f'pods is forbidden: User "{SA_USER}" cannot watch resource "pods" '
                               'in API group "" at the cluster scope')
    apiserver.authorize = authorizer_from_rbac(yaml.safe_load_all(RBAC_YAML + """
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: watcher, namespace: apps}
rules:
- apiGroups: [""]
  resources: [pods]
  verbs: [watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: watcher, namespace: apps}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: watcher}
subjects:
- {kind: ServiceAccount, name: log-exporter-sa, namespace: logging}
"""))
    assert api.json("/api/v1/pods?watch=true")[0] == 403
    status, body = api.json("/api/v1/namespaces/other/pods?watch=true")
    assert status == 403 and 'in the namespace "other"' in body["message"]
    conn, resp = open_watch(api, "/api/v1/namespaces/apps/pods?watch=true")
    assert resp.status == 200
    cluster.add_pod("apps", "web")
    assert summary(next_events(resp, 1))[0][:2] == ("ADDED", "web")
    conn.close()


@needs_kubectl
def test_kubectl_get_pods_watch(cluster, kubectl, apiserver, tmp_path):
    cluster.add_pod("default", "web")
    kubectl("get", "pods")  # warm the discovery cache in $HOME
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "KUBECONFIG": str(tmp_path / "kubeconfig")}
    proc = subprocess.Popen([KUBECTL, "get", "pods", "-A", "--watch", "--request-timeout=10s"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().split()[:2] == ["NAMESPACE", "NAME"]
        assert proc.stdout.readline().split()[:4] == ["default", "web", "1/1", "Running"]
        wait_for(lambda: apiserver.active_watches == 1)
        cluster.add_pod("kube-system", "dns")
        assert proc.stdout.readline().split()[:4] == ["kube-system", "dns", "1/1", "Running"]
        cluster.restart_container("default", "web", "app")
        assert proc.stdout.readline().split()[:5] == ["default", "web", "1/1", "Running", "1"]
    finally:
        proc.kill()
        proc.communicate()
    watch = [r for r in apiserver.requests if r.query.get("watch")]
    assert watch and watch[0].path == "/api/v1/pods" and watch[0].status == 200
    assert watch[0].query["resourceVersion"][0].isdigit()


# ---------------------------------------------------------------- Kubernetes Events (events.k8s.io/v1)

EVENTS = "/apis/events.k8s.io/v1/namespaces/{ns}/events"


def test_events_list_pages_and_series(cluster, api):
    cluster.add_pod("shop", "web-1")
    names = [cluster.add_event("shop", reason="Pulled", regarding="web-1") for _ in range(3)]
    cluster.add_event("other", reason="Scheduled")
    status, body = api.json(EVENTS.format(ns="shop") + "?limit=2")
    assert status == 200 and body["kind"] == "EventList" and len(body["items"]) == 2
    status, rest = api.json(EVENTS.format(ns="shop") + "?limit=2&continue=" + body["metadata"]["continue"])
    assert len(rest["items"]) == 1 and "continue" not in rest["metadata"]
    got = body["items"] + rest["items"]
    assert sorted(e["metadata"]["name"] for e in got) == sorted(names)
    assert got[0]["regarding"]["uid"] == cluster.pod("shop", "web-1").uid
    before = {e["metadata"]["name"]: e["metadata"]["resourceVersion"] for e in got}
    cluster.repeat_event("shop", names[0])
    _, after = api.json(EVENTS.format(ns="shop"))
    event = next(e for e in after["items"] if e["metadata"]["name"] == names[0])
    assert event["series"]["count"] == 2 and event["metadata"]["resourceVersion"] != before[names[0]]
    assert len(api.json("/apis/events.k8s.io/v1/events")[1]["items"]) == 4


def test_events_watch_and_expiry(cluster, api, apiserver):
    name = cluster.add_event("shop", reason="Pulled")
    _, listed = api.json(EVENTS.format(ns="shop"))
    rv = listed["metadata"]["resourceVersion"]
    threading.Timer(0.2, lambda: cluster.repeat_event("shop", name)).start()
    status, _, body = api.request(EVENTS.format(ns="shop") + "?watch=true&timeoutSeconds=1&resourceVersion=" + rv)
    lines = [json.loads(line) for line in body.splitlines()]
    assert status == 200 and [e["type"] for e in lines] == ["MODIFIED"]
    assert lines[0]["object"]["series"]["count"] == 2
    cluster.compact_event_history()
    _, _, body = api.request(EVENTS.format(ns="shop") + "?watch=true&timeoutSeconds=1&resourceVersion=" + rv)
    assert json.loads(body)["object"]["code"] == 410
    apiserver.authorize = authorizer_from_rbac([
        {"kind": "ClusterRole", "metadata": {"name": "r"},
         "rules": [{"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["list"]}]},
        {"kind": "ClusterRoleBinding", "metadata": {"name": "b"}, "roleRef": {"kind": "ClusterRole", "name": "r"},
         "subjects": [{"kind": "User", "name": SA_USER}]}])
    assert api.json(EVENTS.format(ns="shop"))[0] == 200
    status, body = api.json(EVENTS.format(ns="shop") + "?watch=true")
    assert status == 403 and 'in API group "events.k8s.io"' in body["message"]
    assert api.json("/api/v1/namespaces/shop/pods")[0] == 403  # the events group grants no core resource
