"""The exporter against a real kube-apiserver and kwok's kubelet log endpoint, run as in a pod:
KUBERNETES_SERVICE_HOST/PORT, a TokenRequest token for log-exporter-sa and the API server's CA."""
from __future__ import annotations

import time
import uuid

import pytest

from e2ekit import cri_append, cri_partial, files_under, lines, summary


def now_ns() -> int:
    return time.time_ns()


def label_pods(k8s, ns, pods, run):
    for p in pods:
        k8s.kubectl("label", "pod", "-n", ns, p, f"e2e-run={run}")


@pytest.fixture
def world(k8s):
    """Two namespaces: init + several containers, a restarted container, a plain pod, a pod with no node."""
    run = uuid.uuid4().hex[:8]
    a, b = k8s.namespace("exp-a"), k8s.namespace("exp-b")
    t = now_ns() - 3_600 * 10**9
    expect = {}

    k8s.pod(a, "multi", containers=["app", "sidecar"], init=["setup"])
    files = {}
    for c, n in (("setup", 3), ("app", 40), ("sidecar", 7)):
        f = k8s.log_file(a, "multi", c)
        expect[f"{a}/multi/{c}.log"] = cri_append(f, lines(t, n, f"{c}"))
        files[c] = (f, None)
    # stderr interleaved with stdout, and one line the runtime split in partial records
    f = files["app"][0]
    expect[f"{a}/multi/app.log"] += cri_append(f, [(t + 10**9, "oops on stderr")], stream="stderr")
    expect[f"{a}/multi/app.log"] += cri_partial(f, t + 2 * 10**9, ["a long ", "line in ", "three parts"])
    expect[f"{a}/multi/app.log"] += cri_append(f, [(t + 3 * 10**9, "trailing zeros .5s"),
                                                   (t - t % 10**9 + 4 * 10**9, "on a whole second")])
    k8s.give_logs(a, "multi", files)

    k8s.pod(a, "restarted")
    prev, cur = k8s.log_file(a, "restarted", "app", 0), k8s.log_file(a, "restarted", "app", 1)
    before = cri_append(prev, lines(t, 5, "first instance"))
    after = cri_append(cur, lines(t + 60 * 10**9, 4, "second instance"))
    expect[f"{a}/restarted/app.log"] = before + after
    k8s.give_logs(a, "restarted", {"app": (cur, prev)})
    k8s.set_instances(a, "restarted", "app", started_ns=t + 60 * 10**9, restarts=1, previous=(t - 10**9, t + 59 * 10**9))

    k8s.pod(b, "plain")
    f = k8s.log_file(b, "plain", "app")
    expect[f"{b}/plain/app.log"] = cri_append(f, lines(t, 1000, "plain " + "x" * 100))
    k8s.give_logs(b, "plain", {"app": (f, None)})

    k8s.pod(b, "nonode", node=None)

    label_pods(k8s, a, ["multi", "restarted"], run)
    label_pods(k8s, b, ["plain", "nonode"], run)
    return {"run": run, "a": a, "b": b, "expect": expect, "t": t}


def test_kwok_serves_what_kubectl_logs_shows(k8s, world):
    # the test bed itself: kubectl logs through the real API server shows exactly the CRI lines
    a = world["a"]
    assert k8s.kubectl_logs(a, "multi", "app") == world["expect"][f"{a}/multi/app.log"]
    prev = k8s.kubectl_logs(a, "restarted", "app", previous=True)
    assert prev + k8s.kubectl_logs(a, "restarted", "app") == world["expect"][f"{a}/restarted/app.log"]
    assert k8s.kubectl_logs(world["b"], "nonode", "app") == b""  # no node: an empty body, no error


def test_export_is_byte_identical_to_kubectl_logs(k8s, world, exporter_sa, tmp_path):
    out = tmp_path / "out"
    r = k8s.export(exporter_sa, "-A", "-l", f"e2e-run={world['run']}", "-o", str(out), "--json")
    assert r.returncode == 0, r.stderr
    got = files_under(out)
    assert got == world["expect"]
    # and each equals what kubectl logs --timestamps shows, previous instance first
    a, b = world["a"], world["b"]
    for c in ("setup", "app", "sidecar"):
        assert got[f"{a}/multi/{c}.log"] == k8s.kubectl_logs(a, "multi", c)
    assert got[f"{a}/restarted/app.log"] == (k8s.kubectl_logs(a, "restarted", "app", previous=True)
                                              + k8s.kubectl_logs(a, "restarted", "app"))
    assert got[f"{b}/plain/app.log"] == k8s.kubectl_logs(b, "plain", "app")
    s = summary(r.stdout)
    assert not s["failed"], s["failed"]
    assert s["pods"] == 4
    assert s["bytes_written"] == sum(len(v) for v in world["expect"].values())

    # an immediate rerun adds nothing
    r2 = k8s.export(exporter_sa, "-A", "-l", f"e2e-run={world['run']}", "-o", str(out), "--json")
    assert r2.returncode == 0, r2.stderr
    assert files_under(out) == world["expect"]
    assert summary(r2.stdout)["bytes_written"] == 0


def test_incremental_run_adds_exactly_the_new_lines(k8s, world, exporter_sa, tmp_path):
    out = tmp_path / "out"
    args = ("-A", "-l", f"e2e-run={world['run']}", "-o", str(out), "--json")
    assert k8s.export(exporter_sa, *args).returncode == 0
    a, b = world["a"], world["b"]
    expect = dict(world["expect"])
    t = world["t"]
    # later lines, some in the very second the first run ended in (sinceTime is whole seconds)
    last_plain = t + 999 * 1_000_003
    added = cri_append(k8s.log_file(b, "plain", "app"),
                       [(last_plain, "same nanosecond as the last line"), (last_plain + 1, "one ns later")]
                       + lines(last_plain + 2, 50, "more"))
    expect[f"{b}/plain/app.log"] += added
    expect[f"{a}/multi/sidecar.log"] += cri_append(k8s.log_file(a, "multi", "sidecar"),
                                                   lines(t + 10 * 10**9, 3, "sidecar later"))
    r = k8s.export(exporter_sa, *args)
    assert r.returncode == 0, r.stderr
    assert files_under(out) == expect
    assert summary(r.stdout)["bytes_written"] == len(added) + len(expect[f"{a}/multi/sidecar.log"]) - len(
        world["expect"][f"{a}/multi/sidecar.log"])
    assert files_under(out)[f"{b}/plain/app.log"] == k8s.kubectl_logs(b, "plain", "app")


def test_incremental_run_keeps_a_line_racing_across_the_run_boundary(k8s, exporter_sa, tmp_path):
    ns = k8s.namespace("race")
    k8s.pod(ns, "racy")
    f = k8s.log_file(ns, "racy", "app")
    t = now_ns() - 600 * 10**9
    expect = cri_append(f, lines(t, 5, "before"))
    k8s.give_logs(ns, "racy", {"app": (f, None)})
    out = tmp_path / "out"
    assert k8s.export(exporter_sa, "-n", ns, "-o", str(out)).returncode == 0
    # the runtime wrote stderr's line after stdout's, but stamped it 1 µs earlier than the run's last line
    last = t + 4 * 1_000_003
    expect += cri_append(f, [(last - 1000, "stderr line that lost the race")], stream="stderr")
    expect += cri_append(f, [(last + 1000, "after")])
    r = k8s.export(exporter_sa, "-n", ns, "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert k8s.kubectl_logs(ns, "racy", "app") == expect
    assert (out / ns / "racy" / "app.log").read_bytes() == expect


def test_real_server_passes_since_time_on_in_whole_seconds(k8s, world):
    # LogLocation re-formats sinceTime as RFC 3339 (pkg/registry/core/pod/strategy.go): the fraction is
    # dropped before the kubelet filters, which is what the exporter's per-second dedupe relies on.
    from e2ekit import fixed
    a, t = world["a"], world["t"]
    since = t + 20 * 1_000_003 + 1  # just after line 20 of "app" in multi
    body = k8s.api("GET", f"/api/v1/namespaces/{a}/pods/multi/log?container=app&timestamps=true"
                          f"&sinceTime={fixed(since)}")["raw"]
    whole = since - since % 10**9
    want = b"".join(ln for ln in world["expect"][f"{a}/multi/app.log"].splitlines(keepends=True)
                    if ln[:30].decode() >= fixed(whole)[:30])
    assert body == want
    assert b" app line 20\n" in body  # stamped 1 ns before sinceTime, in its second: still served


def test_a_line_still_partial_at_the_end_of_the_file_is_exported_once_complete(k8s, exporter_sa, tmp_path):
    # The runtime writes a long line as P(artial) records; the kubelet's reader serves a file ending in
    # a P record as a last line without "\n". The exporter must not archive that half line.
    from e2ekit import fixed, rfc3339nano
    ns = k8s.namespace("partial")
    k8s.pod(ns, "p")
    f = k8s.log_file(ns, "p", "app")
    t = now_ns() - 600 * 10**9
    expect = cri_append(f, lines(t, 3, "whole"))
    with open(f, "a") as fh:
        fh.write(f"{rfc3339nano(t + 10**9)} stdout P first half, \n")
    k8s.give_logs(ns, "p", {"app": (f, None)})
    assert k8s.kubectl_logs(ns, "p", "app") == expect + f"{fixed(t + 10**9)} first half, ".encode()
    out = tmp_path / "out"
    r = k8s.export(exporter_sa, "-n", ns, "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert (out / ns / "p" / "app.log").read_bytes() == expect
    with open(f, "a") as fh:
        fh.write(f"{rfc3339nano(t + 10**9 + 5)} stdout F second half\n")
    expect += f"{fixed(t + 10**9)} first half, second half\n".encode()
    expect += cri_append(f, lines(t + 2 * 10**9, 2, "after"))
    r = k8s.export(exporter_sa, "-n", ns, "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert k8s.kubectl_logs(ns, "p", "app") == expect
    assert (out / ns / "p" / "app.log").read_bytes() == expect


def test_the_kubelet_skips_a_line_it_cannot_parse_rather_than_serve_it_unstamped(k8s, exporter_sa, tmp_path):
    """What the exporter's check for the kubelet's error text rests on (see _UNSTAMPED_RE): inside a body every
    line is stamped, since the kubelet's log reader drops a record it cannot parse; error text only ends a body."""
    ns = k8s.namespace("garbled")
    k8s.pod(ns, "web")
    f = k8s.log_file(ns, "web", "app")
    t = now_ns() - 600 * 10**9
    expect = cri_append(f, lines(t, 3, "before"))
    with open(f, "a") as garbled:
        garbled.write("not a CRI record\n2026 is no timestamp either\n")
    expect += cri_append(f, lines(t + 10**9, 3, "after"))
    k8s.give_logs(ns, "web", {"app": (f, None)})
    assert k8s.kubectl_logs(ns, "web", "app") == expect
    out = tmp_path / "out"
    r = k8s.export(exporter_sa, "-n", ns, "-o", str(out), "--json")
    assert r.returncode == 0, r.stderr
    assert files_under(out) == {f"{ns}/web/app.log": expect}
    assert not summary(r.stdout)["failed"]
