#!/usr/bin/env python3
"""Follow-mode soak: many containers logging steadily, live streams cut at random, then SIGTERM.

    python3 benchmarks/follow_soak.py                      # 200 containers x 50 lines/s for 60 s
    python3 benchmarks/follow_soak.py --containers 20 --seconds 5

Runs ``kubelogexporter.py --follow`` against the project's fake API server
(tests/fakeapi.py) while a producer appends lines to every container and a
cutter breaks open log streams mid-line.  Then it sends SIGTERM, runs one
batch export (the hand-over), and checks that every file holds every line
exactly once.  Prints a Markdown table: lines, what follow mode had on disk at
SIGTERM, seconds to exit, CPU seconds and peak RSS of the follow process.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import fakeapi  # noqa: E402


def peak_rss_mib(pid: int) -> float:
    """VmHWM: the process's own peak (ru_maxrss of a forked child can carry the parent's)."""
    with open("/proc/%d/status" % pid) as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--containers", type=int, default=200)
    parser.add_argument("--rate", type=int, default=50, help="lines per second per container")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--cuts-per-second", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--output", help="also write the table, with how it was made, to this Markdown file")
    args = parser.parse_args(argv)
    trustme = __import__("trustme")
    rnd = random.Random(args.seed)

    ca = trustme.CA()
    cluster = fakeapi.FakeCluster()
    names = ["app-%03d" % i for i in range(args.containers)]
    for name in names:
        cluster.add_pod("soak", name)
    work = Path(tempfile.mkdtemp(prefix="follow-soak-"))
    (work / "token").write_text("soak-token")
    (work / "ca.crt").write_bytes(ca.cert_pem.bytes())
    output = work / "logs"
    with fakeapi.FakeAPIServer(cluster, ssl_context=fakeapi.server_ssl_context(ca),
                               tokens={"soak-token": "system:serviceaccount:soak:exporter"}) as server:
        base = [sys.executable, str(ROOT / "kubelogexporter.py"), "--server", server.url,
                "--token-file", str(work / "token"), "--ca-file", str(work / "ca.crt"), "-o", str(output), "-q"]
        follower = subprocess.Popen(base + ["--follow", "--concurrency", str(args.containers)])
        deadline = time.monotonic() + 30
        while server.active_log_streams < args.containers:
            if time.monotonic() > deadline or follower.poll() is not None:
                raise SystemExit("follow mode did not open %d streams" % args.containers)
            time.sleep(0.05)

        produced = 0
        cuts = 0
        tick = 0.1
        per_tick = args.rate * tick
        started = time.monotonic()
        next_cut = started
        carry = 0.0
        peak = 0.0
        while time.monotonic() - started < args.seconds:
            carry += per_tick
            count, carry = int(carry), carry - int(carry)
            with cluster.lock:  # one wake-up of the server's streams per tick, not one per container
                for name in names:
                    cluster.append_log("soak", name, "app",
                                       ["%s line %d %s" % (name, produced + i, "x" * 60) for i in range(count)])
            produced += count
            now = time.monotonic()
            while next_cut <= now and args.cuts_per_second > 0:
                server.faults.cut_open_log("soak", rnd.choice(names), "app")
                cuts += 1
                next_cut += 1.0 / args.cuts_per_second
            if int(now - started) != int(now - started - tick):
                peak = max(peak, peak_rss_mib(follower.pid))
            time.sleep(max(0.0, started + (tick * (produced / max(per_tick, 1e-9))) - time.monotonic()))
        time.sleep(1.0)  # the last lines' one-second flush
        peak = max(peak, peak_rss_mib(follower.pid))
        total = sum(len(cluster.log_bytes("soak", name, "app")) for name in names)
        on_disk = sum((output / "soak" / name / "app.log").stat().st_size
                      for name in names if (output / "soak" / name / "app.log").exists())
        signalled = time.monotonic()
        follower.send_signal(signal.SIGTERM)
        _, status, usage = os.wait4(follower.pid, 0)
        exit_seconds = time.monotonic() - signalled
        follower.returncode = os.waitstatus_to_exitcode(status) if hasattr(os, "waitstatus_to_exitcode") else status
        batch = subprocess.run(base)
        exact = all((output / "soak" / name / "app.log").read_bytes() == cluster.log_bytes("soak", name, "app")
                    for name in names)
        reconnects = len([r for r in server.requests if r.path.endswith("/log")]) - args.containers

    shutil.rmtree(work, ignore_errors=True)
    lines = produced * args.containers
    table = []
    table.append("| containers | lines/s each | seconds | lines | stream cuts | reconnects | on disk at SIGTERM "
          "| exit code, seconds to exit | follow CPU s | follow peak RSS | batch hand-over | every line once |")
    table.append("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | --- | --- |")
    table.append("| %d | %d | %.0f | %d | %d | %d | %.2f %% | %d, %.2f s | %.1f | %.1f MiB | exit %d | %s |" % (
        args.containers, args.rate, args.seconds, lines, cuts, reconnects, 100.0 * on_disk / max(total, 1),
        follower.returncode, exit_seconds, usage.ru_utime + usage.ru_stime, peak, batch.returncode,
        "yes" if exact else "NO"))
    text = "\n".join(table) + "\n"
    sys.stdout.write(text)
    if args.output:
        Path(args.output).write_text(
            "`python3 benchmarks/follow_soak.py %s` on %s, Python %s, %d CPUs: `--follow --concurrency %d` while "
            "every container logs %d lines/s and %.1f open streams a second are cut mid-line; then SIGTERM and one "
            "batch run (the hand-over). CPU and peak RSS (VmHWM) are the follow process's own.\n\n%s" % (
                " ".join(argv if argv is not None else sys.argv[1:]), time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                sys.version.split()[0], os.cpu_count(), args.containers, args.rate, args.cuts_per_second, text))
    return 0 if exact and follower.returncode == 0 and batch.returncode == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
