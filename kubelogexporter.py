#!/usr/bin/env python3
"""Export the logs of Kubernetes pods to files, every line exactly once.

Runs inside a pod with nothing but the standard library and the pod's mounted
service account: it lists pods through the Kubernetes REST API and streams
``/api/v1/namespaces/<ns>/pods/<pod>/log`` of every container to
``OUTPUT_DIR/<namespace>/<pod>/<container>.log``.  A state file remembers, per
container, the last line written, so each run appends only what is new.

    python3 kubelogexporter.py -o /logs            # every namespace
    python3 kubelogexporter.py -n shop -l app=web  # one namespace, a selector
    python3 kubelogexporter.py -o /logs --follow   # stream as lines are written, until SIGTERM

As a library::

    from kubelogexporter import export_logs
    result = export_logs("/logs", namespaces=["shop"])
"""

from __future__ import annotations

import signal

# The program (not an importer) takes SIGTERM before the imports below, which take a while: Kubernetes may stop a
# pod the moment it starts, and the default action would end the run as failed.  main() acts on what arrived.
_EARLY_SIGNALS = []  # type: list
if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda signum, frame: _EARLY_SIGNALS.append(signum))

import calendar
import contextlib
import dataclasses
import errno
import fcntl
import functools
import gzip as gziplib
import heapq
import http.client
import itertools
import json
import logging
import os
import random
import re
import socket
import ssl
import stat
import threading
import time
import urllib.parse
import zlib
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, NamedTuple, Optional, Sequence, Tuple

__all__ = [
    "ApiError",
    "ConfigError",
    "ExportError",
    "ExportResult",
    "KubeClient",
    "export_logs",
    "main",
    "parse_timestamp",
    "pod_log_url",
]

__version__ = "0.1.0"

# ---------------------------------------------------------------------------
# Constants
# ---------------------------------------------------------------------------

SERVICE_HOST_ENV = "KUBERNETES_SERVICE_HOST"
SERVICE_PORT_ENV = "KUBERNETES_SERVICE_PORT"
JOB_COMPLETION_INDEX_ENV = "JOB_COMPLETION_INDEX"
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
SERVICE_TOKEN_FILENAME = "token"
SERVICE_CERT_FILENAME = "ca.crt"
SERVICE_NAMESPACE_FILENAME = "namespace"
DEFAULT_SERVER = "https://kubernetes.default.svc"
DEFAULT_OUTPUT_DIR = "logs"
STATE_FILENAME = ".kubelogexporter-state.json"
LOCK_FILENAME = ".kubelogexporter.lock"
STATE_VERSION = 1
STATE_SAVE_INTERVAL = 2.0  # seconds between state checkpoints during a run
STATE_FORGET_AFTER = 7 * 86400  # drop state of containers unseen this long

# Bound tokens rotate (the kubelet refreshes them at 80 % of a 1 h lifetime):
# re-reading once a minute always picks up the new one in time.
TOKEN_REREAD_SECONDS = 60.0
TOKEN_WAIT_SECONDS = 2.0  # after a 401, how long a token file being rewritten (empty, partial) is read again
BLOCK_SIZE = 1 << 20
PAGE_SIZE = 500
HTTP_TIMEOUT = 60.0  # read timeout (--timeout): a read that gets nothing, or a stream no complete line, this long
CONNECT_TIMEOUT = 10.0  # TCP connect and TLS handshake together (at most --timeout)
RESPONSE_TIMEOUT = 30.0  # from the request sent to the whole response header (at most --timeout)
RETRY_SECONDS = 60.0  # a failing request (or listing page) stops retrying after about this long
MAX_LIST_PAGES = 10_000  # 5 million pods at 500 a page: a listing with more pages is a broken server's
PROGRESS_BYTES = 64 << 10  # a JSON body must deliver this much per read timeout
RETRIES = 5
BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 30.0
MAX_RETRY_AFTER_SECONDS = 300.0
THROTTLE_RETRIES = 10
WATCH_SECONDS = 300  # a watch is renewed from its last resourceVersion this often
FOLLOW_BLOCK_SIZE = 64 << 10  # follow mode holds one buffer per stream: keep it small
FOLLOW_IDLE_TIMEOUT = 300.0  # a follow stream this quiet is reopened, not failed
CHECKPOINT_SECONDS = 2.0  # follow mode makes lines durable and records them this often
IDLE_RELEASE_SECONDS = 5.0  # with more containers than streams, a stream this quiet gives its slot away
MAX_HOLD_SECONDS = 60.0  # ... and a busy one after this long, so every container gets its turn
GZIP_LEVEL = 6
# A first export reads the previous instance too when the current log starts this close to the listing (or is
# empty): only then can the container have restarted in between.  The margin covers clock skew between nodes.
YOUNG_LOG_SECONDS = 60
USER_AGENT = "kubelogexporter/%s (python)" % __version__

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_REFUSED = 3

_log = logging.getLogger("kubelogexporter")

# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


class ExportError(Exception):
    """Root of the errors this module raises."""


class ConfigError(ExportError):
    """The configuration is unusable: a missing token, a bad flag value, an unreadable CA."""


class ApiError(ExportError):
    """The API server answered with an error; keeps its HTTP status and Status message."""

    def __init__(self, status: int, message: str, *, reason: str = "", verb: str = "", resource: str = "", namespace: str = ""):
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason
        self.verb = verb
        self.resource = resource
        self.namespace = namespace

    @property
    def refused(self) -> bool:
        """True when the API refused who we are or what we may do (401, 403)."""
        return self.status in (401, 403)

    def missing_permission(self) -> str:
        where = 'in namespace "%s"' % self.namespace if self.namespace else "cluster-wide"
        return '"%s %s" %s' % (self.verb, self.resource, where)


class _KubeletError(Exception):
    """A line without a timestamp in a timestamps=true body: the kubelet's error text."""


class _Stopped(Exception):
    """The run was asked to stop (SIGTERM, SIGINT)."""


class _CursorMissing(Exception):
    """The instance that should hold the last exported line does not."""


# ---------------------------------------------------------------------------
# Timestamps
# ---------------------------------------------------------------------------

# The kubelet prefixes each line with an RFC 3339 time: 9 fraction digits on
# current runtimes, Go's RFC3339Nano (trailing zeros trimmed) on older ones.
_TS_RE = re.compile(rb"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d) ")
_TS_PREFIX_RE = re.compile(rb"^\d{4}-\d\d-\d\dT[^ \n]* ", re.M)
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
NS_PER_SECOND = 1_000_000_000


@functools.lru_cache(maxsize=4096)
def _epoch_seconds(text: bytes) -> int:
    return calendar.timegm(
        (int(text[0:4]), int(text[5:7]), int(text[8:10]), int(text[11:13]), int(text[14:16]), int(text[17:19]), 0, 0, 0)
    )


def _match_ns(match: "re.Match[bytes]") -> int:
    seconds = _epoch_seconds(match.group(1))
    fraction = match.group(2)
    nanos = int(fraction.ljust(9, b"0")) if fraction else 0
    zone = match.group(3)
    if zone != b"Z":
        offset = int(zone[1:3]) * 3600 + int(zone[4:6]) * 60
        seconds -= offset if zone[:1] == b"+" else -offset
    return seconds * NS_PER_SECOND + nanos


def parse_timestamp(text: str) -> int:
    """Parse an RFC 3339 time (``2026-11-29T10:00:00.5Z``) into nanoseconds since the epoch."""
    match = _TS_RE.fullmatch(text.strip().replace("z", "Z").encode("ascii", "replace") + b" ")
    if not match:
        raise ValueError("not an RFC 3339 time: %r" % text)
    return _match_ns(match)


_MIN_SECONDS, _MAX_SECONDS = -62135596800, 253402300799  # 0001-01-01T00:00:00Z, 9999-12-31T23:59:59Z


def _format_ts(ns: int, *, whole_seconds: bool = False) -> str:
    seconds, nanos = divmod(ns, NS_PER_SECOND)
    seconds = min(max(seconds, _MIN_SECONDS), _MAX_SECONDS)  # RFC 3339 has four-digit years
    text = "%04d-%02d-%02dT%02d:%02d:%02d" % time.gmtime(seconds)[:6]  # strftime's %Y drops the zeros of year 1
    return text + "Z" if whole_seconds else "%s.%09dZ" % (text, nanos)


def _parse_duration(text: str) -> float:
    """``90s``, ``15m``, ``2h``, ``1d``, ``1h30m`` -> seconds."""
    parts = _DURATION_RE.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError("not a duration: %r (use e.g. 90s, 15m, 2h, 1d)" % text)
    seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
    if not seconds <= 10000 * 86400:  # beyond any log (and infinity, which no clock subtracts)
        raise ValueError("duration %r is too long: use at most 10000d" % text)
    return seconds


class _Cursor(NamedTuple):
    """The last line written for a container: its time and how many lines carry exactly that time."""

    ns: int
    count: int


# ---------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------


def _server_from_environ(environ: Mapping[str, str]) -> str:
    host = environ.get(SERVICE_HOST_ENV)
    if not host:
        return DEFAULT_SERVER
    if ":" in host and not host.startswith("["):
        host = "[%s]" % host  # an IPv6 service address
    port = environ.get(SERVICE_PORT_ENV) or "443"
    return "https://%s:%s" % (host, port)


def _read_text(path: Path, what: str, hint: str) -> str:
    try:
        return path.read_bytes().decode("utf-8").strip()
    except FileNotFoundError:
        raise ConfigError("%s %s not found: %s" % (what, path, hint)) from None
    except OSError as exc:
        raise ConfigError("cannot read %s %s: %s" % (what, path, exc.strerror)) from None
    except UnicodeDecodeError:
        raise ConfigError("%s %s is not UTF-8 text: check its content" % (what, path)) from None


class _TokenSource:
    """A bearer token read from a file, re-read when it may have rotated."""

    def __init__(self, path: Path):
        self._path = path
        self._lock = threading.Lock()
        self._value = ""
        self._read_at = float("-inf")
        self._known: List[str] = []  # the tokens read so far, to keep out of every message
        self.refresh()

    def refresh(self, wait: float = 0.0) -> str:
        """Read the token again; for up to ``wait`` seconds, a file being rewritten (empty, partial) is read again."""
        deadline = time.monotonic() + wait
        pause = 0.01
        while True:
            try:
                value = self._read()
                break
            except ConfigError:
                if time.monotonic() + pause > deadline:
                    raise
                time.sleep(pause)
                pause = min(2 * pause, 0.25)
        with self._lock:
            self._value, self._read_at = value, time.monotonic()
            if value not in self._known:
                self._known = (self._known + [value])[-4:]
        return value

    def _read(self) -> str:
        value = _read_text(self._path, "token file", "run inside a pod with a service account, or pass --token-file")
        if not value:
            raise ConfigError("token file %s is empty: pass a file holding a bearer token" % self._path)
        if not all(33 <= ord(ch) < 127 for ch in value):
            # http.client would refuse the header and quote it, token included, in its error.
            raise ConfigError("token file %s holds characters a bearer token cannot have: check its content" % self._path)
        return value

    def redact(self, text: str) -> str:
        """``text`` without any token read so far (a server may echo the Authorization header)."""
        with self._lock:
            known = list(self._known)
        for token in known:
            text = text.replace(token, "<token>")
        return text

    def get(self) -> str:
        with self._lock:
            fresh = time.monotonic() - self._read_at < TOKEN_REREAD_SECONDS
            value = self._value
        if fresh:
            return value
        try:
            return self.refresh()
        except ConfigError:
            return value  # keep the last good token through a brief rotation gap

    def __repr__(self) -> str:
        return "<token from %s>" % self._path  # never the token itself


# ---------------------------------------------------------------------------
# API client
# ---------------------------------------------------------------------------

_RETRYABLE_STATUSES = frozenset((500, 502, 503, 504))
_NETWORK_ERRORS = (OSError, http.client.HTTPException, ssl.SSLError)


def _quote(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


def _pods_request(namespace: Optional[str], label_selector: Optional[str], field_selector: Optional[str],
                  **params: str) -> Tuple[str, Dict[str, str]]:
    """Path and query of a pod list or watch, in one namespace or (None) all of them."""
    path = "/api/v1/namespaces/%s/pods" % _quote(namespace) if namespace else "/api/v1/pods"
    query = dict(params)
    if label_selector:
        query["labelSelector"] = label_selector
    if field_selector:
        query["fieldSelector"] = field_selector
    return path, query


def _log_path(namespace: str, pod: str) -> str:
    return "/api/v1/namespaces/%s/pods/%s/log" % (_quote(namespace), _quote(pod))


def _log_query(container: Optional[str], *, timestamps: bool, previous: bool, since_time: Optional[int],
               tail_lines: Optional[int], limit_bytes: Optional[int], follow: bool) -> Dict[str, str]:
    query = {}
    if container:
        query["container"] = container
    if follow:
        query["follow"] = "true"
    if previous:
        query["previous"] = "true"
    if since_time is not None:
        # The API server keeps whole seconds of sinceTime; sending more promises a precision it drops.
        query["sinceTime"] = _format_ts(since_time, whole_seconds=True)
    if timestamps:
        query["timestamps"] = "true"
    if tail_lines is not None:
        query["tailLines"] = str(tail_lines)
    if limit_bytes is not None:
        query["limitBytes"] = str(limit_bytes)
    return query


def pod_log_url(server: str, namespace: str, pod: str, container: Optional[str] = None, *, timestamps: bool = False,
                previous: bool = False, since_time: Optional[int] = None, tail_lines: Optional[int] = None,
                limit_bytes: Optional[int] = None, follow: bool = False) -> str:
    """The URL of a container's log, as the curl walkthrough fetches it (``since_time`` in ns since the epoch)."""
    path = _log_path(namespace, pod)
    query = _log_query(container, timestamps=timestamps, previous=previous, since_time=since_time,
                       tail_lines=tail_lines, limit_bytes=limit_bytes, follow=follow)
    return server.rstrip("/") + path + ("?" + urllib.parse.urlencode(query) if query else "")


def _status_message(body: bytes, content_type: str) -> Tuple[str, str]:
    """(message, reason) from an error body: a Status object, or API Priority and Fairness' plain text."""
    if "json" in content_type:
        try:
            status = json.loads(body)
            return str(status.get("message") or ""), str(status.get("reason") or "")
        except (ValueError, AttributeError):
            pass
    return body.decode("utf-8", "replace").strip()[:500], ""


def _retry_after(response: http.client.HTTPResponse) -> Optional[float]:
    value = response.getheader("Retry-After")
    try:
        return min(max(float(value), 0.0), MAX_RETRY_AFTER_SECONDS) if value else None
    except ValueError:
        return None


class _Deadline:
    """A bound on a whole read, not on each recv (a socket timeout, which a trickle of bytes never trips).

    When it passes, the watchdog shuts the socket down, so a read blocked on it returns (short, or with an error)
    and ``expired`` is True.  ``extend()`` moves it ``seconds`` past now: call it on progress.  A context manager.
    """

    def __init__(self, sock: Any, seconds: float):
        self.seconds = seconds
        self.at = time.monotonic() + seconds
        self.expired = False
        self._sock = sock
        _WATCHDOG.add(self)

    def extend(self, seconds: Optional[float] = None) -> None:
        self.at = time.monotonic() + (self.seconds if seconds is None else seconds)

    def cancel(self) -> None:
        _WATCHDOG.discard(self)

    def _fire(self) -> None:
        self.expired = True
        with contextlib.suppress(OSError, AttributeError):
            self._sock.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> "_Deadline":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.cancel()


class _Watchdog:
    """One thread for all deadlines, started on the first and ended when none is left for a while.

    It sleeps until the earliest deadline it knows of; adding a later one (the usual case) does not wake it.
    """

    def __init__(self):
        self._cond = threading.Condition()
        self._deadlines: set = set()
        self._running = False
        self._wakes_at = float("inf")

    def add(self, deadline: _Deadline) -> None:
        with self._cond:
            self._deadlines.add(deadline)
            if not self._running:
                self._running = True
                threading.Thread(target=self._run, name="kubelogexporter-deadlines", daemon=True).start()
            elif deadline.at < self._wakes_at:
                self._cond.notify()

    def discard(self, deadline: _Deadline) -> None:
        with self._cond:
            self._deadlines.discard(deadline)

    def _run(self) -> None:
        with self._cond:
            while True:
                if not self._deadlines:
                    self._wakes_at = float("inf")
                    if not self._cond.wait(5.0) and not self._deadlines:
                        self._running = False
                        return
                    continue
                now = time.monotonic()
                due = [d for d in self._deadlines if d.at <= now]  # an extended deadline is simply not due yet
                for deadline in due:
                    self._deadlines.discard(deadline)
                    deadline._fire()
                if not due:
                    self._wakes_at = min(d.at for d in self._deadlines)
                    self._cond.wait(self._wakes_at - now)
                    self._wakes_at = float("inf")


_WATCHDOG = _Watchdog()


class _Connection(http.client.HTTPConnection):
    """A keep-alive connection that connects, TLS handshake included, within ``connect_timeout`` in all.

    Then its socket has the read timeout (``timeout``); KubeClient.request bounds the wait for a response.
    """

    def __init__(self, host: str, port: int, *, timeout: float, connect_timeout: float,
                 context: Optional[ssl.SSLContext] = None):
        super().__init__(host, port, timeout=timeout)
        self.connect_timeout = connect_timeout
        self._tls = context
        if context is not None:
            self.default_port = 443  # the Host header omits the scheme's own port

    def connect(self) -> None:
        started = time.monotonic()
        sock = socket.create_connection((self.host, self.port), self.connect_timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tls is not None:
                sock = self._tls.wrap_socket(sock, server_hostname=self.host, do_handshake_on_connect=False)
                remaining = self.connect_timeout - (time.monotonic() - started)
                if remaining <= 0:
                    raise socket.timeout("timed out connecting")
                sock.settimeout(remaining)
                with _Deadline(sock, remaining) as deadline:
                    try:
                        sock.do_handshake()
                    except (OSError, ValueError) as exc:
                        if deadline.expired or isinstance(exc, socket.timeout):
                            raise socket.timeout("TLS handshake timed out after %gs" % self.connect_timeout) from None
                        raise
            sock.settimeout(self.timeout)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class KubeClient:
    """A small Kubernetes API client: lists pods and streams container logs.

    Each thread gets one keep-alive connection.  Requests are retried on 429
    (after ``Retry-After``), 5xx and network errors (jittered exponential
    backoff, at most ``retries`` times and for about ``retry_seconds``), and
    once after a 401 with a freshly read token.

    Timeouts: ``connect_timeout`` for TCP and TLS together, ``response_timeout``
    for the whole response header, ``timeout`` for each read of a body (the
    first two are at most ``timeout``).  ``read_deadline()`` bounds a whole read.
    """

    def __init__(self, server: str, *, token_file: Optional[os.PathLike] = None, ca_file: Optional[os.PathLike] = None,
                 insecure_skip_tls_verify: bool = False, timeout: float = HTTP_TIMEOUT, retries: int = RETRIES,
                 backoff: float = BACKOFF_SECONDS, stop_event: Optional[threading.Event] = None,
                 connect_timeout: Optional[float] = None, response_timeout: Optional[float] = None,
                 retry_seconds: float = RETRY_SECONDS):
        if not timeout > 0:
            raise ConfigError("the timeout must be more than 0 seconds")
        try:
            url = urllib.parse.urlsplit(server)
            port = url.port  # ValueError for a port that is not a number from 0 to 65535
        except ValueError:
            url, port = None, None
        if url is None or url.scheme not in ("https", "http") or not url.hostname or port == 0:
            raise ConfigError("server %r is not an http(s) URL: pass --server https://HOST[:PORT]" % server)
        self.server = server.rstrip("/")
        self._host = url.hostname
        self._port = port or (443 if url.scheme == "https" else 80)
        self._prefix = url.path.rstrip("/")
        self._https = url.scheme == "https"
        self._timeout = timeout
        self.connect_timeout = min(CONNECT_TIMEOUT, timeout) if connect_timeout is None else connect_timeout
        self.response_timeout = min(RESPONSE_TIMEOUT, timeout) if response_timeout is None else response_timeout
        self.retry_seconds = retry_seconds
        self.retries = retries
        self.backoff = backoff
        self.stop_event = stop_event or threading.Event()  # set: requests and sleeps end with _Stopped
        self._local = threading.local()
        self._connections: List[http.client.HTTPConnection] = []
        self._connections_lock = threading.Lock()
        # A token never travels over plain http (kubectl proxy needs none).
        self._token = _TokenSource(Path(token_file)) if token_file and self._https else None
        self._ssl = self._ssl_context(ca_file, insecure_skip_tls_verify) if self._https else None

    @staticmethod
    def _ssl_context(ca_file: Optional[os.PathLike], insecure: bool) -> ssl.SSLContext:
        if insecure:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            return context
        try:
            return ssl.create_default_context(cafile=os.fspath(ca_file) if ca_file else None)
        except FileNotFoundError:
            raise ConfigError("CA file %s not found: pass --ca-file with the cluster's CA certificate" % ca_file) from None
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError("cannot load CA file %s (%s): pass --ca-file with a PEM certificate" % (
                ca_file, getattr(exc, "strerror", None) or exc)) from None

    @classmethod
    def from_service_account(cls, *, environ: Optional[Mapping[str, str]] = None,
                             account_dir: os.PathLike = SERVICE_ACCOUNT_DIR, server: Optional[str] = None,
                             token_file: Optional[os.PathLike] = None, ca_file: Optional[os.PathLike] = None,
                             **options: Any) -> "KubeClient":
        """A client configured like an in-cluster pod: the service host from ``environ``, token and CA from ``account_dir``."""
        environ = os.environ if environ is None else environ
        account = Path(account_dir)
        server = _server_from_environ(environ) if server is None else server  # an empty --server is an error
        if token_file is None:
            token_file = account / SERVICE_TOKEN_FILENAME
            if server.startswith("http://"):
                token_file = None
        if ca_file is None:
            default_ca = account / SERVICE_CERT_FILENAME
            ca_file = default_ca if default_ca.exists() else None  # else: the system's trust store
        return cls(server, token_file=token_file, ca_file=ca_file, **options)

    def __repr__(self) -> str:
        return "KubeClient(%r)" % self.server

    # -- connections ---------------------------------------------------------

    @property
    def timeout(self) -> float:
        """The read timeout (``--timeout``): also how long a stream may go without a complete line."""
        return self._timeout

    def read_deadline(self, seconds: Optional[float] = None) -> _Deadline:
        """Bound the reads of this thread's open response to ``seconds`` (the read timeout) from now.

        ``extend()`` it on progress (a complete line); when it passes, the connection is cut, the blocked read
        returns short or raises, and ``expired`` tells a stall from a cut.  ``cancel()`` it (or use ``with``) when
        done; the connection is then unusable only if it expired (drop it, as after any error).
        """
        return _Deadline(self._local.sock, self._timeout if seconds is None else seconds)

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = _Connection(self._host, self._port, timeout=self._timeout, connect_timeout=self.connect_timeout,
                               context=self._ssl)
            self._local.conn = conn
            self._local.used = False
            with self._connections_lock:
                self._connections.append(conn)
        return conn

    def drop_connection(self) -> None:
        """Close this thread's connection (after an error its state is unknown); the next request opens another."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
            with self._connections_lock:
                with contextlib.suppress(ValueError):
                    self._connections.remove(conn)

    def current_socket(self) -> socket.socket:
        return self._local.conn.sock

    def close(self) -> None:
        with self._connections_lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()

    def abort(self) -> None:
        """Cut every open connection, so threads blocked reading a stream return at once."""
        with self._connections_lock:
            for conn in self._connections:
                with contextlib.suppress(OSError, AttributeError):
                    conn.sock.shutdown(socket.SHUT_RDWR)

    def sleep(self, seconds: float) -> None:
        if self.stop_event.wait(seconds):
            raise _Stopped()

    def backoff_delay(self, attempt: int) -> float:
        """Full-jitter exponential backoff: uniform in [base*2^n / 2, base*2^n], capped."""
        ceiling = min(MAX_BACKOFF_SECONDS, self.backoff * (2 ** attempt))
        return ceiling / 2 + random.random() * ceiling / 2

    # -- requests ------------------------------------------------------------

    def _redact(self, text: str) -> str:
        return self._token.redact(text) if self._token is not None else text

    def _headers(self, accept: str, refresh_token: bool) -> Dict[str, str]:
        headers = {"Accept": accept, "User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
        if self._token is not None:
            token = self._token.refresh(wait=TOKEN_WAIT_SECONDS) if refresh_token else self._token.get()
            headers["Authorization"] = "Bearer " + token
        return headers

    def request(self, path: str, query: Optional[Mapping[str, str]] = None, *, accept: str = "application/json",
                verb: str = "get", resource: str = "", namespace: str = "") -> http.client.HTTPResponse:
        """GET ``path`` and return the open 2xx response; raise ApiError for an error that retries did not cure."""
        target = self._prefix + path + ("?" + urllib.parse.urlencode(query) if query else "")
        failures = throttles = 0
        refreshed = False
        message = ""
        first = time.monotonic()
        while True:
            if self.stop_event.is_set():
                raise _Stopped()
            try:
                headers = self._headers(accept, refresh_token=refreshed)
            except ConfigError as exc:  # after a 401: the token file stayed empty or unreadable
                raise ApiError(401, "%s, and reading the token again failed: %s" % (message, exc), verb=verb,
                               resource=resource, namespace=namespace) from None
            conn = self._connection()
            reused = self._local.used
            started = time.monotonic()
            try:
                conn.request("GET", target, headers=headers)
                sock = self._local.sock = conn.sock  # the response's, even once a "Connection: close" drops it
                sock.settimeout(self.response_timeout)
                with _Deadline(sock, self.response_timeout) as deadline:  # headers trickled byte by byte too
                    try:
                        response = conn.getresponse()
                    except _NETWORK_ERRORS as exc:
                        if deadline.expired or isinstance(exc, socket.timeout):
                            raise socket.timeout("no response within %gs" % self.response_timeout) from None
                        raise
                sock.settimeout(self._timeout)
            except _NETWORK_ERRORS as exc:
                self.drop_connection()
                if reused and isinstance(exc, (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)):
                    self._local.used = False
                    continue  # the server closed an idle keep-alive connection: not a failure
                problem = self._redact("cannot reach %s: %s" % (self.server, exc or type(exc).__name__))
                delay = self.backoff_delay(failures)
                if not self._may_retry(first, failures, delay):
                    raise ApiError(0, "%s (%s)" % (problem, self._gave_up(first, failures)), verb=verb,
                                   resource=resource, namespace=namespace) from None
                failures += 1
                _log.warning("GET %s: %s; retrying in %.1fs", self._prefix + path, problem, delay)
                self.sleep(delay)
                continue
            self._local.used = True
            _log.debug("GET %s -> %d (%.3fs)", target, response.status, time.monotonic() - started)
            if response.status < 300:
                return response
            body = response.read(1 << 16)
            if not response.isclosed():  # an error body longer than we care to read: do not reuse the connection
                self.drop_connection()
            message, reason = _status_message(body, response.getheader("Content-Type") or "")
            if 300 <= response.status < 400:  # never followed: the token must not go where a redirect points
                message = "HTTP %d %s to %s: pass the API server's own address with --server" % (
                    response.status, response.reason, response.getheader("Location") or "nowhere")
            message = self._redact(message or "HTTP %d %s" % (response.status, response.reason))
            if response.status == 401 and self._token is not None and not refreshed:
                refreshed = True  # the token may have rotated: read it again and retry once
                continue
            if response.status == 429 and throttles < THROTTLE_RETRIES:
                throttles += 1
                delay = _retry_after(response)
                asked = delay is not None
                delay = delay if asked else self.backoff_delay(throttles)
                _log.warning("GET %s: throttled by the API server (429); waiting %.1fs%s", self._prefix + path, delay,
                             " as its Retry-After asks" if asked else "")
                self.sleep(delay)
                continue
            if response.status in _RETRYABLE_STATUSES:
                delay = _retry_after(response)
                delay = delay if delay is not None else self.backoff_delay(failures)
                if self._may_retry(first, failures, delay):
                    _log.warning("GET %s: HTTP %d: %s; retrying in %.1fs", self._prefix + path, response.status,
                                 message, delay)
                    self.sleep(delay)
                    failures += 1
                    continue
                message = "%s (%s)" % (message, self._gave_up(first, failures))
            raise ApiError(response.status, message, reason=reason, verb=verb, resource=resource, namespace=namespace)

    def _may_retry(self, first: float, failures: int, delay: float) -> bool:
        return failures < self.retries and time.monotonic() - first + delay <= self.retry_seconds

    @staticmethod
    def _gave_up(first: float, failures: int) -> str:
        return "gave up after %d attempt(s) in %.0fs" % (failures + 1, time.monotonic() - first)

    def get_json(self, path: str, query: Optional[Mapping[str, str]] = None, **what: str) -> Dict[str, Any]:
        """GET a JSON object; ConfigError when the server answers with something no API server sends."""
        failures = 0
        first = time.monotonic()
        while True:
            response = self.request(path, query, **what)
            try:
                parts = []
                with self.read_deadline() as deadline:  # a body trickling in must still arrive within bounds
                    while True:
                        part = response.read(PROGRESS_BYTES)
                        if not part:
                            break
                        parts.append(part)
                        deadline.extend()
                if deadline.expired:
                    raise socket.timeout("less than %d KiB in %gs" % (PROGRESS_BYTES >> 10, self._timeout))
                body = b"".join(parts)
                try:
                    document = json.loads(body)
                except RecursionError:
                    document = None  # nested deeper than any API object
                if not isinstance(document, dict):
                    raise ConfigError("%s answered GET %s with JSON that is not an API object: check --server"
                                      % (self.server, self._prefix + path))
                return document
            except _NETWORK_ERRORS + (ValueError,) as exc:
                self.drop_connection()
                delay = self.backoff_delay(failures)
                problem = "bad response from %s%s: %s" % (self.server, path, exc)
                if not self._may_retry(first, failures, delay):
                    raise ApiError(0, "%s (%s)" % (problem, self._gave_up(first, failures))) from None
                _log.warning("%s; retrying in %.1fs", problem, delay)
                self.sleep(delay)
                failures += 1

    def list_pods(self, namespace: Optional[str] = None, *, label_selector: Optional[str] = None,
                  field_selector: Optional[str] = None, page_size: int = PAGE_SIZE,
                  list_meta: Optional[Dict[str, Any]] = None, max_pages: int = MAX_LIST_PAGES) -> Iterator[Dict[str, Any]]:
        """Yield the pods of ``namespace`` (all namespaces when None), page by page.

        A continue token that expired (410) restarts the listing; pods already
        yielded may then be yielded again, so callers de-duplicate by UID.
        ``list_meta``, when given, receives the first page's list metadata (its
        resourceVersion is where a watch continues from).  A continue token
        seen before, or more than ``max_pages`` pages, end it with an ApiError.
        """
        path, query = _pods_request(namespace, label_selector, field_selector, limit=str(page_size))
        restarts = pages = 0
        tokens: set = set()
        page = dict(query)
        while True:
            try:
                pods = self.get_json(path, page, verb="list", resource="pods", namespace=namespace or "")
            except ApiError as exc:
                if exc.status == 410 and "continue" in page and restarts < 3:
                    restarts += 1
                    page = dict(query)
                    tokens.clear()
                    continue
                raise
            meta, items = pods.get("metadata") or {}, pods.get("items") or []
            if not (isinstance(meta, dict) and isinstance(items, list) and all(isinstance(i, dict) for i in items)):
                raise ConfigError("%s answered a pod listing with something that is not a PodList: check --server"
                                  % self.server)
            if list_meta is not None and "continue" not in page:
                list_meta.clear()
                list_meta.update(meta)
            yield from items
            token = meta.get("continue")
            if not token:
                return
            pages += 1
            if token in tokens or pages >= max_pages:
                raise ApiError(0, "the pod listing does not end: the API server %s after %d pages; its paging is "
                               "broken" % ("repeated a continue token" if token in tokens else "went on", pages),
                               verb="list", resource="pods", namespace=namespace or "")
            tokens.add(token)
            page = dict(query, **{"continue": token})

    def watch_pods(self, namespace: Optional[str] = None, *, resource_version: str, label_selector: Optional[str] = None,
                   field_selector: Optional[str] = None, timeout_seconds: int = WATCH_SECONDS) -> Iterator[Tuple[str, Dict[str, Any]]]:
        """Yield (type, pod) watch events after ``resource_version``; BOOKMARK events carry only metadata.

        Raises ApiError 410 when that version is too old (relist, then watch again).
        """
        path, query = _pods_request(namespace, label_selector, field_selector, watch="true",
                                    allowWatchBookmarks="true", resourceVersion=resource_version,
                                    timeoutSeconds=str(timeout_seconds))
        response = self.request(path, query, verb="watch", resource="pods", namespace=namespace or "")
        self._local.sock.settimeout(timeout_seconds + 30)  # a quiet watch is not a dead one
        deadline = self.read_deadline(timeout_seconds + self._timeout)  # the server ends it after timeout_seconds
        try:
            while True:
                line = response.readline()
                if not line:
                    return
                if not line.strip():
                    continue
                try:
                    event = json.loads(line)
                except RecursionError:
                    event = None
                if not isinstance(event, dict) or not isinstance(event.get("object") or {}, dict):
                    raise ValueError("not a watch event: %s" % _shown(line.decode("utf-8", "replace")))
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    raise ApiError(int(obj.get("code") or 500), self._redact(str(obj.get("message") or "watch failed")),
                                   reason=str(obj.get("reason") or ""), verb="watch", resource="pods",
                                   namespace=namespace or "")
                yield kind, obj
        except BaseException:
            self.drop_connection()
            raise
        finally:
            deadline.cancel()

    def open_log(self, namespace: str, pod: str, container: Optional[str] = None, *, timestamps: bool = True,
                 previous: bool = False, since_time: Optional[int] = None, tail_lines: Optional[int] = None,
                 limit_bytes: Optional[int] = None, follow: bool = False) -> Optional[http.client.HTTPResponse]:
        """Open a container's log; None when the API has none to give (204: the pod is not scheduled yet)."""
        path = _log_path(namespace, pod)
        query = _log_query(container, timestamps=timestamps, previous=previous, since_time=since_time,
                           tail_lines=tail_lines, limit_bytes=limit_bytes, follow=follow)
        response = self.request(path, query, accept="*/*", verb="get", resource="pods/log", namespace=namespace)
        if response.status == 204:
            response.read()
            return None
        return response

    def stream_log(self, namespace: str, pod: str, container: Optional[str] = None, *, block_size: int = BLOCK_SIZE,
                   **options: Any) -> Iterator[bytes]:
        """Yield a container's log as byte blocks as they arrive (no retry once the body has started).

        A body that brings no complete line for the read timeout is cut: socket.timeout.
        """
        response = self.open_log(namespace, pod, container, **options)
        if response is None:
            return
        deadline = self.read_deadline()
        try:
            while True:
                try:
                    block = response.read1(block_size)
                finally:
                    if deadline.expired:
                        raise socket.timeout("no complete line in %gs" % deadline.seconds)
                if not block:
                    return
                if b"\n" in block:
                    deadline.extend()
                yield block
        except BaseException:
            self.drop_connection()
            raise
        finally:
            deadline.cancel()


# ---------------------------------------------------------------------------
# Pods and containers
# ---------------------------------------------------------------------------

# What the API server itself accepts (k8s.io/apimachinery validation): namespaces and containers are DNS labels
# (63 characters), pods DNS subdomains (253 characters, dot-separated, no limit per part).
_DNS_LABEL = r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?"
_DNS_SUBDOMAIN = r"(?=.{1,253}\Z)[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*"
_NAME_RULES = {"namespace": re.compile(_DNS_LABEL), "pod": re.compile(_DNS_SUBDOMAIN),
               "container": re.compile(_DNS_LABEL)}


def _is_kubernetes_name(kind: str, value: str) -> bool:
    """Whether the API server would accept ``value`` as the name of a ``kind`` (namespace, pod, container)."""
    return bool(_NAME_RULES[kind].fullmatch(value))


def _path_unsafe(value: str) -> bool:
    """A name that cannot be one folder or file name under the output folder."""
    return value in ("", ".", "..") or "/" in value or "\0" in value


@dataclasses.dataclass
class _Container:
    """One container of a listed pod, with what its status says about its instances."""

    namespace: str
    pod: str
    uid: str
    name: str
    restarts: int = 0
    container_id: str = ""
    state: str = ""  # running, waiting, terminated; empty when the kubelet has not reported it
    waiting_reason: str = ""
    has_previous: bool = False
    listed_ns: int = 0  # when the status above was read (our clock)

    @property
    def key(self) -> str:
        return "%s/%s" % (self.uid, self.name)

    @property
    def label(self) -> str:
        return "%s/%s/%s" % (self.namespace, self.pod, self.name)

    def unsafe_name(self) -> Optional[str]:
        """Why this container's file cannot be written, or None.

        A name the API server returned is never refused for its spelling (its own validation decides what a name
        may be); only for what would take the path out of its folder.
        """
        for value, what in ((self.namespace, "namespace"), (self.pod, "pod"), (self.name, "container")):
            if _path_unsafe(value):
                return "refusing %s name %r: it cannot be a folder or file name" % (what, value)
        return None


def _object(value: Any) -> Dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _objects(value: Any) -> List[Dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _containers_of(pod: Mapping[str, Any]) -> List[_Container]:
    meta = _object(pod.get("metadata"))
    spec = _object(pod.get("spec"))
    status = _object(pod.get("status"))
    now = time.time_ns()
    found = []
    for spec_key, status_key in (("initContainers", "initContainerStatuses"), ("containers", "containerStatuses"),
                                 ("ephemeralContainers", "ephemeralContainerStatuses")):
        statuses = {s.get("name"): s for s in _objects(status.get(status_key))}
        for container in _objects(spec.get(spec_key)):
            name = str(container.get("name") or "")
            entry = _Container(str(meta.get("namespace") or ""), str(meta.get("name") or ""), str(meta.get("uid") or ""),
                               name, listed_ns=now)
            st = statuses.get(name)
            if st:
                restarts = st.get("restartCount")
                entry.restarts = restarts if isinstance(restarts, int) and not isinstance(restarts, bool) else 0
                entry.container_id = str(st.get("containerID") or "")
                state = _object(st.get("state"))
                entry.state = str(next(iter(state), ""))
                entry.waiting_reason = str(_object(state.get("waiting")).get("reason") or "")
                entry.has_previous = bool(_object(st.get("lastState")).get("terminated"))
            found.append(entry)
    return found


def _in_shard(namespace: str, pod: str, index: int, count: int) -> bool:
    # crc32 is stable across runs, machines and Python versions (hash() is salted).
    return zlib.crc32(("%s/%s" % (namespace, pod)).encode()) % count == index


# ---------------------------------------------------------------------------
# State
# ---------------------------------------------------------------------------


class _State:
    """Per container, the last line on disk; per file, the size that line ends at.

    Bytes past a file's recorded size were written after the last checkpoint
    and are cut off before the file is appended to again, so a crash, kill or
    full disk never leaves a doubled line.  A save first makes the files it
    records durable, all at once, then writes the state: never the other way.
    """

    def __init__(self, path: Optional[Path]):
        self.path = path
        self.containers: Dict[str, Dict[str, Any]] = {}
        self.files: Dict[str, Dict[str, Any]] = {}  # relpath -> size, and the cursor of its last line
        self._lock = threading.Lock()
        self._save_lock = threading.Lock()  # one save at a time, so an older snapshot never lands last
        self._saved_at = time.monotonic()
        self._dirty = False
        self._unsynced: set = set()  # files written since the last save
        if path is not None:
            self._load()

    def _load(self) -> None:
        try:
            data = json.loads(_read_regular_file(self.path, STATE_MAX_BYTES))
        except FileNotFoundError:
            return
        except (OSError, ValueError, RecursionError) as exc:
            reason = getattr(exc, "strerror", None) or exc if not isinstance(exc, RecursionError) else "nested too deep"
            raise ConfigError("state file %s is unreadable (%s): move it away to export from scratch"
                              % (self.path, reason)) from None
        containers = data.get("containers") or {} if isinstance(data, dict) else None
        files = data.get("files") or {} if isinstance(data, dict) else None
        if not isinstance(containers, dict) or not isinstance(files, dict) or data.get("version") != STATE_VERSION:
            raise ConfigError("state file %s has an unknown format: move it away to export from scratch" % self.path)
        # A record the engine cannot use is dropped, and said once: its file is then continued after its own last
        # line, as when a record was pruned.
        bad = [("container " + key, problem) for key, problem in
               ((key, _record_problem(record, _CONTAINER_RECORD)) for key, record in containers.items()) if problem]
        bad += [("file " + key, problem) for key, problem in
                ((key, _record_problem(record, _FILE_RECORD)) for key, record in files.items()) if problem]
        for what, _problem in bad:
            kind, key = what.split(" ", 1)
            (containers if kind == "container" else files).pop(key)
        if bad:
            _log.warning("state file %s: ignoring %d bad record(s) (%s: %s); their files continue after their own "
                         "last line", self.path, len(bad), bad[0][0], bad[0][1])
        self.containers, self.files = containers, files

    def get(self, key: str) -> Optional[Dict[str, Any]]:
        with self._lock:
            entry = self.containers.get(key)
            return dict(entry) if entry else None

    def file_record(self, relpath: str) -> Optional[Dict[str, Any]]:
        with self._lock:
            record = self.files.get(relpath)
            return dict(record) if record else None

    def register_file(self, relpath: str, size: int) -> None:
        """Record a new file before its first byte, for files whose last line cannot be read back."""
        with self._lock:
            self.files[relpath] = {"size": size}
            self._dirty = True
        self.save()

    def commit(self, key: str, entry: Dict[str, Any], relpath: str, size: int) -> None:
        """Record lines written (not yet durable) up to ``size``; the next save makes them so, then records them."""
        with self._lock:
            self.containers[key] = entry
            self.files[relpath] = {"size": size, "ts": entry["ts"], "count": entry["count"]}
            self._unsynced.add(relpath)
            self._dirty = True
        self.save_if_due()

    def save_if_due(self) -> None:
        """Save if the last save is STATE_SAVE_INTERVAL old and no other thread is saving."""
        if time.monotonic() - self._saved_at >= STATE_SAVE_INTERVAL and self._save_lock.acquire(blocking=False):
            try:
                self._save()
            except OSError as exc:  # the final save reports it; the files are fine either way
                _log.warning("cannot save the state file %s: %s (will retry)", self.path, _os_reason(exc, self.path))
            finally:
                self._save_lock.release()

    def touch(self, key: str, now: float) -> None:
        with self._lock:
            entry = self.containers.get(key)
            if entry is not None and entry.get("seen", 0) < now - 3600:
                entry["seen"] = int(now)
                self._dirty = True

    def save(self, *, prune_before: Optional[float] = None) -> None:
        with self._save_lock:
            self._save(prune_before=prune_before)

    def _save(self, *, prune_before: Optional[float] = None) -> None:
        if self.path is None:
            return
        with self._lock:
            if prune_before is not None:
                for key in [k for k, v in self.containers.items() if v.get("seen", 0) < prune_before]:
                    del self.containers[key]
                    self._dirty = True
                # A file's record outlives its containers: a pod of the same name continues after its last line.
                for relpath in [p for p in self.files if not (self.path.parent / p).exists()]:
                    del self.files[relpath]
                    self._dirty = True
            if not self._dirty:
                return
            # The snapshot holds only lines already written: the flush below makes all of them durable.
            text = json.dumps({"version": STATE_VERSION, "containers": self.containers, "files": self.files},
                              separators=(",", ":"), sort_keys=True)
            unsynced, self._unsynced = self._unsynced, set()
            self._dirty = False
            self._saved_at = time.monotonic()
        try:
            _make_durable(self.path.parent, unsynced)
            _atomic_write(self.path, text.encode())
        except BaseException:
            with self._lock:
                self._unsynced |= unsynced
                self._dirty = True
            raise


STATE_MAX_BYTES = 128 << 20  # far above any cluster's state; a bound for a state file that is no state file
_CONTAINER_RECORD = {"ts": "ts", "count": "count", "restarts": "count?", "held": "bool?", "final": "bool?",
                     "id": "str?", "seen": "number?"}
_FILE_RECORD = {"size": "count", "ts": "ts?", "count": "count?"}


def _record_problem(record: Any, fields: Mapping[str, str]) -> Optional[str]:
    """What is wrong with a state record (the fields the engine reads), or None."""
    if not isinstance(record, dict):
        return "not an object"
    for name, kind in fields.items():
        if kind.endswith("?"):
            if record.get(name) is None:
                continue
            kind = kind[:-1]
        value = record.get(name)
        if kind == "ts":
            try:
                parse_timestamp(value)
                continue
            except (ValueError, AttributeError):
                pass
        elif kind in ("count", "number") and isinstance(value, (int, float)) and not isinstance(value, bool):
            if kind == "number" or (isinstance(value, int) and value >= 0):
                continue
        elif isinstance(value, {"bool": bool, "str": str}.get(kind, ())):
            continue
        return "bad %s %s" % (name, _shown(value))
    if fields is _FILE_RECORD and record.get("ts") is not None and record.get("count") is None:
        return "a ts without a count"
    return None


def _shown(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _read_regular_file(path: Path, limit: int) -> bytes:
    """A regular file's bytes, up to ``limit``: never through a symlink, never a device or FIFO."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, "a symbolic link", str(path)) from None
        raise
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise OSError(errno.EFBIG, "larger than %d MiB" % (limit >> 20), str(path))
    return data


def _os_reason(exc: OSError, meant: Path) -> str:
    """The OS's reason, naming the file it is about when that is another one (the state's .tmp, a folder)."""
    reason = exc.strerror or str(exc)
    if exc.filename is not None and os.fsdecode(exc.filename) != str(meant):
        reason = "%s: %s" % (os.fsdecode(exc.filename), reason)
    return reason


def _syncfs(folder: Path) -> bool:
    """Flush the file system holding ``folder`` in one call (Linux syncfs(2)); False where that is unavailable.

    Thousands of small files then cost one journal commit instead of one each.
    """
    try:
        import ctypes

        syncfs = ctypes.CDLL(None, use_errno=True).syncfs
    except (ImportError, OSError, AttributeError):
        return False
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if syncfs(fd) != 0:
            number = ctypes.get_errno()
            raise OSError(number, os.strerror(number), str(folder))
        return True
    finally:
        os.close(fd)


def _make_durable(root: Path, relpaths: Iterable[str]) -> None:
    relpaths = list(relpaths)
    if not relpaths or _syncfs(root):
        return
    for relpath in relpaths:
        try:
            fd = os.open(root / relpath, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            continue  # moved away since it was written: nothing of ours to keep
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------
# Output files
# ---------------------------------------------------------------------------


def _safe_dir(root: Path, *parts: str, made: Optional[set] = None) -> Path:
    """Create root/parts... as 0700 folders, refusing symlinks so nothing lands outside ``root``.

    ``made`` remembers the folders checked in this run, so each costs one mkdir at most.
    """
    path = root
    for part in parts:
        path = path / part
        if made is not None and path in made:
            continue
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            mode = os.lstat(path).st_mode
            if not stat.S_ISDIR(mode):
                raise OSError(errno.ENOTDIR, "not a folder (or a symlink)", str(path)) from None
            if mode & 0o077:
                _make_private(path)
        if made is not None:
            made.add(path)
    return path


def _make_private(path: Path) -> None:
    """Take group and other access off a folder of ours (an older run's umask, a volume's fsGroup), or warn."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            os.fchmod(fd, stat.S_IMODE(os.fstat(fd).st_mode) & ~0o077 | 0o700)
        finally:
            os.close(fd)
    except OSError as exc:
        _log.warning("folder %s is open to other users and its mode cannot be changed (%s)", path, exc.strerror)


def _make_folders(path: Path) -> None:
    """``mkdir -p`` with mode 0700 for every folder it creates (Path.mkdir gives the parents the umask's mode)."""
    missing = []
    while not os.path.lexists(path) and path.parent != path:
        missing.append(path)
        path = path.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(folder, 0o700)


def _check_own_file(fd: int, path: Path) -> None:
    """Refuse to write through a file that is not only ours: another link to it, a device, a FIFO."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise OSError(errno.EINVAL, "not a regular file", str(path))
    if st.st_nlink > 1:
        raise OSError(errno.EMLINK, "it has %d hard links, so writing it would change another file: move it away"
                      % st.st_nlink, str(path))


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        written = os.write(fd, data)
        data = data[written:]


class _FdWriter:
    """The file object under a GzipFile: writes all it is given (GzipFile ignores short writes), or nothing once discarded."""

    def __init__(self, fd: int):
        self.fd = fd
        self.discarded = False

    def write(self, data: bytes) -> int:
        if not self.discarded:
            _write_all(self.fd, memoryview(data))
        return len(data)

    def flush(self) -> None:
        pass


class _OutputFile:
    """A log file appended to in place, or, without state, written aside and renamed over the old one."""

    def __init__(self, path: Path, *, compress: bool, replace: bool, committed: Optional[int]):
        self.path = path
        self.compress = compress
        self.replace = replace
        self.bytes_written = 0  # uncompressed bytes, this run
        self._gzip: Optional[gziplib.GzipFile] = None
        self._sink: Optional[_FdWriter] = None
        self._flushed_at = time.monotonic()
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        self._target = path.with_name(".%s.%d.tmp" % (path.name, os.getpid())) if replace else path
        try:  # a new file gets its mode from open(); an old one may need it set
            self._fd = os.open(self._target, flags | os.O_EXCL, 0o600)
            self.committed = 0
        except FileExistsError:  # never truncated, chmod-ed or written before it is known to be a file of ours
            self._fd = os.open(self._target, flags | os.O_NONBLOCK, 0o600)
            try:
                _check_own_file(self._fd, self._target)
            except OSError:
                os.close(self._fd)
                raise
            os.set_blocking(self._fd, True)
            if replace:
                os.ftruncate(self._fd, 0)
            os.fchmod(self._fd, 0o600)
            self.committed = os.fstat(self._fd).st_size
            if committed is not None:
                self.truncate(committed)  # bytes from a run that died before its checkpoint
            os.lseek(self._fd, self.committed, os.SEEK_SET)

    def write(self, data: memoryview) -> None:
        if self.compress:
            if self._gzip is None:  # each checkpoint closes a gzip member, so the file always decompresses whole
                self._sink = _FdWriter(self._fd)
                self._gzip = gziplib.GzipFile(filename="", mode="wb", compresslevel=GZIP_LEVEL, fileobj=self._sink,
                                              mtime=0)
            self._gzip.write(data)
        else:
            _write_all(self._fd, data)
        self.bytes_written += len(data)

    def flush(self) -> None:
        """Hand compressed lines to the OS at least once a second (plain lines go there as they are written)."""
        now = time.monotonic()
        if self._gzip is not None and now - self._flushed_at >= 1.0:
            self._gzip.flush()
            self._flushed_at = now

    def checkpoint(self) -> int:
        """End the lines written so far (and their gzip member); return the size they end at.

        Durability comes with the state save that records this size (see _State).
        """
        if self._gzip is not None:
            self._gzip.close()
            self._gzip = None
        self.committed = os.lseek(self._fd, 0, os.SEEK_CUR)
        return self.committed

    def truncate(self, size: int) -> None:
        if size < self.committed:
            os.ftruncate(self._fd, size)
            os.lseek(self._fd, size, os.SEEK_SET)
            self.committed = size

    def rollback(self) -> None:
        """Drop what was written since the last checkpoint (after a write error)."""
        if self._sink is not None:
            self._sink.discarded = True  # the abandoned member must not write when it is collected
        self._gzip = None
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, self.committed)
            os.lseek(self._fd, self.committed, os.SEEK_SET)

    def close(self, *, keep: bool) -> None:
        if self.replace and keep:
            os.fsync(self._fd)  # no state records a replaced file: it must be whole before the rename
        os.close(self._fd)
        if self.replace:
            if keep:
                os.replace(self._target, self.path)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(self._target)


def _tail_cursor(buffer: bytes, start: int, end: int, last: int, previous: Optional[_Cursor]) -> _Cursor:
    """The cursor after the complete lines buffer[start:end], whose last line starts at ``last``.

    Counts back over the lines that carry the last line's exact timestamp; if
    they fill the whole range, the count goes on from ``previous``.
    """
    match = _TS_RE.match(buffer, last)
    stamp, ns = match.group(0), _match_ns(match)
    count, pos = 1, last
    while pos > start:
        prior = max(buffer.rfind(b"\n", start, pos - 1) + 1, start)
        if not buffer.startswith(stamp, prior):
            return _Cursor(ns, count)
        count, pos = count + 1, prior
    if previous is not None and previous.ns == ns:
        count += previous.count
    return _Cursor(ns, count)


def _last_line_start(buffer: bytes, start: int, end: int) -> int:
    return max(buffer.rfind(b"\n", start, end - 1) + 1, start)


def _recover_cursor(path: Path, *, compressed: bool) -> Tuple[Optional[_Cursor], int]:
    """(cursor, size of the complete part) of a timestamped log file the state has no record of.

    Streams the file in blocks (gzip members one by one), so memory stays flat;
    what follows the last complete line (or gzip member) is a crashed run's.
    """
    cursor: Optional[_Cursor] = None
    safe: Optional[_Cursor] = None  # the cursor where ``complete`` ends
    complete = 0
    carry = b""
    with open(path, "rb") as handle:
        offset = 0
        decompressor = zlib.decompressobj(31) if compressed else None
        while True:
            raw = handle.read(BLOCK_SIZE)
            if not raw:
                break
            pending = [raw]
            while pending:
                chunk = pending.pop()
                if decompressor is None:
                    data, offset = chunk, offset + len(chunk)
                else:
                    try:
                        data = decompressor.decompress(chunk)
                    except zlib.error:
                        return safe, complete  # a member cut by a crash
                    offset += len(chunk) - len(decompressor.unused_data)
                buffer = carry + data
                end = buffer.rfind(b"\n") + 1
                if end:
                    last = _last_line_start(buffer, 0, end)
                    if not _TS_RE.match(buffer, last):
                        raise ValueError("its last line has no timestamp; move it away to export it anew")
                    cursor = _tail_cursor(buffer, 0, end, last, cursor)
                carry = buffer[end:]
                if decompressor is None or decompressor.eof:  # a whole member: lines up to here are safe
                    if not carry:
                        complete, safe = offset, cursor
                    if decompressor is not None:
                        pending.append(decompressor.unused_data)
                        decompressor = zlib.decompressobj(31)
    if decompressor is None and carry:
        complete, safe = offset - len(carry), cursor
    return safe, complete


# ---------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class ExportResult:
    """What a run did. ``failed`` and ``skipped`` hold {"container", "reason"} records."""

    output_dir: str
    pods: int = 0
    containers: int = 0
    exported: int = 0
    unchanged: int = 0
    bytes_written: int = 0
    files: List[str] = dataclasses.field(default_factory=list)
    skipped: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
    failed: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
    gaps: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
    notes: List[str] = dataclasses.field(default_factory=list)
    planned: List[str] = dataclasses.field(default_factory=list)
    interrupted: bool = False
    duration_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed and not self.interrupted

    @property
    def exit_code(self) -> int:
        if any(f.get("status") in (401, 403) for f in self.failed):
            return EXIT_REFUSED
        return EXIT_OK if self.ok else EXIT_FAILED

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class _Options:
    output_dir: Path
    compress: bool
    timestamps: bool
    use_state: bool
    since_ns: Optional[int]
    made_dirs: set = dataclasses.field(default_factory=set)


_buffers = threading.local()


def _worker_buffer() -> bytearray:
    """Each worker's 1 MiB read buffer, reused from container to container (a fresh one costs a 1 MiB memset)."""
    buffer = getattr(_buffers, "block", None)
    if buffer is None:
        buffer = _buffers.block = bytearray(BLOCK_SIZE)
    return buffer


def _grown(buffer: bytearray, filled: int, size: int, *, keep: bool) -> Tuple[bytearray, memoryview]:
    """A larger copy (views of the old one may still be alive, so it is not resized in place)."""
    larger = bytearray(size)
    larger[:filled] = buffer[:filled]
    if keep:
        _buffers.block = larger
    return larger, memoryview(larger)


class _ContainerExport:
    """Exports one container: its previous instance when it restarted, then its current one.

    ``cursor`` always names the last line that is in the file, so a body cut
    anywhere is resumed from there with sinceTime (whole seconds) and the
    lines at or before the cursor are dropped again.
    """

    def __init__(self, client: KubeClient, state: _State, options: _Options, container: _Container, *,
                 follow: bool = False):
        self.client = client
        self.follow = follow  # stream the current instance with follow=true until it ends or yields its slot
        self.yield_requested = False
        self.write_lock = threading.Lock()  # follow mode: the supervisor checkpoints quiet streams too
        self.sock: Optional[socket.socket] = None
        self.last_data = time.monotonic()
        self.checkpointed_at = time.monotonic()
        self.state = state
        self.options = options
        self.c = container
        self.cursor: Optional[_Cursor] = None
        self.min_ns: Optional[int] = None
        self.output: Optional[_OutputFile] = None
        # The cursor is at or past the end of instance ``restarts`` (a restartCount); ``held`` says
        # whether that instance holds the cursor's own line, so a rerun can tell a rotation from no news.
        self.restarts = container.restarts
        self.held = True
        self.instance = container.restarts  # the instance being read
        self.shift = 0  # 1 once the container is known to have restarted after the listing
        self.partial = False  # the body ended inside a line that is still being written
        self.cursor_in_previous: Optional[bool] = None  # which instance should still hold the cursor's line
        self.expect_cursor = False
        self.probe_on_miss = False  # look for a missing cursor line in the previous instance before calling it lost
        self.probe_young = False  # look in the previous instance if the current log starts after the listing
        self.rotated: Optional[Tuple[int, Optional[int]]] = None  # (last line exported, first line still there)

    @property
    def relpath(self) -> str:
        return "%s/%s/%s.log%s" % (self.c.namespace, self.c.pod, self.c.name, ".gz" if self.options.compress else "")

    def run(self, result: "_Collector") -> None:
        c = self.c
        problem = c.unsafe_name()
        if problem:
            return result.fail(c, problem)
        saved = self.state.get(c.key) if self.options.use_state else None
        if saved is not None and saved.get("final") and saved.get("id") == c.container_id and saved.get("restarts") == c.restarts:
            self.state.touch(c.key, time.time())
            return result.unchanged(c)
        if not c.state or (c.state == "waiting" and c.restarts == 0 and not c.has_previous):
            return result.skip(c, "waiting to start" + (": " + c.waiting_reason if c.waiting_reason else ""))
        export_previous = False
        if saved is not None:
            self.cursor = _Cursor(parse_timestamp(saved["ts"]), int(saved["count"]))
            self.restarts = int(saved.get("restarts", 0))
            self.held = bool(saved.get("held", True))
            if c.restarts - self.restarts > 1:
                result.gap(c, "%d instance(s) restarted away between runs; their lines are lost"
                           % (c.restarts - self.restarts - 1), since=saved["ts"], until=None)
            elif c.restarts >= self.restarts and self.held:
                self.cursor_in_previous = c.restarts > self.restarts
            export_previous = c.restarts > self.restarts
        else:
            self.min_ns = self.options.since_ns
            export_previous = self.options.use_state and c.has_previous
            # A restart between the listing and the request would make the first instance "previous".
            self.probe_young = self.options.use_state and not c.has_previous and c.state != "terminated"
        self.probe_on_miss = self.cursor_in_previous is False
        try:
            self._open(saved)
        except (OSError, ValueError) as exc:
            if self.output is not None:
                self.output.close(keep=False)
            return result.fail(c, "cannot write %s: %s" % (self.relpath, getattr(exc, "strerror", None) or exc))
        ok = False
        try:
            if export_previous:
                gone = self._export_instance(previous=True)
                if gone is not None and saved is not None:
                    result.gap(c, "the previous instance's log is gone: %s" % gone, since=saved["ts"], until=None)
            try:
                reason = self._export_instance(previous=False)
            except _CursorMissing:
                # The current instance lacks the cursor's line, or starts after the listing: the container may
                # have restarted since, its old instance being "previous" now.  Finish that one first.
                self.probe_on_miss = self.probe_young = False
                self.cursor_in_previous = True if self.cursor is not None else None
                self.shift = 1
                if self._export_instance(previous=True) is not None:
                    self.shift = 0
                    if self.cursor is not None:
                        self.cursor_in_previous = False  # no previous instance: a rotation, measured on the current
                reason = self._export_instance(previous=False)
            if self.rotated is not None:
                since, until = self.rotated
                result.gap(c, "the log rotated before its lines after %s were exported; lines up to %s may be lost"
                           % (_format_ts(since), _format_ts(until) if until else "now"),
                           since=_format_ts(since), until=_format_ts(until) if until else None)
            if reason is not None:
                return result.skip(c, reason)
            ok = True
        except ApiError as exc:
            result.fail(c, exc.message, status=exc.status)
        except _KubeletError as exc:
            result.fail(c, "the kubelet reported: %s" % exc)
        except _Stopped:
            result.interrupted = True
        except OSError as exc:  # the disk: full, quota, RLIMIT_FSIZE, read-only
            self.output.rollback()
            self.output.close(keep=False)
            self.output = None
            return result.fail(c, "cannot write %s: %s" % (self.relpath, exc.strerror or exc))
        finally:
            if self.output is not None:
                self._finish(c, result, ok)
        if ok:
            result.exported(c)

    def _open(self, saved: Optional[Dict[str, Any]]) -> None:
        directory = _safe_dir(self.options.output_dir, self.c.namespace, self.c.pod, made=self.options.made_dirs)
        path = directory / self.relpath.rsplit("/", 1)[1]
        use_state = self.options.use_state
        record = self.state.file_record(self.relpath) if use_state else None
        self.output = _OutputFile(path, compress=self.options.compress, replace=not use_state,
                                  committed=record["size"] if record else None)
        if not use_state or saved is not None:
            return
        # No record for this container: a pod of the same name wrote the file before, the container's record
        # was pruned, or the state was lost or never written (--no-state, a run killed on its first export).
        # Continue after the file's own last line.
        if record is not None:
            if record.get("ts"):
                self.cursor, self.min_ns = _Cursor(parse_timestamp(record["ts"]), int(record["count"])), None
        elif not self.options.timestamps:
            if self.output.committed > 0:
                raise ValueError("it exists but the state file has no record of it, and without timestamps "
                                 "its last line cannot be found; move it away to export it anew")
            # Its lines will carry no timestamp to continue from if this run dies before its checkpoint.
            self.state.register_file(self.relpath, 0)
        elif self.output.committed > 0:
            cursor, complete = _recover_cursor(path, compressed=self.options.compress)
            self.output.truncate(complete)
            if cursor is not None:
                self.cursor, self.min_ns = cursor, None

    def _finish(self, c: _Container, result: "_Collector", ok: bool) -> None:
        with self.write_lock:
            self._finish_locked(c, result, ok)

    def _finish_locked(self, c: _Container, result: "_Collector", ok: bool) -> None:
        output = self.output
        try:
            self._checkpoint(final=ok and c.state == "terminated" and not self.partial and not self.yield_requested)
        except OSError as exc:
            self.output = None
            output.rollback()
            output.close(keep=False)
            return result.fail(c, "cannot write %s: %s" % (self.relpath, exc.strerror or exc))
        self.output = None
        output.close(keep=ok or not output.replace)
        result.add_bytes(output.bytes_written, self.relpath)

    def _checkpoint(self, *, final: bool = False) -> None:
        """Make the lines written so far durable, then record them in the state: never the other way round."""
        size = self.output.checkpoint()
        self.checkpointed_at = time.monotonic()
        if self.options.use_state and self.cursor is not None:
            entry = {"ts": _format_ts(self.cursor.ns), "count": self.cursor.count, "restarts": self.restarts,
                     "held": self.held, "id": self.c.container_id, "final": final, "seen": int(time.time())}
            self.state.commit(self.c.key, entry, self.relpath, size)

    def checkpoint_if_due(self) -> None:
        """A followed line then silence: record it after CHECKPOINT_SECONDS all the same (and end its gzip member)."""
        with self.write_lock:
            if (self.output is not None and self.last_data > self.checkpointed_at
                    and time.monotonic() - self.checkpointed_at >= CHECKPOINT_SECONDS):
                self._checkpoint()

    def request_yield(self) -> None:
        """Ask a follow stream to give its slot away: checkpoint and end as if the stream had ended."""
        self.yield_requested = True
        with contextlib.suppress(OSError, AttributeError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def _export_instance(self, previous: bool) -> Optional[str]:
        """Copy one instance's log, resuming after cuts; return a reason when the API has no log for it."""
        failures = 0
        self.expect_cursor = self.cursor is not None and self.cursor_in_previous is previous
        self.instance = self.c.restarts + self.shift - (1 if previous else 0)
        follow = self.follow and not previous and self.c.state != "terminated"  # an ended instance: read it whole
        while True:
            if self.yield_requested:
                return None
            since = self.cursor.ns if self.cursor is not None else self.min_ns
            try:
                response = self.client.open_log(self.c.namespace, self.c.pod, self.c.name, previous=previous,
                                                since_time=since, follow=follow)
            except ApiError as exc:
                reason = _skip_reason(exc)
                if reason is None:
                    raise
                return reason
            if response is None:
                return "no log yet (pod not scheduled)"
            written = self.output.bytes_written
            try:
                if follow:
                    self.sock = self.client.current_socket()
                    self.sock.settimeout(FOLLOW_IDLE_TIMEOUT)
                    if self.yield_requested:  # asked while the request was being opened
                        self.client.drop_connection()
                        return None
                self._copy_body(response, follow=follow,
                                finished=previous or (not follow and self.c.state == "terminated"))
                if self.yield_requested:
                    self.client.drop_connection()
                    return None
                if self.restarts != self.instance:  # read to the end without a new line
                    self.held = False
                    self.restarts = self.instance
                return None
            except (http.client.IncompleteRead, http.client.HTTPException, ssl.SSLError, socket.timeout,
                    ConnectionError) as exc:
                self.client.drop_connection()
                if self.client.stop_event.is_set():
                    raise _Stopped() from None
                if self.yield_requested:
                    return None
                if self.output.bytes_written > written or (follow and isinstance(exc, socket.timeout)):
                    failures = 0  # it made progress, or a followed container was just quiet
                if failures >= self.client.retries:
                    raise ApiError(0, "log stream kept failing (%s); resumed %d times" % (exc, failures)) from None
                _log.debug("%s: stream broke (%r), resuming after the last complete line", self.c.label, exc)
                self.client.sleep(self.client.backoff_delay(failures))
                failures += 1
            except BaseException:
                self.client.drop_connection()
                raise

    def _copy_body(self, response: http.client.HTTPResponse, *, follow: bool = False, finished: bool = False) -> None:
        """Write the body's complete lines after the cursor; ``finished``: the instance has exited, so a last
        line without a newline is complete (the runtime wrote it at exit), not one still being written."""
        buffer = bytearray(FOLLOW_BLOCK_SIZE) if self.follow else _worker_buffer()
        view = memoryview(buffer)
        filled = 0
        skipping = [self.cursor is not None or self.min_ns is not None, 0]  # still skipping; lines seen at the cursor
        stop = self.client.stop_event
        self.partial = False
        while True:
            if stop.is_set():
                raise _Stopped()
            if filled == len(buffer):  # a line longer than the buffer: grow it
                buffer, view = _grown(buffer, filled, 2 * len(buffer), keep=not self.follow)
            if follow:  # whatever has arrived, so lines reach the disk as they are written
                chunk = response.read1(len(buffer) - filled)
                received = len(chunk)
                view[filled:filled + received] = chunk
            else:
                received = response.readinto(view[filled:])
            if not received:
                break
            total = filled + received
            end = buffer.rfind(b"\n", 0, total) + 1
            if end == 0:
                filled = total
                continue
            with self.write_lock:
                self._take(buffer, view, end, skipping)
                if follow:
                    self.last_data = time.monotonic()
                    self.output.flush()
                    if self.last_data - self.checkpointed_at >= CHECKPOINT_SECONDS:
                        self._checkpoint()
            filled = total - end
            if filled:
                view[:filled] = bytes(view[end:total])
        if self.yield_requested:
            return
        if filled and finished and _TS_RE.match(buffer, 0):
            if filled == len(buffer):
                buffer, view = _grown(buffer, filled, filled + 1, keep=not self.follow)
            buffer[filled] = ord("\n")
            self._take(buffer, view, filled + 1, skipping)
            filled = 0
        if self.expect_cursor:
            self._check_rotation(skipping[1], None, 0)
        if self.probe_young and self.instance == self.c.restarts:
            raise _CursorMissing()  # nothing in the current instance: it may have just replaced the listed one
        if filled:
            tail = bytes(view[:filled])
            if not _TS_RE.match(tail):
                raise _KubeletError(tail.decode("utf-8", "replace").strip()[:500])
            self.partial = True
            _log.debug("%s: the last line is still being written; it will be exported next time", self.c.label)

    def _take(self, buffer: bytearray, view: memoryview, end: int, skipping: List[Any]) -> None:
        """Handle the complete lines buffer[:end]: drop those already on disk, write the rest."""
        start = 0
        if skipping[0]:
            start, skipping[1] = self._skip(buffer, end, skipping[1])
            skipping[0] = start == end
            if self.expect_cursor and not skipping[0]:
                self._check_rotation(skipping[1], buffer, start)
        if start < end:
            if self.probe_young and self.instance == self.c.restarts:
                first = _match_ns(_TS_RE.match(buffer, start)) if _TS_RE.match(buffer, start) else 0
                if first >= self.c.listed_ns - YOUNG_LOG_SECONDS * NS_PER_SECOND:
                    raise _CursorMissing()
                self.probe_young = False  # the log starts before the listing: it is the listed instance
            self._write_lines(buffer, view, start, end)

    def _check_rotation(self, seen: int, buffer: Optional[bytearray], start: int) -> None:
        """The body asked from the cursor's second must hold the cursor's own lines, unless the file rotated since.

        Costs nothing: the lines are in the answer anyway.
        """
        self.expect_cursor = False
        if seen < self.cursor.count:
            if self.probe_on_miss and self.instance == self.c.restarts:
                raise _CursorMissing()
            match = _TS_RE.match(buffer, start) if buffer is not None else None
            self.rotated = (self.cursor.ns, _match_ns(match) if match else None)
            self.held = False

    def _skip(self, buffer: bytearray, end: int, seen: int) -> Tuple[int, int]:
        """Drop the lines already on disk; return where new lines start (``end`` if none do) and the count seen at the cursor."""
        cursor, floor = self.cursor, (self.cursor.ns if self.cursor is not None else self.min_ns)
        pos = 0
        while pos < end:
            match = _TS_RE.match(buffer, pos)
            if not match:
                return pos, seen  # not a log line: let the writer report it
            ns = _match_ns(match)
            if ns < floor:
                pass
            elif cursor is not None and ns == cursor.ns and seen < cursor.count:
                seen += 1
            else:
                return pos, seen
            pos = buffer.index(b"\n", pos) + 1
        return end, seen

    def _write_lines(self, buffer: bytearray, view: memoryview, start: int, end: int) -> None:
        last = _last_line_start(buffer, start, end)
        if not _TS_RE.match(buffer, last) or not _TS_RE.match(buffer, start):
            end = self._first_bad_line(buffer, start, end)
            if end > start:
                self._write_lines(buffer, view, start, end)
            raise _KubeletError(bytes(view[end:buffer.index(b"\n", end)]).decode("utf-8", "replace").strip()[:500])
        cursor = _tail_cursor(buffer, start, end, last, self.cursor)
        data = view[start:end]
        if not self.options.timestamps:
            data = memoryview(_TS_PREFIX_RE.sub(b"", data))
        self.output.write(data)
        self.cursor = cursor
        self.min_ns = None
        self.restarts, self.held = self.instance, True

    @staticmethod
    def _first_bad_line(buffer: bytearray, start: int, end: int) -> int:
        pos = start
        while pos < end and _TS_RE.match(buffer, pos):
            pos = buffer.index(b"\n", pos) + 1
        return pos


def _skip_reason(exc: ApiError) -> Optional[str]:
    """Why a container has no log to export, for the API answers that are not failures."""
    message = exc.message
    if exc.status == 404:
        return "pod deleted"
    if exc.status == 400:
        lowered = message.lower()
        if "waiting to start" in lowered or "not found" in lowered or "is terminated" in lowered:
            return message
    return None


class _Collector:
    """Gathers outcomes from worker threads into an ExportResult."""

    def __init__(self, result: ExportResult, progress: Optional[Callable[[ExportResult], None]]):
        self.result = result
        self.progress = progress
        self.lock = threading.Lock()
        self.files: set = set()

    @property
    def interrupted(self) -> bool:
        return self.result.interrupted

    @interrupted.setter
    def interrupted(self, value: bool) -> None:
        self.result.interrupted = value

    def _record(self, field: str, c: _Container, reason: str, **extra: Any) -> None:
        with self.lock:
            getattr(self.result, field).append(dict({"container": c.label, "reason": reason}, **extra))
        if field == "failed":
            _log.error("%s: %s", c.label, reason)
        else:
            _log.info("%s: %s", c.label, reason)

    def fail(self, c: _Container, reason: str, status: int = 0) -> None:
        self._record("failed", c, reason, status=status)

    def skip(self, c: _Container, reason: str) -> None:
        self._record("skipped", c, reason)

    def gap(self, c: _Container, reason: str, **extra: Any) -> None:
        self._record("gaps", c, reason, **extra)

    def exported(self, c: _Container) -> None:
        with self.lock:
            self.result.exported += 1

    def unchanged(self, c: _Container) -> None:
        with self.lock:
            self.result.unchanged += 1

    def add_bytes(self, count: int, relpath: str) -> None:
        with self.lock:
            self.result.bytes_written += count
            if count and relpath not in self.files:  # a followed file is written by many runs
                self.files.add(relpath)
                self.result.files.append(relpath)

    def done(self) -> None:
        if self.progress is not None:
            self.progress(self.result)


def _own_namespace_instead(exc: ApiError, explicit_all: bool, account_dir: Path) -> str:
    """The pod's own namespace, when listing all namespaces was forbidden and -A was not asked for; else re-raise."""
    own = account_dir / SERVICE_NAMESPACE_FILENAME
    if exc.status != 403 or explicit_all or not own.is_file():
        raise exc
    return own.read_text().strip()


def _list_pods(client: KubeClient, namespaces: Sequence[str], explicit_all: bool, account_dir: Path,
               selector: Optional[str], field_selector: Optional[str], result: ExportResult) -> Iterator[Dict[str, Any]]:
    if namespaces:
        for namespace in namespaces:
            yield from client.list_pods(namespace, label_selector=selector, field_selector=field_selector)
        return
    pods = client.list_pods(None, label_selector=selector, field_selector=field_selector)
    try:
        first = next(pods, None)
    except ApiError as exc:
        namespace = _own_namespace_instead(exc, explicit_all, account_dir)
        result.notes.append("cannot list pods in all namespaces (forbidden); exporting namespace %s only" % namespace)
        yield from client.list_pods(namespace, label_selector=selector, field_selector=field_selector)
        return
    if first is not None:
        yield first
        yield from pods


# ---------------------------------------------------------------------------
# Follow
# ---------------------------------------------------------------------------


class _RunOutcome:
    """What one follow-mode run of a container did (the _Collector interface, for one container)."""

    def __init__(self, shared: _Collector):
        self.shared = shared
        self.failed: Optional[Dict[str, Any]] = None
        self.skipped: Optional[str] = None
        self.interrupted = False

    def fail(self, c: _Container, reason: str, status: int = 0) -> None:
        self.failed = {"container": c.label, "reason": reason, "status": status}
        _log.warning("%s: %s (retrying)", c.label, reason)

    def skip(self, c: _Container, reason: str) -> None:
        self.skipped = reason

    def gap(self, c: _Container, reason: str, **extra: Any) -> None:
        self.shared.gap(c, reason, **extra)

    def exported(self, c: _Container) -> None:
        pass

    unchanged = exported

    def add_bytes(self, count: int, relpath: str) -> None:
        self.shared.add_bytes(count, relpath)


class _FollowTask:
    """A followed container, across the streams that carry its lines."""

    def __init__(self, container: _Container):
        self.container = container
        self.activity = time.monotonic()  # the last data (or its discovery): busier containers go first
        self.job: Optional[_ContainerExport] = None
        self.started = 0.0
        self.queued = False
        self.deleted = False
        self.failures = 0
        self.turns = 0  # how often it gave its stream away
        self.refused = False
        self.outcome: Optional[_RunOutcome] = None


class _Follower:
    """Follow mode: a watch on the pods feeds containers to ``concurrency`` streaming workers.

    Each run of a container is the batch export with ``follow=true`` on its
    current instance, so state, resume and dedupe are the same as in batch
    runs and the two hand over to each other exactly.  With more containers
    than streams, quiet or long-held streams give their slot away in turn.
    """

    def __init__(self, client: KubeClient, store: Optional[_State], options: _Options, collector: _Collector,
                 concurrency: int, stop: threading.Event, shard: Tuple[Optional[int], Optional[int]],
                 selector: Optional[str], field_selector: Optional[str]):
        self.client = client
        self.store = store
        self.options = options
        self.collector = collector
        self.concurrency = concurrency
        self.stop = stop
        self.shard = shard
        self.selector = selector
        self.field_selector = field_selector
        self.lock = threading.Condition()
        self.tasks: Dict[str, _FollowTask] = {}
        self.queue: List[Tuple[int, float, int, str]] = []
        self.delayed: List[Tuple[float, str]] = []
        self.sequence = itertools.count()
        self.warned = False
        self.fatal: Optional[ApiError] = None
        self.busy: set = set()  # labels (so files) being streamed: one stream per file

    # -- pods in -------------------------------------------------------------

    def update(self, pod: Dict[str, Any], *, deleted: bool = False) -> None:
        meta = pod.get("metadata") or {}
        index, count = self.shard
        if count and not _in_shard(meta.get("namespace") or "", meta.get("name") or "", index, count):
            return
        with self.lock:
            for c in _containers_of(pod):
                task = self.tasks.get(c.key)
                if task is None:
                    if deleted:
                        continue
                    task = self.tasks[c.key] = _FollowTask(c)
                    self._enqueue(task)
                    continue
                before = (task.container.restarts, task.container.state, task.container.container_id)
                task.container, task.deleted = c, deleted
                if (c.restarts, c.state, c.container_id) != before or deleted:
                    self._enqueue(task)  # a restart, a start, or a last chance to drain
            if not self.warned and len(self.tasks) > self.concurrency:
                self.warned = True
                note = ("more containers match than --concurrency allows streams (%d): quiet streams take turns, "
                        "so their lines arrive later; raise --concurrency to follow all at once" % self.concurrency)
                self.collector.result.notes.append(note)
                _log.warning("%s", note)
            self.lock.notify_all()

    def forget_missing(self, namespace: Optional[str], present: set) -> None:
        """Pods that went away while no watch was running: drain what is left, then drop them."""
        with self.lock:
            for task in self.tasks.values():
                c = task.container
                if (namespace is None or c.namespace == namespace) and c.uid not in present and not task.deleted:
                    task.deleted = True
                    self._enqueue(task)

    def _enqueue(self, task: _FollowTask) -> None:
        if task.job is None and not task.queued:
            task.queued = True
            # Fewest turns first (nobody starves), then the busiest.
            heapq.heappush(self.queue, (task.turns, -task.activity, next(self.sequence), task.container.key))
            self.lock.notify()

    # -- watching --------------------------------------------------------------

    def relist(self, namespace: Optional[str]) -> str:
        meta: Dict[str, Any] = {}
        present = set()
        for pod in self.client.list_pods(namespace, label_selector=self.selector, field_selector=self.field_selector,
                                         list_meta=meta):
            present.add((pod.get("metadata") or {}).get("uid"))
            self.update(pod)
        self.forget_missing(namespace, present)
        return str(meta.get("resourceVersion") or "0")

    def watch(self, namespace: Optional[str], version: Optional[str]) -> None:
        failures = 0
        while not self.stop.is_set():
            try:
                if version is None:
                    version = self.relist(namespace)
                for kind, pod in self.client.watch_pods(namespace, resource_version=version,
                                                        label_selector=self.selector,
                                                        field_selector=self.field_selector):
                    version = (pod.get("metadata") or {}).get("resourceVersion") or version
                    failures = 0
                    if kind != "BOOKMARK":
                        self.update(pod, deleted=kind == "DELETED")
            except _Stopped:
                return
            except ApiError as exc:
                if exc.status == 410:  # compacted: list again, then watch from there
                    version = None
                    continue
                if exc.refused:
                    self.fatal = exc
                    self.stop.set()
                    return
                _log.warning("watching pods failed: %s (retrying)", exc.message)
            except _NETWORK_ERRORS + (ValueError,) as exc:
                _log.debug("watch broke (%r); resuming from resourceVersion %s", exc, version)
            if self.stop.is_set():
                return
            with contextlib.suppress(_Stopped):
                self.client.sleep(self.client.backoff_delay(min(failures, 6)) if failures else 0.05)
            failures += 1

    # -- streaming ---------------------------------------------------------------

    def work(self) -> None:
        while True:
            with self.lock:
                while not self.queue and not self.stop.is_set():
                    self.lock.wait(0.5)
                if self.stop.is_set():
                    return
                key = heapq.heappop(self.queue)[-1]
                task = self.tasks.get(key)
                if task is None:
                    continue
                task.queued = False
                label = task.container.label
                if task.deleted and any(t is not task and t.container.label == label for t in self.tasks.values()):
                    del self.tasks[key]  # its name now belongs to a new pod: "draining" would read that one
                    continue
                if label in self.busy:  # another pod of the same name still writes this file
                    self._later(task, 0.5)
                    continue
                self.busy.add(label)
                job = task.job = _ContainerExport(self.client, self.store, self.options, task.container, follow=True)
                task.started = time.monotonic()
            outcome = _RunOutcome(self.collector)
            try:
                job.run(outcome)
            except Exception as exc:  # a bug must not stop the other streams
                _log.exception("%s: unexpected error", task.container.label)
                outcome.fail(task.container, "unexpected error: %r" % exc)
            with self.lock:
                self.busy.discard(label)
                task.job, task.outcome = None, outcome
                task.activity = max(task.activity, job.last_data)
                self._after(task, job, outcome)

    def _after(self, task: _FollowTask, job: _ContainerExport, outcome: _RunOutcome) -> None:
        c = task.container
        if self.stop.is_set():
            return
        if outcome.failed is not None:
            task.failures += 1
            if outcome.failed.get("status") in (401, 403) and not task.refused:
                task.refused = True  # reported once; retried with backoff in case the permission is granted
                self.collector.fail(c, outcome.failed["reason"], status=outcome.failed["status"])
            self._later(task, min(MAX_BACKOFF_SECONDS, self.client.backoff * 2 ** task.failures))
            return
        task.failures = 0
        if job.c is not task.container and not task.deleted:
            self._enqueue(task)  # the pod changed while this run used its old status: run again with the new
        elif job.yield_requested:
            task.turns += 1
            self._enqueue(task)
        elif task.deleted or outcome.skipped == "pod deleted":
            del self.tasks[c.key]  # drained
        elif outcome.skipped is not None or c.state == "terminated":
            pass  # the next pod event (start, restart) queues it again
        else:
            self._later(task, 1.0)  # the stream ended while the container runs: reopen it

    def _later(self, task: _FollowTask, delay: float) -> None:
        self.delayed.append((time.monotonic() + delay, task.container.key))

    def supervise(self) -> None:
        """Called a few times a second: due retries back in the queue, slots handed to waiting containers."""
        now = time.monotonic()
        with self.lock:
            due = [key for when, key in self.delayed if when <= now]
            self.delayed = [(when, key) for when, key in self.delayed if when > now]
            for key in due:
                task = self.tasks.get(key)
                if task is not None:
                    self._enqueue(task)
            for task in self.tasks.values():
                if task.job is not None:
                    with contextlib.suppress(OSError):  # the stream's own next write reports a full disk
                        task.job.checkpoint_if_due()
            if self.store is not None:
                self.store.save_if_due()
            waiting = len(self.queue)
            if not waiting:
                return
            running = [t for t in self.tasks.values() if t.job is not None and not t.job.yield_requested]
            running.sort(key=lambda t: t.job.last_data)  # the quietest give way first
            for task in running:
                if waiting <= 0:
                    break
                if now - task.job.last_data >= IDLE_RELEASE_SECONDS or now - task.started >= MAX_HOLD_SECONDS:
                    task.job.request_yield()
                    waiting -= 1

    def finish(self) -> None:
        with self.lock:
            for task in self.tasks.values():
                outcome = task.outcome
                if outcome is None:
                    continue
                if outcome.failed is not None and outcome.failed.get("status") not in (401, 403):
                    self.collector.result.failed.append(outcome.failed)
                elif outcome.skipped is not None:
                    self.collector.skip(task.container, outcome.skipped)
                else:
                    self.collector.exported(task.container)
            self.collector.result.containers = len(self.tasks)


def _follow(client: KubeClient, store: Optional[_State], options: _Options, collector: _Collector, *,
            namespaces: Sequence[str], explicit_all: bool, account_dir: Path, concurrency: int,
            stop: threading.Event, shard: Tuple[Optional[int], Optional[int]], selector: Optional[str],
            field_selector: Optional[str]) -> None:
    follower = _Follower(client, store, options, collector, concurrency, stop, shard, selector, field_selector)
    sources: List[Tuple[Optional[str], Optional[str]]] = [(namespace, None) for namespace in namespaces]
    if not sources:
        try:
            sources = [(None, follower.relist(None))]
        except _Stopped:
            return
        except ApiError as exc:
            namespace = _own_namespace_instead(exc, explicit_all, account_dir)
            collector.result.notes.append("cannot list pods in all namespaces (forbidden); following namespace %s only"
                                          % namespace)
            sources = [(namespace, None)]
    threads = [threading.Thread(target=follower.watch, args=source, name="watch", daemon=True) for source in sources]
    threads += [threading.Thread(target=follower.work, name="follow", daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    try:
        while not stop.wait(0.25):
            follower.supervise()
    finally:
        stop.set()
        for thread in threads:
            while thread.is_alive():
                client.abort()  # streams and watches return at once; each run checkpoints what it wrote
                thread.join(0.1)
        follower.finish()
    if follower.fatal is not None:
        raise follower.fatal


def _lock_output(path: Path) -> int:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ConfigError("another kubelogexporter run is writing to %s: wait for it to finish" % path.parent) from None
    return fd


def export_logs(output_dir: os.PathLike = DEFAULT_OUTPUT_DIR, *, namespaces: Optional[Iterable[str]] = None,
                all_namespaces: bool = False, selector: Optional[str] = None, field_selector: Optional[str] = None,
                server: Optional[str] = None, token_file: Optional[os.PathLike] = None,
                ca_file: Optional[os.PathLike] = None, insecure_skip_tls_verify: bool = False, concurrency: int = 4,
                gzip: bool = False, timestamps: bool = True, state: bool = True, since: Optional[float] = None,
                since_time: Optional[str] = None, shard_index: Optional[int] = None, shard_count: Optional[int] = None,
                dry_run: bool = False, environ: Optional[Mapping[str, str]] = None,
                account_dir: os.PathLike = SERVICE_ACCOUNT_DIR, retries: int = RETRIES,
                backoff: float = BACKOFF_SECONDS, stop_event: Optional[threading.Event] = None,
                progress: Optional[Callable[[ExportResult], None]] = None, follow: bool = False,
                timeout: float = HTTP_TIMEOUT) -> ExportResult:
    """Export the logs of every container of the selected pods into ``output_dir``.

    ``since`` (seconds) or ``since_time`` (RFC 3339) bound the first export of
    a container; later runs continue after the last line exported.  Raises
    ConfigError for unusable settings and ApiError when pods cannot be listed;
    per-container problems are reported in the returned ExportResult.

    With ``follow``, stream every selected container as it writes, pods
    created later included, until ``stop_event`` is set (main() sets it on
    SIGTERM); the files and state are the same as a batch run's.
    """
    started = time.monotonic()
    if concurrency < 1:
        raise ConfigError("concurrency must be at least 1")
    if since is not None and since_time is not None:
        raise ConfigError("since and since_time exclude each other: pass one")
    since_ns = None
    if since is not None:
        since_ns = time.time_ns() - int(since * NS_PER_SECOND)
    elif since_time is not None:
        try:
            since_ns = parse_timestamp(since_time)
        except ValueError:
            raise ConfigError("since-time %r is not an RFC 3339 time: use e.g. 2026-11-29T10:00:00Z" % since_time) from None
    if (shard_index is None) != (shard_count is None):
        raise ConfigError("shard index and shard count go together")
    if shard_count is not None and not 0 <= shard_index < shard_count:
        raise ConfigError("shard index %s is outside 0..%d" % (shard_index, shard_count - 1))
    if follow and (dry_run or not state):
        raise ConfigError("follow mode keeps a state: it excludes dry-run and no-state")

    stop_event = stop_event or threading.Event()
    client = KubeClient.from_service_account(environ=environ, account_dir=account_dir, server=server,
                                             token_file=token_file, ca_file=ca_file,
                                             insecure_skip_tls_verify=insecure_skip_tls_verify, retries=retries,
                                             backoff=backoff, stop_event=stop_event, timeout=timeout)
    output = Path(output_dir)
    result = ExportResult(output_dir=str(output))
    namespaces = list(namespaces or ())
    suffix = ".shard-%d-of-%d" % (shard_index, shard_count) if shard_count else ""
    lock_fd = None
    if not dry_run:
        try:
            _make_folders(output)
            lock_fd = _lock_output(output / (LOCK_FILENAME + suffix))
        except OSError as exc:
            raise ConfigError("cannot write to %s (%s): pass a writable --output-dir" % (output, exc.strerror)) from None
    store = None
    try:
        if state and not dry_run:
            store = _State(output / STATE_FILENAME.replace(".json", suffix + ".json"))
        options = _Options(output, gzip, timestamps, state, since_ns)
        collector = _Collector(result, progress)
        if follow:
            _follow(client, store, options, collector, namespaces=namespaces, explicit_all=all_namespaces,
                    account_dir=Path(account_dir), concurrency=concurrency, stop=stop_event,
                    shard=(shard_index, shard_count), selector=selector, field_selector=field_selector)
            return result
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="export") as pool:
            pending: set = set()
            try:
                pods = _list_pods(client, namespaces, all_namespaces, Path(account_dir), selector, field_selector, result)
                for container in _select(pods, shard_index, shard_count, result):
                    if dry_run:
                        result.planned.append(pod_log_url(client.server, container.namespace, container.pod,
                                                          container.name, timestamps=True))
                        continue
                    pending.add(pool.submit(_run_job, _ContainerExport(client, store, options, container), collector))
                    # A bounded queue keeps memory flat on a cluster of any size.
                    while len(pending) >= concurrency * 4:
                        _done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                        if stop_event.is_set():
                            client.abort()
                            raise _Stopped()
            except _Stopped:
                result.interrupted = True
            except BaseException:
                stop_event.set()
                raise
            finally:
                while pending:
                    _done, pending = wait(pending, timeout=0.2)
                    if stop_event.is_set():
                        client.abort()  # unblock workers waiting on a quiet stream
    finally:
        try:
            if store is not None:
                store.save(prune_before=time.time() - STATE_FORGET_AFTER)
        except OSError as exc:
            reason = "cannot save the state file %s: %s; the next run exports this run's lines again" % (
                store.path, _os_reason(exc, store.path))
            _log.error("%s", reason)
            result.failed.append({"container": "", "status": 0, "reason": reason})
        finally:
            client.close()
            if lock_fd is not None:
                os.close(lock_fd)
            result.duration_seconds = round(time.monotonic() - started, 3)
    if stop_event.is_set() and not follow:
        result.interrupted = True
    return result


def _select(pods: Iterable[Dict[str, Any]], shard_index: Optional[int], shard_count: Optional[int],
            result: ExportResult) -> Iterator[_Container]:
    """The containers of the pods in this shard, each pod once (a relisted page repeats pods)."""
    seen = set()
    for pod in pods:
        meta = pod.get("metadata") or {}
        uid = meta.get("uid") or ""
        if uid in seen or (shard_count and not _in_shard(meta.get("namespace") or "", meta.get("name") or "",
                                                          shard_index, shard_count)):
            continue
        seen.add(uid)
        result.pods += 1
        for container in _containers_of(pod):
            result.containers += 1
            yield container


def _run_job(job: _ContainerExport, collector: _Collector) -> None:
    try:
        job.run(collector)
    except Exception as exc:  # a bug must not take the other containers down with it
        _log.exception("%s: unexpected error", job.c.label)
        collector.fail(job.c, "unexpected error: %r" % exc)
    finally:
        collector.done()


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def _build_parser():
    import argparse

    parser = argparse.ArgumentParser(
        prog="kubelogexporter",
        description="Export the logs of Kubernetes pods to OUTPUT_DIR/<namespace>/<pod>/<container>.log, "
                    "each line exactly once across runs, using the pod's service account.",
        epilog="exit codes: 0 all exported (skips included), 1 some containers failed, "
               "2 usage or configuration error, 3 the API refused authentication or listing",
    )
    select = parser.add_argument_group("what to export")
    select.add_argument("-n", "--namespace", action="append", dest="namespaces", metavar="NS",
                        help="export this namespace (repeatable)")
    select.add_argument("-A", "--all-namespaces", action="store_true",
                        help="export every namespace (the default without -n)")
    select.add_argument("-l", "--selector", metavar="SELECTOR", help="label selector, e.g. app=web,tier!=db")
    select.add_argument("--field-selector", metavar="SELECTOR", help="field selector, e.g. spec.nodeName=node-1")
    select.add_argument("--since", metavar="DURATION", help="first export of a container starts this long ago (90s, 15m, 2h, 1d)")
    select.add_argument("--since-time", metavar="RFC3339", help="first export of a container starts at this time")
    select.add_argument("--shard-index", type=int, metavar="I", help="export shard I of --shard-count (default $JOB_COMPLETION_INDEX)")
    select.add_argument("--shard-count", type=int, metavar="N", help="split pods into N shards by a stable hash of namespace/name")

    write = parser.add_argument_group("output")
    write.add_argument("-o", "--output-dir", default=DEFAULT_OUTPUT_DIR, metavar="DIR", help="where to write (default ./logs)")
    write.add_argument("--gzip", action="store_true", help="write <container>.log.gz, one gzip member per run")
    write.add_argument("--no-timestamps", dest="timestamps", action="store_false", help="strip the kubelet's timestamp from each line")
    write.add_argument("--no-state", dest="state", action="store_false",
                       help="export complete current logs and replace the files, without a state file")
    write.add_argument("--dry-run", action="store_true", help="print the log URLs that would be fetched, fetch nothing")
    write.add_argument("--follow", action="store_true",
                       help="keep streaming every selected container, new pods included, until SIGTERM")

    connect = parser.add_argument_group("connection")
    connect.add_argument("--server", metavar="URL", help="API server URL (default from $KUBERNETES_SERVICE_HOST)")
    connect.add_argument("--token-file", metavar="FILE", help="bearer token file (default the service account's)")
    connect.add_argument("--ca-file", metavar="FILE", help="CA certificate file (default the service account's)")
    connect.add_argument("--insecure-skip-tls-verify", action="store_true", help="do not verify the server's certificate (unsafe)")
    connect.add_argument("--concurrency", type=int, default=4, metavar="N", help="simultaneous log streams (default 4)")
    connect.add_argument("--timeout", type=float, default=HTTP_TIMEOUT, metavar="SECONDS",
                         help="read timeout; a log stream without a complete line this long is stalled (default 60)")

    report = parser.add_argument_group("reporting")
    report.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    verbosity = report.add_mutually_exclusive_group()
    verbosity.add_argument("-v", "--verbose", action="store_true", help="log every request")
    verbosity.add_argument("-q", "--quiet", action="store_true", help="print errors only")
    parser.add_argument("--version", action="version", version="%(prog)s " + __version__)
    return parser


def _human_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return ("%d %s" if unit == "B" else "%.1f %s") % (count, unit)
        count /= 1024
    raise AssertionError("unreachable")


def _summary_line(result: ExportResult) -> str:
    seconds = max(result.duration_seconds, 1e-3)
    line = "exported %d of %d containers from %d pods: %s in %.1fs (%s/s)" % (
        result.exported + result.unchanged, result.containers, result.pods, _human_bytes(result.bytes_written),
        seconds, _human_bytes(result.bytes_written / seconds))
    extras = ["%d %s" % (len(items), what) for items, what in ((result.skipped, "skipped"), (result.failed, "failed"),
                                                                (result.gaps, "with gaps")) if items]
    if result.interrupted:
        extras.append("interrupted")
    return line + ("; " + ", ".join(extras) if extras else "")


# Control characters (ESC, newline, ...) and Unicode line and direction marks: a pod name holding them must not
# rewrite or fake the exporter's own lines on a terminal or in a log collector.
_UNPRINTABLE_RE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _printable(text: str) -> str:
    """``text`` as one line with its control characters escaped (``\\x1b``, ``\\n``)."""
    return _UNPRINTABLE_RE.sub(lambda m: repr(m.group())[1:-1] if ord(m.group()) < 0x100 else "\\u%04x" % ord(m.group()),
                               text)


class _StderrHandler(logging.Handler):
    def __init__(self, stream):
        super().__init__()
        self.stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        level = "%s: " % record.levelname.lower() if record.levelno >= logging.WARNING else ""
        self.stream.write("kubelogexporter: %s%s\n" % (level, _printable(record.getMessage())))
        self.stream.flush()


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The command line; ``argv`` None: the program itself, which keeps its SIGTERM handler until it exits."""
    stop = threading.Event()
    previous_handlers = {}

    def on_signal(signum, frame):  # Kubernetes sends SIGTERM: stop, checkpoint, leave a state to continue from
        stop.set()

    if threading.current_thread() is threading.main_thread():  # first thing: a SIGTERM now must not kill the run
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous_handlers[signum] = signal.signal(signum, on_signal)
        # A SIGTERM blocked by whoever started us (signal masks are inherited) is delivered now, and handled.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
    if _EARLY_SIGNALS:
        stop.set()
    try:
        return _main(argv, stop)
    finally:
        if argv is not None:  # called from a program of the caller's: give its handlers back
            for signum, previous in previous_handlers.items():
                signal.signal(signum, previous)


def _main(argv: Optional[Sequence[str]], stop: threading.Event) -> int:
    import sys

    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)

    def fail(code: int, message: str) -> int:
        sys.stderr.write("kubelogexporter: error: %s\n" % _printable(message))
        return code

    since = None
    try:
        if args.since is not None:
            since = _parse_duration(args.since)
    except ValueError as exc:
        return fail(EXIT_USAGE, str(exc))
    if args.concurrency < 1:
        return fail(EXIT_USAGE, "--concurrency must be at least 1")
    if not args.timeout > 0:
        return fail(EXIT_USAGE, "--timeout must be more than 0 seconds")
    shard_index = args.shard_index
    if args.shard_count is not None:
        if args.shard_count < 1:
            return fail(EXIT_USAGE, "--shard-count must be at least 1")
        if shard_index is None:
            index = os.environ.get(JOB_COMPLETION_INDEX_ENV, "")
            if not index.isdigit():
                return fail(EXIT_USAGE, "--shard-count needs --shard-index or $%s (an Indexed Job sets it)" % JOB_COMPLETION_INDEX_ENV)
            shard_index = int(index)
    elif shard_index is not None:
        return fail(EXIT_USAGE, "--shard-index needs --shard-count")
    if args.all_namespaces and args.namespaces:
        return fail(EXIT_USAGE, "-A and -n exclude each other: pass one")
    for namespace in args.namespaces or ():
        if not _is_kubernetes_name("namespace", namespace):
            return fail(EXIT_USAGE, "-n %r is not a namespace name (a DNS label: lowercase letters, digits and '-', "
                                    "at most 63)" % namespace)

    handler = _StderrHandler(sys.stderr)
    _log.addHandler(handler)
    _log.setLevel(logging.DEBUG if args.verbose else logging.ERROR if args.quiet else logging.WARNING)
    _log.propagate = False
    if args.insecure_skip_tls_verify and not args.quiet:
        sys.stderr.write("kubelogexporter: warning: TLS verification is off; the token goes to whoever answers\n")

    live = sys.stderr.isatty() and not args.quiet and not args.verbose and not args.dry_run and not args.follow
    started = time.monotonic()

    def progress(result: ExportResult) -> None:
        done = result.exported + result.unchanged + len(result.skipped) + len(result.failed)
        rate = result.bytes_written / max(time.monotonic() - started, 1e-3)
        sys.stderr.write("\r\033[K%d/%d containers, %s, %s/s" % (
            done, result.containers, _human_bytes(result.bytes_written), _human_bytes(rate)))
        sys.stderr.flush()

    try:
        result = export_logs(
            args.output_dir, namespaces=args.namespaces, all_namespaces=args.all_namespaces, selector=args.selector,
            field_selector=args.field_selector, server=args.server, token_file=args.token_file, ca_file=args.ca_file,
            insecure_skip_tls_verify=args.insecure_skip_tls_verify, concurrency=args.concurrency, gzip=args.gzip,
            timestamps=args.timestamps, state=args.state, since=since, since_time=args.since_time,
            shard_index=shard_index, shard_count=args.shard_count, dry_run=args.dry_run, stop_event=stop,
            progress=progress if live else None, follow=args.follow, timeout=args.timeout)
    except ConfigError as exc:
        return fail(EXIT_USAGE, str(exc))
    except ApiError as exc:
        if exc.refused:
            hint = "check the token" if exc.status == 401 else "the service account needs %s (see manifests/)" % exc.missing_permission()
            return fail(EXIT_REFUSED, "%s (%s)" % (exc.message, hint))
        return fail(EXIT_FAILED, exc.message)
    finally:
        _log.removeHandler(handler)
        if live:
            sys.stderr.write("\r\033[K")

    if args.dry_run:
        for url in result.planned:
            sys.stdout.write(url + "\n")
    if args.json:
        sys.stdout.write(json.dumps(result.to_dict(), indent=None, sort_keys=True) + "\n")
    for note in result.notes:
        if not args.quiet:
            sys.stderr.write("kubelogexporter: note: %s\n" % _printable(note))
    for gap in result.gaps:
        if not args.quiet:
            sys.stderr.write("kubelogexporter: warning: %s\n" % _printable("%s: %s" % (gap["container"], gap["reason"])))
    if not args.quiet and not args.dry_run:
        sys.stderr.write("kubelogexporter: %s\n" % _summary_line(result))
    refused = [f for f in result.failed if f.get("status") in (401, 403)]
    if refused:
        sys.stderr.write("kubelogexporter: error: the API refused %d log request(s): the service account needs "
                         "\"get pods/log\" (see manifests/)\n" % len(refused))
    return result.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
