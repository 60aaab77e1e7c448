"""The archive beside the logs: pod.json per pod, Events exactly once (batch and follow), retention with a
controllable clock, compression of finished logs."""

import gzip
import json
import os
import threading
import time

import pytest

import kubelogexporter
from kubelogexporter import ConfigError, KubeClient, export_logs
from kubelogexporter import _parse_size, _pod_summary, _retention_victims

from conftest import cli_args, wait_for

HOUR = 3600.0


def event_lines(output, namespace="shop"):
    path = output / namespace / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def versions(lines):
    return [(e["metadata"]["uid"], e["metadata"]["resourceVersion"]) for e in lines]


def state_of(output):
    return json.loads((output / ".kubelogexporter-state.json").read_text())


# ---------------------------------------------------------------- pod.json

def test_pod_summary_keeps_the_story_and_leaves_annotations_out():
    pod = {"metadata": {"name": "web-1", "namespace": "shop", "uid": "u1", "resourceVersion": "7",
                        "labels": {"app": "web"}, "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
                        "ownerReferences": [{"kind": "ReplicaSet", "name": "web-7d9f", "controller": True, "uid": "r"}],
                        "deletionTimestamp": "2026-11-29T10:05:00Z"},
           "spec": {"nodeName": "node-1", "serviceAccountName": "web", "containers": [{"name": "app", "image": "app:1"}]},
           "status": {"phase": "Running", "startTime": "2026-11-29T10:00:00Z", "reason": "Evicted",
                      "conditions": [{"type": "Ready", "lastProbeTime": "x"}],
                      "containerStatuses": [{"name": "app", "image": "app:1", "imageID": "app@sha256:1", "restartCount": 2,
                                             "ready": True, "state": {"running": {"startedAt": "2026-11-29T10:01:00Z"}},
                                             "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137,
                                                                          "startedAt": "a", "finishedAt": "b"}}}]}}
    summary = _pod_summary(pod)
    assert summary["ownerReferences"] == [{"kind": "ReplicaSet", "name": "web-7d9f", "controller": True}]
    assert (summary["nodeName"], summary["serviceAccountName"], summary["deletionTimestamp"], summary["reason"]) == (
        "node-1", "web", "2026-11-29T10:05:00Z", "Evicted")
    app = summary["containers"][0]
    assert (app["imageID"], app["restartCount"], app["lastTermination"]["reason"], app["lastTermination"]["exitCode"]) == (
        "app@sha256:1", 2, "OOMKilled", 137)
    assert "annotations" not in summary and "resourceVersion" not in json.dumps(summary)
    assert _pod_summary(pod, annotations=True)["annotations"]


def test_pod_json_changes_after_a_restart_and_not_otherwise(cluster, export):
    cluster.add_pod("shop", "web-1", labels={"app": "web"})
    cluster.append_log("shop", "web-1", "app", ["one"])
    first = export(namespaces=["shop"], pod_metadata=True)
    path = export.output / "shop" / "web-1" / "pod.json"
    before, stat = path.read_bytes(), path.stat()
    assert first.pod_metadata == 1 and oct(stat.st_mode & 0o777) == "0o600"
    assert json.loads(before)["containers"][0]["restartCount"] == 0
    again = export(namespaces=["shop"], pod_metadata=True)
    assert again.pod_metadata == 0 and path.read_bytes() == before
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)  # not even rewritten
    cluster.restart_container("shop", "web-1", "app", exit_code=137)
    third = export(namespaces=["shop"], pod_metadata=True)
    after = json.loads(path.read_text())["containers"][0]
    assert third.pod_metadata == 1
    assert (after["restartCount"], after["lastTermination"]["reason"], after["lastTermination"]["exitCode"]) == (
        1, "Error", 137)
    assert not list(export.output.rglob("*.tmp"))


# ---------------------------------------------------------------- events

def test_events_exactly_once_across_three_runs(cluster, export):
    cluster.add_pod("shop", "web-1")
    pulled = cluster.add_event("shop", reason="Pulled", regarding="web-1")
    cluster.add_event("shop", reason="Started", regarding="web-1")
    cluster.add_event("other", reason="Scheduled")
    assert export(events=True).events == 3
    cluster.repeat_event("shop", pulled)  # the series count goes up: a new version
    cluster.add_event("shop", reason="BackOff", regarding="web-1", type="Warning")
    assert export(events=True).events == 2
    cluster.repeat_event("shop", pulled)
    third = export(events=True)
    assert third.events == 1 and export(events=True).events == 0
    lines = event_lines(export.output)
    assert len(lines) == len(set(versions(lines))) == 5
    assert [e.get("series", {}).get("count") for e in lines if e["metadata"]["name"] == pulled] == [None, 2, 3]
    assert "managedFields" not in lines[0]["metadata"]
    assert len(event_lines(export.output, "other")) == 1
    assert oct((export.output / "shop" / "events.jsonl").stat().st_mode & 0o777) == "0o600"
    # Events the cluster dropped (TTL) leave the state; their lines stay.
    cluster.delete_event("shop", pulled)
    export(events=True)
    assert pulled not in json.dumps(state_of(export.output)["events"]) and len(event_lines(export.output)) == 5


def test_events_written_but_not_recorded_are_not_written_again(cluster, export):
    """A run that died after making its lines durable but before saving the state: the file says what was written."""
    name = cluster.add_event("shop", reason="Pulled")
    export(events=True)
    state = export.output / ".kubelogexporter-state.json"
    saved = state.read_bytes()
    cluster.repeat_event("shop", name)
    cluster.add_event("shop", reason="Killing")
    assert export(events=True).events == 2
    state.write_bytes(saved)  # as if that run never recorded them
    with open(export.output / "shop" / "events.jsonl", "ab") as handle:
        handle.write(b'{"torn":')  # and died inside a line
    assert export(events=True).events == 0
    lines = event_lines(export.output)
    assert len(lines) == len(set(versions(lines))) == 3


def test_events_are_listed_in_pages(cluster, apiserver, service_account):
    for i in range(5):
        cluster.add_event("shop", reason="R%d" % i)
    client = KubeClient(apiserver.url, token_file=service_account / "token", ca_file=service_account / "ca.crt")
    pages = list(kubelogexporter._list_events(client, "shop", page_size=2))
    assert [len(p) for p in pages] == [2, 2, 1]
    assert sum(r.path.endswith("/events") for r in apiserver.requests) == 3


def test_follow_mode_gets_a_new_event_within_seconds(cluster, apiserver, service_account, tmp_path):
    cluster.add_pod("shop", "web-1")
    cluster.add_event("shop", reason="Scheduled", regarding="web-1")
    output, stop, outcome = tmp_path / "logs", threading.Event(), {}

    def run():
        outcome["result"] = export_logs(output, server=apiserver.url, account_dir=service_account, environ={},
                                        namespaces=["shop"], follow=True, events=True, pod_metadata=True,
                                        stop_event=stop, backoff=0.01)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        wait_for(lambda: len(event_lines(output)) == 1, timeout=5)
        started = time.monotonic()
        name = cluster.add_event("shop", reason="Killing", regarding="web-1", type="Warning")
        wait_for(lambda: len(event_lines(output)) == 2, timeout=5)
        assert time.monotonic() - started < 3
        cluster.repeat_event("shop", name)
        wait_for(lambda: len(event_lines(output)) == 3, timeout=5)
        wait_for(lambda: (output / "shop" / "web-1" / "pod.json").exists(), timeout=5)
    finally:
        stop.set()
        thread.join(15)
    assert not thread.is_alive() and outcome["result"].events == 3
    assert any(r.query.get("watch") == ["true"] and r.path.endswith("/events") for r in apiserver.requests)
    lines = event_lines(output)
    assert len(set(versions(lines))) == 3 and lines[-1]["series"]["count"] == 2


def test_follow_mode_relists_events_after_410_without_writing_twice(cluster, apiserver, service_account, tmp_path,
                                                                     monkeypatch):
    monkeypatch.setattr(kubelogexporter, "WATCH_SECONDS", 1)  # the watch is renewed every second
    first = cluster.add_event("shop", reason="Scheduled")
    output, stop, outcome = tmp_path / "logs", threading.Event(), {}

    def run():
        outcome["result"] = export_logs(output, server=apiserver.url, account_dir=service_account, environ={},
                                        namespaces=["shop"], follow=True, events=True, stop_event=stop, backoff=0.01)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        wait_for(lambda: len(event_lines(output)) == 1, timeout=5)
        cluster.repeat_event("shop", first)
        cluster.compact_event_history()  # the renewed watch gets 410: list again, then watch
        cluster.add_event("shop", reason="Pulled")
        wait_for(lambda: len(event_lines(output)) == 3, timeout=8)
        lists = lambda: sum(1 for r in apiserver.requests if r.path.endswith("/events") and "watch" not in r.query)  # noqa: E731
        wait_for(lambda: lists() >= 2, timeout=8)
        cluster.add_event("shop", reason="Started")
        wait_for(lambda: len(event_lines(output)) == 4, timeout=8)
    finally:
        stop.set()
        thread.join(15)
    lines = event_lines(output)
    assert len(set(versions(lines))) == len(lines) == 4 and outcome["result"].events == 4


# ---------------------------------------------------------------- retention

def test_retention_victims_only_gone_and_quiet():
    now = 100 * HOUR
    files = {"shop/gone/app.log": (now - 50 * HOUR, 10), "shop/gone/pod.json": (now - 50 * HOUR, 1),
             "shop/gone/side.log": (now - 1 * HOUR, 5),  # written an hour ago: stays, so pod.json stays
             "shop/old/app.log": (now - 50 * HOUR, 10), "shop/old/pod.json": (now - 60 * HOUR, 1),
             "shop/live/app.log": (now - 90 * HOUR, 10),  # its pod is listed
             "shop/busy/app.log": (now - 90 * HOUR, 10),  # written by this run
             "team/other/app.log": (now - 90 * HOUR, 10)}  # out of scope
    victims = _retention_victims(files, {("shop", "live")}, now, 24 * HOUR, protected={"shop/busy/app.log"},
                                 in_scope=lambda ns, pod: ns == "shop")
    assert victims == ["shop/gone/app.log", "shop/old/app.log", "shop/old/pod.json"]
    # --max-bytes: then the oldest files of gone pods, never a listed pod's
    victims = _retention_victims(files, {("shop", "live")}, now, 24 * HOUR, protected={"shop/busy/app.log"},
                                 in_scope=lambda ns, pod: ns == "shop", max_bytes=20)
    assert "shop/gone/side.log" in victims and "shop/live/app.log" not in victims
    assert "shop/busy/app.log" not in victims and "team/other/app.log" not in victims


def test_retention_with_a_controllable_clock(cluster, export):
    for pod in ("web-1", "web-2", "job-1"):
        cluster.add_pod("shop", pod)
        cluster.append_log("shop", pod, "app", ["a line of %s" % pod])
    export(pod_metadata=True)
    cluster.delete_pod("shop", "web-2")
    cluster.delete_pod("shop", "job-1")
    later = {"now": time.time()}
    clock = lambda: later["now"]  # noqa: E731
    quiet = export(retain=24 * HOUR, clock=clock)
    assert quiet.removed == [] and (export.output / "shop" / "web-2" / "app.log").exists()
    # job-1's log was written again a day later, by hand (as a run would): only web-2 is gone *and* quiet
    later["now"] += 25 * HOUR
    os.utime(export.output / "shop" / "job-1" / "app.log", (later["now"] - HOUR, later["now"] - HOUR))
    result = export(retain=24 * HOUR, clock=clock)
    assert result.removed == ["shop/web-2/app.log", "shop/web-2/pod.json", "shop/web-2/"]
    assert result.removed_bytes > 0 and not (export.output / "shop" / "web-2").exists()
    assert (export.output / "shop" / "web-1" / "app.log").exists() and (export.output / "shop" / "job-1" / "app.log").exists()
    state = state_of(export.output)
    assert "shop/web-2/app.log" not in state["files"] and "shop/web-1/app.log" in state["files"]
    # Records go by their own last write: job-1's container wrote nothing since the first run (its file was
    # touched by hand), so only web-1's record, whose pod is listed, is left; job-1's file keeps its file record.
    assert len(state["containers"]) == 1 and "shop/job-1/app.log" in state["files"]
    cluster.delete_pod("shop", "web-1")
    later["now"] += 48 * HOUR
    last = export(retain=24 * HOUR, clock=clock)
    assert "shop/" in last.removed and not (export.output / "shop").exists()


def test_a_failed_listing_removes_nothing(cluster, apiserver, export):
    cluster.add_pod("shop", "web-1")
    cluster.append_log("shop", "web-1", "app", ["one"])
    export()
    cluster.delete_pod("shop", "web-1")
    apiserver.faults.fail(status=500, times=100, path_contains="/pods")
    with pytest.raises(kubelogexporter.ApiError):
        export(retain=1, clock=lambda: time.time() + 100 * HOUR, retries=1)
    assert (export.output / "shop" / "web-1" / "app.log").exists()


def test_a_stopped_run_removes_nothing(cluster, export):
    cluster.add_pod("shop", "web-1")
    cluster.append_log("shop", "web-1", "app", ["one"])
    export()
    cluster.delete_pod("shop", "web-1")
    stop = threading.Event()
    stop.set()
    result = export(retain=1, clock=lambda: time.time() + 100 * HOUR, stop_event=stop)
    assert result.interrupted and result.removed == []
    assert (export.output / "shop" / "web-1" / "app.log").exists()


def test_compress_finished_logs(cluster, export):
    cluster.add_pod("shop", "web-1")
    cluster.add_pod("shop", "web-2")
    for pod in ("web-1", "web-2"):
        cluster.append_log("shop", pod, "app", ["line %d of %s" % (i, pod) for i in range(100)])
    export()
    plain = (export.output / "shop" / "web-2" / "app.log").read_bytes()
    written = (export.output / "shop" / "web-2" / "app.log").stat().st_mtime_ns
    cluster.delete_pod("shop", "web-2")
    result = export(compress_finished=True)
    assert result.compressed == ["shop/web-2/app.log.gz"]
    packed = export.output / "shop" / "web-2" / "app.log.gz"
    assert gzip.decompress(packed.read_bytes()) == plain and oct(packed.stat().st_mode & 0o777) == "0o600"
    assert not (export.output / "shop" / "web-2" / "app.log").exists()
    assert packed.stat().st_mtime_ns == written  # retention still counts from the last line written
    assert (export.output / "shop" / "web-1" / "app.log").exists()  # its pod is still there
    files = state_of(export.output)["files"]
    assert files["shop/web-2/app.log.gz"]["size"] == packed.stat().st_size and "shop/web-2/app.log" not in files
    assert export(compress_finished=True).compressed == []


def test_cli_reports_the_archive(cluster, apiserver, service_account, tmp_path, capsys):
    cluster.add_pod("shop", "web-1")
    cluster.append_log("shop", "web-1", "app", ["one"])
    cluster.add_event("shop", reason="Pulled", regarding="web-1")
    output = tmp_path / "logs"
    args = cli_args(apiserver, service_account, output)
    assert kubelogexporter.main(args + ["--events", "--pod-metadata", "--retain", "30d", "--json"]) == 0
    out, err = capsys.readouterr()
    summary = json.loads(out)
    assert (summary["events"], summary["pod_metadata"], summary["removed"]) == (1, 1, [])
    assert "1 event(s), 1 pod.json written" in err


def test_archive_settings_that_cannot_work():
    create = kubelogexporter._Settings.create
    with pytest.raises(ConfigError, match="selector"):
        create("x", retain=HOUR, selector="app=web")
    with pytest.raises(ConfigError, match="no-state"):
        create("x", events=True, state=False)
    with pytest.raises(ConfigError, match="follow"):
        create("x", retain=HOUR, follow=True)
    with pytest.raises(ConfigError, match="retain"):
        create("x", max_bytes=10)
    assert _parse_size("50G") == 50 * 10**9 and _parse_size("2Mi") == 2 << 20 and _parse_size("100") == 100
    with pytest.raises(ValueError):
        _parse_size("lots")


def test_a_listing_that_fell_back_to_the_own_namespace_keeps_the_others(cluster, apiserver, export):
    """Without -A, a forbidden cluster-wide listing exports the pod's own namespace: retention and events stay
    inside it, and files of the other namespaces are not taken for gone."""
    cluster.add_pod("logging", "web-1")
    cluster.add_pod("shop", "old-1")
    for ns, pod in (("logging", "web-1"), ("shop", "old-1")):
        cluster.append_log(ns, pod, "app", ["one"])
    cluster.add_event("shop", reason="Pulled")
    cluster.add_event("logging", reason="Pulled")
    export()
    cluster.delete_pod("shop", "old-1")
    apiserver.authorize = lambda user, verb, resource, sub, namespace, **_: namespace == "logging"
    result = export(retain=1, events=True, clock=lambda: time.time() + 100 * HOUR)
    assert any("exporting namespace logging only" in note for note in result.notes)
    assert not [p for p in result.removed if p.startswith("shop/")]
    assert (export.output / "shop" / "old-1" / "app.log").exists()
    assert result.events == 1 and not event_lines(export.output, "shop")  # (logging's: trimmed at once, t+100h)
    assert len(state_of(export.output)["containers"]) == 2  # records are kept unless the listing was cluster-wide


def test_retention_trims_old_event_lines(cluster, export):
    cluster.add_pod("shop", "web-1")
    real = cluster.clock
    cluster.clock = lambda: real() - int(48 * HOUR) * 10**9  # an event of two days ago (still in the cluster)
    cluster.add_event("shop", reason="Old")
    cluster.add_event("quiet", reason="Old")  # a namespace without pods
    cluster.clock = real
    cluster.add_event("shop", reason="New")
    assert export(events=True).events == 3
    result = export(retain=24 * HOUR)
    assert result.removed_events == 2 and [e["reason"] for e in event_lines(export.output)] == ["New"]
    assert "quiet/events.jsonl" in result.removed and "quiet/" in result.removed
    assert not (export.output / "quiet").exists()
    assert state_of(export.output)["event_files"] == {"shop/events.jsonl": (export.output / "shop" / "events.jsonl").stat().st_size}
    assert export(events=True).events == 0  # what was trimmed is not fetched again


def test_a_refused_events_listing_is_exit_3_and_names_the_rule(cluster, apiserver, service_account, tmp_path, capsys):
    cluster.add_pod("shop", "web-1")
    cluster.append_log("shop", "web-1", "app", ["one"])
    apiserver.authorize = lambda user, verb, resource, sub, namespace, **_: resource != "events"
    code = kubelogexporter.main(cli_args(apiserver, service_account, tmp_path / "logs") + ["-n", "shop", "--events"])
    err = capsys.readouterr().err
    assert code == 3, err
    assert 'grant "list events.events.k8s.io" in namespace "shop"' in err and "pods/log" not in err
    assert (tmp_path / "logs" / "shop" / "web-1" / "app.log").exists()  # the logs are exported all the same
