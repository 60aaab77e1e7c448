"""The archive against the real API server: events exactly once across runs, pod.json next to the logs."""
from __future__ import annotations

import json
import time

from e2ekit import cri_append, lines


def _event(ns: str, name: str, pod: str, count: int = 0) -> dict:
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
    body = {"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": name, "namespace": ns},
            "eventTime": now, "reportingController": "e2e/kubelet", "reportingInstance": "kwok-node-0",
            "action": "Pulling", "reason": "BackOff", "type": "Warning", "note": "Back-off pulling image",
            "regarding": {"kind": "Pod", "namespace": ns, "name": pod, "apiVersion": "v1"}}
    if count:
        body["series"] = {"count": count, "lastObservedTime": now}
    return body


def test_events_once_per_version_across_runs_and_pod_json(k8s, exporter_sa, tmp_path):
    ns = k8s.namespace("archive")
    k8s.pod(ns, "web")
    f = k8s.log_file(ns, "web", "app")
    cri_append(f, lines(time.time_ns() - 60 * 10**9, 3, "archived"))
    k8s.give_logs(ns, "web", {"app": (f, None)})
    out = tmp_path / "out"

    def run() -> dict:
        r = k8s.export(exporter_sa, "-n", ns, "-o", str(out), "--events", "--pod-metadata", "--json")
        assert r.returncode == 0, r.stderr[-3000:]
        return json.loads(r.stdout.splitlines()[-1])

    path = f"/apis/events.k8s.io/v1/namespaces/{ns}/events"
    k8s.api("POST", path, _event(ns, "web.backoff", "web"))
    run()
    pod_json = (out / ns / "web" / "pod.json").read_bytes()
    summary = json.loads(pod_json)
    assert (summary["namespace"], summary["name"]) == (ns, "web") and summary["uid"]
    assert [(c["name"], c["image"]) for c in summary["containers"]] == [("app", "registry.invalid/e2e:1")]
    current = k8s.api("GET", f"{path}/web.backoff")
    current["series"] = {"count": 2, "lastObservedTime": current["eventTime"]}  # it happened again
    k8s.api("PUT", f"{path}/web.backoff", current)
    run()
    run()  # nothing new: nothing written
    events = [json.loads(line) for line in (out / ns / "events.jsonl").read_text().splitlines()]
    versions = [e["metadata"]["resourceVersion"] for e in events]
    assert len(events) == 2 and len(set(versions)) == 2, versions
    assert [e.get("series", {}).get("count") for e in events] == [None, 2]
    assert (out / ns / "web" / "pod.json").read_bytes() == pod_json  # unchanged pod, unchanged file
