"""Follow mode: lines archived as they are written, pods found by a watch, the same exactness as batch runs."""

import contextlib
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import kubelogexporter
from kubelogexporter import export_logs

from conftest import wait_for

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def served(cluster):
    """What the file must hold: the container's log as the server renders it (fixed timestamps)."""
    return lambda namespace, pod, container, previous=False: cluster.log_bytes(namespace, pod, container, previous)



def content(path):
    return path.read_bytes() if path.exists() else b""


@pytest.fixture
def follow(apiserver, service_account, tmp_path, monkeypatch):
    """Run export_logs(follow=True) in a thread; the context's exit stops it and gives the result."""
    monkeypatch.setattr(kubelogexporter, "IDLE_RELEASE_SECONDS", 0.2)
    output = tmp_path / "logs"
    outcome = {}

    @contextlib.contextmanager
    def running(**options):
        stop = threading.Event()
        options.setdefault("backoff", 0.01)

        def target():
            try:
                outcome["result"] = export_logs(output, server=apiserver.url, account_dir=service_account,
                                                environ={}, follow=True, stop_event=stop, **options)
            except BaseException as exc:  # surfaced in the test thread
                outcome["error"] = exc

        thread = threading.Thread(target=target)
        thread.start()
        try:
            yield outcome
        finally:
            stop.set()
            thread.join(15)
            assert not thread.is_alive(), "follow mode did not stop"
        if "error" in outcome:
            raise outcome["error"]

    running.output = output
    return running


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


def test_follow_excludes_dry_run_and_no_state(tmp_path, service_account):
    for options in ({"dry_run": True}, {"state": False}):
        with pytest.raises(kubelogexporter.ConfigError, match="follow mode keeps a state"):
            export_logs(tmp_path, account_dir=service_account, environ={}, follow=True, **options)
