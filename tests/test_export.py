"""The export engine against the fake API server: layout, exactness across runs and faults, limits."""

import gzip
import json
import os
import re
import signal
import stat
import subprocess
import sys
import threading
import time
import zlib

import pytest

from conftest import ROOT, SA_USER, cli, cli_args, wait_for
from fakeapi import NS, FakeAPIServer

import kubelogexporter
from kubelogexporter import export_logs

def served(api, namespace, pod, container, previous=False):
    """The whole log the API serves for a container, with timestamps: what the file must hold."""
    query = "container=%s&timestamps=true%s" % (container, "&previous=true" if previous else "")
    status, _, body = api.request("/api/v1/namespaces/%s/pods/%s/log?%s" % (namespace, pod, query))
    assert status == 200, body
    return body


def log_requests(apiserver):
    return [r for r in apiserver.requests if r.path.endswith("/log")]


def tricky_lines(cluster, namespace="shop", pod="web", container="app", start=None, n=30):
    """Lines that share seconds and, in runs, exact timestamps: what whole-second sinceTime gets wrong."""
    base = start if start is not None else cluster.pod(namespace, pod).containers[container].last_ts
    base = (base or 1795946400 * NS) + NS
    stamps = []
    for i in range(n):
        stamps.append(base + (i // 4) * 250_000_000)  # four lines per timestamp, four timestamps a second
    cluster.append_log(namespace, pod, container, ["line %d %s" % (i, "x" * (i % 7)) for i in range(len(stamps))],
                       timestamps=stamps)
    return stamps


# -- layout and files ----------------------------------------------------------


def test_every_container_kind_lands_in_its_file(cluster, apiserver, api, export):
    pod = cluster.add_pod("shop", "web-1", init_containers=["migrate"], containers=["app", "proxy"],
                          ephemeral_containers=["debugger"])
    for name in pod.containers:
        cluster.append_log("shop", "web-1", name, ["%s says %d" % (name, i) for i in range(5)])
    cluster.add_pod("kube-system", "dns", containers=["coredns"])
    cluster.append_log("kube-system", "dns", "coredns", ["ready"])

    result = export()

    assert result.ok and (result.pods, result.containers, result.exported) == (2, 5, 5)
    for ns, pod_name, name in [("shop", "web-1", "migrate"), ("shop", "web-1", "app"), ("shop", "web-1", "proxy"),
                               ("shop", "web-1", "debugger"), ("kube-system", "dns", "coredns")]:
        path = export.output / ns / pod_name / (name + ".log")
        assert path.read_bytes() == served(api, ns, pod_name, name)
    assert sorted(result.files) == sorted(["shop/web-1/migrate.log", "shop/web-1/app.log", "shop/web-1/proxy.log",
                                           "shop/web-1/debugger.log", "kube-system/dns/coredns.log"])
    assert result.bytes_written == sum((export.output / f).stat().st_size for f in result.files)


def test_files_are_private(cluster, apiserver, export):
    cluster.add_pod("shop", "web")
    cluster.append_log("shop", "web", "app", ["password=hunter2"])
    export()
    for path in [export.output / "shop", export.output / "shop" / "web"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o700
    for path in [export.output / "shop" / "web" / "app.log", export.output / kubelogexporter.STATE_FILENAME]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_no_timestamps_strips_the_prefix_and_still_continues_exactly(cluster, apiserver, export):
    cluster.add_pod("shop", "web")
    tricky_lines(cluster, n=10)
    export(timestamps=False)
    tricky_lines(cluster, n=10)
    export(timestamps=False)
    text = (export.output / "shop" / "web" / "app.log").read_text()
    assert text.splitlines() == ["line %d %s" % (i, "x" * (i % 7)) for i in range(10)] * 2


def test_gzip_appends_a_member_per_run_and_decompresses_whole(cluster, apiserver, api, export):
    cluster.add_pod("shop", "web")
    cluster.append_log("shop", "web", "app", ["first %d" % i for i in range(100)])
    export(gzip=True)
    cluster.append_log("shop", "web", "app", ["second %d" % i for i in range(100)])
    export(gzip=True)
    path = export.output / "shop" / "web" / "app.log.gz"
    assert gzip.decompress(path.read_bytes()) == served(api, "shop", "web", "app")
    assert not (export.output / "shop" / "web" / "app.log").exists()


def test_no_state_replaces_files_with_the_complete_current_log(cluster, apiserver, api, export):
    cluster.add_pod("shop", "web")
    cluster.append_log("shop", "web", "app", ["one", "two"])
    export(state=False)
    cluster.append_log("shop", "web", "app", ["three"])
    export(state=False)
    assert (export.output / "shop" / "web" / "app.log").read_bytes() == served(api, "shop", "web", "app")
    assert sorted(p.name for p in export.output.rglob("*") if p.is_file()) == [".kubelogexporter.lock", "app.log"]


@pytest.mark.parametrize("namespace, pod, container", [
    ("shop", "..", "app"), ("shop", ".", "app"), ("shop", "web", "../../etc"), ("shop", "web", "a/b"),
    ("..", "web", "app"), ("shop", "nul\0", "app"), ("shop", "web", ""),
])
def test_names_that_leave_the_folder_are_refused_and_nothing_lands_outside(cluster, apiserver, export, tmp_path,
                                                                            namespace, pod, container):
    cluster.add_pod(namespace, pod, containers=[container])
    cluster.add_pod("shop", "fine")
    cluster.append_log("shop", "fine", "app", ["ok"])
    result = export()
    assert result.exit_code == 1
    assert [f["container"] for f in result.failed] == ["%s/%s/%s" % (namespace, pod, container)]
    assert "it cannot be a folder or file name" in result.failed[0]["reason"]
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert [w for w in written if not w.startswith(("logs/", "serviceaccount/"))] == []
    assert (export.output / "shop" / "fine" / "app.log").read_text().endswith(" ok\n")


@pytest.mark.parametrize("pod", [
    "a" * 64, "tekton-run-" + "b" * 59, ".".join(["c" * 63] * 3) + "." + "d" * 61,  # 64, 70, 253 characters
    "evil..name", "UPPER_case",  # the API server's rules decide names, not ours
])
def test_every_name_the_api_returns_is_exported(cluster, apiserver, export, pod):
    cluster.add_pod("shop", pod)
    cluster.append_log("shop", pod, "app", ["ok"])
    result = export()
    assert (result.exit_code, result.exported, result.failed) == (0, 1, [])
    assert (export.output / "shop" / pod / "app.log").read_text().endswith(" ok\n")


@pytest.mark.parametrize("state", [True, False])
def test_a_hard_link_to_a_file_outside_is_not_written_through(cluster, apiserver, export, tmp_path, state):
    cluster.add_pod("shop", "web")
    cluster.append_log("shop", "web", "app", ["secret"])
    outside = tmp_path / "outside.txt"
    outside.write_text("precious\n")
    outside.chmod(0o644)
    folder = export.output / "shop" / "web"
    folder.mkdir(parents=True)
    name = "app.log" if state else ".app.log.%d.tmp" % os.getpid()  # --no-state writes aside, then renames
    os.link(outside, folder / name)
    result = export(state=state)
    assert result.exit_code == 1 and "hard links" in result.failed[0]["reason"]
    assert outside.read_text() == "precious\n" and stat.S_IMODE(outside.stat().st_mode) == 0o644


def test_folders_are_private_new_parents_and_old_folders_alike(cluster, apiserver, export, tmp_path):
    cluster.add_pod("shop", "web")
    cluster.append_log("shop", "web", "app", ["hello"])
    output = tmp_path / "new" / "parent" / "logs"
    folders = [tmp_path / "new", tmp_path / "new" / "parent", output, output / "shop", output / "shop" / "web"]
    old_umask = os.umask(0o022)
    try:
        assert export(output=output).ok
        assert [stat.S_IMODE(p.stat().st_mode) for p in folders] == [0o700] * 5
        (output / "shop").chmod(0o755)  # an older run's folder, made under another umask
        (output / "shop" / "web").chmod(0o2770)  # a volume's fsGroup
        assert export(output=output).ok
    finally:
        os.umask(old_umask)
    assert [stat.S_IMODE(p.stat().st_mode) for p in folders] == [0o700] * 4 + [0o2700]


def test_a_symlinked_pod_folder_is_not_followed(cluster, apiserver, export, tmp_path):
    cluster.add_pod("shop", "web")
    cluster.append_log("shop", "web", "app", ["secret"])
    outside = tmp_path / "outside"
    outside.mkdir()
    (export.output / "shop").mkdir(parents=True)
    (export.output / "shop" / "web").symlink_to(outside)
    result = export()
    assert result.exit_code == 1 and "cannot write" in result.failed[0]["reason"]
    assert list(outside.iterdir()) == []


# -- exactly once --------------------------------------------------------------


@pytest.mark.parametrize("ts_format", ["fixed", "trimmed"])
def test_reruns_write_every_line_once_with_shared_seconds_and_equal_timestamps(
        cluster, server_ssl_context, service_account, tmp_path, ts_format):
    cluster.add_pod("shop", "web")
    with FakeAPIServer(cluster, ssl_context=server_ssl_context, tokens={"token-1": SA_USER},
                       ts_format=ts_format) as server:
        out = tmp_path / "logs"
        expected = []
        for round_ in range(4):
            stamps = tricky_lines(cluster, n=9 + round_)  # rounds end mid-second and mid-timestamp
            expected += stamps
            result = export_logs(out, server=server.url, account_dir=service_account, environ={})
            assert result.ok
        lines = (out / "shop" / "web" / "app.log").read_text().splitlines()
        assert len(lines) == len(expected)
        assert [line.split(" ", 1)[1] for line in lines] == [
            "line %d %s" % (i, "x" * (i % 7)) for n in range(9, 13) for i in range(n)]
        assert [kubelogexporter.parse_timestamp(line.split(" ", 1)[0]) for line in lines] == expected
        since = [r.query.get("sinceTime", [None])[0] for r in server.requests
                 if r.path.endswith("/log") and "previous" not in r.query]
        assert since[0] is None  # the first run starts at the beginning; the others at a whole second
        assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", s) for s in since[1:]), since


def test_a_quiet_rerun_writes_nothing(cluster, apiserver, export):
    cluster.add_pod("shop", "web")
    tricky_lines(cluster)
    export()
    before = (export.output / "shop" / "web" / "app.log").read_bytes()
    result = export()
    assert result.ok and result.bytes_written == 0 and result.files == []
    assert (export.output / "shop" / "web" / "app.log").read_bytes() == before


def test_a_finished_container_is_not_asked_again(cluster, apiserver, export):
    cluster.add_pod("batch", "job-1")
    cluster.append_log("batch", "job-1", "app", ["done"])
    cluster.terminate_container("batch", "job-1", "app")
    export()
    export()
    assert len(log_requests(apiserver)) == 1
    assert export().unchanged == 1


@pytest.mark.parametrize("at_byte", [0, 1, 57, 58, 59, 300, 611, 900, 1234, 1500])
def test_a_body_cut_anywhere_resumes_after_the_last_complete_line(cluster, apiserver, api, export, at_byte):
    cluster.add_pod("shop", "web")
    tricky_lines(cluster, n=40)
    apiserver.faults.cut_log(at_byte=at_byte, times=2)
    result = export()
    assert result.ok, result.failed
    assert (export.output / "shop" / "web" / "app.log").read_bytes() == served(api, "shop", "web", "app")
    assert len(log_requests(apiserver)) >= 2  # it really was cut and resumed


def test_cuts_between_runs_and_within_them_add_up_exactly(cluster, apiserver, api, export):
    cluster.add_pod("shop", "web")
    for at_byte in (100, 250, 401, 777):
        tricky_lines(cluster, n=25)
        apiserver.faults.cut_log(at_byte=at_byte)
        assert export().ok
    assert (export.output / "shop" / "web" / "app.log").read_bytes() == served(api, "shop", "web", "app")


def test_a_line_still_being_written_is_left_for_the_next_run(cluster, apiserver, export):
    cluster.add_pod("shop", "web")
    cluster.append_log("shop", "web", "app", ["complete"])
    cluster.pod("shop", "web").containers["app"].current.add(b"2026-11-29T10:00:05.000000000Z half a li")
    export()
    assert (export.output / "shop" / "web" / "app.log").read_text().endswith(" complete\n")


def test_restart_between_runs_exports_the_rest_of_the_previous_instance_first(cluster, apiserver, api, export):
    cluster.add_pod("shop", "web")
    cluster.append_log("shop", "web", "app", ["old %d" % i for i in range(5)])
    export()
    cluster.append_log("shop", "web", "app", ["old after run %d" % i for i in range(5)])
    previous = served(api, "shop", "web", "app")
    cluster.restart_container("shop", "web", "app")
    cluster.append_log("shop", "web", "app", ["new %d" % i for i in range(5)])
    result = export()
    assert result.ok and result.gaps == []
    assert (export.output / "shop" / "web" / "app.log").read_bytes() == previous + served(api, "shop", "web", "app")


def test_restarting_twice_between_runs_is_reported_as_a_gap(cluster, apiserver, api, export):
    cluster.add_pod("shop", "web")
    cluster.append_log("shop", "web", "app", ["first instance"])
    export()
    cluster.restart_container("shop", "web", "app")
    cluster.append_log("shop", "web", "app", ["lost instance"])
    cluster.restart_container("shop", "web", "app")
    cluster.append_log("shop", "web", "app", ["third instance"])
    result = export()
    assert result.exit_code == 0
    assert [g["container"] for g in result.gaps] == ["shop/web/app"]
    text = (export.output / "shop" / "web" / "app.log").read_text()
    assert text.count("first instance") == 1 and text.count("third instance") == 1


def test_first_export_includes_the_previous_instance(cluster, apiserver, api, export):
    cluster.add_pod("shop", "web")
    cluster.append_log("shop", "web", "app", ["crashed"])
    cluster.restart_container("shop", "web", "app")
    cluster.append_log("shop", "web", "app", ["running"])
    export()
    assert (export.output / "shop" / "web" / "app.log").read_bytes() == (
        served(api, "shop", "web", "app", previous=True) + served(api, "shop", "web", "app"))


def test_since_bounds_only_the_first_export(cluster, apiserver, export):
    cluster.add_pod("shop", "web")
    base = 1795946400 * NS
    cluster.append_log("shop", "web", "app", ["early", "boundary", "late"],
                       timestamps=[base, base + 5 * NS + 500_000_000, base + 6 * NS])
    export(since_time="2026-11-29T10:00:05.5Z")
    cluster.append_log("shop", "web", "app", ["later"])
    export(since_time="2026-11-29T10:00:05.9Z")
    lines = (export.output / "shop" / "web" / "app.log").read_text().splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == ["boundary", "late", "later"]


def test_a_lost_state_file_is_recovered_from_the_log_file(cluster, apiserver, api, export):
    cluster.add_pod("shop", "web")
    tricky_lines(cluster, n=13)
    export()
    (export.output / kubelogexporter.STATE_FILENAME).unlink()
    tricky_lines(cluster, n=7)
    assert export().ok
    assert (export.output / "shop" / "web" / "app.log").read_bytes() == served(api, "shop", "web", "app")


@pytest.mark.parametrize("rotate", [False, True])
def test_lines_past_the_last_checkpoint_are_kept_and_continued_not_cut(cluster, apiserver, api, export, rotate):
    cluster.add_pod("shop", "web")
    tricky_lines(cluster)
    export()
    path = export.output / "shop" / "web" / "app.log"
    recorded = path.read_bytes()
    tricky_lines(cluster)
    unrecorded = served(api, "shop", "web", "app")[len(recorded):]
    with open(path, "ab") as handle:  # what a run killed before its checkpoint leaves: lines, then a torn one
        handle.write(unrecorded + b"2026-11-29T10:0")
    if rotate:  # the lines the dead run wrote are now only in the archive
        cluster.rotate_log("shop", "web", "app")
    tricky_lines(cluster, n=5)
    result = export()
    assert result.ok
    expected = recorded + unrecorded + (cluster.log_bytes("shop", "web", "app") if rotate else b"")
    assert path.read_bytes() == (expected if rotate else served(api, "shop", "web", "app"))
    assert bool(result.gaps) == rotate


def test_a_recreated_pod_of_the_same_name_appends_after_the_old_one(cluster, apiserver, api, export):
    cluster.add_pod("shop", "db-0")
    cluster.append_log("shop", "db-0", "app", ["old pod"])
    old = served(api, "shop", "db-0", "app")
    export()
    cluster.delete_pod("shop", "db-0")
    cluster.add_pod("shop", "db-0")
    cluster.append_log("shop", "db-0", "app", ["new pod"], at=cluster_time_after(old))
    export()
    assert (export.output / "shop" / "db-0" / "app.log").read_bytes() == old + served(api, "shop", "db-0", "app")


def cluster_time_after(body):
    last = body.rstrip(b"\n").rsplit(b"\n", 1)[-1]
    return kubelogexporter.parse_timestamp(last.split(b" ", 1)[0].decode()) + NS


# -- the API's answers ---------------------------------------------------------


def test_pods_without_logs_are_skipped_not_failed(cluster, apiserver, export):
    cluster.add_pod("shop", "pending", scheduled=False)
    cluster.add_pod("shop", "starting")
    cluster.set_waiting("shop", "starting", "app", "ContainerCreating")
    cluster.add_pod("shop", "vanishing")
    cluster.append_log("shop", "vanishing", "app", ["bye"])
    apiserver.faults.before_log(lambda *a: cluster.delete_pod("shop", "vanishing"), pod="vanishing")
    result = export()
    assert result.exit_code == 0 and result.failed == []
    reasons = {s["container"]: s["reason"] for s in result.skipped}
    assert set(reasons) == {"shop/pending/app", "shop/starting/app", "shop/vanishing/app"}
    assert "ContainerCreating" in reasons["shop/starting/app"]
    assert reasons["shop/vanishing/app"] == "pod deleted"


def test_a_kubelet_error_after_the_headers_is_reported_not_archived(cluster, apiserver, export):
    cluster.add_pod("shop", "web")
    cluster.append_log("shop", "web", "app", ["good line"])
    apiserver.faults.log_error_tail("shop", "web", "app", "unable to retrieve container logs for containerd://abc")
    result = export()
    assert result.exit_code == 1
    assert "unable to retrieve container logs" in result.failed[0]["reason"]
    text = (export.output / "shop" / "web" / "app.log").read_text()
    assert text.endswith(" good line\n") and "unable" not in text


def test_throttling_waits_for_retry_after(cluster, apiserver, api, export):
    cluster.add_pod("shop", "web")
    cluster.append_log("shop", "web", "app", ["hello"])
    apiserver.faults.throttle(times=1, retry_after=1, path_contains="/pods")
    started = time.monotonic()
    result = export()
    assert result.ok and time.monotonic() - started >= 1.0
    assert [r.status for r in apiserver.requests][:2] == [429, 200]


@pytest.mark.parametrize("status", [500, 503, 504])
def test_server_errors_are_retried(cluster, apiserver, api, export, status):
    cluster.add_pod("shop", "web")
    cluster.append_log("shop", "web", "app", ["hello"])
    apiserver.faults.fail(status=status, times=2, path_contains="/log")
    assert export().ok
    assert (export.output / "shop" / "web" / "app.log").read_bytes() == served(api, "shop", "web", "app")


def test_errors_that_outlast_the_retries_fail_that_container_only(cluster, apiserver, export):
    for name in ("a", "b"):
        cluster.add_pod("shop", name)
        cluster.append_log("shop", name, "app", ["hi from " + name])
    apiserver.faults.fail(status=500, times=None, path_contains="/pods/a/log")
    result = export(retries=2)
    assert result.exit_code == 1
    assert [f["container"] for f in result.failed] == ["shop/a/app"]
    assert (export.output / "shop" / "b" / "app.log").exists()


def test_a_rotated_token_is_read_again_after_a_401(cluster, apiserver, service_account, export):
    for name in ("a", "b", "c"):
        cluster.add_pod("shop", name)
        cluster.append_log("shop", name, "app", ["line"] * 3)

    def rotate(*_):
        (service_account / "token").write_text("token-2")
        apiserver.tokens.clear()
        apiserver.tokens["token-2"] = SA_USER

    apiserver.faults.mid_log(rotate, at_byte=10, pod="a")
    result = export(concurrency=1)
    assert result.ok and result.exported == 3
    assert 401 in [r.status for r in apiserver.requests]
    assert apiserver.requests[-1].status == 200


def test_concurrency_bounds_simultaneous_streams(cluster, apiserver, export):
    gate = threading.Event()
    for i in range(12):
        cluster.add_pod("shop", "web-%d" % i)
        cluster.append_log("shop", "web-%d" % i, "app", ["x" * 100] * 50)
    for i in range(12):  # hold every stream open until several are in flight at once
        apiserver.faults.mid_log(lambda *a: gate.wait(0.2), at_byte=10, pod="web-%d" % i)
    assert export(concurrency=3).ok
    assert apiserver.max_active_log_streams == 3


def test_shards_split_pods_without_overlap(cluster, apiserver, export):
    for i in range(30):
        cluster.add_pod("shop", "web-%d" % i)
        cluster.append_log("shop", "web-%d" % i, "app", ["hi"])
    seen = []
    for index in range(3):
        result = export(shard_index=index, shard_count=3)
        seen.append(sorted(f.split("/")[1] for f in result.files))
        assert (export.output / (".kubelogexporter-state.shard-%d-of-3.json" % index)).exists()
    assert sorted(sum(seen, [])) == sorted("web-%d" % i for i in range(30))
    assert all(seen)  # every shard got some


def test_forbidden_cluster_listing_falls_back_to_the_own_namespace(cluster, apiserver, export):
    apiserver.authorize = lambda user, verb, resource, sub, namespace, **_: namespace == "logging"
    cluster.add_pod("logging", "mine")
    cluster.append_log("logging", "mine", "app", ["mine"])
    cluster.add_pod("shop", "theirs")
    result = export()
    assert result.ok and result.files == ["logging/mine/app.log"]
    assert result.notes == ["cannot list pods in all namespaces (forbidden); exporting namespace logging only"]
    with pytest.raises(kubelogexporter.ApiError) as refused:
        export(all_namespaces=True)
    assert refused.value.status == 403 and "cannot list resource" in refused.value.message


def test_dry_run_lists_urls_and_fetches_nothing(cluster, apiserver, export):
    cluster.add_pod("shop", "web", containers=["app", "proxy"])
    for c in cluster.pod("shop", "web").containers.values():
        c.current.started_at -= 3600 * NS  # running for an hour: no restart can hide behind the listing
    result = export(dry_run=True)
    assert result.planned == [
        apiserver.url + "/api/v1/namespaces/shop/pods/web/log?container=app&timestamps=true",
        apiserver.url + "/api/v1/namespaces/shop/pods/web/log?container=proxy&timestamps=true",
    ]
    assert log_requests(apiserver) == [] and not export.output.exists()


def test_dry_run_shows_the_since_time_and_previous_instance_the_state_implies(cluster, apiserver, export):
    cluster.add_pod("shop", "web")
    cluster.append_log("shop", "web", "app", ["a", "b"], timestamps=[1795946400 * NS, 1795946402_500_000_000])
    assert export().ok
    cluster.restart_container("shop", "web", "app")
    state = json.loads((export.output / kubelogexporter.STATE_FILENAME).read_text())
    before = len(apiserver.requests)
    result = export(dry_run=True)
    base = apiserver.url + "/api/v1/namespaces/shop/pods/web/log?container=app"
    assert result.planned == [base + "&previous=true&sinceTime=2026-11-29T10%3A00%3A01Z&timestamps=true",
                              base + "&timestamps=true"]
    assert [r for r in apiserver.requests[before:] if r.path.endswith("/log")] == []
    assert json.loads((export.output / kubelogexporter.STATE_FILENAME).read_text()) == state


# -- crashes, kills, full disks ------------------------------------------------


def big_log(cluster, pod, mib, start=1795946400):
    """A log of ``mib`` * 5000 lines of 222 bytes, a thousand lines a second from ``start``."""
    line = b"x" * 190
    body = b"".join(b"%s.%09dZ %s\n" % (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(start + i // 1000)).encode(),
                                        (i % 1000) * 1_000_000, line) for i in range(mib * 5000))
    cluster.set_log_bytes("shop", pod, "app", body)
    return body



@pytest.mark.parametrize("signum, code", [(signal.SIGKILL, -9), (signal.SIGTERM, 1)])
def test_a_run_killed_mid_stream_leaves_a_state_the_next_run_completes(
        cluster, apiserver, api, service_account, tmp_path, signum, code):
    cluster.add_pod("shop", "web")
    cluster.append_log("shop", "web", "app", ["before"])
    output = tmp_path / "logs"
    args = cli_args(apiserver, service_account, output)
    assert cli(args).wait() == 0
    before = served(api, "shop", "web", "app")
    body = big_log(cluster, "web", 8, start=1795946500)  # the log rotated, then grew
    release = threading.Event()
    apiserver.faults.mid_log(lambda *a: release.wait(20), at_byte=len(body) // 2)
    path = output / "shop" / "web" / "app.log"
    committed = path.stat().st_size
    proc = cli(args)
    wait_for(lambda: path.stat().st_size > committed + (1 << 20))
    proc.send_signal(signum)
    if signum == signal.SIGTERM:
        assert proc.wait(10) == code  # stops at once, even while the stream is quiet
    release.set()
    assert proc.wait(10) == code
    assert cli(args).wait() == 0
    assert path.read_bytes() == before + body


def test_a_full_disk_fails_the_run_then_a_clean_rerun_completes_it(cluster, apiserver, api, service_account, tmp_path):
    import resource

    cluster.add_pod("shop", "web")
    cluster.append_log("shop", "web", "app", ["small"])
    cluster.add_pod("shop", "big")
    big_log(cluster, "big", 1)
    output = tmp_path / "logs"
    args = cli_args(apiserver, service_account, output)

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))

    proc = cli(args, preexec_fn=limit_file_size)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert "error: shop/big/app: cannot write shop/big/app.log: File too large" in err
    big = output / "shop" / "big" / "app.log"
    assert not big.exists() or big.stat().st_size == 0  # nothing half-written is left behind
    assert (output / "shop" / "web" / "app.log").read_bytes() == served(api, "shop", "web", "app")
    assert cli(args).wait() == 0
    assert big.read_bytes() == served(api, "shop", "big", "app")
    assert (output / "shop" / "web" / "app.log").read_bytes() == served(api, "shop", "web", "app")


def test_memory_stays_flat_whatever_the_log_size(cluster, apiserver, service_account, tmp_path):
    peaks = {}
    for mib in (4, 64):
        cluster.add_pod("shop", "log-%d" % mib)
        big_log(cluster, "log-%d" % mib, mib)
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forking parent (this test server).
        code = ("import re, sys, kubelogexporter; rc = kubelogexporter.main(sys.argv[1:]); "
                "print(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)); sys.exit(rc)")
        args = cli_args(apiserver, service_account, tmp_path / str(mib)) + ["-q", "--field-selector",
                                                                          "metadata.name=log-%d" % mib]
        proc = subprocess.run([sys.executable, "-c", code] + args, capture_output=True, text=True, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr
        print(mib, "MiB log:", int(proc.stdout) / 1024, "MiB peak")
        assert (tmp_path / str(mib) / "shop" / ("log-%d" % mib) / "app.log").stat().st_size == mib * 5000 * 222
        peaks[mib] = int(proc.stdout) / 1024  # KiB -> MiB
    assert peaks[64] - peaks[4] < 4, peaks
    assert peaks[64] < 40, peaks  # the interpreter, and compiling the 4,500-line module (about 15 MiB at its peak)


# -- gaps: lines the API no longer has -------------------------------------------


def test_a_rotation_between_runs_is_reported_with_its_bounds(cluster, apiserver, api, export):
    cluster.add_pod("shop", "web")
    cluster.append_log("shop", "web", "app", ["a", "b"], timestamps=[1795946400 * NS, 1795946401 * NS])
    export()
    cluster.append_log("shop", "web", "app", ["rotated away"], timestamps=[1795946402 * NS])
    cluster.rotate_log("shop", "web", "app")
    cluster.append_log("shop", "web", "app", ["after rotation"], timestamps=[1795946403 * NS + 5])
    result = export()
    assert result.exit_code == 0
    assert [(g["container"], g["since"], g["until"]) for g in result.gaps] == [
        ("shop/web/app", "2026-11-29T10:00:01.000000000Z", "2026-11-29T10:00:03.000000005Z")]
    assert (export.output / "shop" / "web" / "app.log").read_text().splitlines()[-1].endswith(" after rotation")


def test_a_rotation_to_an_empty_file_is_a_gap_until_now(cluster, apiserver, export):
    cluster.add_pod("shop", "web")
    cluster.append_log("shop", "web", "app", ["a"])
    export()
    cluster.rotate_log("shop", "web", "app")
    assert [g["until"] for g in export().gaps] == [None]


def test_no_gap_is_reported_when_none_happened(cluster, apiserver, export):
    cluster.add_pod("shop", "web")
    for _ in range(3):
        tricky_lines(cluster, n=6)  # ends mid-timestamp: the cursor's group is partly in the next run
        result = export()
        assert result.gaps == [] and result.ok
    cluster.restart_container("shop", "web", "app")
    assert export().gaps == []
    assert export().gaps == []  # quiet rerun


def test_gaps_reach_the_summary_and_json(cluster, apiserver, service_account, tmp_path, capsys):
    cluster.add_pod("shop", "web")
    cluster.append_log("shop", "web", "app", ["a"])
    args = ["--server", apiserver.url, "--token-file", str(service_account / "token"),
            "--ca-file", str(service_account / "ca.crt"), "-o", str(tmp_path / "logs")]
    assert kubelogexporter.main(args) == 0
    cluster.rotate_log("shop", "web", "app")
    capsys.readouterr()
    assert kubelogexporter.main(args + ["--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["gaps"][0]["container"] == "shop/web/app"
    assert "warning: shop/web/app: the log rotated before its lines after 2026-11-29T10:00:00.000000000Z" in err
    assert err.rstrip().endswith("1 with gaps")


# -- restarts, recreated pods and unterminated lines ------------------------------


def texts(path):
    return [line.split(" ", 1)[1] for line in path.read_text().splitlines()]


def restart_with(cluster, *lines):
    def restart(*_):  # the container restarts after the listing said it had not, and logs right away
        cluster.restart_container("shop", "web", "app")
        cluster.append_log("shop", "web", "app", list(lines), at=time.time_ns())
    return restart


def test_a_restart_after_the_listing_loses_no_line_of_the_old_instance(cluster, apiserver, export):
    cluster.add_pod("shop", "web")
    cluster.append_log("shop", "web", "app", ["old 0", "old 1"])
    assert export().ok
    cluster.append_log("shop", "web", "app", ["old after run"])
    apiserver.faults.before_log(restart_with(cluster, "new 0", "new 1"), pod="web")
    result = export()
    assert result.ok and result.gaps == []
    assert export().ok and export().gaps == []
    assert texts(export.output / "shop" / "web" / "app.log") == ["old 0", "old 1", "old after run", "new 0", "new 1"]


def test_a_restart_after_the_listing_of_a_first_export_keeps_the_first_instance(cluster, apiserver, export):
    cluster.add_pod("shop", "web")
    cluster.append_log("shop", "web", "app", ["first 0", "first 1"])
    apiserver.faults.before_log(restart_with(cluster, "second 0"), pod="web")
    assert export().ok and export().ok
    assert texts(export.output / "shop" / "web" / "app.log") == ["first 0", "first 1", "second 0"]


@pytest.mark.parametrize("finish", ["restart", "terminate"])
def test_the_last_line_of_an_ended_instance_counts_without_its_newline(cluster, apiserver, export, finish):
    cluster.add_pod("shop", "web")
    cluster.append_log("shop", "web", "app", ["hello"])
    # The runtime writes output left without a newline at exit as a partial entry: served without one.
    cluster.pod("shop", "web").containers["app"].current.add(b"2026-11-29T10:00:05.000000000Z bye")
    if finish == "restart":
        export()
        cluster.restart_container("shop", "web", "app")
        cluster.append_log("shop", "web", "app", ["again"], at=1795946410 * NS)
    else:
        cluster.terminate_container("shop", "web", "app")
    for _ in range(3):
        assert export().ok
    expected = ["hello", "bye"] + (["again"] if finish == "restart" else [])
    assert texts(export.output / "shop" / "web" / "app.log") == expected
    if finish == "terminate":
        assert export().unchanged == 1  # final: not asked again


@pytest.mark.parametrize("options", [{"gzip": True}, {"timestamps": False}, {}])
def test_a_pod_recreated_after_the_listing_is_not_written_twice(cluster, apiserver, export, options):
    cluster.add_pod("shop", "db-0")
    cluster.append_log("shop", "db-0", "app", ["old pod"])
    assert export(**options).ok

    def recreate(*_):  # a StatefulSet replaces db-0 while the run is busy elsewhere
        cluster.delete_pod("shop", "db-0")
        cluster.add_pod("shop", "db-0")
        cluster.append_log("shop", "db-0", "app", ["new pod %d" % i for i in range(3)], at=time.time_ns())

    apiserver.faults.before_log(recreate, pod="db-0")
    r = export(**options)
    assert [g["reason"].split(" before ")[0] for g in r.gaps] == ["the pod was replaced by another of its name"]
    assert export(**options).gaps == []
    path = export.output / "shop" / "db-0" / ("app.log.gz" if options.get("gzip") else "app.log")
    data = gzip.decompress(path.read_bytes()) if options.get("gzip") else path.read_bytes()
    assert data.count(b"old pod") == 1 and data.count(b"new pod 0") == 1, data


def rotated_since_the_listing(cluster, apiserver, export, then=None):
    """web exported, then its log rotates after the next run's listing (before its first request) and a line is
    written: the one case in which a gap asks the API whether the pod was replaced.  ``then()`` is called after the
    rotation.  Returns what the file holds after that run."""
    cluster.add_pod("shop", "web")
    cluster.append_log("shop", "web", "app", ["a", "b"])
    assert export().ok
    cluster.append_log("shop", "web", "app", ["rotated away"])

    def rotate(*_):
        cluster.rotate_log("shop", "web", "app")
        cluster.append_log("shop", "web", "app", ["after rotation"], at=time.time_ns())
        if then is not None:
            then()

    apiserver.faults.before_log(rotate, pod="web")
    return ["a", "b", "after rotation"]


def gap_causes(result):
    return [g["reason"].split(" before ")[0] for g in result.gaps]


def lists_by_name(apiserver):
    return [r for r in apiserver.requests if "metadata.name=" in r.query.get("fieldSelector", [""])[0]]


@pytest.mark.parametrize("fault", ["stop", "malformed", "failing"])
def test_the_question_whether_a_pod_was_replaced_never_costs_its_gap(cluster, apiserver, export, fault):
    """That list only words the gap: a stop during it, an answer no API server sends or an error leave the gap
    reported as a rotation, with the lines after it written."""
    by_name, stop = "fieldSelector=metadata.name", threading.Event()
    if fault == "stop":  # SIGTERM while the list waits to be tried again (the read before it takes milliseconds)
        apiserver.faults.fail(503, times=None, path_contains=by_name)
    elif fault == "malformed":
        apiserver.faults.answer({"kind": "PodList", "apiVersion": "v1", "metadata": {},
                                 "items": [{"metadata": None}, {"metadata": {"uid": 7}}]}, path_contains=by_name)
    else:
        apiserver.faults.fail(403, times=None, path_contains=by_name)
    want = rotated_since_the_listing(cluster, apiserver, export,
                                     then=lambda: threading.Timer(0.5, stop.set).start() if fault == "stop" else None)
    options = {"stop_event": stop, "backoff": 5.0} if fault == "stop" else {}
    r = export(**options)
    assert gap_causes(r) == ["the log rotated"], r.gaps
    assert len(lists_by_name(apiserver)) >= 1
    assert texts(export.output / "shop" / "web" / "app.log") == want


def test_a_pod_replaced_after_the_rotated_log_was_read_leaves_the_gap_a_rotation(cluster, apiserver, export):
    """The question comes after the read: a pod made after the lines read (by more than the clocks may differ)
    did not write them."""
    want = rotated_since_the_listing(cluster, apiserver, export)

    def replace(*_):  # while the old pod's rotated log is served, a new pod takes the name (as the list will say)
        pod = cluster.pod("shop", "web")
        pod.uid, pod.created = "a-new-uid", time.time_ns() + 10 * NS

    apiserver.faults.mid_log(replace, at_byte=1, pod="web")
    r = export()
    assert gap_causes(r) == ["the log rotated"], r.gaps
    assert len(lists_by_name(apiserver)) == 1
    assert texts(export.output / "shop" / "web" / "app.log") == want


def test_a_log_rotated_before_the_listing_costs_no_request_more(cluster, apiserver, export):
    cluster.add_pod("shop", "web")
    cluster.append_log("shop", "web", "app", ["a", "b"])
    assert export().ok
    cluster.rotate_log("shop", "web", "app")
    cluster.append_log("shop", "web", "app", ["after rotation"])  # stamped long before the listing
    r = export()
    assert gap_causes(r) == ["the log rotated"] and lists_by_name(apiserver) == []


def test_a_pruned_container_record_continues_from_its_file(cluster, apiserver, api, export):
    cluster.add_pod("shop", "web", labels={"app": "web"})
    cluster.append_log("shop", "web", "app", ["line %d" % i for i in range(5)])
    assert export(gzip=True).ok
    state_path = export.output / kubelogexporter.STATE_FILENAME
    state = json.loads(state_path.read_text())
    for entry in state["containers"].values():
        entry["seen"] -= kubelogexporter.STATE_FORGET_AFTER + 10  # unseen for longer than the state keeps it
    state_path.write_text(json.dumps(state))
    assert export(gzip=True, selector="app=other").ok
    assert json.loads(state_path.read_text())["containers"] == {}
    cluster.append_log("shop", "web", "app", ["new"])
    assert export(gzip=True).ok
    assert gzip.decompress((export.output / "shop" / "web" / "app.log.gz").read_bytes()) == served(
        api, "shop", "web", "app")


def test_the_records_of_files_gone_from_the_disk_are_dropped_and_the_written_ones_kept(cluster, apiserver, export):
    for name in ("web", "db"):
        cluster.add_pod("shop", name)
        cluster.append_log("shop", name, "app", ["hello from %s" % name])
    assert export().ok
    cluster.delete_pod("shop", "db")
    (export.output / "shop" / "db" / "app.log").unlink()
    cluster.append_log("shop", "web", "app", ["more"])
    assert export().ok
    files = json.loads((export.output / kubelogexporter.STATE_FILENAME).read_text())["files"]
    assert sorted(files) == ["shop/web/app.log"]


@pytest.mark.parametrize("flag", ["--gzip", "--no-timestamps"])
def test_a_first_export_killed_midway_is_completed_by_the_next_run(
        cluster, apiserver, api, service_account, tmp_path, flag):
    cluster.add_pod("shop", "web")
    body = big_log(cluster, "web", 8)
    release = threading.Event()
    apiserver.faults.mid_log(lambda *a: release.wait(20), at_byte=len(body) // 2)
    args = cli_args(apiserver, service_account, tmp_path / "logs") + [flag]
    proc = cli(args)
    wait_for(lambda: any(r.path.endswith("/log") and r.bytes_sent >= len(body) // 2 for r in apiserver.requests))
    path = tmp_path / "logs" / "shop" / "web" / ("app.log.gz" if flag == "--gzip" else "app.log")
    wait_for(lambda: path.exists() and path.stat().st_size > 0)  # it has written part of what it received
    proc.kill()
    proc.wait()
    release.set()
    assert cli(args).wait() == 0
    path = tmp_path / "logs" / "shop" / "web" / ("app.log.gz" if flag == "--gzip" else "app.log")
    if flag == "--gzip":
        assert gzip.decompress(path.read_bytes()) == body
    else:
        assert path.read_bytes() == b"".join(line.split(b" ", 1)[1] + b"\n" for line in body.splitlines())


def test_a_state_file_that_cannot_be_saved_fails_the_run_in_one_line(cluster, apiserver, service_account, tmp_path):
    cluster.add_pod("shop", "web")
    cluster.append_log("shop", "web", "app", ["hello"])
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / (kubelogexporter.STATE_FILENAME + ".tmp")).mkdir()  # stands in for ENOSPC or EROFS
    proc = cli(cli_args(apiserver, service_account, tmp_path / "logs"))
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1 and "Traceback" not in err
    assert "error: cannot save the state file" in err
    assert "%s.tmp: Is a directory" % kubelogexporter.STATE_FILENAME in err  # the file the error is about


def test_sigterm_is_acted_on_while_the_queue_is_full(cluster, apiserver, service_account, tmp_path):
    for i in range(10):
        cluster.add_pod("shop", "p%d" % i)
        cluster.append_log("shop", "p%d" % i, "app", ["x" * 100] * 100)
    release = threading.Event()
    apiserver.faults.mid_log(lambda *a: release.wait(30), at_byte=10, pod="p0")  # a quiet stream
    proc = cli(cli_args(apiserver, service_account, tmp_path / "logs"))
    try:
        wait_for(lambda: any(r.path.endswith("/pods/p0/log") and r.bytes_sent >= 10 for r in apiserver.requests))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 1
    finally:
        release.set()
        proc.kill()
        proc.wait()


def test_the_state_records_files_only_after_flushing_them(cluster, apiserver, export, monkeypatch):
    calls = []
    real_durable, real_write = kubelogexporter._make_durable, kubelogexporter._atomic_write
    monkeypatch.setattr(kubelogexporter, "_make_durable",
                        lambda root, paths: calls.append(("flush", sorted(paths))) or real_durable(root, paths))
    monkeypatch.setattr(kubelogexporter, "_atomic_write",
                        lambda path, data: calls.append(("state", sorted(json.loads(data)["files"])))
                        or real_write(path, data))
    for name in ("a", "b"):
        cluster.add_pod("shop", name)
        cluster.append_log("shop", name, "app", ["hello"])
    assert export().ok
    assert calls == [("flush", ["shop/a/app.log", "shop/b/app.log"]), ("state", ["shop/a/app.log", "shop/b/app.log"])]


def test_a_first_export_asks_for_the_previous_instance_only_when_a_restart_could_hide(cluster, apiserver, export):
    now = time.time_ns()
    hours_ago = now - 3 * 3600 * NS
    for name in ("old", "late", "young", "new"):
        cluster.add_pod("shop", name)
    for name in ("old", "late"):
        cluster.pod("shop", name).containers["app"].current.started_at = hours_ago
    cluster.pod("shop", "young").containers["app"].current.started_at = now - 10 * NS
    cluster.append_log("shop", "old", "app", ["logged hours before the run"], at=hours_ago)
    cluster.append_log("shop", "late", "app", ["quiet for hours, then logged just now"], at=now)
    cluster.append_log("shop", "young", "app", ["started and logged 10 s before the run"], at=now - 10 * NS)
    cluster.append_log("shop", "new", "app", ["started and logged just now"], at=now)
    assert export(concurrency=1).ok
    asked = [(r.path.split("/")[6], "previous" in r.query) for r in log_requests(apiserver)]
    assert asked.count(("old", False)) == 1 and ("old", True) not in asked  # one request
    assert [a for a in asked if a[0] == "young"] == [("young", True), ("young", False)]  # a quick 400 first
    # late: its log (stopped before writing), previous (400: none), its log again
    assert [a for a in asked if a[0] == "late"] == [("late", False), ("late", True), ("late", False)]
    # new: its first line is as recent as the 400 (within CLOCK_SKEW_SECONDS), as a new instance's would be
    assert [a for a in asked if a[0] == "new"] == [("new", True), ("new", False)] * 2


def test_a_young_container_that_cannot_restart_is_read_with_one_request(cluster, apiserver, export):
    """restartPolicy Never (Jobs), or an ephemeral container: the listed instance is the only one, so a young one
    needs no previous=true first. A native sidecar (an init container with restartPolicy Always) still does."""
    cluster.add_pod("batch", "job-x", init_containers=["sidecar"], ephemeral_containers=["debug"],
                    restart_policy="Never")
    pod = cluster.pod("batch", "job-x")
    for c in pod.containers.values():
        c.state, c.reason, c.current.started = "running", "", True
    for name in ("app", "debug", "sidecar"):
        cluster.append_log("batch", "job-x", name, ["%s started just now" % name], at=time.time_ns() - 10 * NS)
    real_to_json = pod.to_json

    def with_sidecar():
        doc = real_to_json()
        doc["spec"]["initContainers"][0]["restartPolicy"] = "Always"
        return doc

    pod.to_json = with_sidecar
    assert export(concurrency=1).ok
    asked = [(r.path.split("/")[-2], r.query.get("container", [""])[0], "previous" in r.query)
             for r in log_requests(apiserver)]
    assert sorted(asked) == [("job-x", "app", False), ("job-x", "debug", False),
                             ("job-x", "sidecar", False), ("job-x", "sidecar", True)]
    for name in ("app", "debug", "sidecar"):
        assert (export.output / "batch/job-x" / (name + ".log")).read_bytes() == cluster.log_bytes("batch", "job-x", name)


def test_lines_longer_than_the_read_buffer_arrive_whole(cluster, apiserver, api, export):
    cluster.add_pod("shop", "web")
    cluster.append_log("shop", "web", "app", ["short", "y" * (3 * kubelogexporter.BLOCK_SIZE), "short again"])
    cluster.terminate_container("shop", "web", "app")
    cluster.pod("shop", "web").containers["app"].current.add(b"2026-11-29T10:00:09.000000000Z " + b"z" * 2_500_000)
    assert export().ok
    assert (export.output / "shop" / "web" / "app.log").read_bytes() == served(api, "shop", "web", "app") + b"\n"


def test_a_young_first_export_restarted_after_the_listing_reports_no_gap_later(cluster, apiserver, export):
    cluster.add_pod("shop", "web")
    cluster.append_log("shop", "web", "app", ["first 0", "first 1"], at=time.time_ns())
    apiserver.faults.before_log(restart_with(cluster, "second 0"), pod="web")
    first = export()
    assert first.ok and first.gaps == []
    assert export().gaps == []  # the quiet rerun numbers the instances right
    assert texts(export.output / "shop" / "web" / "app.log") == ["first 0", "first 1", "second 0"]


def test_a_crash_torn_plain_file_without_state_is_continued_not_doubled(cluster, apiserver, export):
    cluster.add_pod("shop", "web")
    cluster.append_log("shop", "web", "app", ["line %d" % i for i in range(5)])
    assert export().ok
    (export.output / kubelogexporter.STATE_FILENAME).unlink()       # state lost...
    path = export.output / "shop" / "web" / "app.log"
    with open(path, "ab") as f:                                       # ...and a crash tore the last write
        f.write(b"2026-11-29T10:00:00.006000000Z li")
    cluster.append_log("shop", "web", "app", ["line 5"])
    assert export().ok
    body = cluster.log_bytes("shop", "web", "app")
    assert path.read_bytes() == body, path.read_bytes().count(b"line 0")


def test_recover_anchor_unit(tmp_path):
    p = tmp_path / "f.log"
    p.write_bytes(b"2026-11-29T10:00:00.000000000Z a\n2026-11-29T10:00:01.000000000Z b\n2026-11-29T10:00:02.0")
    anchor, complete = kubelogexporter._recover_anchor(p, compressed=False)
    assert complete == 66
    assert anchor == (kubelogexporter.parse_timestamp("2026-11-29T10:00:01Z"), 1,
                      zlib.crc32(b"2026-11-29T10:00:01.000000000Z b"))


def test_a_refused_log_leaves_no_empty_file(cluster, apiserver, export):
    apiserver.authorize = lambda user, verb, resource, sub, namespace, **_: sub != "log"
    cluster.add_pod("shop", "web")
    cluster.append_log("shop", "web", "app", ["secret"])
    result = export()
    assert result.exit_code == 3 and not (export.output / "shop" / "web" / "app.log").exists()
