"""Follow mode: lines archived as they are written, pods found by a watch, the same exactness as batch runs."""

import gzip
import json
import signal
import subprocess
import sys
import time
import zlib

import pytest

import kubelogexporter
from kubelogexporter import export_logs

from conftest import wait_for

from conftest import ROOT  # noqa: E402


@pytest.fixture
def served(cluster):
    """What the file must hold: the container's log as the server renders it (fixed timestamps)."""
    return lambda namespace, pod, container, previous=False: cluster.log_bytes(namespace, pod, container, previous)



def content(path):
    return path.read_bytes() if path.exists() else b""


def test_lines_reach_the_file_as_they_are_written(cluster, apiserver, served, follow):
    cluster.add_pod("shop", "web")
    path = follow.output / "shop" / "web" / "app.log"
    with follow() as outcome:
        for i in range(3):
            cluster.append_log("shop", "web", "app", ["burst %d line %d" % (i, j) for j in range(5)])
            wait_for(lambda: content(path) == served("shop", "web", "app"))
    assert outcome["result"].exit_code == 0
    assert path.read_bytes() == served("shop", "web", "app")


def test_pods_created_and_deleted_while_following(cluster, apiserver, served, follow):
    cluster.add_pod("shop", "old")
    cluster.append_log("shop", "old", "app", ["old pod"])
    with follow():
        wait_for(lambda: content(follow.output / "shop" / "old" / "app.log").endswith(b" old pod\n"))
        cluster.add_pod("shop", "new", containers=["app", "sidecar"])
        cluster.append_log("shop", "new", "app", ["new pod"])
        cluster.append_log("shop", "new", "sidecar", ["sidecar"])
        wait_for(lambda: content(follow.output / "shop" / "new" / "sidecar.log").endswith(b" sidecar\n"))
        wait_for(lambda: content(follow.output / "shop" / "new" / "app.log").endswith(b" new pod\n"))
        cluster.append_log("shop", "old", "app", ["last words"])
        expected = served("shop", "old", "app")
        cluster.delete_pod("shop", "old")
        wait_for(lambda: content(follow.output / "shop" / "old" / "app.log") == expected)
    assert any(r.query.get("watch") == ["true"] for r in apiserver.requests)


def test_a_restart_while_following_keeps_both_instances(cluster, apiserver, served, follow):
    cluster.add_pod("shop", "web")
    cluster.append_log("shop", "web", "app", ["first instance"])
    path = follow.output / "shop" / "web" / "app.log"
    with follow():
        wait_for(lambda: content(path).endswith(b" first instance\n"))
        cluster.append_log("shop", "web", "app", ["dying words"])
        previous = served("shop", "web", "app")
        cluster.restart_container("shop", "web", "app")
        cluster.append_log("shop", "web", "app", ["second instance"])
        wait_for(lambda: content(path) == previous + served("shop", "web", "app"))
        cluster.append_log("shop", "web", "app", ["still second"])
        wait_for(lambda: content(path) == previous + served("shop", "web", "app"))


def test_streams_cut_again_and_again_lose_and_double_nothing(cluster, apiserver, served, follow):
    cluster.add_pod("shop", "web")
    apiserver.faults.cut_log(at_byte=100, times=3)  # streams cut as they open...
    path = follow.output / "shop" / "web" / "app.log"
    with follow():
        for i in range(6):
            if i % 2:
                apiserver.faults.cut_open_log("shop", "web", "app")  # ...and while they are open, mid-line
            cluster.append_log("shop", "web", "app", ["round %d line %d" % (i, j) for j in range(7)], step_ns=0)
            wait_for(lambda: content(path) == served("shop", "web", "app"))
    assert len([r for r in apiserver.requests if r.path.endswith("/log") and "previous" not in r.query]) >= 7


def test_more_containers_than_streams_take_turns(cluster, apiserver, served, follow):
    for i in range(5):
        cluster.add_pod("shop", "web-%d" % i)
    with follow(concurrency=2) as outcome:
        for i in range(5):
            cluster.append_log("shop", "web-%d" % i, "app", ["hello from %d" % i])
        for i in range(5):
            wait_for(lambda: content(follow.output / "shop" / ("web-%d" % i) / "app.log")
                     == served("shop", "web-%d" % i, "app"))
    result = outcome["result"]
    assert result.notes and "more containers match than --concurrency allows streams (2)" in result.notes[0]


def test_concurrency_caps_the_open_streams(cluster, apiserver, served, follow, monkeypatch):
    monkeypatch.setattr(kubelogexporter, "IDLE_RELEASE_SECONDS", 60.0)  # no turns: the cap alone is measured
    for i in range(5):
        cluster.add_pod("shop", "web-%d" % i)
        cluster.append_log("shop", "web-%d" % i, "app", ["hello"])
    with follow(concurrency=3):
        wait_for(lambda: len(list(follow.output.rglob("*.log"))) == 3)
        wait_for(lambda: apiserver.active_log_streams == 3)
    assert apiserver.max_active_log_streams == 3


def test_sigterm_then_a_batch_run_continues_exactly(cluster, apiserver, served, service_account, tmp_path):
    cluster.add_pod("shop", "web")
    cluster.append_log("shop", "web", "app", ["before"])
    output = tmp_path / "logs"
    path = output / "shop" / "web" / "app.log"
    args = [sys.executable, str(ROOT / "kubelogexporter.py"), "--server", apiserver.url,
            "--token-file", str(service_account / "token"), "--ca-file", str(service_account / "ca.crt"),
            "-o", str(output)]
    proc = subprocess.Popen(args + ["--follow"], stderr=subprocess.PIPE, text=True)
    try:
        cluster.append_log("shop", "web", "app", ["while following %d" % i for i in range(20)], step_ns=0)
        wait_for(lambda: content(path) == served("shop", "web", "app"))
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert time.monotonic() - started < 5
    finally:
        proc.kill()
        proc.wait()
    cluster.append_log("shop", "web", "app", ["after %d" % i for i in range(20)], step_ns=0)
    assert subprocess.run(args).returncode == 0
    assert path.read_bytes() == served("shop", "web", "app")


def test_follow_says_the_concurrency_note_once_and_counts_pods(cluster, apiserver, service_account, tmp_path):
    for i in range(3):
        cluster.add_pod("shop", "web-%d" % i)
        cluster.append_log("shop", "web-%d" % i, "app", ["hello"])
    args = [sys.executable, str(ROOT / "kubelogexporter.py"), "--server", apiserver.url,
            "--token-file", str(service_account / "token"), "--ca-file", str(service_account / "ca.crt"),
            "-o", str(tmp_path / "logs"), "--follow", "--concurrency", "1", "--json"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: list((tmp_path / "logs").rglob("*.log")))  # streaming, the others waiting their turn
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert err.count("more containers match than --concurrency allows") == 1, err
    assert "from 3 pods" in err and json.loads(out)["pods"] == 3


def test_follow_excludes_dry_run_and_no_state(tmp_path, service_account):
    for options in ({"dry_run": True}, {"state": False}):
        with pytest.raises(kubelogexporter.ConfigError, match="follow mode keeps a state"):
            export_logs(tmp_path, account_dir=service_account, environ={}, follow=True, **options)


# -- turns, exits, quiet lines and signals --------------------------------------


def log_reqs(apiserver, pod):
    return [r for r in apiserver.requests if r.path.endswith("/pods/%s/log" % pod)]


def test_a_yield_asked_while_the_stream_opens_is_not_lost(cluster, apiserver, follow):
    cluster.add_pod("shop", "quiet")
    apiserver.faults.before_log(lambda *a: time.sleep(1.0), pod="quiet")  # a slow kubelet answer
    with follow(concurrency=1):
        wait_for(lambda: log_reqs(apiserver, "quiet"))
        cluster.add_pod("shop", "busy")
        cluster.append_log("shop", "busy", "app", ["waiting for a stream"])
        wait_for(lambda: content(follow.output / "shop" / "busy" / "app.log").endswith(b"waiting for a stream\n"),
                 timeout=8)


def test_the_last_line_of_a_container_that_exits_while_followed(cluster, apiserver, follow):
    cluster.add_pod("shop", "web")
    cluster.append_log("shop", "web", "app", ["hello"])
    real = apiserver._follow

    def slow_end(*a, **k):  # the kubelet notices the exit after the API server has reported it
        yield from real(*a, **k)
        time.sleep(0.5)

    apiserver._follow = slow_end
    path = follow.output / "shop" / "web" / "app.log"
    with follow():
        wait_for(lambda: content(path).endswith(b" hello\n"))
        cluster.pod("shop", "web").containers["app"].current.add(b"2026-11-29T10:00:05.000000000Z bye")
        cluster.terminate_container("shop", "web", "app")
        wait_for(lambda: content(path).endswith(b" bye\n"), timeout=6)


def read_log(path, compressed):
    """A followed file's text so far (of a gzip file: its members, the last one possibly still open)."""
    data, text = content(path), []
    while compressed and data:
        member = zlib.decompressobj(31)
        text.append(member.decompress(data))
        data = member.unused_data if member.eof else b""
    return b"".join(text) if compressed else data


@pytest.mark.parametrize("compressed", [False, True])
def test_a_pod_recreated_under_its_name_while_followed_has_one_writer(cluster, apiserver, follow, compressed):
    cluster.add_pod("shop", "db-0")
    cluster.append_log("shop", "db-0", "app", ["old pod"])
    path = follow.output / "shop" / "db-0" / ("app.log.gz" if compressed else "app.log")
    with follow(gzip=compressed):
        wait_for(lambda: read_log(path, compressed).endswith(b" old pod\n"))
        old = cluster.log_bytes("shop", "db-0", "app")
        # It exits mid-line (its record never becomes final), then a StatefulSet replaces the pod at once.
        cluster.pod("shop", "db-0").containers["app"].current.add(b"2026-11-29T10:00:05.000000000Z bye")
        old += b"2026-11-29T10:00:05.000000000Z bye\n"
        cluster.terminate_container("shop", "db-0", "app")
        wait_for(lambda: read_log(path, compressed) == old)
        with cluster.lock:
            cluster.delete_pod("shop", "db-0")
            cluster.add_pod("shop", "db-0")
            cluster.append_log("shop", "db-0", "app", ["new pod 0"], at=time.time_ns())
        for i in range(1, 20):
            cluster.append_log("shop", "db-0", "app", ["new pod %d" % i])
        # Two streams writing one file at once would interleave or corrupt it (the gzip members).
        wait_for(lambda: read_log(path, compressed) == old + cluster.log_bytes("shop", "db-0", "app"))
    if compressed:  # every member closed at the end: the file decompresses whole
        assert gzip.decompress(path.read_bytes()) == old + cluster.log_bytes("shop", "db-0", "app")


@pytest.mark.parametrize("compressed", [False, True])
def test_a_followed_line_then_silence_is_checkpointed(cluster, apiserver, follow, monkeypatch, compressed):
    monkeypatch.setattr(kubelogexporter, "CHECKPOINT_SECONDS", 0.2)
    monkeypatch.setattr(kubelogexporter, "STATE_SAVE_INTERVAL", 0.2)
    cluster.add_pod("shop", "web")
    path = follow.output / "shop" / "web" / ("app.log.gz" if compressed else "app.log")
    state = follow.output / kubelogexporter.STATE_FILENAME

    def recorded():
        if not state.exists():
            return False
        record = json.loads(state.read_text())["files"].get("shop/web/app.log" + (".gz" if compressed else ""))
        return bool(record) and record["size"] == path.stat().st_size

    with follow(gzip=compressed):
        wait_for(lambda: log_reqs(apiserver, "web"))
        cluster.append_log("shop", "web", "app", ["one quiet line"])
        wait_for(recorded)  # no further data arrives: the supervisor checkpoints it
        assert read_log(path, compressed).endswith(b" one quiet line\n")


def test_memory_of_follow_mode_does_not_grow_with_batch_sized_buffers_per_stream(
        cluster, apiserver, service_account, tmp_path):
    """32 streams, each across a restart: with a batch-sized (1 MiB) buffer per stream this peaks 32 MiB higher."""
    for i in range(32):
        cluster.add_pod("shop", "web-%d" % i)
        cluster.append_log("shop", "web-%d" % i, "app", ["first instance " + "x" * 1000] * 50)
    code = ("import re, sys, kubelogexporter; rc = kubelogexporter.main(sys.argv[1:]); "
            "sys.stdout.write(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)); sys.exit(rc)")
    output = tmp_path / "logs"
    args = ["--server", apiserver.url, "--token-file", str(service_account / "token"),
            "--ca-file", str(service_account / "ca.crt"), "-o", str(output), "--follow", "--concurrency", "32"]
    proc = subprocess.Popen([sys.executable, "-c", code] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT)
    try:
        wait_for(lambda: all(content(output / "shop" / ("web-%d" % i) / "app.log").count(b"first instance") == 50
                             for i in range(32)), timeout=30)
        for i in range(32):
            cluster.restart_container("shop", "web-%d" % i, "app")  # CrashLoopBackOff does this all day
            cluster.append_log("shop", "web-%d" % i, "app", ["second instance " + "y" * 1000] * 50)
        wait_for(lambda: all(content(output / "shop" / ("web-%d" % i) / "app.log").count(b"second instance") == 50
                             for i in range(32)), timeout=30)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    peak_mib = int(out) / 1024
    print("follow, 32 streams: %.1f MiB peak" % peak_mib)
    assert peak_mib < 40


def test_a_followed_line_arriving_in_pieces_is_never_checkpointed_in_its_middle(cluster, apiserver, follow,
                                                                               monkeypatch):
    monkeypatch.setattr(kubelogexporter, "STATE_SAVE_INTERVAL", 0.1)
    cluster.add_pod("shop", "web")
    cluster.append_log("shop", "web", "app", ["before"])
    path = follow.output / "shop" / "web" / "app.log"
    state = follow.output / kubelogexporter.STATE_FILENAME
    instance = cluster.pod("shop", "web").containers["app"].current

    def recorded_size():
        return json.loads(state.read_text())["files"]["shop/web/app.log"]["size"] if state.exists() else 0

    with follow():
        wait_for(lambda: content(path).endswith(b" before\n") and recorded_size() == len(content(path)))
        boundary = len(content(path))
        instance.add(b"2026-11-29T10:00:05.000000000Z " + b"=" * 300_000)  # more than a follow buffer
        wait_for(lambda: len(content(path)) > boundary + 200_000)  # written in pieces as it arrives
        for _ in range(3):
            time.sleep(0.3)  # checkpoints are due all along: none may land inside the line
            assert recorded_size() == boundary
            instance.add(b"=" * 100_000)
        instance.add(b" end\n")
        wait_for(lambda: content(path).endswith(b" end\n") and recorded_size() == len(content(path)))
    assert content(path) == cluster.log_bytes("shop", "web", "app")


def test_a_refused_log_is_recorded_once(cluster, apiserver, follow):
    cluster.add_pod("shop", "web")
    apiserver.faults.fail(status=403, times=None, path_contains="/log", message="forbidden")
    with follow(backoff=0.001) as outcome:
        wait_for(lambda: len(log_reqs(apiserver, "web")) >= 4)  # refused, retried with backoff, refused...
    assert len(outcome["result"].failed) == 1


def test_sigterm_during_the_first_listing_of_follow_mode(cluster, apiserver, service_account, tmp_path):
    cluster.add_pod("shop", "web")
    apiserver.faults.throttle(times=1, retry_after=20, path_contains="/pods")
    args = [sys.executable, str(ROOT / "kubelogexporter.py"), "--server", apiserver.url,
            "--token-file", str(service_account / "token"), "--ca-file", str(service_account / "ca.crt"),
            "-o", str(tmp_path / "logs"), "--follow"]
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: any(r.status == 429 for r in apiserver.requests))  # it waits out Retry-After: 20
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(10)
        assert code == 0 and "Traceback" not in proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()
