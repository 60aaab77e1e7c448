#!/usr/bin/env python3
"""Benchmarks: kubelogexporter.py against curl, kubectl and the official Python client.

    python3 benchmarks/run.py              # full run: BENCHMARKS.md, benchmarks/memory.png, benchmarks/results.json
    python3 benchmarks/run.py --quick      # seconds, for breakage; writes to a temp dir unless --output
    python3 benchmarks/run.py --workloads young,scale,quiet-scale --tools floor,exporter,curl-parallel \
        --merge benchmarks/results.json    # only the many-pod workloads, kept with the other rows

Starts tests/fakeapi.py (through benchmarks/server.py) in a process of its own,
then runs each workload with each tool, as whole processes, several times, in
turns (rep 1 of every tool, then rep 2, ...).  Per run: wall time, peak RSS
(GNU time's %M when /usr/bin/time exists, else VmHWM polled from /proc), CPU
of the tool and of the server, bytes the server sent and received, and a check
that every file holds exactly the bytes the server has.  Needs trustme (or the
openssl command); the official client rows need `kubernetes`, the plot needs
matplotlib: pip install -e '.[bench]'.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TOOLS_DIR = HERE / "tools"
EXPORTER = ROOT / "kubelogexporter.py"
MiB = 1 << 20
GNU_TIME = "/usr/bin/time"

# ---------------------------------------------------------------- measuring one process


@dataclass
class Run:
    workload: str       # large | fanout | quiet | young | scale | quiet-scale
    case: str           # "64 MiB", "2000 pods x 1", ...
    tool: str
    rep: int
    phase: str = ""     # quiet: first | rerun
    rc: int = 0
    wall: float = 0.0
    rss_kib: int = 0
    cpu: float = 0.0        # user + sys of the tool (and its children)
    server_cpu: float = 0.0
    bytes_out: int = 0      # server -> client, plaintext HTTP (headers and bodies)
    bytes_in: int = 0
    requests: int = 0
    connections: int = 0
    check: str = ""         # "" = every file complete, else what is wrong
    error: str = ""
    other_cpu: float = 0.0  # CPU seconds other processes used meanwhile (noise)
    not_ok: int = 0         # requests answered with a status >= 400
    attempts: int = 1       # runs disturbed by other processes are repeated (see --max-attempts)


def _gnu_time() -> Optional[str]:
    if not os.access(GNU_TIME, os.X_OK):
        return None
    try:
        r = subprocess.run([GNU_TIME, "-f", "%M", "true"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return GNU_TIME if r.returncode == 0 and r.stderr.strip().isdigit() else None


def measure(argv: List[str], *, env: Dict[str, str], stdout_path: Optional[Path], tmp: Path,
            timeout: float) -> dict:
    """Run argv to completion: wall seconds, peak RSS (KiB), CPU seconds, exit code, stderr tail.

    Peak RSS: ru_maxrss of a process started by fork+exec from a big parent starts at
    the parent's high-water mark (Linux keeps it across exec), so this runner's own
    size would leak into every figure.  GNU time forks the tool from its own ~2 MiB
    process and reports wait4()'s ru_maxrss (for a pipeline: its largest process).
    Without GNU time, /proc/<pid>/status VmHWM (the tool's own address space) is
    polled every 2 ms until it exits."""
    stdout = open(stdout_path, "wb") if stdout_path else subprocess.DEVNULL
    err_path = tmp / "stderr.txt"
    res = {"rss_kib": 0}
    try:
        with open(err_path, "wb") as err:
            if MEASURE == "gnu-time":
                tfile = tmp / "time.txt"
                full = [GNU_TIME, "-q", "-f", "%M %U %S", "-o", str(tfile)] + argv
                t0 = time.perf_counter()
                p = subprocess.Popen(full, stdout=stdout, stderr=err, env=env, cwd=ROOT)
                killer = threading.Timer(timeout, p.kill)
                killer.start()
                rc = p.wait()  # blocking: wait(timeout) would poll every 50 ms and round the times up
                wall = time.perf_counter() - t0
                killer.cancel()
                fields = tfile.read_text().split()[-3:] if tfile.exists() else []
                if len(fields) == 3:
                    res["rss_kib"] = int(fields[0])
                    res["cpu"] = float(fields[1]) + float(fields[2])
            else:
                t0 = time.perf_counter()
                p = subprocess.Popen(argv, stdout=stdout, stderr=err, env=env, cwd=ROOT)
                stop = threading.Event()

                def poll():
                    path = "/proc/%d/status" % p.pid
                    while not stop.is_set():
                        try:
                            with open(path) as f:
                                m = re.search(r"VmHWM:\s+(\d+)", f.read())
                            if m:
                                res["rss_kib"] = max(res["rss_kib"], int(m.group(1)))
                        except OSError:
                            return
                        stop.wait(0.002)

                poller = threading.Thread(target=poll, daemon=True)
                poller.start()
                killer = threading.Timer(timeout, p.kill)
                killer.start()
                _pid, status, ru = os.wait4(p.pid, 0)
                wall = time.perf_counter() - t0
                killer.cancel()
                p.returncode = rc = os.waitstatus_to_exitcode(status)
                stop.set()
                poller.join()
                res["cpu"] = ru.ru_utime + ru.ru_stime
    finally:
        if stdout_path:
            stdout.close()
    res.update(wall=wall, rc=rc, stderr=err_path.read_bytes()[-2000:].decode("utf-8", "replace"))
    return res


MEASURE = os.environ.get("KLE_BENCH_MEASURE") or ("gnu-time" if _gnu_time() else "vmhwm-poll")  # env: for testing
TICK = os.sysconf("SC_CLK_TCK")


def busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (all cores; idle and iowait excluded)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / TICK


def wait_quiet(limit: float = 60.0, cores: float = 0.25) -> float:
    """Wait (at most `limit` s) until the machine is nearly idle: other processes here
    (a test suite, a build) would be timed with the tool.  Returns the seconds waited."""
    t0 = time.monotonic()
    while True:
        b0 = busy_seconds()
        time.sleep(0.3)
        if (busy_seconds() - b0) / 0.3 < cores or time.monotonic() - t0 > limit:
            return time.monotonic() - t0

# ---------------------------------------------------------------- the server


class Server:
    def __init__(self, workdir: Path):
        self.proc = subprocess.Popen([sys.executable, str(HERE / "server.py"), "--dir", str(workdir / "server")],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit("benchmarks/server.py did not start (needs trustme or openssl: pip install -e '.[bench]')")
        self.info = json.loads(line)
        self.url, self.ca, self.token = self.info["url"], self.info["ca"], self.info["token"]
        self.header, self.kubeconfig = self.info["header"], self.info["kubeconfig"]

    def call(self, **req) -> dict:
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit("the benchmark server died")
        return json.loads(line)

    def cpu(self) -> float:
        with open("/proc/%d/stat" % self.info["pid"]) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        try:
            self.proc.stdin.write('{"cmd": "quit"}\n')
            self.proc.stdin.flush()
            self.proc.wait(30)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


# ---------------------------------------------------------------- tools


@dataclass
class Tool:
    key: str
    label: str
    workloads: tuple           # which workloads it runs in
    build: Callable            # (ctx, out: Path, workload: str) -> (argv, stdout_path or None)
    needs: Callable = lambda: None   # -> None when available, else why not
    reference: bool = False    # a floor or a durable variant, not a competitor
    layout: str = "files"      # files: OUT/<ns>/<pod>/<container>.log; dump: cluster-info dump's own
    slow: bool = False         # fewer repetitions on fan-out (--slow-reps)


def _sh(script: str) -> List[str]:
    return ["bash", "-c", "set -euo pipefail\n" + script]


def _kubectl() -> Optional[str]:
    return shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")


def _has_module(name: str) -> Optional[str]:
    r = subprocess.run([sys.executable, "-c", "import " + name], capture_output=True)
    return None if r.returncode == 0 else "python module %r not installed (pip install -e '.[bench]')" % name


def _needs(*cmds: str) -> Callable:
    def check():
        for c in cmds:
            if not (shutil.which(c) if c != "kubectl" else _kubectl()):
                return "%s not found" % c
        return None
    return check


LIST = '"$PY" "$TOOLS/containers.py"'
CURL = 'curl -sS --fail --cacert "$CA" -H @"$HDR"'
ONE_LOG = '"$API/api/v1/namespaces/$NS/pods/$POD/log?container=$C&timestamps=true"'
LARGE_OUT = '"$OUT/$NS/$POD/$C.log"'


def build_curl(ctx, out, workload, fsync=False):
    if workload == "large":  # the walkthrough's single request: the single-stream floor
        sync = ' && sync %s' % LARGE_OUT if fsync else ''
        return _sh('%s --create-dirs -o %s %s%s' % (CURL, LARGE_OUT, ONE_LOG, sync)), None
    return _sh('%s "$API/api/v1/pods" | %s | xargs -P "$P" -n 3 sh -c \'%s --create-dirs -o "$OUT/$0/$1/$2.log" '
               '"$API/api/v1/namespaces/$0/pods/$1/log?container=$2&timestamps=true"\'' % (CURL, LIST, CURL)), None


def build_curl_parallel(ctx, out, workload):
    return _sh('%s "$API/api/v1/pods" | %s --curl-config "$API" "$OUT" | '
               '%s --parallel --parallel-max "$P" --create-dirs -K -' % (CURL, LIST, CURL)), None


def build_floor(ctx, out, workload, fsync=False):
    return [sys.executable, str(TOOLS_DIR / "floor.py"), "--server", ctx.server.url, "--token-file", ctx.server.token,
            "--ca-file", ctx.server.ca, "-o", str(out), "--concurrency", str(ctx.concurrency)] + \
        (["--fsync"] if fsync else []), None


KUBECTL = '"$KUBECTL" --kubeconfig "$KUBECONFIG" --cache-dir "$KCACHE"'


def build_kubectl_logs(ctx, out, workload):
    if workload == "large":
        (out / "bench" / "big-0").mkdir(parents=True, exist_ok=True)
        return [ctx.kubectl, "--kubeconfig", ctx.server.kubeconfig, "--cache-dir", str(ctx.kcache), "logs", "-n", "bench",
                "big-0", "-c", "app", "--timestamps"], out / "bench" / "big-0" / "app.log"
    tpl = '{{range .items}}{{$ns := .metadata.namespace}}{{$p := .metadata.name}}' \
          '{{range .spec.containers}}{{$ns}} {{$p}} {{.name}}{{"\\n"}}{{end}}{{end}}'
    return _sh("%s get pods -A -o go-template='%s' | xargs -P \"$P\" -n 3 sh -c "
               "'mkdir -p \"$OUT/$0/$1\" && exec %s logs -n \"$0\" \"$1\" -c \"$2\" --timestamps > \"$OUT/$0/$1/$2.log\"'"
               % (KUBECTL, tpl, KUBECTL)), None


def build_kubectl_dump(ctx, out, workload):
    return [ctx.kubectl, "--kubeconfig", ctx.server.kubeconfig, "--cache-dir", str(ctx.kcache), "cluster-info", "dump",
            "--all-namespaces", "--output-directory", str(out)], None


def build_official(ctx, out, workload, mode):
    return [sys.executable, str(TOOLS_DIR / "official_client.py"), "--kubeconfig", ctx.server.kubeconfig, "-o", str(out),
            "--concurrency", str(ctx.concurrency), "--mode", mode], None


def build_exporter(ctx, out, workload, concurrency=None, extra=(), bytecode=False):
    if bytecode:  # as a module from its cached bytecode: no compile of the script at start (python3 FILE always does)
        import py_compile
        py_compile.compile(str(EXPORTER), doraise=True)
        start = [sys.executable, "-m", "kubelogexporter"]
    else:
        start = [sys.executable, str(EXPORTER)]
    return start + ["-q", "-o", str(out), "--server", ctx.server.url, "--token-file",
                    ctx.server.token, "--ca-file", ctx.server.ca] + \
        (["--concurrency", str(concurrency)] if concurrency else []) + list(extra), None


ALL = ("large", "fanout", "quiet")
# Many pods, for the exporter against the floor: young pods (started seconds before the run), tiny pods at
# 2,000 to 50,000, the quiet rerun at 10,000.  The other tools would take minutes here and show nothing new.
MANY = ("young", "scale", "quiet-scale")
WORKLOADS = ALL + MANY
QUIET = ("quiet", "quiet-scale")  # first run, then a rerun with nothing new
TOOLS = [
    Tool("curl", "curl", ALL, build_curl, _needs("curl", "xargs")),
    Tool("curl-fsync", "curl, then fsync (sync FILE)", ("large",), lambda c, o, w: build_curl(c, o, w, fsync=True),
         _needs("curl", "sync"), reference=True),
    Tool("curl-parallel", "curl --parallel, one process, keep-alive", ("fanout", "scale"), build_curl_parallel,
         _needs("curl"), reference=True),
    Tool("floor", "http.client keep-alive floor", WORKLOADS, build_floor, reference=True),
    Tool("floor-fsync", "http.client keep-alive floor + fsync", ("large", "fanout"),
         lambda c, o, w: build_floor(c, o, w, fsync=True), reference=True),
    Tool("kubectl-logs", "kubectl logs", ALL, build_kubectl_logs, _needs("kubectl", "xargs"), slow=True),
    Tool("kubectl-dump", "kubectl cluster-info dump", ALL, build_kubectl_dump, _needs("kubectl"), layout="dump"),
    Tool("k8s-whole", "kubernetes client, whole body", ALL, lambda c, o, w: build_official(c, o, w, "whole"),
         lambda: _has_module("kubernetes")),
    Tool("k8s-stream", "kubernetes client, _preload_content=False", ALL,
         lambda c, o, w: build_official(c, o, w, "stream"), lambda: _has_module("kubernetes")),
    Tool("exporter", "kubelogexporter.py (default: --concurrency 4)", WORKLOADS, build_exporter),
    Tool("exporter-c8", "kubelogexporter.py --concurrency 8", ALL, lambda c, o, w: build_exporter(c, o, w, 8)),
    Tool("exporter-bytecode", "python3 -m kubelogexporter (from its cached bytecode)", ("large", "young"),
         lambda c, o, w: build_exporter(c, o, w, bytecode=True), reference=True),
    Tool("exporter-nostate", "kubelogexporter.py --no-state (diagnostic)", ("fanout",),
         lambda c, o, w: build_exporter(c, o, w, extra=["--no-state"]), reference=True),
]
BY_KEY = {t.key: t for t in TOOLS}

# ---------------------------------------------------------------- running


@dataclass
class Ctx:
    server: Server
    work: Path
    concurrency: int
    kubectl: Optional[str]
    kcache: Path
    timeout: float
    max_attempts: int = 4
    noise: float = 0.15
    quiet_wait: float = 60.0   # seconds to wait at most for an idle machine before each run
    before_run: Optional[Callable[[], None]] = None  # called right before each timed run (young: restart the clock)
    runs: List[Run] = field(default_factory=list)
    expected: Dict[str, int] = field(default_factory=dict)
    verbose: bool = True

    def env(self, out: Path) -> Dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
        env.update(API=self.server.url, CA=self.server.ca, HDR=self.server.header, OUT=str(out), P=str(self.concurrency),
                   PY=sys.executable, TOOLS=str(TOOLS_DIR), KUBECTL=self.kubectl or "kubectl",
                   KUBECONFIG=self.server.kubeconfig, KCACHE=str(self.kcache), NS="bench", POD="big-0", C="app",
                   PYTHONDONTWRITEBYTECODE="1")
        return env


def check_output(tool: Tool, out: Path, expected: Dict[str, int]) -> str:
    if tool.layout == "dump":  # no timestamps, every container of a pod in one logs.txt: count the files only
        pods = {k.rsplit("/", 1)[0] for k in expected}
        found = sum(1 for p in pods if (out / p / "logs.txt").is_file())
        return "" if found == len(pods) else "%d of %d pods' logs.txt" % (found, len(pods))
    bad = []
    for rel, size in expected.items():
        p = out / rel
        got = p.stat().st_size if p.is_file() else None
        if got != size:
            bad.append("%s: %s bytes, expected %d" % (rel, got, size))
    return "" if not bad else "%d of %d files wrong (%s)" % (len(bad), len(expected), bad[0])


TRASH: List[Path] = []  # where outputs with many files go until the end (see clean)


def clean(path: Path) -> None:
    """Remove a run's output before the next run, and flush what is left to write back.

    Outputs of many files are moved aside instead, and deleted at the very end: ext4
    skips inodes freed in the last seconds when it allocates new ones (recently_deleted()),
    which made file creation right after deleting thousands of files several times
    slower and its cost land on whichever tool ran next."""
    if path.exists():
        count = 0
        for _root, dirs, files in os.walk(path):
            count += len(dirs) + len(files)
            if count > 64:
                break
        if count > 64 and TRASH:
            path.rename(TRASH[0] / ("%d" % time.monotonic_ns()))
        else:
            shutil.rmtree(path, ignore_errors=True)
    os.sync()  # nothing of the last run is left to write back while the next one is timed


def run_one(ctx: Ctx, tool: Tool, workload: str, case: str, rep: int, out: Path, phase: str = "") -> Run:
    """One timed run; repeated (from a clean output, unless a rerun) while other processes disturbed it."""
    snapshot = None
    if phase == "rerun":  # a retry must find the first run's output again
        snapshot = ctx.work / "snapshot"
        clean(snapshot)
        shutil.copytree(out, snapshot, symlinks=True)
    for attempt in range(1, ctx.max_attempts + 1):
        if attempt > 1:
            clean(out)
            if snapshot:
                shutil.copytree(snapshot, out, symlinks=True)
                os.sync()
        r = _run_once(ctx, tool, workload, case, rep, out, phase)
        r.attempts = attempt
        if r.other_cpu <= max(0.05, ctx.noise * r.wall) or r.error or attempt == ctx.max_attempts or r.wall > 30:
            break
        if ctx.verbose:
            print("  %-14s %-6s rep %d  disturbed (%.2f CPU s by other processes in %.2f s): again" % (
                tool.key, phase, rep, r.other_cpu, r.wall), flush=True)
    if snapshot:
        clean(snapshot)
    ctx.runs.append(r)
    if ctx.verbose:
        flag = "  FAILED: " + r.error if r.error else ("  WRONG OUTPUT: " + r.check if r.check else "")
        print("  %-14s %-6s rep %d  %8.3f s  %7.1f MiB  cpu %6.2f s  server %5.2f s  other %5.2f s  %s%s" % (
            tool.key, phase, rep, r.wall, r.rss_kib / 1024, r.cpu, r.server_cpu, r.other_cpu, _bytes(r.bytes_out),
            flag), flush=True)
    return r


def _run_once(ctx: Ctx, tool: Tool, workload: str, case: str, rep: int, out: Path, phase: str) -> Run:
    argv, stdout_path = tool.build(ctx, out, workload)
    out.mkdir(parents=True, exist_ok=True)
    ctx.server.call(cmd="reset")
    if ctx.quiet_wait:
        wait_quiet(ctx.quiet_wait)
    if ctx.before_run and phase != "rerun":
        ctx.before_run()
    before, cpu0 = ctx.server.call(cmd="stats"), ctx.server.cpu()
    busy0 = busy_seconds()
    m = measure(argv, env=ctx.env(out), stdout_path=stdout_path, tmp=ctx.work, timeout=ctx.timeout)
    busy1 = busy_seconds()
    after, cpu1 = ctx.server.call(cmd="stats"), ctx.server.cpu()
    r = Run(workload, case, tool.key, rep, phase, m["rc"], round(m["wall"], 4), m["rss_kib"], round(m.get("cpu", 0.0), 3),
            round(cpu1 - cpu0, 3), after["bytes_out"] - before["bytes_out"], after["bytes_in"] - before["bytes_in"],
            after["requests"], after["connections"] - before["connections"])
    r.other_cpu = round(max(0.0, (busy1 - busy0) - r.cpu - r.server_cpu), 3)
    r.not_ok = after["not_ok"]  # answers >= 400 are no failure by themselves (the exporter probes previous=true)
    if m["rc"] != 0:
        r.error = "exit %d: %s" % (m["rc"], m["stderr"].strip()[-400:])
    elif after["errors"]:
        r.error = "server: %s" % after["errors"][0]
    else:
        r.check = check_output(tool, out, ctx.expected)
    return r


def warm_kubectl(ctx: Ctx) -> None:
    """A user's kubectl has its discovery cache: fill ours before timing."""
    if ctx.kubectl:
        subprocess.run([ctx.kubectl, "--kubeconfig", ctx.server.kubeconfig, "--cache-dir", str(ctx.kcache), "get", "pods",
                        "-A", "--request-timeout", "20s"], capture_output=True, timeout=60)


def run_workload(ctx: Ctx, tools: List[Tool], workload: str, case: str, reps: int, slow_reps: int) -> None:
    if any(workload in t.workloads and t.key.startswith("kubectl") for t in tools):
        warm_kubectl(ctx)  # (its unpaged table list would be slow at 50,000 pods: only when kubectl runs)
    out = ctx.work / "out"
    for rep in range(1, reps + 1):
        for tool in tools:
            if workload not in tool.workloads or (tool.slow and workload != "large" and rep > slow_reps):
                continue
            clean(out)
            if workload in QUIET:
                first = run_one(ctx, tool, workload, case, rep, out, "first")
                if not first.error:
                    run_one(ctx, tool, workload, case, rep, out, "rerun")
            else:
                run_one(ctx, tool, workload, case, rep, out)
    clean(out)


# ---------------------------------------------------------------- report


def _bytes(n: float) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return "%.1f %s" % (n / size, unit)
    return "%d B" % n


def _ok(runs: List[Run]) -> List[Run]:
    return [r for r in runs if not r.error and not r.check]


def _stat(values: List[float], fmt: str = "%.2f") -> str:
    if not values:
        return "-"
    med = statistics.median(values)
    if len(values) == 1:
        return fmt % med
    return "%s (%s–%s)" % (fmt % med, fmt % min(values), fmt % max(values))


def _median(values: List[float]) -> Optional[float]:
    return statistics.median(values) if values else None


class Report:
    def __init__(self, runs: List[Run], meta: dict):
        self.runs, self.meta = runs, meta

    def select(self, workload, case=None, tool=None, phase=None) -> List[Run]:
        return [r for r in self.runs if r.workload == workload and (case is None or r.case == case)
                and (tool is None or r.tool == tool) and (phase is None or r.phase == phase)]

    def cases(self, workload) -> List[str]:
        seen = []
        for r in self.runs:
            if r.workload == workload and r.case not in seen:
                seen.append(r.case)
        return seen

    def tools(self, workload) -> List[str]:
        present = {r.tool for r in self.runs if r.workload == workload}
        return [t.key for t in TOOLS if t.key in present]

    def med(self, workload, case, tool, attr="wall", phase=None) -> Optional[float]:
        return _median([getattr(r, attr) for r in _ok(self.select(workload, case, tool, phase))])

    def status(self, runs: List[Run]) -> str:
        bad = [r for r in runs if r.error or r.check]
        if not bad:
            return ""
        return " **%d of %d runs failed: %s**" % (len(bad), len(runs), (bad[0].error or bad[0].check)[:160].replace("|", "/"))

    # -- the targets
    def headline(self) -> List[dict]:
        rows = []
        for case in self.cases("large"):
            curl = self.med("large", case, "curl")
            cfs = self.med("large", case, "curl-fsync")
            # The script as copied, and the image's form (python3 -m from bytecode: no compile at each start).
            for tool, form in (("exporter", ""), ("exporter-bytecode", ", from bytecode")):
                ex = self.med("large", case, tool)
                rss = self.med("large", case, tool, "rss_kib")
                if ex and curl:  # issue 12: at most 1.4x plain curl, and at most 0.9x curl then sync
                    rows.append({"target": "large log %s%s: wall ≤ 1.4× curl" % (case, form), "value": ex / curl,
                                 "text": "%.2f× curl (%.2f s vs %.2f s)" % (ex / curl, ex, curl),
                                 "ok": ex / curl <= 1.4})
                if ex and cfs:
                    rows.append({"target": "large log %s%s: wall ≤ 0.9× curl, then sync" % (case, form),
                                 "value": ex / cfs, "text": "%.2f× curl+sync (%.2f s vs %.2f s)" % (ex / cfs, ex, cfs),
                                 "ok": ex / cfs <= 0.9})
                if rss:
                    rows.append({"target": "large log %s%s: peak RSS ≤ 32 MiB" % (case, form), "value": rss / 1024,
                                 "text": "%.1f MiB" % (rss / 1024), "ok": rss <= 32 * 1024})
        rss = [self.med("large", c, "exporter", "rss_kib") for c in self.cases("large")]
        rss = [x for x in rss if x]
        if len(rss) > 1:
            rows.append({"target": "large log: peak RSS flat across sizes", "value": max(rss) / min(rss),
                         "text": "%.1f–%.1f MiB (max/min %.2f)" % (min(rss) / 1024, max(rss) / 1024, max(rss) / min(rss)),
                         "ok": max(rss) - min(rss) <= 2 * 1024})
        for case in self.cases("fanout"):
            floor = self.med("fanout", case, "floor")
            ffs = self.med("fanout", case, "floor-fsync")
            ex = self.med("fanout", case, "exporter")
            if ex and floor:  # issue 12: 2,000 pods at most 1.2x the floor; the 3-container case keeps 1.3x
                bound = 1.2 if "× 1 container" in case else 1.3
                rows.append({"target": "fan-out %s: wall ≤ %.1f× keep-alive floor" % (case, bound), "value": ex / floor,
                             "text": "%.2f× floor (%.2f s vs %.2f s)%s" % (
                                 ex / floor, ex, floor, "; %.2f× floor+fsync" % (ex / ffs) if ffs else ""),
                             "ok": ex / floor <= bound})
            if ex:
                others = {t: self.med("fanout", case, t) for t in self.tools("fanout")
                          if not BY_KEY[t].reference and not t.startswith("exporter")}
                others = {t: v for t, v in others.items() if v}
                if others:
                    best = min(others, key=others.get)
                    rows.append({"target": "fan-out %s: ahead of every other tool" % case, "value": others[best] / ex,
                                 "text": "next best: %s at %.2f s (%.2f× the exporter's time)" % (
                                     best, others[best], others[best] / ex), "ok": ex < others[best]})
        rows += self._quiet_rows("quiet", 0.02)
        for workload, prefix, bound in (("young", "", 1.2), ("scale", "tiny pods, ", 1.25)):
            for case in self.cases(workload):
                floor = self.med(workload, case, "floor")
                for tool, form in (("exporter", ""), ("exporter-bytecode", ", from bytecode")):
                    ex = self.med(workload, case, tool)
                    if ex and floor:
                        rows.append({"target": "%s%s%s: wall ≤ %g× floor" % (prefix, case, form, bound),
                                     "value": ex / floor, "text": "%.2f× floor (%.2f s vs %.2f s)" % (ex / floor, ex, floor),
                                     "ok": ex / floor <= bound})
        for attr, what, unit, scale in (("wall", "time", "ms", 1e3), ("rss_kib", "peak RSS", "KiB", 1.0)):
            marg = self.marginal("scale", "exporter", attr)
            if len(marg) >= 2:
                a, b = marg[0][2], marg[-1][2]
                rows.append({"target": "tiny pods: exporter's %s linear in pods" % what, "value": b / a if a else 0,
                             "text": "%s per 1,000 pods: %s" % (unit, "; ".join(
                                 "%.1f from %d to %d" % (v * scale * 1000, x0, x1) for x0, x1, v in marg)),
                             "ok": bool(a) and b <= 1.25 * a + (0.0 if attr == "wall" else 64 / 1000)})
        rows += self._quiet_rows("quiet-scale", 0.03)
        return rows

    def _quiet_rows(self, workload: str, share: float) -> List[dict]:
        """A rerun with nothing new moves less than ``share`` of the first run's bytes."""
        rows = []
        for case in self.cases(workload):
            first = self.med(workload, case, "exporter", "bytes_out", "first")
            again = self.med(workload, case, "exporter", "bytes_out", "rerun")
            if first and again is not None:
                rows.append({"target": "quiet rerun %s: < %g %% of the first run's bytes" % (case, 100 * share),
                             "value": again / first, "text": "%.2f %% (%s of %s)" % (
                                 100 * again / first, _bytes(again), _bytes(first)), "ok": again / first < share})
        return rows

    def pods(self, case: str) -> int:
        return int(self.meta.get("containers", {}).get(case) or case.split()[0])

    def marginal(self, workload: str, tool: str, attr: str) -> List[tuple]:
        """(pods from, pods to, extra attr per extra pod) between successive cases (medians)."""
        pts = sorted((self.pods(c), self.med(workload, c, tool, attr)) for c in self.cases(workload))
        pts = [(n, v) for n, v in pts if v is not None]
        return [(n0, n1, (v1 - v0) / (n1 - n0)) for (n0, v0), (n1, v1) in zip(pts, pts[1:]) if n1 > n0]

    def markdown(self) -> str:
        m = self.meta
        L = ["# Benchmarks", "",
             "Generated by `%s` on %s. **Do not edit by hand**: rerun it." % (m["command"], m["date"]), "",
             "| machine | |", "| --- | --- |",
             "| CPUs | %s (%s) |" % (m["cpus"], m["cpu_model"]),
             "| memory | %s |" % m["memory"],
             "| Python | %s |" % m["python"],
             "| kernel | %s |" % m["kernel"],
             "| tools | %s |" % m["tool_versions"],
             "| output disk | %s |" % m["disk"],
             "| repetitions | %s |" % m["reps"],
             "| concurrency | %d (xargs -P, thread pools, the exporter's default) |" % m["concurrency"],
             "| peak RSS | %s |" % m["measure_text"],
             "| run time | %s; %d of %d runs repeated because other processes used the CPUs meanwhile |" % (
                 m.get("elapsed", "?"), sum(r.attempts > 1 for r in self.runs), len(self.runs)), ""]
        L += ["## Targets", "", "| target | measured | |", "| --- | --- | --- |"]
        for h in self.headline():
            L.append("| %s | %s | %s |" % (h["target"], h["text"], "met" if h["ok"] else "**missed**"))
        L += [""] + m.get("notes_md", []) + [""]
        L += self.large_md() + self.fanout_md() + self.many_md() + self.quiet_md()
        L += ["## Tools", ""] + ["- **%s** (`%s`)%s" % (t.label, t.key, ": " + TOOL_NOTES[t.key] if t.key in TOOL_NOTES else "")
                                 for t in TOOLS if any(r.tool == t.key for r in self.runs)]
        skipped = m.get("skipped") or {}
        if skipped:
            L += ["", "Not run here: " + "; ".join("`%s` (%s)" % kv for kv in skipped.items()) + "."]
        return "\n".join(L) + "\n"

    def large_md(self) -> List[str]:
        if not self.cases("large"):
            return []
        L = ["## 1. One large log", "",
             "One pod, one container, lines of ~200 bytes (1,000 a second of log time). Time from start to exit of the "
             "whole process; throughput = log bytes / wall time. Median (min–max) of the repetitions.", ""]
        for case in self.cases("large"):
            curl = self.med("large", case, "curl")
            size = None
            L += ["### %s" % case, "", "| tool | wall s | MiB/s | × curl | peak RSS MiB | tool CPU s | server CPU s |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
            for tool in self.tools("large"):
                runs = self.select("large", case, tool)
                ok = _ok(runs)
                walls = [r.wall for r in ok]
                size = self.meta["sizes"].get(case)
                w = _median(walls)
                L.append("| %s | %s | %s | %s | %s | %s | %s |%s" % (
                    BY_KEY[tool].label, _stat(walls), "%.0f" % (size / MiB / w) if w and size else "-",
                    "%.2f" % (w / curl) if w and curl else "-", _stat([r.rss_kib / 1024 for r in ok], "%.1f"),
                    _stat([r.cpu for r in ok]), _stat([r.server_cpu for r in ok]), self.status(runs)))
            L.append("")
        return L

    def fanout_md(self) -> List[str]:
        if not self.cases("fanout"):
            return []
        L = ["## 2. Fan-out", "", "Many small logs (~10 KiB each, ~200-byte lines): list the pods, fetch every container's "
             "log, write one file per container. Median (min–max).", ""]
        for case in self.cases("fanout"):
            floor = self.med("fanout", case, "floor")
            L += ["### %s" % case, "", "| tool | wall s | × floor | containers/s | tool CPU s | server CPU s | requests "
                  "| connections | runs |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
            n = self.meta["containers"].get(case, 0)
            for tool in self.tools("fanout"):
                runs = self.select("fanout", case, tool)
                ok = _ok(runs)
                w = _median([r.wall for r in ok])
                L.append("| %s | %s | %s | %s | %s | %s | %s | %s | %d |%s" % (
                    BY_KEY[tool].label, _stat([r.wall for r in ok]), "%.2f" % (w / floor) if w and floor else "-",
                    "%.0f" % (n / w) if w else "-", _stat([r.cpu for r in ok]), _stat([r.server_cpu for r in ok]),
                    _stat([r.requests for r in ok], "%d"), _stat([r.connections for r in ok], "%d"), len(runs),
                    self.status(runs)))
            L.append("")
        return L

    def quiet_md(self) -> List[str]:
        if not any(self.cases(w) for w in QUIET):
            return []
        L = ["## 3. Quiet rerun", "",
             "Each tool exports the cluster, then runs again with nothing new (lines spread over ~10 minutes of log "
             "time, ~2 a second). Bytes: what the server sent (HTTP headers and bodies, before TLS). Median (min–max).",
             ""]
        for workload in QUIET:
            for case in self.cases(workload):
                L += ["### %s" % case, "", "| tool | first run s | rerun s | first run bytes | rerun bytes | rerun / first "
                      "| peak RSS MiB, first / rerun |", "| --- | --- | --- | --- | --- | --- | --- |"]
                for tool in self.tools(workload):
                    runs = self.select(workload, case, tool)
                    first = _ok([r for r in runs if r.phase == "first"])
                    again = _ok([r for r in runs if r.phase == "rerun"])
                    fb = _median([r.bytes_out for r in first])
                    ab = _median([r.bytes_out for r in again])
                    L.append("| %s | %s | %s | %s | %s | %s | %s / %s |%s" % (
                        BY_KEY[tool].label, _stat([r.wall for r in first]), _stat([r.wall for r in again]),
                        _bytes(fb) if fb else "-", _bytes(ab) if ab is not None else "-",
                        "%.2f %%" % (100 * ab / fb) if fb and ab is not None else "-",
                        _stat([r.rss_kib / 1024 for r in first], "%.1f"), _stat([r.rss_kib / 1024 for r in again], "%.1f"),
                        self.status(runs)))
                L.append("")
                if workload in MANY:
                    L += self.disturbed_md(workload, case)
        return L

    def disturbed_md(self, workload: str, case: str) -> List[str]:
        """Say when other processes used the CPUs during the kept runs (this machine is shared)."""
        busy = [r for r in _ok(self.select(workload, case)) if r.other_cpu > 0.15 * r.wall]
        if not busy:
            return []
        return ["Other processes used the CPUs during %d of these runs: %s." % (len(busy), "; ".join(
            "%s rep %d%s %.1f CPU s in %.1f s" % (r.tool, r.rep, " " + r.phase if r.phase else "", r.other_cpu, r.wall)
            for r in busy)), ""]

    def many_md(self) -> List[str]:
        """Young pods and tiny pods at scale: the exporter against the floor, with peak RSS."""
        if not (self.cases("young") or self.cases("scale")):
            return []
        L = ["## 2b. Many pods: young pods, and 2,000 to 50,000 tiny pods", "",
             "The exporter against the keep-alive floor in the same run. **Young**: the fan-out's 2,000 pods and bytes, "
             "first as they are (containers started when their logs start, days ago), then with every container "
             "started a few seconds before the run (set again right before each run), as after a rollout or on a "
             "fresh cluster, when the exporter's first export asks `previous=true` first. **Tiny "
             "pods**: one container each, ~1 KiB logs, so the cost is per pod, not per byte. Peak RSS as in the "
             "large log. Median (min–max).", ""]
        if self.meta.get("many_runs"):
            L += [self.meta["many_runs"], ""]
        head = ["| tool | wall s | × floor | containers/s | peak RSS MiB | tool CPU s | server CPU s | requests | "
                "connections | runs |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for workload in ("young", "scale"):
            for case in self.cases(workload):
                floor = self.med(workload, case, "floor")
                n = self.pods(case)
                L += ["### %s%s" % ("" if workload == "young" else "Tiny pods: ", case), ""] + head
                for tool in self.tools(workload):
                    runs = self.select(workload, case, tool)
                    ok = _ok(runs)
                    w = _median([r.wall for r in ok])
                    L.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %d |%s" % (
                        BY_KEY[tool].label, _stat([r.wall for r in ok]), "%.2f" % (w / floor) if w and floor else "-",
                        "%.0f" % (n / w) if w else "-", _stat([r.rss_kib / 1024 for r in ok], "%.1f"),
                        _stat([r.cpu for r in ok]), _stat([r.server_cpu for r in ok]),
                        _stat([r.requests for r in ok], "%d"), _stat([r.connections for r in ok], "%d"), len(runs),
                        self.status(runs)))
                L.append("")
                L += self.disturbed_md(workload, case)
        cases = self.cases("scale")
        if len(cases) > 1:
            L += ["### Tiny pods: growth", "", "| pods | floor s | exporter s | × floor | floor peak RSS MiB | "
                  "exporter peak RSS MiB | exporter ms per 1,000 pods (marginal) | exporter KiB per pod (marginal) |",
                  "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
            mw = {n1: v for _n0, n1, v in self.marginal("scale", "exporter", "wall")}
            mr = {n1: v for _n0, n1, v in self.marginal("scale", "exporter", "rss_kib")}
            for case in cases:
                n = self.pods(case)
                fl, ex = self.med("scale", case, "floor"), self.med("scale", case, "exporter")
                frss, erss = self.med("scale", case, "floor", "rss_kib"), self.med("scale", case, "exporter", "rss_kib")
                L.append("| %d | %s | %s | %s | %s | %s | %s | %s |" % (
                    n, "%.2f" % fl if fl else "-", "%.2f" % ex if ex else "-", "%.2f" % (ex / fl) if ex and fl else "-",
                    "%.1f" % (frss / 1024) if frss else "-", "%.1f" % (erss / 1024) if erss else "-",
                    "%.1f" % (mw[n] * 1e6) if n in mw else "-", "%.2f" % mr[n] if n in mr else "-"))
            L.append("")
            if self.meta.get("scaling_plot"):
                L += ["![time and peak RSS against pod count](%s)" % self.meta["scaling_plot"], ""]
        return L

    def plot(self, path: Path) -> Optional[str]:
        cases = self.cases("large")
        if not cases:
            return None
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            return "matplotlib not installed"
        fig, ax = plt.subplots(figsize=(8, 5.5), dpi=110)
        sizes = [float(c.split()[0]) for c in cases]  # nominal MiB, from the case name
        for tool in self.tools("large"):
            ys = [self.med("large", c, tool, "rss_kib") for c in cases]
            pts = [(x, y / 1024) for x, y in zip(sizes, ys) if y]
            if pts:
                style = ("-o" if tool == "exporter" else ":D" if tool.startswith("exporter")
                         else "--s" if BY_KEY[tool].reference else "-^")
                ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=BY_KEY[tool].label,
                        linewidth=2.5 if tool == "exporter" else 1.2)
        ax.axhline(32, color="grey", linestyle=":", linewidth=1)
        ax.text(sizes[0], 34, "target: 32 MiB", color="grey", fontsize=8)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(sizes)
        ax.set_xticklabels(["%g" % s for s in sizes])
        ax.set_xlabel("log size (MiB)")
        ax.set_ylabel("peak RSS of the process (MiB, %s)" % self.meta["measure"])
        ax.set_title("Peak memory exporting one log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
        plt.close(fig)
        return None

    def plot_scaling(self, path: Path) -> Optional[str]:
        """Wall time and peak RSS against pod count (tiny pods), each tool of the scale workload."""
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            return "matplotlib not installed"
        cases = self.cases("scale")
        fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4.8), dpi=110)
        for tool in self.tools("scale"):
            style = "-o" if tool == "exporter" else "--s" if BY_KEY[tool].reference else "-^"
            for ax, attr, div in ((ax_t, "wall", 1.0), (ax_m, "rss_kib", 1024.0)):
                pts = sorted((self.pods(c), self.med("scale", c, tool, attr)) for c in cases)
                pts = [(n, v / div) for n, v in pts if v is not None]
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=BY_KEY[tool].label,
                            linewidth=2.5 if tool == "exporter" else 1.2)
        n_max = max(self.pods(c) for c in cases)
        fl = [(self.pods(c), self.med("scale", c, "floor")) for c in cases]
        fl = [(n, v) for n, v in fl if v]
        if fl:  # the target: 1.25x the floor
            ax_t.plot([n for n, _ in fl], [1.25 * v for _, v in fl], ":", color="grey", linewidth=1,
                      label="target: 1.25× floor")
        ax_t.set_title("Wall time, tiny pods (one container, ~1 KiB log)")
        ax_t.set_ylabel("wall s (median)")
        ax_m.set_title("Peak RSS of the process (%s)" % self.meta.get("measure", ""))
        ax_m.set_ylabel("MiB")
        for ax in (ax_t, ax_m):
            ax.set_xlabel("pods")
            ax.set_xlim(0, n_max * 1.05)
            ax.set_ylim(bottom=0)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=7, loc="upper left")
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
        plt.close(fig)
        return None

    def console(self) -> str:
        out = []
        for h in self.headline():
            out.append("%-52s %-60s %s" % (h["target"], h["text"], "met" if h["ok"] else "MISSED"))
        return "\n".join(out)


TOOL_NOTES = {
    "curl": "one request per container with the token and CA, as in the walkthrough; for fan-out, "
            "`curl` lists the pods and one `curl` process per container runs under `xargs -P`. Writes through the "
            "page cache, no fsync.",
    "curl-fsync": "reference: the same download followed by `sync FILE` (fsync), the durability the exporter "
                  "gives each file.",
    "curl-parallel": "reference: one `curl --parallel --parallel-max P -K -` process reusing keep-alive connections "
                     "(a C client: what this server can serve).",
    "floor": "`benchmarks/tools/floor.py`: thread pool of P, one keep-alive `http.client` connection per thread, "
             "paged pod list, 1 MiB `readinto` into `os.write`. No state, no line handling, no fsync.",
    "floor-fsync": "the floor with an `fsync` per file before it counts as written.",
    "kubectl-logs": "`kubectl get pods -A -o go-template` then `xargs -P` of `kubectl logs --timestamps` per "
                    "container (the large log: one `kubectl logs` with stdout to the file). Warm discovery cache.",
    "kubectl-dump": "`kubectl cluster-info dump --all-namespaces --output-directory`: lists nodes, namespaces and 7 "
                    "resource kinds per namespace, then reads every log **without timestamps** (fewer bytes) one "
                    "after another (`DoRaw`: whole body in memory), all containers of a pod into one `logs.txt`.",
    "k8s-whole": "`benchmarks/tools/official_client.py --mode whole`: `load_kube_config`, paged "
                 "`list_pod_for_all_namespaces`, `read_namespaced_pod_log(timestamps=True)` (body as `str`) "
                 "written to the file, thread pool of P.",
    "k8s-stream": "the same with `_preload_content=False` and `resp.stream(1 MiB)` into the file.",
    "exporter": "`python3 kubelogexporter.py -o OUT --server URL --token-file T --ca-file CA`; keeps its state file, "
                "fsyncs each file before recording it.",
    "exporter-c8": "the same with `--concurrency 8`.",
    "exporter-bytecode": "reference, large log and young pods: `python3 -m kubelogexporter` from the cached bytecode "
                         "(`python3 FILE` compiles the script on every start: ~70 ms and ~12 MiB of peak RSS).",
    "exporter-nostate": "diagnostic, fan-out only: `--no-state` keeps no state file and writes each file aside, "
                        "then renames it over the old one.",
}

# ---------------------------------------------------------------- main


def _commit() -> str:
    """The exporter's commit (and whether the file differs from it)."""
    try:
        c = subprocess.run(["git", "-C", str(ROOT), "log", "-1", "--format=%h (%cI)", "--", EXPORTER.name],
                           capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "diff", "--quiet", "HEAD", "--", EXPORTER.name],
                               timeout=10).returncode
    except (OSError, subprocess.SubprocessError):
        return "?"
    return (c or "?") + (", with uncommitted changes" if dirty else "")


def machine_meta(args, work: Path) -> dict:
    def version(argv):
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=20)
            return (r.stdout or r.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return "n/a"
    model = "unknown CPU"
    try:
        model = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text()).group(1).strip()
    except (OSError, AttributeError):
        pass
    mem = "?"
    try:
        mem = "%.1f GiB" % (int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1)) / 2**20)
    except (OSError, AttributeError):
        pass
    k8s = subprocess.run([sys.executable, "-c", "import kubernetes; print(kubernetes.__version__)"],
                         capture_output=True, text=True).stdout.strip() or "not installed"
    kubectl = _kubectl()
    versions = "; ".join([
        version(["curl", "--version"]).split(" (")[0],
        ("kubectl " + version([kubectl, "version", "--client"]).split(":")[-1].strip()) if kubectl else "kubectl n/a",
        "kubernetes (Python) " + k8s])
    try:
        df = subprocess.run(["df", "-hT", str(work)], capture_output=True, text=True).stdout.splitlines()[-1].split()
        disk = "%s (%s, %s), under `%s`" % (df[0], df[1], df[2], tempfile.gettempdir() if not args.workdir else args.workdir)
    except (OSError, IndexError):
        disk = str(work)
    return {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "cpus": os.cpu_count(), "cpu_model": model, "memory": mem,
            "python": "%s (%s)" % (platform.python_version(), sys.executable),
            "kernel": platform.release(), "tool_versions": versions, "disk": disk}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="Writes BENCHMARKS.md, benchmarks/memory.png and benchmarks/results.json "
                                       "(with --quick: a temp dir, unless --output).")
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes, one repetition (4 MiB log, 20 pods, 4x3 containers): checks for breakage")
    p.add_argument("--sizes", default=None, help="large-log sizes in MiB, comma-separated (default 64,256,1024)")
    p.add_argument("--pods", type=int, default=None, help="fan-out: pods with one container (default 2000)")
    p.add_argument("--multi-pods", type=int, default=None, help="fan-out: pods with 3 containers (default 200)")
    p.add_argument("--log-kib", type=int, default=10, help="fan-out log size per container, KiB (default 10)")
    p.add_argument("--quiet-pods", type=int, default=None, help="quiet rerun: pods with 3 containers (default 200)")
    p.add_argument("--quiet-log-kib", type=int, default=None, help="quiet rerun: log size per container (default 256)")
    p.add_argument("--reps", type=int, default=None, help="repetitions (default 3; --quick 1)")
    p.add_argument("--large-reps", type=int, default=None, help="repetitions of the large-log runs (default 5; --quick 1)")
    p.add_argument("--slow-reps", type=int, default=None,
                   help="repetitions of the slow tools (kubectl logs) in fan-out and quiet workloads (default 1)")
    p.add_argument("--concurrency", type=int, default=4, help="xargs -P, thread pools (default 4, the exporter's)")
    p.add_argument("--tools", default=",".join(t.key for t in TOOLS), help="comma-separated: " + ", ".join(BY_KEY))
    p.add_argument("--young-pods", type=int, default=None,
                   help="young: pods with one container started --young-ago seconds before each run, 10 KiB logs "
                        "(default 2000; --quick 4)")
    p.add_argument("--young-ago", type=float, default=5.0, help="young: seconds since the containers started (default 5)")
    p.add_argument("--scale-pods", default=None,
                   help="scale: tiny-pod counts, comma-separated (default 2000,10000,50000; --quick 8)")
    p.add_argument("--tiny-log-kib", type=int, default=1, help="scale: log size per container, KiB (default 1)")
    p.add_argument("--scale-big-reps", type=int, default=1,
                   help="scale: repetitions above 10,000 pods (default 1; up to 10,000: --reps)")
    p.add_argument("--quiet-scale-pods", type=int, default=None,
                   help="quiet-scale: pods with one container (default 10000; --quick 4)")
    p.add_argument("--quiet-scale-log-kib", type=int, default=None,
                   help="quiet-scale: log size per container, KiB (default 64; --quick 4)")
    p.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated: " + ", ".join(WORKLOADS))
    p.add_argument("--output", default=None, help="Markdown report (default BENCHMARKS.md; --quick: a temp dir)")
    p.add_argument("--plot", default=None, help="PNG (default benchmarks/memory.png; --quick: next to --output)")
    p.add_argument("--json", default=None, help="raw results (default benchmarks/results.json; --quick: next to --output)")
    p.add_argument("--merge", default=None, metavar="RESULTS_JSON",
                   help="keep the runs in this results file except those of the tools, workloads and cases run now")
    p.add_argument("--render", default=None, metavar="RESULTS_JSON",
                   help="run nothing: write the report and plot again from a results file")
    p.add_argument("--workdir", default=None, help="where tools write (default: a new temp dir, removed afterwards)")
    p.add_argument("--timeout", type=float, default=900, help="seconds before a tool run is killed")
    p.add_argument("--max-attempts", type=int, default=None,
                   help="repeat a run while other processes used more than --noise cores meanwhile (default 4; --quick 1)")
    p.add_argument("--quiet-wait", type=float, default=None,
                   help="seconds to wait at most for idle CPUs before each run (default 20; --quick 0)")
    p.add_argument("--noise", type=float, default=0.15,
                   help="other processes' CPU, in cores over the run, that makes a run disturbed (default 0.15)")
    args = p.parse_args(argv)

    quick = args.quick
    sizes = [int(s) for s in (args.sizes or ("4" if quick else "64,256,1024")).split(",")]
    pods = args.pods if args.pods is not None else (20 if quick else 2000)
    multi = args.multi_pods if args.multi_pods is not None else (4 if quick else 200)
    quiet_pods = args.quiet_pods if args.quiet_pods is not None else (4 if quick else 200)
    quiet_kib = args.quiet_log_kib if args.quiet_log_kib is not None else (16 if quick else 256)
    young_pods = args.young_pods if args.young_pods is not None else (4 if quick else 2000)
    scale_pods = [int(n) for n in (args.scale_pods or ("8" if quick else "2000,10000,50000")).split(",") if n.strip()]
    qs_pods = args.quiet_scale_pods if args.quiet_scale_pods is not None else (4 if quick else 10000)
    qs_kib = args.quiet_scale_log_kib if args.quiet_scale_log_kib is not None else (4 if quick else 64)
    reps = args.reps or (1 if quick else 3)
    large_reps = args.large_reps or args.reps or (1 if quick else 5)
    slow_reps = args.slow_reps or (reps if quick else 1)
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    keys = [k.strip() for k in args.tools.split(",") if k.strip()]
    unknown = [k for k in keys + workloads if k not in BY_KEY and k not in WORKLOADS]
    if unknown:
        p.error("unknown tool or workload: %s" % ", ".join(unknown))
    if quick and not args.output:
        outdir = Path(tempfile.mkdtemp(prefix="kle-bench-report-"))
        output = outdir / "BENCHMARKS.md"
    else:
        output = Path(args.output) if args.output else ROOT / "BENCHMARKS.md"
    plot = Path(args.plot) if args.plot else (output.parent / "memory.png" if quick or args.output else HERE / "memory.png")
    results = Path(args.json) if args.json else (output.parent / "results.json" if quick or args.output
                                                 else HERE / "results.json")

    if args.render:
        data = json.loads(Path(args.render).read_text())
        return write_report([Run(**r) for r in data["runs"]], data["meta"], output, plot, results, quick, [])

    tools, skipped = [], {}
    for k in keys:
        why = BY_KEY[k].needs()
        if why:
            skipped[k] = why
            print("skipping %s: %s" % (k, why))
        else:
            tools.append(BY_KEY[k])

    work = Path(args.workdir or tempfile.mkdtemp(prefix="kle-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    TRASH[:] = [work / "trash"]
    TRASH[0].mkdir(exist_ok=True)
    started = time.monotonic()
    load0 = os.getloadavg()
    server = Server(work)
    ctx = Ctx(server, work, args.concurrency, _kubectl(), work / "kubectl-cache", args.timeout,
              max_attempts=args.max_attempts or (1 if quick else 4), noise=args.noise,
              quiet_wait=args.quiet_wait if args.quiet_wait is not None else 0.0 if quick else 20.0)
    meta = machine_meta(args, work)
    meta.update(command="python3 benchmarks/run.py" + ("" if argv is None and len(sys.argv) == 1 else
                                                       " " + " ".join(argv if argv is not None else sys.argv[1:])),
                concurrency=args.concurrency, sizes={}, containers={}, measure=MEASURE, skipped=skipped,
                reps="large log: %d; fan-out and quiet rerun: %d%s; young pods: %d; tiny pods: %d up to 10,000 pods, "
                     "%d above; quiet rerun above 2,000 pods: 1" % (
                    large_reps, reps, " (kubectl logs: %d)" % slow_reps if slow_reps < reps else "", reps, reps,
                    args.scale_big_reps),
                measure_text="GNU time `%M`: wait4() `ru_maxrss` of the tool, forked from time's own small process "
                             "(a child forked from this Python runner would start at the runner's high-water mark). "
                             "For a shell pipeline: its largest process." if MEASURE == "gnu-time" else
                             "`VmHWM` from `/proc/<pid>/status`, polled every 2 ms (no GNU time here); "
                             "for a shell pipeline, the shell's own only.")
    print("server %s (pid %s); tools write under %s; peak RSS by %s" % (server.url, server.info["pid"], work, MEASURE))
    try:
        if "large" in workloads:
            for mib in sizes:
                case = "%d MiB" % mib
                print("large log, %s: building" % case, flush=True)
                info = server.call(cmd="large", size=mib * MiB, plain=any(t.layout == "dump" for t in tools))
                ctx.expected = info["files"]
                meta["sizes"][case] = info["bytes"]
                run_workload(ctx, tools, "large", case, large_reps, slow_reps)
        if "fanout" in workloads:
            for n, c in ((pods, 1), (multi, 3)):
                if n <= 0:
                    continue
                case = "%d pods × %d container%s" % (n, c, "s" if c > 1 else "")
                print("fan-out, %s: building" % case, flush=True)
                info = server.call(cmd="fanout", pods=n, containers=c, log_bytes=args.log_kib * 1024,
                                   namespaces=max(1, min(20, n // 50)))
                ctx.expected = info["files"]
                meta["containers"][case] = info["containers"]
                run_workload(ctx, tools, "fanout", case, reps, slow_reps)
        if "quiet" in workloads and quiet_pods > 0:
            case = "%d pods × 3 containers, %d KiB logs" % (quiet_pods, quiet_kib)
            print("quiet rerun, %s: building" % case, flush=True)
            info = server.call(cmd="fanout", pods=quiet_pods, containers=3, log_bytes=quiet_kib * 1024,
                               namespaces=max(1, min(20, quiet_pods // 50)), mean_step_ms=500)
            ctx.expected = info["files"]
            meta["containers"][case] = info["containers"]
            run_workload(ctx, tools, "quiet", case, reps, slow_reps)
        if "young" in workloads and young_pods > 0:
            # the fan-out's pods and bytes (same seed), first as they are (started when their logs start, days
            # ago), then with every container started seconds before each run: only the start time differs
            old = "%d pods × 1 container, started days before the run" % young_pods
            case = "%d pods × 1 container, started %g s before the run" % (young_pods, args.young_ago)
            print("young pods, %s; %s: building" % (old, case), flush=True)
            info = server.call(cmd="fanout", pods=young_pods, containers=1, log_bytes=args.log_kib * 1024,
                               namespaces=max(1, min(20, young_pods // 50)))
            ctx.expected = info["files"]
            meta["containers"][old] = meta["containers"][case] = info["containers"]
            run_workload(ctx, tools, "young", old, reps, slow_reps)
            ctx.before_run = lambda: server.call(cmd="start", ago=args.young_ago)
            try:
                run_workload(ctx, tools, "young", case, reps, slow_reps)
            finally:
                ctx.before_run = None
        if "scale" in workloads:
            for n in scale_pods:
                case = "%d pods × 1 container, %d KiB logs" % (n, args.tiny_log_kib)
                print("tiny pods, %s: building" % case, flush=True)
                info = server.call(cmd="fanout", pods=n, containers=1, log_bytes=args.tiny_log_kib * 1024,
                                   namespaces=max(1, min(20, n // 50)))
                ctx.expected = info["files"]
                meta["containers"][case] = info["containers"]
                meta["sizes"][case] = info["bytes"]
                run_workload(ctx, tools, "scale", case, reps if n <= 10000 else args.scale_big_reps, slow_reps)
        if "quiet-scale" in workloads and qs_pods > 0:
            case = "%d pods × 1 container, %d KiB logs" % (qs_pods, qs_kib)
            print("quiet rerun, %s: building" % case, flush=True)
            info = server.call(cmd="fanout", pods=qs_pods, containers=1, log_bytes=qs_kib * 1024,
                               namespaces=max(1, min(20, qs_pods // 50)), mean_step_ms=500)
            ctx.expected = info["files"]
            meta["containers"][case] = info["containers"]
            meta["sizes"][case] = info["bytes"]
            run_workload(ctx, tools, "quiet-scale", case, 1 if qs_pods > 2000 else reps, slow_reps)
    finally:
        server.close()
        shutil.rmtree(TRASH[0], ignore_errors=True)
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)

    runs = ctx.runs
    meta["elapsed"] = "%.0f s" % (time.monotonic() - started)
    if any(r.workload in MANY for r in runs):
        meta["many_runs"] = (
            "Measured on %s with `%s`; kubelogexporter.py of commit %s. Repetitions: %d (tiny pods above 10,000: "
            "%d; quiet rerun above 2,000 pods: 1). The runner waited up to %g s for idle CPUs before each run and "
            "ran a disturbed run at most %d times. Load average (1, 5, 15 min) at the start %s, at the end %s." % (
                meta["date"], meta["command"], _commit(), reps, args.scale_big_reps, ctx.quiet_wait,
                ctx.max_attempts, "%.2f %.2f %.2f" % load0, "%.2f %.2f %.2f" % os.getloadavg()))
    if args.merge and Path(args.merge).exists():
        old = json.loads(Path(args.merge).read_text())
        if "many_runs" not in meta and old["meta"].get("many_runs"):
            meta["many_runs"] = old["meta"]["many_runs"]
        ran = {(r.workload, r.case, r.tool) for r in runs}  # a size re-run leaves the tool's other sizes
        kept = [Run(**r) for r in old["runs"] if (r["workload"], r["case"], r["tool"]) not in ran]
        runs = kept + runs
        for k in ("sizes", "containers"):
            meta[k] = dict(old["meta"].get(k, {}), **meta[k])
        meta["merged"] = "%s rows re-run on %s; the others from %s" % (
            ", ".join(sorted({r.tool for r in ctx.runs})), meta["date"], old["meta"]["date"])
        meta["elapsed"] = "%s (first run) + %s (re-run rows)" % (old["meta"].get("elapsed", "?"), meta["elapsed"])
        meta["reps"] = old["meta"].get("reps", meta["reps"])
        meta["command"] = "%s`, then `%s" % (old["meta"].get("command", "?"), meta["command"])
    return write_report(runs, meta, output, plot, results, quick, ctx.runs)


def write_report(runs: List[Run], meta: dict, output: Path, plot: Path, results: Path, quick: bool,
                 new_runs: List[Run]) -> int:
    report = Report(runs, meta)
    meta["notes_md"] = NOTES_MD(report) if not quick else ["(--quick run: sizes too small for conclusions.)"]
    if meta.get("merged"):
        meta["notes_md"] = ["*Merged report: %s.*" % meta["merged"], ""] + meta["notes_md"]
    output.parent.mkdir(parents=True, exist_ok=True)
    why_no_plot = report.plot(plot)
    if why_no_plot:
        print("no plot: %s" % why_no_plot)
    elif report.cases("large"):
        rel = os.path.relpath(plot, output.parent)
        meta["notes_md"] += ["", "![peak RSS against log size](%s)" % rel]
    scaling = plot.with_name("scaling.png")
    meta.pop("scaling_plot", None)
    if len(report.cases("scale")) > 1:
        why = report.plot_scaling(scaling)
        if why:
            print("no scaling plot: %s" % why)
        else:
            meta["scaling_plot"] = os.path.relpath(scaling, output.parent)
    output.write_text(report.markdown() + follow_soak_md())
    results.write_text(json.dumps({"meta": {k: v for k, v in meta.items() if k not in ("notes_md", "scaling_plot")},
                                   "runs": [asdict(r) for r in runs]}, indent=1))
    print()
    print(report.console())
    print("\nwrote %s, %s%s (runs took %s)" % (output, results, "" if why_no_plot else ", " + str(plot),
                                                 meta.get("elapsed")))
    failed = [r for r in new_runs if r.error or r.check]
    if failed:
        print("%d runs failed or wrote wrong files" % len(failed), file=sys.stderr)
        return 1
    return 0


def follow_soak_md() -> str:
    """The follow-mode soak's last table (benchmarks/follow_soak.py --output), kept with the other figures."""
    soak = HERE / "follow_soak.md"
    return "\n## 4. Follow mode soak\n\n" + soak.read_text() if soak.exists() else ""


# Profiles taken by hand (not regenerated by this script); the commands are given so anyone can repeat them.
ANALYSIS_MD = """## Where the exporter's time goes, and what remains

Profiled on the same machine on 2026-12-03 (`py-spy record --gil`, `yappi` in CPU mode across threads, and a
single-thread harness that times `_Job.run` per container against the floor's own loop on the same pods).

**Fan-out and tiny pods.** Before this round a container cost the exporter ~0.75 ms of CPU against the floor's
~0.35 ms, and on 2 cores shared with the server that CPU is wall time. Removed, largest first:

1. *`http.client`'s header parser.* `HTTPResponse.begin` parses headers with the `email` package
   (`FeedParser`, a `Message`): ~0.1–0.2 ms a response, the largest Python item per container. The exporter's
   response class reads the status line and the header fields into a dict itself, with `http.client`'s bounds
   (100 fields, 64 KiB lines); the body is still read by `http.client` (chunked, length, close).
2. *`http.client`'s request calls* (`putrequest`, five `putheader`, `endheaders`): one formatted write.
3. *The executor.* `ThreadPoolExecutor.submit`, a `Future` per container and the main thread's
   `wait(FIRST_COMPLETED)` loop over a bounded set: now each worker takes the next selected container from the
   paged listing itself, under a lock, and lists the next page when the page runs out (no queue, no hand-off).
4. *`pathlib` per container* (three `Path` objects and their hashes in the folder set): string paths.
5. *`urllib.parse.urlencode`* (six `quote_plus` calls a request): names and values of unreserved characters
   pass unquoted, the rest as before.

The single-thread harness went from 0.50–0.75 ms to 0.35–0.38 ms a container, against the floor's 0.29–0.36 ms.
What remains per container is the exporter's own work: the state record, the anchor of the last line (a CRC),
a read deadline, the file's inode check. The final state save's prune checked every file with `pathlib`
(0.4 s at 50,000 files); it uses string paths now.

**Young containers: one request more, on purpose.** A container started less than a minute before the listing
gets `previous=true` first (a quick 400 when there is no previous instance), then its current log: 4,004
requests for 2,000 pods, and the server answers twice as many. The alternative, the current log first and a
check afterwards, cannot keep the lines in order when the container restarted between the listing and the
request: the new instance's lines would already be on disk before the listed instance's, which is then the
previous one. The listing cannot tell, for a container that started seconds ago, whether the instance the log
request reaches is the listed one; only asking can.

**Large log.** The per-line work was a regex over every line's whole timestamp, to find text without one (the
kubelet's error messages): 0.38 s per 256 MiB, then 0.20 s as a quick look (a date and a `T` at each line
start). It is gone: the kubelet writes its error text only after the last line it serves (`getContainerLogs`
writes the error `ReadLogs` returns, and `ReadLogs` skips a line of the file it cannot parse), so only the first
and last line of each 1 MiB block are checked. The download itself now runs at curl's speed (0.46–0.50 s for
256 MiB, timed inside the process, against curl's 0.48–0.55 s whole run). What remains is the fixed start:
the interpreter, ~40 ms of imports (`http.client` is 25 of them, its `email` package 15; `dataclasses` and
`inspect`, 11 ms, are no longer imported), ~20 ms of settings, TLS context and listing, and for `python3
kubelogexporter.py` the compile of the 5,100-line script on every start (`python3 FILE` never uses a `.pyc`):
~70 ms, and ~12 MiB of peak RSS that stays taken until the program ends: CPython keeps the script's syntax tree
while the script runs (`pyrun_file` in `Python/pythonrun.c` frees the AST arena only after `run_mod` returns),
~3 MiB itself, and while it lives `malloc_trim` cannot give back the ~10 MiB the compiler freed around it (an
import frees its tree once compiled). The
`exporter-bytecode` row runs the same code with `python3 -m kubelogexporter` from its cached bytecode, as the
image and the manifests do. Durability overlaps the download: written pages are handed to the disk every 8 MiB
(`POSIX_FADV_DONTNEED` starts their writeback), so the `syncfs` before each state save finds little left (5 ms
at the end of a 256 MiB export).

**Noise on this machine.** It is a 2-vCPU VM whose memory the host backs lazily (virtio-balloon free page
reporting, DAMON pageout of cold memory): writing 1 GiB into the page cache from the same buffer took 0.23 s
in one run and 2.98 s in the next (`perf`: 54 % of a slow run in `copy_folio_from_iter_atomic`, 6 % in a fast
one). Every tool that writes 1 GiB gets some of these runs, hence the wide min–max at 1 GiB; medians of 5.
Page-aligned 1 MiB writes (the floor's) suffer most: writing 1 GiB in 1 MiB writes took 1.6–2.6 s whenever the
page cache needed fresh memory and 0.23 s when it could reuse what the last run freed, while 1,048,453-byte
writes (whole lines, as the exporter writes) took 0.26–0.28 s every time; so the floor's row at 1 GiB is this
machine's, not the floor's.
""".splitlines()


def _fit(points):
    """Least squares wall = fixed + per_gib * size: (fixed s, s per GiB)."""
    if len(points) < 2:
        return None
    n = len(points)
    mx, my = sum(x for x, _ in points) / n, sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if not sxx:
        return None
    b = sum((x - mx) * (y - my) for x, y in points) / sxx
    return my - b * mx, b


def NOTES_MD(report: Report) -> List[str]:  # noqa: N802 - the reading of the measured figures
    """Notes computed from the runs, so that a rerun keeps them true."""
    L: List[str] = ["## Reading the figures", ""]
    meta, med = report.meta, report.med
    large = report.cases("large")
    sizes = meta.get("sizes", {})
    if large:
        big = large[-1]
        curl = med("large", big, "curl")
        srv = med("large", big, "curl", "server_cpu")
        if curl:
            L.append("- **The server is not the bottleneck.** curl drew %s in %.2f s (%.0f MiB/s) from it, the "
                     "server using %.2f CPU s of that (one core is %.2f s); every Python tool is slower than "
                     "that, so the ratios below are the clients'. The server is `tests/fakeapi.py` with its "
                     "per-request Python trimmed for this process (`benchmarks/server.py`): bodies pre-rendered, "
                     "served as memoryview slices in ~1 MiB writes, keep-alive, one thread per connection, lists "
                     "rendered once." % (_bytes(sizes[big]), curl, sizes[big] / MiB / curl, srv or 0, curl))
        fits = {t: _fit([(sizes[c] / (1 << 30), med("large", c, t)) for c in large if med("large", c, t)])
                for t in ("curl", "curl-fsync", "exporter")}
        if all(fits.values()):
            L.append("- **Fixed cost against cost per byte** (least squares over the sizes, wall = fixed + "
                     "per GiB × size): " + "; ".join(
                         "%s %.2f s + %.2f s/GiB" % (BY_KEY[t].label, f[0], f[1]) for t, f in fits.items()) +
                     ". A Python process pays its interpreter before the first byte, the exporter also ~70 ms to "
                     "compile its script (not from bytecode), ~40 ms of imports (below), and its state file; at "
                     "64 MiB that fixed part is most of the difference to curl.")
        rows = []
        for c in large:
            ex, cu, cf = med("large", c, "exporter"), med("large", c, "curl"), med("large", c, "curl-fsync")
            if ex and cu and cf:
                rows.append("%s: %.2f× curl, %.2f× curl + fsync" % (c, ex / cu, ex / cf))
        if rows:
            L.append("- **fsync.** The exporter makes its files durable (fsync, syncfs) before its state records "
                     "them (its promise: the state never runs ahead of the disk); curl does not. Against curl followed by `sync FILE`, "
                     "the same durability: " + "; ".join(rows) + ".")
        rss = {t: [med("large", c, t, "rss_kib") for c in large] for t in report.tools("large")}
        grow = ["%s %s" % (BY_KEY[t].label, " → ".join("%.0f" % (v / 1024) for v in vals if v))
                for t, vals in rss.items() if all(vals) and vals[-1] > 2 * vals[0]]
        flat = ["%s %.0f–%.0f" % (BY_KEY[t].label, min(vals) / 1024, max(vals) / 1024)
                for t, vals in rss.items() if all(vals) and vals[-1] <= 2 * vals[0]]
        if grow or flat:
            L.append("- **Memory** (peak RSS, MiB, %s). Flat: %s. Growing with the log: %s. `kubectl cluster-info "
                     "dump` reads each log whole (`DoRaw`), the official client's default returns the body as one "
                     "`str` (bytes, then decoded)." % (" → ".join(large), "; ".join(flat) or "none",
                                                      "; ".join(grow) or "none"))
    fan = report.cases("fanout")
    if fan:
        for c in fan:
            fl, ff, ex = med("fanout", c, "floor"), med("fanout", c, "floor-fsync"), med("fanout", c, "exporter")
            ns = med("fanout", c, "exporter-nostate")
            req_ex, req_fl = med("fanout", c, "exporter", "requests"), med("fanout", c, "floor", "requests")
            cpu_ex, cpu_fl = med("fanout", c, "exporter", "cpu"), med("fanout", c, "floor", "cpu")
            cp = med("fanout", c, "curl-parallel")
            if not (fl and ex):
                continue
            parts = ["**Fan-out, %s:** the exporter takes %.2f s, %.2f× the floor (%.2f s)" % (c, ex, ex / fl, fl)]
            if ff:
                parts.append("%.2f× the floor with an fsync per file (%.2f s)" % (ex / ff, ff))
            if req_ex and req_fl and req_ex > req_fl:
                parts.append("it makes %d requests to the floor's %d (a `previous=true` request per container on a "
                             "first export, answered 400 when there is no previous instance)" % (req_ex, req_fl))
            if ns:
                parts.append("with `--no-state` (no state file, files written aside and renamed) it takes %.2f s, "
                             "%.2f× the floor" % (ns, ns / fl))
            if cpu_ex and cpu_fl:
                parts.append("its CPU is %.2f s to the floor's %.2f s" % (cpu_ex, cpu_fl))
            if cp:
                parts.append("one `curl --parallel` process takes %.2f s: the server keeps up with more than "
                             "any Python client asks" % cp)
            L.append("- " + "; ".join(parts) + ".")
    q = report.cases("quiet")
    if q:
        c = q[-1]
        first, again = med("quiet", c, "exporter", "bytes_out", "first"), med("quiet", c, "exporter", "bytes_out",
                                                                              "rerun")
        if first and again is not None:
            L.append("- **Quiet rerun, %s:** the exporter's rerun moves %s (%.2f %% of its first run's %s): the pod "
                     "list, which every run needs, and per container the lines of the last exported second, "
                     "which `sinceTime` (whole seconds) sends again and the exporter drops. The other tools keep no "
                     "state and fetch everything again." % (c, _bytes(again), 100 * again / first, _bytes(first)))
    for c in report.cases("young"):
        ex, fl = med("young", c, "exporter"), med("young", c, "floor")
        if not (ex and fl):
            continue
        parts = ["**%s:** the exporter takes %.2f s, %.2f× the floor (%.2f s)" % (c, ex, ex / fl, fl)]
        bc = med("young", c, "exporter-bytecode")
        if bc:
            parts[0] += ", from its bytecode %.2f s (%.2f×)" % (bc, bc / fl)
        req, req_fl = med("young", c, "exporter", "requests"), med("young", c, "floor", "requests")
        bad = med("young", c, "exporter", "not_ok")
        if req and req_fl:
            parts.append("%d requests to the floor's %d%s" % (req, req_fl, ", %d of them answered ≥ 400 (`previous=true` "
                                                              "with no previous instance)" % bad if bad else ""))
        con = med("young", c, "exporter", "connections")
        if con:
            parts.append("%d connections" % con)
        L.append("- " + "; ".join(parts) + ".")
    floors = [med("young", c, "floor") for c in report.cases("young")]
    if len(floors) == 2 and all(floors):
        L.append("- **Noise on the young rows:** the floor makes the same requests in both cases, yet took %.2f s and "
                 "%.2f s (medians): %.0f %% apart for the same work, against the 20 %% the target allows." % (
                     floors[0], floors[1], 100 * abs(floors[0] - floors[1]) / min(floors)))
    sc = report.cases("scale")
    if sc:
        rows = []
        for c in sc:
            ex, fl = med("scale", c, "exporter"), med("scale", c, "floor")
            erss, frss = med("scale", c, "exporter", "rss_kib"), med("scale", c, "floor", "rss_kib")
            if ex and fl:
                rows.append("%d pods: %.2f s against %.2f s (%.2f×), peak RSS %.1f against %.1f MiB" % (
                    report.pods(c), ex, fl, ex / fl, (erss or 0) / 1024, (frss or 0) / 1024))
        cp = [(report.pods(c), med("scale", c, "curl-parallel")) for c in sc]
        cp = ["%d pods %.2f s" % (n, v) for n, v in cp if v]
        if rows:
            L.append("- **Tiny pods, exporter against the floor:** " + "; ".join(rows) + "." +
                     (" One `curl --parallel` process: %s (what the server can serve)." % ", ".join(cp) if cp else "") +
                     " The emulator's paged list costs the same per page at any depth (an index per cluster state), so "
                     "the growth is the clients'.")
    for c in report.cases("quiet-scale"):
        first, again = (med("quiet-scale", c, "exporter", "bytes_out", ph) for ph in ("first", "rerun"))
        fl_first = med("quiet-scale", c, "floor", "bytes_out", "first")
        logs = report.meta.get("sizes", {}).get(c)
        if first and again is not None:
            extra = ""
            if fl_first and logs:
                per = (fl_first - logs) / report.pods(c)
                extra = (" The floor's first run moved %s beyond the log bytes (the pod list and the responses' "
                         "headers: %.0f B a pod), which a rerun cannot avoid: that alone is %.2f %% of a first run." % (
                             _bytes(fl_first - logs), per, 100 * (fl_first - logs) / fl_first))
            L.append("- **Quiet rerun, %s:** the exporter's rerun moves %s, %.2f %% of its first run's %s.%s" % (
                c, _bytes(again), 100 * again / first, _bytes(first), extra))
    L += [""] + ANALYSIS_MD
    L += ["", "## Method", "",
          "- Each tool runs as a whole process (or a shell pipeline: list, then `xargs -P`), timed from start to "
          "exit by the runner; every repetition starts from an empty output directory, after `sync`, so no tool "
          "pays for another's write-back. Tools run in turns: repetition 1 of every tool, then repetition 2, ...",
          "- Every run's files are checked against the server's bytes (size of each `<ns>/<pod>/<container>.log`; "
          "for `cluster-info dump`, one `logs.txt` per pod, without timestamps).",
          "- Bytes are what the server's HTTP layer wrote and read (headers and bodies, below TLS).",
          "- Other processes on the machine: the runner waits (up to 20 s) for the CPUs to be idle before each run, "
          "measures the CPU time used by everything else during the run, and repeats a run (up to 4 times) when "
          "that exceeds 0.15 cores.",
          "- Outputs of many files are moved aside and deleted only at the end: ext4 skips inodes freed in the last "
          "seconds when it allocates new ones, which made file creation right after deleting thousands of files "
          "several times slower.",
          "- Peak RSS: %s" % meta.get("measure_text", ""),
          ]
    return L


if __name__ == "__main__":
    sys.exit(main())
