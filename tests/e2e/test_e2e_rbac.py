"""RBAC evaluated by the real API server from manifests/, and real list pages."""
from __future__ import annotations

import json
import re
import threading
import time

import yaml

from e2ekit import ROOT, cri_append, files_under, lines


def _sa_dir(k8s, tmp_path, sa, ns):
    return k8s.service_account_dir(tmp_path / f"{ns}-{sa}", k8s.token(sa, ns))


def _get_without_a_valid_token(k8s, path, token=None):
    import http.client
    import ssl
    conn = http.client.HTTPSConnection("127.0.0.1", k8s.port, timeout=30,
                                       context=ssl.create_default_context(cafile=str(k8s.c.ca_file)))
    conn.request("GET", path, headers={"Authorization": "Bearer " + token} if token else {})
    response = conn.getresponse()
    return response.status, json.loads(response.read())


def test_no_credentials_are_anonymous_and_forbidden_a_wrong_token_is_unauthorized(k8s):
    """What tests/fakeapi.py answers too (test_fakeapi.py::test_unauthorized)."""
    status, body = _get_without_a_valid_token(k8s, "/api/v1/pods")
    assert (status, body["reason"], body["message"]) == (403, "Forbidden", 'pods is forbidden: User '
                                                         '"system:anonymous" cannot list resource "pods" in API '
                                                         'group "" at the cluster scope'), body
    status, body = _get_without_a_valid_token(k8s, "/api/v1/pods", token="wrong")
    assert (status, body["reason"], body["message"]) == (401, "Unauthorized", "Unauthorized"), body


def test_default_account_gets_exit_3_with_the_api_message(k8s, tmp_path):
    ns = k8s.namespace("nobody")
    sa = _sa_dir(k8s, tmp_path, "default", ns)
    r = k8s.export(sa, "-A", "-o", str(tmp_path / "out"))
    assert r.returncode == 3, (r.returncode, r.stderr)
    api = (f'pods is forbidden: User "system:serviceaccount:{ns}:default" cannot list resource "pods" '
           f'in API group "" at the cluster scope')
    assert api in r.stderr, r.stderr
    # the same account, one namespace: the namespaced form of the message
    r = k8s.export(sa, "-n", ns, "-o", str(tmp_path / "out"))
    assert r.returncode == 3
    assert (f'pods is forbidden: User "system:serviceaccount:{ns}:default" cannot list resource "pods" '
            f'in API group "" in the namespace "{ns}"') in r.stderr, r.stderr


def test_clusterrole_without_pods_log_fails_the_export(k8s, tmp_path):
    ns = k8s.namespace("nolog")
    k8s.pod(ns, "p")
    f = k8s.log_file(ns, "p", "app")
    cri_append(f, lines(time.time_ns() - 10**11, 3, "x"))
    k8s.give_logs(ns, "p", {"app": (f, None)})
    role = yaml.safe_load((ROOT / "manifests/base/clusterrole.yaml").read_text())
    role["metadata"]["name"] = f"{ns}-cr"
    role["rules"] = [r for r in role["rules"] if "pods/log" not in r["resources"]]
    assert role["rules"], "the base ClusterRole lost its list rule"
    k8s.api("POST", "/apis/rbac.authorization.k8s.io/v1/clusterroles", role)
    k8s.api("POST", f"/api/v1/namespaces/{ns}/serviceaccounts",
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "log-exporter-sa"}})
    k8s.api("POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": f"{ns}-rb"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": f"{ns}-cr"},
        "subjects": [{"kind": "ServiceAccount", "name": "log-exporter-sa", "namespace": ns}]})
    sa = _sa_dir(k8s, tmp_path, "log-exporter-sa", ns)
    out = tmp_path / "out"
    r = k8s.export(sa, "-n", ns, "-o", str(out), "--json")
    assert r.returncode == 3, (r.returncode, r.stderr)  # a refused log request: exit 3, like a refused listing
    s = json.loads(r.stdout.strip().splitlines()[-1])
    assert [f["status"] for f in s["failed"]] == [403]
    assert (f'pods "p" is forbidden: User "system:serviceaccount:{ns}:log-exporter-sa" cannot get resource '
            f'"pods/log" in API group "" in the namespace "{ns}"') in r.stderr + json.dumps(s), r.stderr
    assert '"get pods/log"' in r.stderr
    assert files_under(out) == {}  # no log line got out, and no empty file is left


def test_namespaced_overlay_works_in_its_own_namespace_only(k8s, tmp_path):
    own, other = k8s.namespace("own"), k8s.namespace("other")
    docs = [d for d in yaml.safe_load_all(
        k8s.kubectl("kustomize", str(ROOT / "manifests/overlays/namespaced")).stdout) if d]
    kinds = sorted(d["kind"] for d in docs)
    assert "ClusterRole" not in kinds and "ClusterRoleBinding" not in kinds and "Namespace" not in kinds, kinds
    for d in docs:  # the overlay installed into a fresh namespace instead of log-exporter
        d["metadata"]["namespace"] = own
        for s in d.get("subjects", []):
            s["namespace"] = own
    k8s.kubectl("apply", "--server-side", "-f", "-", input="\n---\n".join(yaml.safe_dump(d) for d in docs))
    expect = {}
    for ns in (own, other):
        k8s.pod(ns, "p")
        f = k8s.log_file(ns, "p", "app")
        expect[ns] = cri_append(f, lines(time.time_ns() - 10**11, 5, ns))
        k8s.give_logs(ns, "p", {"app": (f, None)})
    sa = _sa_dir(k8s, tmp_path, "log-exporter-sa", own)
    out = tmp_path / "out"
    r = k8s.export(sa, "-n", own, "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert files_under(out) == {f"{own}/p/app.log": expect[own]}
    r = k8s.export(sa, "-n", other, "-o", str(tmp_path / "out2"))
    assert r.returncode == 3
    assert f'cannot list resource "pods" in API group "" in the namespace "{other}"' in r.stderr, r.stderr
    r = k8s.export(sa, "-A", "-o", str(tmp_path / "out3"))
    assert r.returncode == 3
    assert 'cannot list resource "pods" in API group "" at the cluster scope' in r.stderr, r.stderr


def test_1250_pods_are_listed_through_real_continue_tokens(k8s, exporter_sa, tmp_path):
    ns = k8s.namespace("bulk")
    n = 1250
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"namespace": ns},
           "spec": {"containers": [{"name": "app", "image": "registry.invalid/e2e:1"}]}}
    errors = []

    def create(lo, hi):
        for i in range(lo, hi):
            try:
                k8s.api("POST", f"/api/v1/namespaces/{ns}/pods",
                        dict(pod, metadata={"namespace": ns, "name": f"p-{i:04d}"}))
            except Exception as e:  # pragma: no cover - reported below
                errors.append(e)

    threads = [threading.Thread(target=create, args=(i, min(n, i + 157))) for i in range(0, n, 157)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    r = k8s.export(exporter_sa, "-n", ns, "-o", str(tmp_path / "out"), "--dry-run", "-v")
    assert r.returncode == 0, r.stderr[-2000:]
    urls = [u for u in r.stdout.splitlines() if "/log" in u]
    assert len(urls) == n
    assert {re.search(r"/pods/(p-\d{4})/log", u).group(1) for u in urls} == {f"p-{i:04d}" for i in range(n)}
    pages = [ln for ln in r.stderr.splitlines() if f"/namespaces/{ns}/pods?" in ln and "/log" not in ln]
    assert len(pages) >= 3, r.stderr[-3000:]  # 500 a page: two continue tokens
    assert sum("continue=" in ln for ln in pages) >= 2, pages


def test_a_token_rotated_then_revoked_mid_run_is_read_again_after_the_401(k8s, tmp_path):
    """The kubelet rewrites a projected token before it expires; a bound token stops working the moment its
    object is gone. The run's token file gets a new token and the old one is revoked while the run is paused
    between its listing and the next pod's request: that request's 401 makes it read the file again."""
    ns = k8s.namespace("token")
    t0 = (time.time_ns() - 600 * 10**9) // 10**9 * 10**9
    k8s.add_filler(ns, t0)
    k8s.pod(ns, "web")
    f = k8s.log_file(ns, "web", "app")
    want = cri_append(f, lines(t0 + 10**9, 5, "web"))
    k8s.give_logs(ns, "web", {"app": (f, None)})
    secrets = [f"{ns}-token-{i}" for i in (1, 2)]
    for name in secrets:
        k8s.api("POST", "/api/v1/namespaces/log-exporter/secrets",
                {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}})
    try:
        tokens = [k8s.kubectl("create", "token", "log-exporter-sa", "-n", "log-exporter", "--bound-object-kind",
                              "Secret", "--bound-object-name", name).stdout.strip() for name in secrets]
        sa_dir = k8s.service_account_dir(tmp_path, tokens[0])

        def rotate_then_revoke():
            fresh = sa_dir / "token.new"
            fresh.write_text(tokens[1])
            fresh.rename(sa_dir / "token")  # as the kubelet's atomic writer: the file is whole or absent
            k8s.api("DELETE", f"/api/v1/namespaces/log-exporter/secrets/{secrets[0]}")
            deadline = time.monotonic() + 30  # the API server caches a token it accepted for 10 s
            while _get_without_a_valid_token(k8s, f"/api/v1/namespaces/{ns}/pods", tokens[0])[0] != 401:
                assert time.monotonic() < deadline, "the revoked token is still accepted"
                time.sleep(0.5)

        s, files = k8s.export_paused(sa_dir, ns, tmp_path / "out", rotate_then_revoke)
    finally:
        for name in secrets:
            k8s.api("DELETE", f"/api/v1/namespaces/log-exporter/secrets/{name}", ok=(200, 404))
    assert s["failed"] == [], s
    assert files[f"{ns}/web/app.log"] == want
    web = [status for pod, _, status in s["log_requests"] if pod == "web"]
    assert web[0] == 401 and web[-1] == 200, s["log_requests"]  # refused with the old token, then served
    assert not any(t in s["stderr"] for t in tokens)  # -v prints every request


def test_a_continued_page_shows_the_first_pages_snapshot(k8s):
    """What the exporter's listing clock rests on (and tests/fakeapi.py now does too): the pages that continue a
    list show the pods as they were at its first page, however much later they are asked for."""
    ns = k8s.namespace("snapshot")
    for i in range(3):
        k8s.pod(ns, f"p{i}")
    first = k8s.api("GET", f"/api/v1/namespaces/{ns}/pods?limit=1")
    now = time.time_ns()
    k8s.set_instances(ns, "p2", "app", started_ns=now, restarts=1, previous=(now - 10 * 10**9, now))
    k8s.pod(ns, "p3")
    rest = k8s.api("GET", f"/api/v1/namespaces/{ns}/pods?limit=5&continue={first['metadata']['continue']}")
    assert [p["metadata"]["name"] for p in rest["items"]] == ["p1", "p2"]
    assert rest["items"][1]["status"]["containerStatuses"][0]["restartCount"] == 0
    fresh = k8s.api("GET", f"/api/v1/namespaces/{ns}/pods")["items"]
    assert [p["status"]["containerStatuses"][0]["restartCount"] for p in fresh] == [0, 0, 1, 0]
