"""Container restarts between runs and during a run, against the real kube-apiserver and the kubelet's log
reader (kwok).

The status says what a kubelet would (restartCount, lastState.terminated, startedAt in whole seconds); kwok's
`Logs` object says which file is the current log and which the previous instance's. The exporter's rules for
restarts (README, "Restarts") are checked here on the real server's answers: `previous=true` with `sinceTime`,
the 400 for a container without a previous instance, and what a restart does to a resumed container."""
from __future__ import annotations

import time

import pytest

from e2ekit import cri_append, files_under, lines, summary

S = 10**9


@pytest.fixture
def container(k8s, exporter_sa, tmp_path):
    """One pod whose container started ten minutes ago, exported once: (ns, t0, what its file holds,
    a function that runs the exporter on ns and returns its --json summary, the output folder)."""
    ns = k8s.namespace("restart")
    k8s.pod(ns, "web")
    t0 = (time.time_ns() - 600 * S) // S * S
    k8s.set_instances(ns, "web", "app", started_ns=t0)
    f0 = k8s.log_file(ns, "web", "app", 0)
    want = cri_append(f0, lines(t0 + S // 2, 5, "first instance"))
    k8s.give_logs(ns, "web", {"app": (f0, None)})
    out = tmp_path / "out"

    def run():
        r = k8s.export(exporter_sa, "-n", ns, "-o", str(out), "--json")
        assert r.returncode == 0, r.stderr
        return summary(r.stdout)

    assert run()["gaps"] == []
    assert files_under(out) == {f"{ns}/web/app.log": want}
    return ns, t0, want, run, out


@pytest.mark.parametrize("young", [False, True], ids=["started-minutes-ago", "started-seconds-ago"])
def test_a_restart_between_runs_writes_the_rest_of_the_instance_then_the_new_one(k8s, container, young):
    ns, t0, want, run, out = container
    f0 = k8s.log_file(ns, "web", "app", 0)
    rest = cri_append(f0, lines(t0 + 100 * S, 3, "first instance, after the run"))
    # young: it ran on quietly until it restarted, less than a minute before the run; else right after its last line
    started = (time.time_ns() - 5 * S) // S * S if young else t0 + 102 * S
    ended = started - S
    f1 = k8s.log_file(ns, "web", "app", 1)
    new = cri_append(f1, lines(started + S // 4, 4, "second instance"))
    k8s.switch_logs(ns, "web", "app", current=f1, previous=f0)
    k8s.set_instances(ns, "web", "app", started_ns=started, restarts=1, previous=(t0, ended))

    s = run()
    assert s["gaps"] == []
    assert s["bytes_written"] == len(rest) + len(new)
    got = files_under(out)[f"{ns}/web/app.log"]
    assert got == want + rest + new
    assert got.endswith(k8s.kubectl_logs(ns, "web", "app", previous=True)[len(want):] +
                        k8s.kubectl_logs(ns, "web", "app"))
    # more lines of the new instance: only those; then nothing
    more = cri_append(f1, lines(started + 2 * S, 2, "second instance, later"))
    s = run()
    assert s["bytes_written"] == len(more) and s["gaps"] == []
    assert files_under(out)[f"{ns}/web/app.log"] == want + rest + new + more
    assert run()["bytes_written"] == 0


def test_two_restarts_between_runs_report_the_lost_rest_as_a_gap(k8s, container):
    """The API keeps one previous instance: the rest of the first one is gone, and said so."""
    ns, t0, want, run, out = container
    f0, f1, f2 = (k8s.log_file(ns, "web", "app", i) for i in range(3))
    cri_append(f0, lines(t0 + 100 * S, 3, "first instance, after the run: lost"))
    second = cri_append(f1, lines(t0 + 102 * S, 4, "second instance"))
    third = cri_append(f2, lines(t0 + 202 * S, 2, "third instance"))
    k8s.switch_logs(ns, "web", "app", current=f2, previous=f1)
    k8s.set_instances(ns, "web", "app", started_ns=t0 + 201 * S, restarts=2, previous=(t0 + 101 * S, t0 + 200 * S))

    s = run()
    assert [g["container"] for g in s["gaps"]] == [f"{ns}/web/app"], s["gaps"]
    assert s["bytes_written"] == len(second) + len(third)
    assert files_under(out)[f"{ns}/web/app.log"] == want + second + third
    s = run()
    assert s["bytes_written"] == 0 and s["gaps"] == []  # nothing more, nothing reported twice


def test_a_restart_with_nothing_new_in_the_old_instance_reads_the_new_one_whole(k8s, container):
    """The previous instance's answer from the anchor's second holds the anchor and nothing after it."""
    ns, t0, want, run, out = container
    f0, f1 = (k8s.log_file(ns, "web", "app", i) for i in range(2))
    new = cri_append(f1, lines(t0 + 50 * S, 3, "second instance"))
    k8s.switch_logs(ns, "web", "app", current=f1, previous=f0)
    k8s.set_instances(ns, "web", "app", started_ns=t0 + 50 * S, restarts=1, previous=(t0, t0 + 49 * S))

    s = run()
    assert s["gaps"] == [] and s["bytes_written"] == len(new)
    assert files_under(out)[f"{ns}/web/app.log"] == want + new


def test_a_restart_after_the_listing_is_caught_on_the_real_server(k8s, container, exporter_sa):
    """web restarts between the listing (which shows its old instance) and its log request: the current log
    lacks the line written last, so the previous instance is searched for it, its rest written, then the new one."""
    ns, t0, want, run, out = container
    k8s.add_filler(ns, t0)
    f0, f1 = (k8s.log_file(ns, "web", "app", i) for i in range(2))
    got = {}

    def restart():  # stamped as a node would: lines written after the listing, an exit, a new instance
        now = time.time_ns()
        got["rest"] = cri_append(f0, lines(now, 3, "first instance, after the listing"))
        ended = now // S * S + S
        time.sleep(max(0.0, (ended + S // 5 - time.time_ns()) / S))  # no line stamped ahead of the clock
        got["new"] = cri_append(f1, lines(ended + S // 10, 4, "second instance"))
        k8s.switch_logs(ns, "web", "app", current=f1, previous=f0)
        k8s.set_instances(ns, "web", "app", started_ns=ended, restarts=1, previous=(t0, ended))

    s, files = k8s.export_paused(exporter_sa, ns, out, restart)
    assert s["gaps"] == []
    assert files[f"{ns}/web/app.log"] == want + got["rest"] + got["new"]
    s = run()
    assert s["bytes_written"] == 0 and s["gaps"] == []


def test_a_first_export_whose_container_restarts_after_the_listing_reads_both_instances(
        k8s, exporter_sa, tmp_path):
    """A container listed as started minutes ago, never restarted, is read with one request; when the log that
    comes back starts after the listing, the instance listed may be the previous one now, so it is asked for."""
    ns = k8s.namespace("restart")
    t0 = (time.time_ns() - 600 * S) // S * S
    k8s.add_filler(ns, t0)
    k8s.pod(ns, "web")
    k8s.set_instances(ns, "web", "app", started_ns=t0)
    f0, f1 = (k8s.log_file(ns, "web", "app", i) for i in range(2))
    first = cri_append(f0, lines(t0 + S // 2, 5, "first instance"))
    k8s.give_logs(ns, "web", {"app": (f0, None)})
    got = {}

    def restart():
        started = time.time_ns() // S * S
        got["new"] = cri_append(f1, lines(started + 1000, 4, "second instance"))
        k8s.switch_logs(ns, "web", "app", current=f1, previous=f0)
        k8s.set_instances(ns, "web", "app", started_ns=started, restarts=1, previous=(t0, started))

    out = tmp_path / "out"
    s, files = k8s.export_paused(exporter_sa, ns, out, restart)
    assert s["gaps"] == []
    assert files[f"{ns}/web/app.log"] == first + got["new"]


def wait_gone(k8s, ns, pod):
    deadline = time.monotonic() + 30
    while k8s.api("GET", f"/api/v1/namespaces/{ns}/pods/{pod}", ok=(200, 404)).get("code") != 404:
        assert time.monotonic() < deadline, f"{ns}/{pod} was never deleted"
        time.sleep(0.1)


def test_a_pod_deleted_after_the_listing_is_skipped_and_reported(k8s, container, exporter_sa):
    ns, t0, want, run, out = container
    k8s.add_filler(ns, t0)
    cri_append(k8s.log_file(ns, "web", "app"), lines(t0 + 100 * S, 3, "written before the pod went"))

    def delete():
        k8s.api("DELETE", f"/api/v1/namespaces/{ns}/pods/web")
        wait_gone(k8s, ns, "web")

    s, files = k8s.export_paused(exporter_sa, ns, out, delete)
    assert [(x["container"], x["reason"]) for x in s["skipped"]] == [(f"{ns}/web/app", "pod deleted")], s
    assert s["failed"] == [] and s["gaps"] == []
    assert {status for pod, _, status in s["log_requests"] if pod == "web"} == {404}, s["log_requests"]
    assert files[f"{ns}/web/app.log"] == want  # kept as it was


def test_a_pod_recreated_under_its_name_after_the_listing_is_not_written_twice(k8s, container, exporter_sa):
    """A StatefulSet's pod replaced between the listing and its request: the request by name reaches the new
    pod, which the listing did not show. Its lines land once, after the old pod's, whichever run writes them."""
    ns, t0, want, run, out = container
    k8s.add_filler(ns, t0)
    new = {}

    def recreate():
        k8s.api("DELETE", f"/api/v1/namespaces/{ns}/pods/web")
        k8s.api("DELETE", f"/apis/kwok.x-k8s.io/v1alpha1/namespaces/{ns}/logs/web")
        wait_gone(k8s, ns, "web")
        k8s.pod(ns, "web")
        f = k8s.log_file(ns, "web", "app", 5)
        new["lines"] = cri_append(f, lines(time.time_ns(), 3, "new pod"))
        k8s.give_logs(ns, "web", {"app": (f, None)})

    s, files = k8s.export_paused(exporter_sa, ns, out, recreate)
    assert s["failed"] == [], s
    # its log lacks the line written last, as a rotated one would: the gap says which it was
    assert [g["reason"].split(" before ")[0] for g in s["gaps"]] == ["the pod was replaced by another of its name"]
    for _ in range(2):  # the next run lists the new pod; the one after has nothing new
        s = run()
        assert s["failed"] == []
    assert files_under(out)[f"{ns}/web/app.log"] == want + new["lines"]
    assert s["bytes_written"] == 0
