"""The benchmarks' Kubernetes API server: tests/fakeapi.py in a process of its own.

Started by benchmarks/run.py, driven over stdin/stdout with one JSON object per
line.  On start it makes a CA and a server certificate (trustme, else the
openssl command), a bearer token file, a curl header file and a kubeconfig in
--dir, and prints where they are.  Commands:

    {"cmd": "large", "size": BYTES, "plain": true}   one pod, one container, one log of BYTES
    {"cmd": "fanout", "pods": N, "containers": C, "log_bytes": B, "namespaces": K}
    {"cmd": "start", "ago": S}   every container's current instance started S seconds ago (young pods)
    {"cmd": "stats"}    counters since start: plaintext bytes out/in, requests, connections, CPU
    {"cmd": "reset"}    forget the per-request records (memory)
    {"cmd": "quit"}

Every setup replaces the whole cluster, so `kubectl cluster-info dump -A` sees
only the workload's pods.  Logs are pre-rendered bytes in the kubelet's fixed
timestamp form (``2026-11-29T10:00:00.123456789Z text``), about 200 bytes a
line, timestamps strictly increasing; `FakeAPIServer` serves them as memoryview
slices in ~1 MiB writes on keep-alive connections, one thread per connection.
Bytes are counted below TLS and above TCP: what HTTP puts on the connection
(headers and bodies), both ways.
"""
from __future__ import annotations

import argparse
import base64
import bisect
import email.utils
import gc
import http.client
import json
import os
import random
import resource
import shutil
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import fakeapi  # noqa: E402
from fakeapi import BASE_TIME_NS, NS, FakeAPIServer, FakeCluster  # noqa: E402

TOKEN = "bench-token"
USER = "system:serviceaccount:log-exporter:log-exporter-sa"

# ---------------------------------------------------------------- counting bytes


class _Counter:
    def __init__(self):
        self.lock = threading.Lock()
        self.out = 0
        self.inn = 0


COUNT = _Counter()


class CountingSSLSocket(ssl.SSLSocket):
    """Counts the plaintext bytes HTTP writes and reads (headers and bodies)."""

    # SSLSocket.sendall loops over self.send: counting there counts everything once.
    def send(self, data, flags=0):
        n = super().send(data, flags)
        with COUNT.lock:
            COUNT.out += n
        return n

    def recv_into(self, buffer, nbytes=0, flags=0):
        n = super().recv_into(buffer, nbytes, flags)
        with COUNT.lock:
            COUNT.inn += n
        return n

    def recv(self, buflen=1024, flags=0):
        data = super().recv(buflen, flags)
        with COUNT.lock:
            COUNT.inn += len(data)
        return data


# ---------------------------------------------------------------- a faster fake server
#
# The fake's per-request Python (header parsing through the email package, an
# inspect.signature() per authorization, a formatted Date per response) is what
# the tests need, not what a benchmark should time.  This process only serves
# the benchmark, so it swaps in cheap equivalents; bodies are served as before.


class _Headers:
    """The part of http.client.HTTPMessage that http.server and fakeapi use."""

    def __init__(self, pairs):
        self._pairs = pairs
        self._d = {}
        for k, v in pairs:
            self._d.setdefault(k.lower(), v)

    def get(self, name, default=None):
        return self._d.get(name.lower(), default)

    def __getitem__(self, name):
        return self._d.get(name.lower())

    def __contains__(self, name):
        return name.lower() in self._d

    def get_all(self, name, failobj=None):
        found = [v for k, v in self._pairs if k.lower() == name.lower()]
        return found or failobj

    def keys(self):
        return [k for k, _ in self._pairs]

    def items(self):
        return list(self._pairs)

    def __iter__(self):
        return iter(self.keys())

    def __len__(self):
        return len(self._pairs)


def _fast_parse_headers(fp, _class=None):
    pairs = []
    while True:
        line = fp.readline(65537)
        if len(line) > 65536:
            raise http.client.LineTooLong("header line")
        if line in (b"\r\n", b"\n", b""):
            return _Headers(pairs)
        if len(pairs) > 100:
            raise http.client.HTTPException("got more than 100 headers")
        name, _, value = line.decode("iso-8859-1").partition(":")
        pairs.append((name.strip(), value.strip()))


_date = [0, ""]


def _date_time_string(self, timestamp=None):
    now = int(time.time()) if timestamp is None else int(timestamp)
    if _date[0] != now:
        _date[0], _date[1] = now, email.utils.formatdate(now, usegmt=True)
    return _date[1]


class _PodIndex:
    """One cluster state's pods in etcd key order ("ns/name"), each pod's JSON encoded once.

    fakeapi's list builds, sorts and filters every pod for every page: O(n) a page, O(n²/limit)
    a listing, which at 50,000 pods is the emulator's time, not the client's.  A page from
    this index costs a bisect and a join of its own items."""

    def __init__(self, cluster: FakeCluster, ns):
        pods = sorted((("%s/%s" % k), p) for k, p in cluster._pods.items() if ns is None or p.namespace == ns)
        self.keys = [k for k, _ in pods]
        self.bodies = [json.dumps(p.to_json(), separators=(",", ":")).encode() for _, p in pods]


class BenchAPIServer(FakeAPIServer):
    """Lists are rendered once per cluster state (kube-apiserver serves them from its watch cache)."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self._rendered = {}
        self._capture = threading.local()
        self._index = {}  # (id(cluster), rv, ns) -> _PodIndex

    def _check(self, user, verb, resource, sub, ns, name=None, *rest, **kw) -> None:
        return None  # every authenticated request is allowed; RBAC is the tests' business

    def pod_index(self, ns=None) -> _PodIndex:
        cl = self.cluster
        with cl.lock:
            key = (id(cl), cl._rv, ns)
            idx = self._index.get(key)
            if idx is None:
                if len(self._index) > 64:
                    self._index.clear()
                idx = self._index[key] = _PodIndex(cl, ns)
            return idx

    def _list(self, h, rec, q, resource, ns) -> None:
        if (resource == "pods" and not fakeapi._one(q, "labelSelector") and not fakeapi._one(q, "fieldSelector")
                and not fakeapi._wants_table(h) and not self.faults._faults):  # any scheduled fault: fakeapi's own list
            return self._list_pods_fast(h, rec, q, ns)
        key = (id(self.cluster), self.cluster._rv, h.path, h.headers.get("Accept", ""))
        body = self._rendered.get(key)
        if body is not None:
            return self._send(h, rec, 200, body)
        self._capture.key = key
        try:
            super()._list(h, rec, q, resource, ns)
        finally:
            self._capture.key = None

    def _list_pods_fast(self, h, rec, q, ns) -> None:
        """fakeapi's pod list without selectors, the same bytes, from the index (see _PodIndex)."""
        limit = fakeapi._int(q, "limit") or 0
        token = fakeapi._one(q, "continue")
        start_after, rv = None, None
        if token:
            try:
                c = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
                start_after, rv = c["start"], int(c["rv"])
            except (ValueError, KeyError, TypeError):
                raise fakeapi._bad_request(f"continue key is not valid: {token}")
        with self.cluster.lock:
            rv = rv or self.cluster._rv
            idx = self.pod_index(ns)
        first = 0 if start_after is None else bisect.bisect_right(idx.keys, start_after)
        remaining = len(idx.keys) - first
        end = first + limit if limit else len(idx.keys)
        meta: dict = {"resourceVersion": str(rv)}
        if limit and remaining > limit:
            meta["continue"] = base64.urlsafe_b64encode(json.dumps(
                {"v": "meta.k8s.io/v1", "rv": rv, "start": idx.keys[end - 1]}).encode()).decode().rstrip("=")
            meta["remainingItemCount"] = remaining - limit
        body = b"".join((b'{"kind":"PodList","apiVersion":"v1","metadata":',
                         json.dumps(meta, separators=(",", ":")).encode(), b',"items":[',
                         b",".join(idx.bodies[first:end]), b"]}"))
        self._send(h, rec, 200, body)

    def _send_json(self, h, rec, obj, code=200) -> None:
        key = getattr(self._capture, "key", None)
        if key is None or code != 200:
            return super()._send_json(h, rec, obj, code)
        body = json.dumps(obj, separators=(",", ":")).encode()
        if len(self._rendered) > 10000:
            self._rendered.clear()
        self._rendered[key] = body
        self._send(h, rec, 200, body)


def speed_up() -> None:
    http.client.parse_headers = _fast_parse_headers  # http.server calls it through the module
    fakeapi._Handler.date_time_string = _date_time_string


# ---------------------------------------------------------------- certificates


def make_tls(d: Path) -> ssl.SSLContext:
    """CA at d/ca.crt; a server context for 127.0.0.1/localhost signed by it."""
    try:
        import trustme
    except ImportError:
        trustme = None
    if trustme is not None:
        ca = trustme.CA()
        (d / "ca.crt").write_bytes(ca.cert_pem.bytes())
        ctx = fakeapi.server_ssl_context(ca, ("127.0.0.1", "localhost"))
    else:
        if not shutil.which("openssl"):
            sys.exit("benchmarks/server.py: needs trustme (pip install -e '.[bench]') or the openssl command")
        run = lambda *a: subprocess.run(a, check=True, capture_output=True, cwd=d)  # noqa: E731
        run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=bench-ca")
        (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
        run("openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "ext.cnf")
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(d / "server.crt", d / "server.key")
        ctx.set_alpn_protocols(["http/1.1"])
    ctx.sslsocket_class = CountingSSLSocket
    return ctx


# ---------------------------------------------------------------- log bodies

_WORDS = ("request handled upstream cache miss retry backend user session token order item cart payment "
          "checkout invoice shipment queue worker batch flush commit index query latency timeout ok").split()
_PLACEHOLDER = b"@" * 19  # "2026-11-29T10:00:00": replaced per second of log time


def _texts(n: int, rng: random.Random) -> list:
    """n distinct log texts of 120..218 bytes (mean ~169: ~200-byte lines with the 31-byte timestamp)."""
    levels = ("INFO", "INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR")
    out = []
    for i in range(n):
        head = "%s [worker-%d] GET /api/v1/items/%d status=%d bytes=%d dur=%.1fms trace=%032x msg=\"" % (
            rng.choice(levels), rng.randrange(16), rng.randrange(10**6), rng.choice((200, 200, 200, 404, 500)),
            rng.randrange(10**5), rng.random() * 100, rng.getrandbits(128))
        target = rng.randint(120, 218)
        words = []
        while len(head) + len(" ".join(words)) < target - 1:
            words.append(rng.choice(_WORDS))
        out.append((head + " ".join(words))[:target - 1].encode() + b'"')
    return out


def _head(sec: int) -> bytes:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)).encode()


def render_big(size: int, *, per_second: int = 1000, start_ns: int = BASE_TIME_NS, seed: int = 1) -> bytes:
    """About `size` bytes (whole lines, never more) of ~200-byte lines, `per_second`
    lines per second of log time with strictly increasing timestamps.  Built from
    per-second templates and bytes.replace: ~1 s per GiB, no per-line Python."""
    rng = random.Random(seed)
    texts = _texts(4096, rng)
    step = NS // per_second
    templates = []
    for _ in range(8):
        templates.append(b"".join(b"%s.%09dZ %s\n" % (_PLACEHOLDER, i * step + rng.randrange(step),
                                                        texts[rng.randrange(len(texts))])
                                  for i in range(per_second)))
    blocks, total, sec = [], 0, start_ns // NS
    while total < size:
        block = templates[sec % len(templates)].replace(_PLACEHOLDER, _head(sec))
        if total + len(block) > size:
            block = block[:block.rfind(b"\n", 0, size - total) + 1]
            if not block:
                break
        blocks.append(block)
        total += len(block)
        sec += 1
    return b"".join(blocks)


def render_lines(nbytes: int, start_ns: int, mean_step_ns: int, rng: random.Random, texts: list) -> bytes:
    """About `nbytes` of lines at random intervals averaging `mean_step_ns` (realistic: spread over minutes)."""
    out, total, t, heads = [], 0, start_ns, {}
    while total < nbytes:
        t += rng.randrange(1, 2 * mean_step_ns)
        sec = t // NS
        head = heads.get(sec)
        if head is None:
            head = heads[sec] = _head(sec)
        line = b"%s.%09dZ %s\n" % (head, t - sec * NS, texts[rng.randrange(len(texts))])
        out.append(line)
        total += len(line)
    return b"".join(out)


# ---------------------------------------------------------------- workloads


def setup_large(server: FakeAPIServer, size: int, plain: bool) -> dict:
    cluster = FakeCluster()
    cluster.add_pod("bench", "big-0", containers=("app",))
    cluster.pod("bench", "big-0").containers["app"].current.started_at = BASE_TIME_NS  # long running: not young
    body = render_big(size)
    cluster.set_log_bytes("bench", "big-0", "app", body)
    if plain:  # kubectl cluster-info dump asks without timestamps: convert once now, not while timed
        inst = cluster.pod("bench", "big-0").containers["app"].current
        inst.converted("plain", inst.body(), inst.version())
    server.cluster = cluster
    return {"pods": 1, "containers": 1, "bytes": len(body), "lines": body.count(b"\n"),
            "files": {"bench/big-0/app.log": len(body)}}


def setup_fanout(server: FakeAPIServer, pods: int, containers: int, log_bytes: int, namespaces: int,
                 mean_step_ms: int = 500, seed: int = 2) -> dict:
    rng = random.Random(seed)
    texts = _texts(2048, rng)
    cluster = FakeCluster()
    names = ("app", "sidecar", "proxy", "init", "metrics", "agent")[:containers]
    if containers > len(names):
        names = tuple("c%d" % i for i in range(containers))
    files, total = {}, 0
    for i in range(pods):
        ns = "team-%02d" % (i % namespaces)
        pod = "web-%05d-%s" % (i, "%05x" % rng.getrandbits(20))
        cluster.add_pod(ns, pod, containers=names, labels={"app": "web", "shard": str(i % 7)})
        for c in names:
            # each container started at some point in the last ~10 minutes of log time
            start = BASE_TIME_NS + rng.randrange(600) * NS
            body = render_lines(log_bytes, start, mean_step_ms * 1_000_000, rng, texts)
            cluster.set_log_bytes(ns, pod, c, body)
            # started when its log starts (days before the run): not young, unless "start" says otherwise
            cluster.pod(ns, pod).containers[c].current.started_at = start
            files["%s/%s/%s.log" % (ns, pod, c)] = len(body)
            total += len(body)
    server.cluster = cluster
    return {"pods": pods, "containers": pods * len(names), "bytes": total, "files": files}


def set_started(server: FakeAPIServer, ago: float) -> dict:
    """Every container's current instance started `ago` seconds before now (a rollout's new pods,
    a fresh cluster).  The log bodies stay as they are: only what the pod list says changes."""
    cl = server.cluster
    at = time.time_ns() - int(ago * NS)
    with cl.lock:
        for pod in cl._pods.values():
            for c in pod.containers.values():
                c.current.started_at = at
        cl._bump()  # a new list state: no cached list or index is served for it
    return {"started_at_ns": at}


def settle(server: "BenchAPIServer") -> None:
    """After a setup: index the pod list (so no timed run pays for it), and take the cluster's
    objects out of the garbage collector's reach (gc.freeze): with 50,000 pods a full collection
    walks millions of objects, which would make requests slower the more pods there are."""
    gc.unfreeze()
    gc.collect()
    server._rendered.clear()
    server._index.clear()
    server.pod_index()
    gc.freeze()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", required=True, help="where to write ca.crt, token, header and kubeconfig")
    p.add_argument("--chunk-size", type=int, default=65536)
    args = p.parse_args()
    d = Path(args.dir)
    d.mkdir(parents=True, exist_ok=True)
    ctx = make_tls(d)
    speed_up()
    server = BenchAPIServer(FakeCluster(), ssl_context=ctx, tokens={TOKEN: USER}, chunk_size=args.chunk_size)
    server.start()
    (d / "token").write_text(TOKEN)
    (d / "curl-header").write_text("Authorization: Bearer %s\n" % TOKEN)
    (d / "kubeconfig").write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "bench",
        "clusters": [{"name": "bench", "cluster": {"server": server.url, "certificate-authority": str(d / "ca.crt")}}],
        "users": [{"name": "bench", "user": {"token": TOKEN}}],
        "contexts": [{"name": "bench", "context": {"cluster": "bench", "user": "bench"}}],
    }, indent=1))
    out = sys.stdout
    out.write(json.dumps({"url": server.url, "ca": str(d / "ca.crt"), "token": str(d / "token"),
                          "header": str(d / "curl-header"), "kubeconfig": str(d / "kubeconfig"),
                          "pid": os.getpid()}) + "\n")
    out.flush()
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        cmd = req["cmd"]
        if cmd == "quit":
            break
        if cmd == "large":
            reply = setup_large(server, int(req["size"]), bool(req.get("plain", True)))
            settle(server)
        elif cmd == "fanout":
            reply = setup_fanout(server, int(req["pods"]), int(req["containers"]), int(req["log_bytes"]),
                                 int(req.get("namespaces", 10)), int(req.get("mean_step_ms", 500)))
            settle(server)
        elif cmd == "start":
            reply = set_started(server, float(req.get("ago", 5)))
            settle(server)
        elif cmd == "stats":
            server.wait_idle(10)
            with server._lock:
                reqs = list(server.requests)
            ru = resource.getrusage(resource.RUSAGE_SELF)
            with COUNT.lock:
                reply = {"bytes_out": COUNT.out, "bytes_in": COUNT.inn, "requests": len(reqs),
                         "log_requests": sum(r.path.endswith("/log") for r in reqs),
                         "not_ok": sum(r.status >= 400 for r in reqs),
                         "bad": ["%s %s %s -> %d" % (r.method, r.path, r.query, r.status)
                                 for r in reqs if r.status >= 400][:3],
                         "connections": server.connections_accepted,
                         "cpu": ru.ru_utime + ru.ru_stime,
                         "errors": [repr(e) for e in server.errors[:5]]}
        elif cmd == "reset":
            server.wait_idle(10)
            with server._lock:
                server.requests.clear()
            reply = {}
        else:
            reply = {"error": "unknown command %r" % cmd}
        if req.get("cmd") in ("large", "fanout"):
            reply = dict(reply, files=reply["files"] if req.get("files", True) else None)
        out.write(json.dumps(reply) + "\n")
        out.flush()
    server.stop()


if __name__ == "__main__":
    main()
