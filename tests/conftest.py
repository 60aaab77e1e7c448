"""Shared fixtures: a TLS fake API server with an in-memory cluster, and a
service-account folder pointing at it, as a pod would see them."""
from __future__ import annotations

import contextlib
import gzip
import http.client
import json
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
for p in (str(ROOT), str(TESTS)):  # `import kubelogexporter` and `import fakeapi` from any test
    if p not in sys.path:
        sys.path.insert(0, p)

import fakeapi  # noqa: E402
from fakeapi import FakeAPIServer, FakeCluster  # noqa: E402

SA_USER = "system:serviceaccount:logging:log-exporter-sa"
TOKEN = "token-1"

# Plain helpers, importable from tests as `from conftest import ts, log_lines` or via fakeapi.
ts = fakeapi.ts
log_lines = fakeapi.log_lines


def wait_for(predicate, timeout=15.0):
    """Poll for a state another process or thread reaches (a file's content, a server's counter)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


@pytest.fixture(scope="session")
def ca():
    trustme = pytest.importorskip("trustme")
    return trustme.CA()


@pytest.fixture(scope="session")
def server_ssl_context(ca) -> ssl.SSLContext:
    return fakeapi.server_ssl_context(ca, ("127.0.0.1", "localhost", "::1"), client_ca=ca)


@pytest.fixture(scope="session")
def client_ssl_context(ca) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


@pytest.fixture
def cluster() -> FakeCluster:
    return FakeCluster()


@pytest.fixture
def apiserver(cluster, server_ssl_context):
    with FakeAPIServer(cluster, ssl_context=server_ssl_context, tokens={TOKEN: SA_USER}) as server:
        yield server
    # A crash inside the fake (or a test's fault hook) must not pass for client behaviour.
    assert not server.errors, f"fake API server raised: {server.errors!r}"


@pytest.fixture
def service_account(tmp_path, ca) -> Path:
    """Like /var/run/secrets/kubernetes.io/serviceaccount."""
    d = tmp_path / "serviceaccount"
    d.mkdir()
    (d / "token").write_text(TOKEN)
    (d / "ca.crt").write_bytes(ca.cert_pem.bytes())
    (d / "namespace").write_text("logging")
    return d


@pytest.fixture
def sa_environ(apiserver) -> dict:
    return {"KUBERNETES_SERVICE_HOST": apiserver.host, "KUBERNETES_SERVICE_PORT": str(apiserver.port)}


@pytest.fixture
def export(apiserver, service_account, tmp_path):
    """Run export_logs against the fake server as a pod would; ``export.output`` is the folder."""
    from kubelogexporter import export_logs

    output = tmp_path / "logs"

    def run(**options):
        options.setdefault("backoff", 0.001)
        return export_logs(options.pop("output", output), server=options.pop("server", apiserver.url),
                           account_dir=service_account, environ={}, **options)

    run.output = output
    return run


@pytest.fixture
def follow(apiserver, service_account, tmp_path, monkeypatch):
    """Run export_logs(follow=True) in a thread; the context's exit stops it and gives the result."""
    import kubelogexporter as kle

    monkeypatch.setattr(kle, "IDLE_RELEASE_SECONDS", 0.2)
    monkeypatch.setattr(kle, "CHECKPOINT_SECONDS", 0.2)
    output = tmp_path / "logs"
    outcome = {}

    @contextlib.contextmanager
    def running(**options):
        stop = threading.Event()
        options.setdefault("backoff", 0.01)

        def target():
            try:
                outcome["result"] = kle.export_logs(output, server=apiserver.url, account_dir=service_account,
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


def cli_args(apiserver, service_account, output):
    """The command line of a run against the fake server, as a pod's files would give it."""
    return ["--server", apiserver.url, "--token-file", str(service_account / "token"),
            "--ca-file", str(service_account / "ca.crt"), "-o", str(output), "--concurrency", "1"]


# A run's output mode (the attack tests run each in the three): its export_logs options, what its file holds.
MODES = ("plain", "gz", "nots")


def mode_options(mode: str) -> dict:
    return dict(gzip=mode == "gz", timestamps=mode != "nots")


def archived(output: Path, mode: str, relpath: str = "shop/web/app") -> bytes:
    """The lines a container's file holds, decompressed; b"" when there is no file."""
    path = output / (relpath + (".log.gz" if mode == "gz" else ".log"))
    data = path.read_bytes() if path.exists() else b""
    return gzip.decompress(data) if mode == "gz" and data else data


def as_archived(served: bytes, mode: str) -> bytes:
    """What a run of ``mode`` writes for these served lines (without timestamps: each line's text)."""
    return b"".join(ln.split(b" ", 1)[1] + b"\n" for ln in served.splitlines()) if mode == "nots" else served


def cli(args, **kwargs):
    """The script in a process of its own (for kills, signals and memory), text output piped."""
    return subprocess.Popen([sys.executable, str(ROOT / "kubelogexporter.py")] + args, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


class ApiClient:
    """Minimal http.client wrapper for talking to the fake server directly."""

    def __init__(self, server: FakeAPIServer, ssl_context: ssl.SSLContext, token: str | None = TOKEN):
        self.server, self.ctx, self.token = server, ssl_context, token

    def connect(self) -> http.client.HTTPConnection:
        if self.server.url.startswith("https"):
            return http.client.HTTPSConnection(self.server.host, self.server.port, context=self.ctx, timeout=30)
        return http.client.HTTPConnection(self.server.host, self.server.port, timeout=30)

    def request(self, path: str, headers: dict | None = None, conn=None):
        """-> (status, headers, body bytes).  Reads the whole body."""
        own = conn is None
        conn = conn or self.connect()
        hdrs = dict(headers or {})
        if self.token is not None:
            hdrs.setdefault("Authorization", f"Bearer {self.token}")
        try:
            conn.request("GET", path, headers=hdrs)
            resp = conn.getresponse()
            return resp.status, resp.headers, resp.read()
        finally:
            if own:
                conn.close()

    def json(self, path: str, **kw):
        status, _, body = self.request(path, **kw)
        return status, json.loads(body) if body else None


@pytest.fixture
def api(apiserver, client_ssl_context) -> ApiClient:
    return ApiClient(apiserver, client_ssl_context)
