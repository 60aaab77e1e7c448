"""Follow mode and faults (kubelet gone, API server restarted, log rotated) against the real server."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import time

import pytest

from e2ekit import ROOT, cri_append, files_under, lines, summary


def wait_for(pred, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def read(p):
    try:
        return p.read_bytes()
    except FileNotFoundError:
        return b""


@pytest.fixture(scope="module")
def follow_rbac(k8s):
    # the follow variant's ClusterRole adds `watch pods`
    k8s.kubectl("apply", "--server-side", "-k", str(ROOT / "manifests/overlays/follow"))
    yield
    k8s.kubectl("apply", "--server-side", "-k", str(ROOT / "manifests"))


def test_follow_picks_up_new_pods_and_lines_and_exits_0_on_sigterm(k8s, follow_rbac, exporter_sa, tmp_path):
    ns = k8s.namespace("follow")
    t = time.time_ns() - 60 * 10**9
    k8s.pod(ns, "first")
    f1 = k8s.log_file(ns, "first", "app")
    want1 = cri_append(f1, lines(t, 20, "first"))
    k8s.give_logs(ns, "first", {"app": (f1, None)})
    out = tmp_path / "out"
    cmd, env = k8s.exporter_cmd(exporter_sa, "--follow", "-n", ns, "-o", str(out))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        o1 = out / ns / "first" / "app.log"
        wait_for(lambda: read(o1) == want1, what="the first pod's lines")
        want1 += cri_append(f1, lines(time.time_ns(), 5, "appended while following"))
        wait_for(lambda: read(o1) == want1, what="lines appended while following")
        files = {}
        want2 = {}
        for c in ("a", "b"):
            files[c] = (k8s.log_file(ns, "second", c), None)
            want2[c] = cri_append(files[c][0], lines(time.time_ns(), 3, f"second {c}"))
        # as on a real node, the containers' log files exist by the time the pod shows Running
        k8s.give_logs(ns, "second", files, wait=False)
        time.sleep(1)  # kwok sees the Logs object through its watch
        k8s.pod(ns, "second", containers=["a", "b"])
        for c in ("a", "b"):
            want2[c] += cri_append(files[c][0], lines(time.time_ns(), 2, f"later {c}"))
            o = out / ns / "second" / f"{c}.log"
            wait_for(lambda: read(o) == want2[c], what=f"new pod's container {c}")
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=30)
        err = proc.stderr.read().decode()
        assert rc == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    got = files_under(out)
    assert got == {f"{ns}/first/app.log": want1, f"{ns}/second/a.log": want2["a"], f"{ns}/second/b.log": want2["b"]}
    assert got[f"{ns}/first/app.log"] == k8s.kubectl_logs(ns, "first", "app")
    # a batch run afterwards continues from follow's state: nothing new
    r = k8s.export(exporter_sa, "-n", ns, "-o", str(out), "--json")
    assert r.returncode == 0 and summary(r.stdout)["bytes_written"] == 0


def _big_namespace(k8s, prefix, pods=6, n_lines=100_000):
    ns = k8s.namespace(prefix)
    t = time.time_ns() - 3_600 * 10**9
    expect = {}
    for i in range(pods):
        name = f"big-{i}"
        k8s.pod(ns, name)
        f = k8s.log_file(ns, name, "app")
        expect[f"{ns}/{name}/app.log"] = cri_append(f, lines(t, n_lines, f"{name} " + "y" * 80))
        k8s.give_logs(ns, name, {"app": (f, None)})
    return ns, expect


def _export_bg(k8s, sa, ns, out):
    cmd, env = k8s.exporter_cmd(sa, "-n", ns, "-o", str(out), "--concurrency", "1", "--json")
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _started(out):
    return any(p.stat().st_size > 0 for p in out.rglob("*.log")) if out.exists() else False


def test_kubelet_gone_mid_export_then_clean_rerun(k8s, exporter_sa, tmp_path):
    ns, expect = _big_namespace(k8s, "nokubelet", pods=3)
    out = tmp_path / "out"
    proc = _export_bg(k8s, exporter_sa, ns, out)
    try:
        wait_for(lambda: _started(out) or proc.poll() is not None, what="the export to start")
        k8s.c.stop("kwok", sig=signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
        if "kwok" not in k8s.c.state.get("pids", {}):
            k8s.c.start_kwok()
    assert proc.returncode == 1, stderr[-3000:]
    s = summary(stdout)
    assert s["failed"], s
    # the API server's own words for an unreachable kubelet
    assert "connect: connection refused" in stderr + stdout, stderr[-3000:]
    r = k8s.export(exporter_sa, "-n", ns, "-o", str(out), "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    assert files_under(out) == expect


def test_apiserver_restart_mid_run_then_clean_rerun(k8s, exporter_sa, tmp_path):
    ns, expect = _big_namespace(k8s, "apirestart", pods=4)
    out = tmp_path / "out"
    proc = _export_bg(k8s, exporter_sa, ns, out)
    try:
        wait_for(lambda: _started(out) or proc.poll() is not None, what="the export to start")
        still_running = proc.poll() is None
        k8s.c.restart_apiserver()
        stdout, stderr = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert still_running, "the export finished before the restart: make the logs bigger"
    # Retried through it (0), or failed and left a state (1); never refused (3): the 403s a starting
    # kube-apiserver answers before its RBAC cache syncs are asked again for a few seconds.
    assert proc.returncode in (0, 1), stderr[-3000:]
    r = k8s.export(exporter_sa, "-n", ns, "-o", str(out), "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    assert files_under(out) == expect
    assert summary(r.stdout)["gaps"] == []


def test_rotated_cri_file_reports_a_gap_then_clean_rerun(k8s, exporter_sa, tmp_path):
    ns = k8s.namespace("rotate")
    k8s.pod(ns, "p")
    f = k8s.log_file(ns, "p", "app")
    t = time.time_ns() - 600 * 10**9
    first = cri_append(f, lines(t, 10, "before"))
    k8s.give_logs(ns, "p", {"app": (f, None)})
    out = tmp_path / "out"
    assert k8s.export(exporter_sa, "-n", ns, "-o", str(out)).returncode == 0
    cri_append(f, lines(t + 20 * 10**9, 5, "lost in rotation"))
    os.rename(f, f.with_name(f.name + ".20261203-100000"))  # the kubelet's rotation: rename, start anew
    f.touch()
    fresh = cri_append(f, lines(t + 40 * 10**9, 3, "after rotation"))
    r = k8s.export(exporter_sa, "-n", ns, "-o", str(out), "--json")
    assert r.returncode == 0, r.stderr
    s = summary(r.stdout)
    assert [g["container"] for g in s["gaps"]] == [f"{ns}/p/app"], s["gaps"]
    assert "gap" in r.stderr.lower() or s["gaps"][0]["reason"] in r.stderr
    assert files_under(out) == {f"{ns}/p/app.log": first + fresh}
    r = k8s.export(exporter_sa, "-n", ns, "-o", str(out), "--json")
    assert r.returncode == 0
    s = summary(r.stdout)
    assert s["gaps"] == [] and s["bytes_written"] == 0
    assert files_under(out) == {f"{ns}/p/app.log": first + fresh}


def test_follow_relists_after_a_410_from_a_restarted_apiserver(k8s, follow_rbac, exporter_sa, tmp_path):
    # A restarted kube-apiserver's watch cache starts at the current resourceVersion: a watch resumed from
    # an older one gets the ERROR event "too old resource version: X (Y)" (410 Expired), and follow mode
    # must list again and carry on.
    ns = k8s.namespace("relist")
    t = time.time_ns() - 60 * 10**9
    k8s.pod(ns, "first")
    f1 = k8s.log_file(ns, "first", "app")
    want1 = cri_append(f1, lines(t, 5, "first"))
    k8s.give_logs(ns, "first", {"app": (f1, None)})
    out = tmp_path / "out"
    cmd, env = k8s.exporter_cmd(exporter_sa, "--follow", "-v", "-n", ns, "-o", str(out))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        o1 = out / ns / "first" / "app.log"
        wait_for(lambda: read(o1) == want1, what="the first pod's lines")
        other = k8s.namespace("bump")  # resourceVersions this watch never sees
        for i in range(3):
            k8s.api("POST", f"/api/v1/namespaces/{other}/configmaps", {"metadata": {"name": f"c{i}"}})
        k8s.c.restart_apiserver()
        f2 = k8s.log_file(ns, "second", "app")
        want2 = cri_append(f2, lines(time.time_ns(), 3, "second"))
        k8s.give_logs(ns, "second", {"app": (f2, None)}, wait=False)
        time.sleep(1)
        k8s.pod(ns, "second")
        want1 += cri_append(f1, lines(time.time_ns(), 2, "after the restart"))
        try:
            wait_for(lambda: read(out / ns / "second" / "app.log") == want2 or proc.poll() is not None,
                     timeout=60, what="the pod made after")
            assert proc.poll() is None, "follow mode stopped"
            wait_for(lambda: read(o1) == want1, what="lines after the restart")
        except AssertionError as e:
            proc.kill()
            raise AssertionError(f"{e}; exporter said:\n{proc.stderr.read().decode()[-4000:]}") from None
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=30)
        err = proc.stderr.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rc == 0, err[-3000:]
    lists = [ln for ln in err.splitlines() if f"GET /api/v1/namespaces/{ns}/pods?" in ln
             and "watch=true" not in ln and "-> 200" in ln]
    assert len(lists) >= 2, err[-3000:]  # the first list, and the one after 410


def test_kill_9_at_random_instants_then_a_clean_run_is_byte_identical(k8s, exporter_sa, tmp_path):
    """The promise on the real server: runs killed (SIGKILL) while starting and at random bytes of their work, lines
    appended between them, then one run let finish: every file is what the API serves, each line once.
    E2E_SEED=N replays a draw."""
    n_lines = 60_000
    ns, expect = _big_namespace(k8s, "kill9", pods=3, n_lines=n_lines)
    seed = int(os.environ.get("E2E_SEED") or time.time_ns() % 10**6)
    rng = random.Random(seed)
    out = tmp_path / "out"

    def on_disk():
        return sum(p.stat().st_size for p in out.rglob("*.log")) if out.exists() else 0

    after = time.time_ns() - 3_600 * 10**9 + n_lines * 1_000_003  # _big_namespace's last line, a little later
    midway = 0  # kills that found the run still writing
    for kill in range(4):
        total, done = sum(len(b) for b in expect.values()), on_disk()
        proc = _export_bg(k8s, exporter_sa, ns, out)
        if kill == 0:  # starting: settings, TLS, the listing
            time.sleep(rng.uniform(0, 0.3))
        else:  # at a random byte of what is left to write
            target, deadline = done + rng.uniform(0, 0.9 * (total - done)), time.monotonic() + 60
            while on_disk() < target and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.002)
            midway += proc.poll() is None and on_disk() < total
        proc.kill()
        proc.communicate()
        for i in range(3):  # a few MiB more a run, so that the next one has work to be killed in
            expect[f"{ns}/big-{i}/app.log"] += cri_append(k8s.log_file(ns, f"big-{i}", "app"), lines(
                after + kill * 100 * 10**9, 10_000, f"big-{i} after kill {kill} " + "z" * 80))
    assert midway >= 2, f"E2E_SEED={seed}: only {midway} of 3 kills found the run writing: make the logs bigger"
    r = k8s.export(exporter_sa, "-n", ns, "-o", str(out), "--json")
    assert r.returncode == 0, (seed, r.stderr[-3000:])
    assert files_under(out) == expect, f"E2E_SEED={seed}"
    s = summary(r.stdout)
    assert s["gaps"] == [], (seed, s["gaps"])
    assert summary(k8s.export(exporter_sa, "-n", ns, "-o", str(out), "--json").stdout)["bytes_written"] == 0
