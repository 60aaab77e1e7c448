#!/usr/bin/env python3
"""Export the logs of Kubernetes pods to files, every line exactly once.

Runs with nothing but the standard library, inside a pod with its service
account or on a workstation with a kubeconfig, as kubectl connects.  It lists
pods through the Kubernetes REST API and streams
``/api/v1/namespaces/<ns>/pods/<pod>/log`` of every container to
``OUTPUT_DIR/<namespace>/<pod>/<container>.log``.  A state file remembers, per
container, the last line written, so each run appends only what is new.

    python3 kubelogexporter.py -o /logs            # every namespace
    python3 kubelogexporter.py -n shop -l app=web  # one namespace, a selector
    python3 kubelogexporter.py -o /logs --follow   # stream as lines are written, until SIGTERM
    python3 kubelogexporter.py --context prod -n shop   # a kubeconfig context

As a library::

    from kubelogexporter import KubeClient, export_logs
    client = KubeClient.from_environment()   # or .from_kubeconfig(path, context), .from_service_account()
    result = export_logs("/logs", namespaces=["shop"], client=client)
"""

from __future__ import annotations

import signal

# The program (not an importer) takes SIGTERM before the imports below, which take a while: Kubernetes may stop a
# pod the moment it starts, and the default action would end the run as failed.  main() acts on what arrived.
_EARLY_SIGNALS = []  # type: list
if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda signum, frame: _EARLY_SIGNALS.append(signum))

import contextlib
import errno
import fcntl
import functools
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
STATE_VERSION = 2  # 1: a cursor of (ts, count) and no inode; still read
STATE_SAVE_INTERVAL = 2.0  # seconds between state checkpoints during a run, at least...
STATE_SAVE_SHARE = 0.05  # ...and so long that saving a large state takes at most this share of a run: linear cost
STATE_FORGET_AFTER = 7 * 86400  # drop state of containers unseen this long

# Bound tokens rotate (the kubelet refreshes them at 80 % of a 1 h lifetime):
# re-reading once a minute always picks up the new one in time.
TOKEN_REREAD_SECONDS = 60.0
TOKEN_WAIT_SECONDS = 2.0  # after a 401, how long a token file being rewritten (empty, partial) is read again
BLOCK_SIZE = 1 << 20
FIRST_READ_BYTES = 16 << 10  # a body's first read, before its rate is known (a stream slower than this per
# quarter of the read timeout, about 1 KiB/s by default, counts as stalled)
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
# A restarted kube-apiserver answers 403 until its RBAC cache has synced (seen for up to ~3.5 s): a 403 to a request
# of a kind allowed before is asked again for so many backoff units (5 s by default) after the first; then final.
FORBIDDEN_GRACE = 10
WATCH_SECONDS = 300  # a watch is renewed from its last resourceVersion this often
FOLLOW_BLOCK_SIZE = 64 << 10  # follow mode holds one buffer per stream: keep it small
FOLLOW_IDLE_TIMEOUT = 300.0  # a follow stream this quiet is reopened, not failed
CHECKPOINT_SECONDS = 2.0  # follow mode makes lines durable and records them this often
IDLE_RELEASE_SECONDS = 5.0  # with more containers than streams, a stream this quiet gives its slot away
MAX_HOLD_SECONDS = 60.0  # ... and a busy one after this long, so every container gets its turn
GZIP_LEVEL = 6
# Written pages are handed to the disk every this many bytes while a download runs, so the flush before a state
# save (which the state waits for) finds little left to do.
WRITEBACK_BYTES = 8 << 20
# A first export reads the previous instance too when the current log starts this close to the listing (or is
# empty): only then can the container have restarted in between.  The margin covers clock skew between nodes.
YOUNG_LOG_SECONDS = 60
# How far a node's clock may be behind ours when a log's first line is compared with a moment of ours (NTP keeps
# it within milliseconds; this is for a node that is not kept so).
CLOCK_SKEW_SECONDS = 2
# How long after a container's exit (its status's finishedAt, whole seconds) its runtime may still stamp lines it
# drains from the container's pipes.  A previous instance's log starting later than that is a newer instance's.
EXIT_DRAIN_SECONDS = 2
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


class _Stopped(Exception):
    """The run was asked to stop (SIGTERM, SIGINT)."""


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
    """Seconds since the epoch of ``YYYY-MM-DDTHH:MM:SS`` (UTC), without importing calendar (and locale)."""
    year, month, day = int(text[0:4]), int(text[5:7]), int(text[8:10])
    year -= month <= 2  # days from the civil date, after Howard Hinnant's algorithm
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    days = era * 146097 + day_of_era - 719468
    return days * 86400 + int(text[11:13]) * 3600 + int(text[14:16]) * 60 + int(text[17:19])


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
# Kubeconfig
# ---------------------------------------------------------------------------

# Connection settings outside a pod, resolved as kubectl resolves them: pure functions of an environment mapping and
# paths, so tests (and callers) never depend on ~/.kube or the process's own environment.

KUBECONFIG_ENV = "KUBECONFIG"
EXEC_INFO_ENV = "KUBERNETES_EXEC_INFO"
EXEC_API_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")
EXEC_TIMEOUT = 300.0  # a non-interactive plugin that runs this long is stuck
EXEC_RETRY_SECONDS = 10.0  # after a failed rerun, the last credential stands this long before the next try
KUBECTL_PROXY_HINT = "or run kubectl proxy and pass --server http://127.0.0.1:8001"


class _ConnectionSettings:
    """What a kubeconfig context says about reaching its cluster, paths already absolute."""

    ca_file: Optional[str] = None
    ca_data: Optional[bytes] = None
    ca_setting = "--ca-file"
    token: Optional[str] = None
    token_file: Optional[str] = None
    client_cert: Optional[Tuple[Any, Any]] = None  # (cert, key): each a path (str) or PEM data (bytes)
    exec_spec: Optional[Dict[str, Any]] = None
    exec_cluster: Optional[Dict[str, Any]] = None  # KUBERNETES_EXEC_INFO's spec.cluster

    def __init__(self, *, server: str, origin: str, user: str, namespace: Optional[str], insecure: bool,
                 tls_server_name: Optional[str], proxy_url: Optional[str]):
        self.server = server
        self.origin = origin  # 'context "x" of /path/config', for messages
        self.user, self.namespace, self.insecure = user, namespace, insecure
        self.tls_server_name, self.proxy_url = tls_server_name, proxy_url


def _without_password(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc="%s:***@%s" % (parts.username, parts.netloc.rpartition("@")[2])).geturl()


def _kubeconfig_paths(environ: Mapping[str, str], path: Optional[os.PathLike] = None) -> List[Path]:
    """The files to merge: ``path``; else each entry of $KUBECONFIG (once); else $HOME/.kube/config."""
    if path is not None:
        return [Path(path)]
    value = environ.get(KUBECONFIG_ENV) or ""
    if value:
        return [Path(p) for p in dict.fromkeys(value.split(os.pathsep)) if p]
    home = environ.get("HOME")
    return [Path(home) / ".kube" / "config"] if home else []


def _yaml_via_kubectl(path: Path, environ: Mapping[str, str]) -> Any:
    import shutil
    import subprocess

    kubectl = shutil.which("kubectl", path=environ.get("PATH") or os.defpath)
    if kubectl is None:
        raise ConfigError("kubeconfig %s is YAML, which kubelogexporter reads through kubectl, and kubectl is not on "
                          "PATH: put kubectl on PATH, or pass --kubeconfig with a JSON copy made by "
                          "kubectl config view --raw -o json" % path)
    env = dict(environ)
    env[KUBECONFIG_ENV] = str(path)
    try:
        proc = subprocess.run([kubectl, "config", "view", "--raw", "-o", "json"], env=env, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        raise ConfigError("cannot run %s to read kubeconfig %s: %s" % (kubectl, path, exc)) from None
    if proc.returncode != 0:
        detail = (proc.stderr.decode("utf-8", "replace").strip().splitlines() or ["exit code %d" % proc.returncode])[-1]
        raise ConfigError("kubectl cannot read kubeconfig %s (%s): fix the file" % (path, detail))
    try:
        return json.loads(proc.stdout)
    except ValueError:
        raise ConfigError("kubectl config view printed no JSON for %s: check the kubectl on PATH" % path) from None


def _absolute_paths(config: Dict[str, Any], folder: Path) -> Dict[str, Any]:
    """Resolve a file's relative paths against its folder, as kubectl does (commands only when they hold a /)."""
    for kind, field, keys in (("clusters", "cluster", ("certificate-authority",)),
                              ("users", "user", ("client-certificate", "client-key", "tokenFile"))):
        for item in config.get(kind) or ():
            body = item.get(field) if isinstance(item, dict) else None
            if not isinstance(body, dict):
                continue
            for key in keys:
                value = body.get(key)
                if isinstance(value, str) and value and not os.path.isabs(value):
                    body[key] = str(folder / value)
            spec = body.get("exec")
            command = spec.get("command") if isinstance(spec, dict) else None
            if isinstance(command, str) and os.sep in command and not os.path.isabs(command):
                spec["command"] = str(folder / command)
    return config


def _read_kubeconfig(path: Path, environ: Mapping[str, str]) -> Dict[str, Any]:
    """One kubeconfig file as a dict: JSON read directly, YAML through kubectl."""
    try:
        text = path.read_bytes().decode("utf-8", "replace")
    except FileNotFoundError:
        raise ConfigError("kubeconfig %s not found: pass --kubeconfig FILE, %s" % (path, KUBECTL_PROXY_HINT)) from None
    except OSError as exc:
        raise ConfigError("cannot read kubeconfig %s: %s" % (path, exc.strerror)) from None
    if not text.strip():
        return {}
    try:
        config = json.loads(text)
    except ValueError:
        config = _yaml_via_kubectl(path, environ)
    if not isinstance(config, dict):
        raise ConfigError("%s is not a kubeconfig (no mapping at its top): pass --kubeconfig FILE" % path)
    return _absolute_paths(config, Path(os.path.abspath(path)).parent)


def _merge_kubeconfigs(configs: Iterable[Dict[str, Any]]) -> Dict[str, Any]:
    """Merge as kubectl merges $KUBECONFIG: the first file to name a cluster, user or context wins; so does the
    first current-context."""
    merged: Dict[str, Any] = {"clusters": [], "users": [], "contexts": [], "current-context": ""}
    for config in configs:
        if not merged["current-context"] and isinstance(config.get("current-context"), str):
            merged["current-context"] = config["current-context"]
        for kind in ("clusters", "users", "contexts"):
            known = {item["name"] for item in merged[kind]}
            for item in config.get(kind) or ():
                if isinstance(item, dict) and isinstance(item.get("name"), str) and item["name"] not in known:
                    known.add(item["name"])
                    merged[kind].append(item)
    return merged


def _load_kubeconfig(environ: Mapping[str, str], path: Optional[os.PathLike] = None) -> Tuple[Dict[str, Any], str]:
    """The merged kubeconfig and the files it came from (for messages).  $KUBECONFIG entries that do not exist are
    skipped, as kubectl skips them; an explicit ``path`` must exist."""
    paths = _kubeconfig_paths(environ, path)
    present = paths if path is not None else [p for p in paths if p.exists()]
    where = ":".join(str(p) for p in paths) or "$HOME/.kube/config"
    if not present:
        raise ConfigError("no kubeconfig at %s and not inside a pod: pass --kubeconfig FILE, %s" % (
            where, KUBECTL_PROXY_HINT))
    return _merge_kubeconfigs([_read_kubeconfig(p, environ) for p in present]), ":".join(str(p) for p in present)


def _named(config: Mapping[str, Any], kind: str, field: str) -> Dict[str, Dict[str, Any]]:
    return {item["name"]: item.get(field) or {} for item in config.get(kind) or ()
            if isinstance(item, dict) and isinstance(item.get("name"), str)}


def _decode_data(value: Any, what: str) -> bytes:
    import base64
    import binascii

    try:
        return base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError("%s is not base64: fix the kubeconfig" % what) from None


def _resolve_context(config: Mapping[str, Any], where: str, context: Optional[str] = None) -> _ConnectionSettings:
    """The connection settings of ``context`` (else the current context) of a merged kubeconfig."""
    contexts = _named(config, "contexts", "context")
    choices = ", ".join(sorted(contexts)) or "none defined"
    name = context or config.get("current-context") or ""
    if not name:
        raise ConfigError("%s sets no current-context: pass --context NAME (%s) or run kubectl config use-context NAME"
                          % (where, choices))
    if name not in contexts:
        raise ConfigError('context "%s" not found in %s: pass --context with one of: %s' % (name, where, choices))
    ctx = contexts[name]
    origin = 'context "%s" of %s' % (name, where)
    cluster_name, user_name = ctx.get("cluster") or "", ctx.get("user") or ""
    cluster = _named(config, "clusters", "cluster").get(cluster_name)
    if cluster is None:
        raise ConfigError('%s names cluster "%s", which is not defined: fix the kubeconfig' % (origin, cluster_name))
    users = _named(config, "users", "user")
    if user_name and user_name not in users:
        raise ConfigError('%s names user "%s", which is not defined: fix the kubeconfig' % (origin, user_name))
    user = users.get(user_name) or {}
    server = cluster.get("server") or ""
    if not server:
        raise ConfigError('cluster "%s" of %s has no server: fix the kubeconfig' % (cluster_name, where))
    proxy = cluster.get("proxy-url") or None
    if proxy and (urllib.parse.urlsplit(proxy).scheme != "http" or not server.startswith("https://")):
        raise ConfigError('cluster "%s" of %s sets proxy-url %s; kubelogexporter tunnels https servers through '
                          'http:// proxies only: run kubectl proxy and pass --server http://127.0.0.1:8001' % (
                              cluster_name, where, _without_password(proxy)))
    settings = _ConnectionSettings(server=server, origin=origin, user=user_name, namespace=ctx.get("namespace") or None,
                                   insecure=bool(cluster.get("insecure-skip-tls-verify")),
                                   tls_server_name=cluster.get("tls-server-name") or None, proxy_url=proxy)
    if cluster.get("certificate-authority-data"):
        settings.ca_data = _decode_data(cluster["certificate-authority-data"],
                                        'certificate-authority-data of cluster "%s"' % cluster_name)
        settings.ca_setting = 'certificate-authority-data of cluster "%s" in %s' % (cluster_name, where)
    elif cluster.get("certificate-authority"):
        settings.ca_file = cluster["certificate-authority"]
        settings.ca_setting = 'certificate-authority of cluster "%s" in %s' % (cluster_name, where)
    else:
        settings.ca_setting = 'certificate-authority of cluster "%s" in %s (or the system trust store)' % (
            cluster_name, where)

    provider = user.get("auth-provider")
    if provider:
        raise ConfigError('user "%s" of %s uses auth-provider "%s", which kubectl 1.26+ and kubelogexporter do not '
                          'support: switch it to an exec plugin (gke-gcloud-auth-plugin, kubelogin), %s' % (
                              user_name, where, (provider or {}).get("name") or "?", KUBECTL_PROXY_HINT))
    if user.get("username") or user.get("password"):
        raise ConfigError('user "%s" of %s uses basic auth, which Kubernetes removed in 1.19: use a token, a client '
                          'certificate or an exec plugin' % (user_name, where))
    if user.get("token"):
        settings.token = str(user["token"])
    elif user.get("tokenFile"):
        settings.token_file = user["tokenFile"]
    cert = _decode_data(user["client-certificate-data"], "client-certificate-data of user \"%s\"" % user_name) \
        if user.get("client-certificate-data") else user.get("client-certificate")
    key = _decode_data(user["client-key-data"], "client-key-data of user \"%s\"" % user_name) \
        if user.get("client-key-data") else user.get("client-key")
    if bool(cert) != bool(key):
        raise ConfigError('user "%s" of %s has a client %s without its %s: fix the kubeconfig' % (
            user_name, where, "certificate" if cert else "key", "key" if cert else "certificate"))
    if cert:
        settings.client_cert = (cert, key)
    spec = user.get("exec")
    if spec and not settings.token and not settings.token_file:
        settings.exec_spec = spec
        info: Dict[str, Any] = {"server": server}
        for key_name in ("tls-server-name", "insecure-skip-tls-verify", "certificate-authority-data", "proxy-url",
                         "disable-compression"):
            if cluster.get(key_name):
                info[key_name] = cluster[key_name]
        if "certificate-authority-data" not in info and settings.ca_file:
            import base64

            with contextlib.suppress(OSError):  # client-go hands the plugin the CA's content either way
                info["certificate-authority-data"] = base64.b64encode(Path(settings.ca_file).read_bytes()).decode()
        for extension in cluster.get("extensions") or ():
            if isinstance(extension, dict) and extension.get("name") == "client.authentication.k8s.io/exec":
                info["config"] = extension.get("extension")
        settings.exec_cluster = info
    return settings


def _load_client_cert(context: ssl.SSLContext, cert: Any, key: Any, what: str) -> None:
    """Load a client certificate and key (paths, or PEM bytes written for a moment to a private folder)."""
    import shutil
    import tempfile

    folder = None
    try:
        paths = []
        for name, value in (("client.crt", cert), ("client.key", key)):
            if isinstance(value, bytes):
                folder = folder or tempfile.mkdtemp(prefix="kubelogexporter-")  # mode 0700
                value = os.path.join(folder, name)
                fd = os.open(value, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as out:
                    out.write(cert if name == "client.crt" else key)
            paths.append(value)
        context.load_cert_chain(paths[0], paths[1])
    except FileNotFoundError as exc:
        raise ConfigError("client certificate file %s of %s not found: fix the kubeconfig" % (exc.filename, what)) from None
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError("cannot load the client certificate of %s (%s): check client-certificate and client-key" % (
            what, getattr(exc, "strerror", None) or exc)) from None
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)  # the key lives on in memory only


class _StaticToken:
    """A token written in the kubeconfig."""

    def __init__(self, value: str):
        self._value = value

    def get(self) -> str:
        return self._value

    def refresh(self, wait: float = 0.0) -> str:
        return self._value

    def redact(self, text: str) -> str:
        return text.replace(self._value, "<token>") if self._value else text

    def __repr__(self) -> str:
        return "<token from the kubeconfig>"


def _stdin_is_terminal() -> bool:
    import sys

    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (AttributeError, OSError, ValueError):
        return False


class _ExecCredentials:
    """Credentials from a client-go exec plugin (client.authentication.k8s.io v1 or v1beta1): a token or a client
    certificate, fetched again when ``expirationTimestamp`` passes and after a 401 (``refresh``)."""

    def __init__(self, spec: Mapping[str, Any], *, user: str = "", cluster: Optional[Mapping[str, Any]] = None,
                 environ: Optional[Mapping[str, str]] = None, interactive: Optional[bool] = None):
        self._api_version = spec.get("apiVersion") or ""
        command = spec.get("command") or ""
        self._what = 'exec plugin "%s" of user "%s"' % (command, user)
        if self._api_version not in EXEC_API_VERSIONS:
            raise ConfigError("%s asks for apiVersion %r: use %s in the kubeconfig" % (
                self._what, self._api_version, " or ".join(EXEC_API_VERSIONS)))
        if not command:
            raise ConfigError('exec plugin of user "%s" has no command: fix the kubeconfig' % user)
        mode = spec.get("interactiveMode") or ("" if self._api_version.endswith("/v1") else "IfAvailable")
        if mode not in ("Never", "IfAvailable", "Always"):
            raise ConfigError("%s has interactiveMode %r: set Never, IfAvailable or Always" % (self._what, mode))
        terminal = _stdin_is_terminal() if interactive is None else interactive
        if mode == "Always" and not terminal:
            raise ConfigError("%s needs a terminal (interactiveMode Always): run from a terminal, or log in with the "
                              "plugin first" % self._what)
        self._interactive = terminal and mode != "Never"
        self._argv = [command] + [str(arg) for arg in spec.get("args") or ()]  # kubectl writes null for none
        self._env = dict(os.environ if environ is None else environ)
        for item in spec.get("env") or ():
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise ConfigError("%s has an env entry without a name: fix the kubeconfig" % self._what)
            self._env[item["name"]] = str(item.get("value") or "")
        exec_info: Dict[str, Any] = {"interactive": self._interactive}
        if spec.get("provideClusterInfo") and cluster is not None:
            exec_info["cluster"] = dict(cluster)
        self._env[EXEC_INFO_ENV] = json.dumps({"apiVersion": self._api_version, "kind": "ExecCredential",
                                               "spec": exec_info})
        hint = " ".join(str(spec.get("installHint") or "").split())
        self._install_hint = hint or "install it, or fix the command in the kubeconfig"
        self.on_certificate: Optional[Callable[[bytes, bytes], None]] = None
        self.certificate: Optional[Tuple[bytes, bytes]] = None
        self._lock = threading.Lock()
        self._token = ""
        self._issued: set = set()  # every token issued, to redact from messages
        self._expires: Optional[float] = None
        self._ran_at = self._failed_at = float("-inf")
        with self._lock:
            self._run()

    def _run(self) -> None:
        import subprocess
        import sys

        try:
            proc = subprocess.run(self._argv, env=self._env, stdin=sys.stdin if self._interactive else subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, timeout=None if self._interactive else EXEC_TIMEOUT)
        except FileNotFoundError:
            raise ConfigError("%s not found: %s" % (self._what, self._install_hint)) from None
        except subprocess.TimeoutExpired:
            raise ConfigError("%s ran %ds without an answer: run it yourself to see why" % (
                self._what, EXEC_TIMEOUT)) from None
        except OSError as exc:
            raise ConfigError("cannot run %s: %s" % (self._what, exc.strerror or exc)) from None
        if proc.returncode != 0:
            raise ConfigError("%s failed with exit code %d: run it yourself to see why, or log in again" % (
                self._what, proc.returncode))
        try:
            credential = json.loads(proc.stdout)
            status = credential.get("status") or {}
            if credential.get("kind") != "ExecCredential" or credential.get("apiVersion") != self._api_version:
                raise ValueError("an ExecCredential %s was expected" % self._api_version)
            token = status.get("token") or ""
            cert, key = status.get("clientCertificateData") or "", status.get("clientKeyData") or ""
            if not isinstance(token, str) or not isinstance(cert, str) or not isinstance(key, str):
                raise ValueError("token and certificate must be strings")
            if not token and not (cert and key) or bool(cert) != bool(key):
                raise ValueError("neither a token nor a client certificate and key")
            expiry = status.get("expirationTimestamp")
            expires = parse_timestamp(expiry) / NS_PER_SECOND if expiry else None
        except (ValueError, AttributeError) as exc:
            raise ConfigError("%s printed no usable ExecCredential (%s): update the plugin" % (self._what, exc)) from None
        if token and not all(33 <= ord(ch) < 127 for ch in token):
            raise ConfigError("%s returned a token with characters a bearer token cannot have: update the plugin"
                              % self._what)
        self._token, self._expires, self._ran_at = token, expires, time.monotonic()
        if token:
            self._issued.add(token)
        if cert:
            self.certificate = (cert.encode(), key.encode())
            if self.on_certificate is not None:
                self.on_certificate(*self.certificate)

    def _rerun(self) -> None:
        """Run the plugin again; when that fails, say why once and keep the last credential (the API's 401 then
        fails the requests that need a new one), trying again only after EXEC_RETRY_SECONDS."""
        if time.monotonic() - self._failed_at < EXEC_RETRY_SECONDS:
            return
        try:
            self._run()
        except ConfigError as exc:
            self._failed_at = time.monotonic()
            _log.error("%s", exc)

    def get(self) -> str:
        with self._lock:
            if self._expires is not None and time.time() >= self._expires:
                self._rerun()
            return self._token

    def refresh(self, wait: float = 0.0) -> str:
        asked = time.monotonic()
        with self._lock:
            if self._ran_at < asked:  # unless another thread just ran it
                self._rerun()
            return self._token

    def redact(self, text: str) -> str:
        """``text`` without any token the plugin issued (a server may echo the Authorization header)."""
        for token in list(self._issued):
            text = text.replace(token, "<token>")
        return text

    def __repr__(self) -> str:
        return "<credentials from %s>" % self._what


def _tls_failure(server: str, exc: ssl.SSLCertVerificationError, ca_setting: str) -> str:
    reason = getattr(exc, "verify_message", "") or str(exc)
    if getattr(exc, "verify_code", 0) in (62, 64):  # X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH
        return "the certificate of %s is not valid for that name (%s): set tls-server-name in the kubeconfig to a " \
               "name it holds" % (server, reason)
    hint = "check %s, or pass --ca-file" % ca_setting if ca_setting else "pass --ca-file"
    return "cannot verify the certificate of %s (%s): %s with the cluster's CA certificate" % (server, reason, hint)


def _client_from_kubeconfig(cls: Any, path: Optional[os.PathLike], context: Optional[str], environ: Mapping[str, str],
                            *, server: Optional[str] = None, token_file: Optional[os.PathLike] = None,
                            ca_file: Optional[os.PathLike] = None, insecure_skip_tls_verify: bool = False,
                            **options: Any) -> Any:
    config, where = _load_kubeconfig(environ, path)
    settings = _resolve_context(config, where, context)
    # --server, --token-file and --ca-file override the context's, as kubectl's --server, --token... do.
    if server:
        settings.server = server
    if ca_file:
        settings.ca_file, settings.ca_data, settings.ca_setting = os.fspath(ca_file), None, ""
    token_source = None
    if token_file:
        settings.token_file = os.fspath(token_file)
    elif settings.token:
        token_source = _StaticToken(settings.token)
    elif settings.exec_spec and not settings.server.startswith("http://"):
        token_source = _ExecCredentials(settings.exec_spec, user=settings.user, cluster=settings.exec_cluster,
                                        environ=environ)
    return cls(settings.server, token_file=settings.token_file, ca_file=settings.ca_file, ca_data=settings.ca_data,
               insecure_skip_tls_verify=insecure_skip_tls_verify or settings.insecure, token_source=token_source,
               client_cert=settings.client_cert, tls_server_name=settings.tls_server_name,
               ca_setting=settings.ca_setting, namespace=settings.namespace, proxy_url=settings.proxy_url, **options)


def _client_from_environment(cls: Any, *, kubeconfig: Optional[os.PathLike], context: Optional[str],
                             environ: Mapping[str, str], account_dir: os.PathLike, **options: Any) -> Any:
    """Precedence: --server/--token-file/--ca-file; --kubeconfig/--context; in-cluster; $KUBECONFIG; ~/.kube/config."""
    if kubeconfig is None and context is None:
        flags = any(options.get(name) for name in ("server", "token_file", "ca_file"))
        in_cluster = bool(environ.get(SERVICE_HOST_ENV))
        if flags or in_cluster and (Path(account_dir) / SERVICE_TOKEN_FILENAME).is_file() or \
                in_cluster and not any(p.exists() for p in _kubeconfig_paths(environ)):
            return cls.from_service_account(environ=environ, account_dir=account_dir, **options)
    return _client_from_kubeconfig(cls, kubeconfig, context, environ, **options)


# ---------------------------------------------------------------------------
# API client
# ---------------------------------------------------------------------------

_RETRYABLE_STATUSES = frozenset((500, 502, 503, 504))
_NETWORK_ERRORS = (OSError, http.client.HTTPException, ssl.SSLError)


_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~")


def _quote(segment: str) -> str:
    return segment if _UNRESERVED.issuperset(segment) else urllib.parse.quote(segment, safe="")


def _encode_query(query: Mapping[str, str]) -> str:
    """urllib.parse.urlencode's answer, with less work for the names and values that need no quoting (most)."""
    return "&".join("%s=%s" % (_quote_plus(name), _quote_plus(value)) for name, value in query.items())


def _quote_plus(text: str) -> str:
    return text if _UNRESERVED.issuperset(text) else urllib.parse.quote_plus(text, safe="")


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
    return server.rstrip("/") + path + ("?" + _encode_query(query) if query else "")


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


class _Headers(dict):
    """A response's header fields, by lower-case name: what http.client's email-based parser gives, for less."""

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        values = dict.get(self, name.lower())
        return values[0] if values else default

    def get_all(self, name: str, default: Any = None) -> Any:
        return dict.get(self, name.lower()) or default

    def items(self) -> List[Tuple[str, str]]:  # type: ignore[override]
        return [(name, value) for name, values in dict.items(self) for value in values]


def _read_header_fields(fp: Any) -> _Headers:
    """The header fields up to the empty line, as http.client bounds them (line length, count)."""
    headers = _Headers()
    last: Optional[List[str]] = None
    for _ in range(http.client._MAXHEADERS + 1):
        line = fp.readline(http.client._MAXLINE + 1)
        if len(line) > http.client._MAXLINE:
            raise http.client.LineTooLong("header line")
        if line in (b"\r\n", b"\n", b""):
            return headers
        text = line.decode("iso-8859-1")
        if text[:1] in " \t" and last:  # an obsolete folded continuation of the field before
            last[-1] += " " + text.strip()
            continue
        name, colon, value = text.partition(":")
        if not colon:
            continue  # not a field: as the email parser, skip it
        last = headers.setdefault(name.strip().lower(), [])
        last.append(value.strip())
    raise http.client.HTTPException("got more than %d headers" % http.client._MAXHEADERS)


class _Response(http.client.HTTPResponse):
    """http.client's response with a lean header read: the email package's parser cost more per container than
    everything else a log request does in Python (0.3 ms)."""

    def begin(self) -> None:
        if self.headers is not None:
            return
        while True:
            version, status, reason = self._read_status()
            if status != http.client.CONTINUE:
                break
            _read_header_fields(self.fp)
        self.code = self.status = status
        self.reason = reason.strip()
        if version in ("HTTP/1.0", "HTTP/0.9"):
            self.version = 10
        elif version.startswith("HTTP/1."):
            self.version = 11
        else:
            raise http.client.UnknownProtocol(version)
        self.headers = self.msg = _read_header_fields(self.fp)
        self.chunked = (self.headers.get("transfer-encoding") or "").lower() == "chunked"
        self.chunk_left = None
        self.will_close = self._check_close()
        self.length = None
        length = self.headers.get("content-length")
        if length and not self.chunked:
            with contextlib.suppress(ValueError):
                self.length = int(length)
            if self.length is not None and self.length < 0:  # nonsense: read to the close instead
                self.length = None
        if status in (http.client.NO_CONTENT, http.client.NOT_MODIFIED) or 100 <= status < 200:
            self.length = 0
        if not self.will_close and not self.chunked and self.length is None:
            self.will_close = True


class _Connection(http.client.HTTPConnection):
    """A keep-alive connection that connects, TLS handshake included, within ``connect_timeout`` in all.

    ``tls`` gives the SSL context and the name to check the certificate against when it connects, so a rotated
    client certificate applies to new connections; ``proxy`` is an http:// proxy to tunnel through (CONNECT).
    Then its socket has the read timeout (``timeout``); KubeClient.request bounds the wait for a response.
    """

    def __init__(self, host: str, port: int, *, timeout: float, connect_timeout: float,
                 tls: Optional[Callable[[], Tuple[ssl.SSLContext, Optional[str]]]] = None,
                 proxy: Optional[str] = None):
        self._server_host, self._server_port = host, port
        if proxy:
            url = urllib.parse.urlsplit(proxy)
            super().__init__(url.hostname, url.port or 80, timeout=timeout)
            headers = {}
            if url.username is not None:
                import base64

                credentials = "%s:%s" % (urllib.parse.unquote(url.username), urllib.parse.unquote(url.password or ""))
                headers["Proxy-Authorization"] = "Basic " + base64.b64encode(credentials.encode()).decode("ascii")
            self.set_tunnel(host, port, headers=headers)
        else:
            super().__init__(host, port, timeout=timeout)
        self.connect_timeout = connect_timeout
        self._tls = tls
        if tls is not None:
            self.default_port = 443  # the Host header omits the scheme's own port
        name = "[%s]" % host if ":" in host else host.encode("idna").decode("ascii")
        self._host_header = name if port == self.default_port else "%s:%d" % (name, port)
        self._last: Optional[_Response] = None  # the answer before, which must be read to its end first

    def send_get(self, target: str, headers: Mapping[str, str]) -> None:
        """Send ``GET target`` in one write (http.client's put* calls cost more than the rest of a log request).

        On a connection whose last answer was not read to its end, a new one is opened first.
        """
        if any(ch in target for ch in " \r\n\t"):
            raise http.client.InvalidURL("the request path %r holds white space" % target)
        head = ["GET ", target, " HTTP/1.1\r\nHost: ", self._host_header, "\r\n"]
        for name, value in headers.items():
            if "\n" in value or "\r" in value:
                raise ConfigError("the %s header would hold a line break: check the credentials" % name)
            head += (name, ": ", value, "\r\n")
        head.append("\r\n")
        if self.sock is not None and self._last is not None and not self._last.isclosed():
            self.close()
        if self.sock is None:
            self.connect()
        self.sock.sendall("".join(head).encode("latin-1"))
        self._last = None

    def get_response(self) -> "_Response":
        """The answer's status and header; its body is read from the response."""
        response = _Response(self.sock, method="GET")
        try:
            response.begin()
        except BaseException:
            response.close()
            self.close()
            raise
        if response.will_close:
            self.close()  # the answer keeps the socket open until it is read
        else:
            self._last = response
        return response

    def close(self) -> None:
        last, self._last = self._last, None
        if last is not None:  # http.client closes the answers it tracks; this one is ours to close
            last.close()
        super().close()

    def connect(self) -> None:
        started = time.monotonic()
        sock = socket.create_connection((self.host, self.port), self.connect_timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tunnel_host:
                self.sock = sock
                self._tunnel()  # the proxy's CONNECT, on the plain socket
            if self._tls is not None:
                context, server_name = self._tls()
                sock = context.wrap_socket(sock, server_hostname=server_name or self._server_host,
                                           do_handshake_on_connect=False)
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


class _Tries:
    """One request's tries so far: what was asked, and what its retries have used up."""

    __slots__ = ("path", "verb", "resource", "namespace", "first", "failures", "throttles", "refreshed", "message")

    def __init__(self, path: str, *, verb: str, resource: str, namespace: str):
        self.path, self.verb, self.resource, self.namespace = path, verb, resource, namespace
        self.first = time.monotonic()
        self.failures = self.throttles = 0  # network errors, 5xx and young 403s; 429s
        self.refreshed = False  # the token was read again after a 401
        self.message = ""  # the last error answer's

    def error(self, status: int, message: str, reason: str = "") -> ApiError:
        return ApiError(status, message, reason=reason, verb=self.verb, resource=self.resource,
                        namespace=self.namespace)


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
                 token_source: Optional[Any] = None, client_cert: Optional[Tuple[Any, Any]] = None,
                 ca_data: Optional[bytes] = None, tls_server_name: Optional[str] = None,
                 ca_setting: str = "", namespace: Optional[str] = None, proxy_url: Optional[str] = None,
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
        self._forbidden_since: Optional[float] = None  # the first 403 since the last success
        self._allowed: set = set()  # (verb, resource) answered 2xx: a 403 to those is news, first doubted
        self.retries = retries
        self.backoff = backoff
        self.stop_event = stop_event or threading.Event()  # set: requests and sleeps end with _Stopped
        self._local = threading.local()
        self._connections: List[http.client.HTTPConnection] = []
        self._connections_lock = threading.Lock()
        # A token never travels over plain http (kubectl proxy needs none).
        self._token = _TokenSource(Path(token_file)) if token_file and self._https else None
        self._ssl = self._ssl_context(ca_file, insecure_skip_tls_verify) if self._https else None
        # Kubeconfig settings (see the Kubeconfig section): another credential source, a client certificate,
        # inline CA data, the name to check the certificate against.
        self.namespace = namespace  # the context's namespace, if any
        self._ca_setting = ca_setting
        self._tls_server_name = tls_server_name
        self._tls_generation = 0
        self._proxy = proxy_url
        if token_source is not None and self._https:
            self._token = token_source
        if self._https:
            self._ssl_options = (ca_file, insecure_skip_tls_verify, ca_data, client_cert)
            certificate = getattr(token_source, "certificate", None)
            if ca_data is not None or client_cert is not None or certificate is not None:
                self._ssl = self._kubeconfig_ssl_context(certificate)
            if hasattr(token_source, "on_certificate"):
                token_source.on_certificate = self._use_certificate

    def _kubeconfig_ssl_context(self, exec_certificate: Optional[Tuple[bytes, bytes]] = None) -> ssl.SSLContext:
        ca_file, insecure, ca_data, client_cert = self._ssl_options
        if ca_data is not None and not insecure:
            try:  # that CA only, as client-go trusts it
                context = ssl.create_default_context(cadata=ca_data.decode("ascii", "replace"))
            except (ssl.SSLError, ValueError) as exc:
                raise ConfigError("cannot load %s (%s): fix it, or pass --ca-file" % (self._ca_setting, exc)) from None
        else:
            context = self._ssl_context(ca_file, insecure)
        for cert in (client_cert, exec_certificate):
            if cert is not None:
                _load_client_cert(context, cert[0], cert[1], "the kubeconfig user" if cert is client_cert else
                                  repr(self._token))
        return context

    def _use_certificate(self, cert: bytes, key: bytes) -> None:
        """An exec plugin issued a new client certificate: connections made from now on present it."""
        self._ssl = self._kubeconfig_ssl_context((cert, key))
        self._tls_generation += 1

    def _tls(self) -> Tuple[ssl.SSLContext, Optional[str]]:
        return self._ssl, self._tls_server_name

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

    @classmethod
    def from_kubeconfig(cls, path: Optional[os.PathLike] = None, context: Optional[str] = None, *,
                        environ: Optional[Mapping[str, str]] = None, **options: Any) -> "KubeClient":
        """A client for ``context`` (default: the current one) of the kubeconfig at ``path`` (default: the files of
        $KUBECONFIG merged, else ~/.kube/config), connecting as kubectl would."""
        return _client_from_kubeconfig(cls, path, context, os.environ if environ is None else environ, **options)

    @classmethod
    def from_environment(cls, *, kubeconfig: Optional[os.PathLike] = None, context: Optional[str] = None,
                         environ: Optional[Mapping[str, str]] = None, account_dir: os.PathLike = SERVICE_ACCOUNT_DIR,
                         **options: Any) -> "KubeClient":
        """The client the command line uses: ``server``/``token_file``/``ca_file`` if given; else ``kubeconfig`` /
        ``context`` if given; else the pod's service account when in a cluster; else $KUBECONFIG or ~/.kube/config."""
        return _client_from_environment(cls, kubeconfig=kubeconfig, context=context, account_dir=account_dir,
                                        environ=os.environ if environ is None else environ, **options)

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
                               tls=self._tls if self._https else None, proxy=self._proxy)
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
            if token:  # an exec plugin may issue a client certificate instead
                headers["Authorization"] = "Bearer " + token
            if getattr(self._local, "tls_generation", 0) != self._tls_generation:
                if getattr(self._local, "conn", None) is not None:
                    self._local.conn.close()  # reconnects with the new client certificate
                self._local.tls_generation = self._tls_generation
        return headers

    def request(self, path: str, query: Optional[Mapping[str, str]] = None, *, accept: str = "application/json",
                verb: str = "get", resource: str = "", namespace: str = "") -> http.client.HTTPResponse:
        """GET ``path`` and return the open 2xx response; raise ApiError for an error that retries did not cure."""
        target = self._prefix + path + ("?" + _encode_query(query) if query else "")
        tries = _Tries(path, verb=verb, resource=resource, namespace=namespace)
        while True:
            if self.stop_event.is_set():
                raise _Stopped()
            try:
                headers = self._headers(accept, refresh_token=tries.refreshed)
            except ConfigError as exc:  # after a 401: the token file stayed empty or unreadable
                raise tries.error(401, "%s, and reading the token again failed: %s" % (tries.message, exc)) from None
            conn = self._connection()
            reused = self._local.used
            started = time.monotonic()
            try:
                response = self._send(conn, target, headers)
            except ssl.SSLCertVerificationError as exc:  # retrying cannot help: say which setting to fix, at once
                self.drop_connection()
                raise ConfigError(_tls_failure(self.server, exc, self._ca_setting)) from None
            except _NETWORK_ERRORS as exc:
                self.drop_connection()
                if reused and isinstance(exc, (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)):
                    self._local.used = False
                    continue  # the server closed an idle keep-alive connection: not a failure
                self._after_network_error(exc, tries)
                continue
            self._local.used = True
            _log.debug("GET %s -> %d (%.3fs)", target, response.status, time.monotonic() - started)
            if response.status < 300:
                self._forbidden_since = None
                self._allowed.add((verb, resource))
                return response
            self._after_error_status(response, tries)

    def _after_network_error(self, exc: BaseException, tries: "_Tries") -> None:
        """Wait with backoff before the next try, or raise the ApiError that says the server cannot be reached."""
        problem = self._redact("cannot reach %s: %s" % (self.server, exc or type(exc).__name__))
        delay = self.backoff_delay(tries.failures)
        if not self._may_retry(tries.first, tries.failures, delay):
            raise tries.error(0, "%s (%s)" % (problem, self._gave_up(tries.first, tries.failures))) from None
        tries.failures += 1
        _log.warning("GET %s: %s; retrying in %.1fs", self._prefix + tries.path, problem, delay)
        self.sleep(delay)

    def _after_error_status(self, response: http.client.HTTPResponse, tries: "_Tries") -> None:
        """Wait before the next try as an error answer calls for (a restarting server's 403, a rotated token's 401,
        throttling, 5xx), or raise its ApiError."""
        status, shown = response.status, self._prefix + tries.path
        message, reason = self._error_of(response)
        tries.message = message
        if status == 403 and (tries.verb, tries.resource) in self._allowed and self._forbidden_is_young():
            delay = self.backoff_delay(tries.failures)
            _log.warning("GET %s: forbidden (%s); an API server that has just started says so until its RBAC "
                         "cache is in sync: retrying in %.1fs", shown, message, delay)
            self.sleep(delay)
            tries.failures += 1
            return
        if status == 401 and self._token is not None and not tries.refreshed:
            tries.refreshed = True  # the token may have rotated: read it again and retry once
            return
        if status == 429 and tries.throttles < THROTTLE_RETRIES:
            tries.throttles += 1
            delay = _retry_after(response)
            asked = delay is not None
            delay = delay if asked else self.backoff_delay(tries.throttles)
            _log.warning("GET %s: throttled by the API server (429); waiting %.1fs%s", shown, delay,
                         " as its Retry-After asks" if asked else "")
            self.sleep(delay)
            return
        if status in _RETRYABLE_STATUSES:
            delay = _retry_after(response)
            delay = delay if delay is not None else self.backoff_delay(tries.failures)
            if self._may_retry(tries.first, tries.failures, delay):
                _log.warning("GET %s: HTTP %d: %s; retrying in %.1fs", shown, status, message, delay)
                self.sleep(delay)
                tries.failures += 1
                return
            message = "%s (%s)" % (message, self._gave_up(tries.first, tries.failures))
        raise tries.error(status, message, reason=reason)

    def _send(self, conn: _Connection, target: str, headers: Mapping[str, str]) -> http.client.HTTPResponse:
        """One GET on ``conn``: the whole response header within response_timeout, however it trickles in."""
        conn.send_get(target, headers)
        sock = self._local.sock = conn.sock  # the response's, even once a "Connection: close" drops it
        if sock.gettimeout() != self._timeout:  # a follow or watch stream's own: each settimeout is a syscall
            sock.settimeout(self._timeout)
        with _Deadline(sock, self.response_timeout) as deadline:  # the watchdog shuts the socket when it passes
            try:
                response = conn.get_response()
            except _NETWORK_ERRORS as exc:
                if deadline.expired or isinstance(exc, socket.timeout):
                    raise socket.timeout("no response within %gs" % self.response_timeout) from None
                raise
        return response

    def _error_of(self, response: http.client.HTTPResponse) -> Tuple[str, str]:
        """(message, reason) of an answer of 300 or more, the token redacted from it."""
        body = response.read(1 << 16)
        if not response.isclosed():  # an error body longer than we care to read: do not reuse the connection
            self.drop_connection()
        message, reason = _status_message(body, response.getheader("Content-Type") or "")
        if 300 <= response.status < 400:  # never followed: the token must not go where a redirect points
            message = "HTTP %d %s to %s: pass the API server's own address with --server" % (
                response.status, response.reason, response.getheader("Location") or "nowhere")
        return self._redact(message or "HTTP %d %s" % (response.status, response.reason)), reason

    def _forbidden_is_young(self) -> bool:
        """Whether a 403 may be a restarting API server's (RBAC not in sync yet, a few seconds): true for
        FORBIDDEN_GRACE backoff units after the first 403 that follows a success, then never until the next."""
        now = time.monotonic()
        with self._connections_lock:
            if self._forbidden_since is None:
                self._forbidden_since = now
            return now - self._forbidden_since < FORBIDDEN_GRACE * self.backoff

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
                    try:
                        while True:
                            part = response.read(PROGRESS_BYTES)
                            if not part:
                                break
                            parts.append(part)
                            deadline.extend()
                    except _NETWORK_ERRORS:
                        if not deadline.expired:  # (the cut the watchdog made may end the read with an error)
                            raise
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
                  list_meta: Optional[Dict[str, Any]] = None, max_pages: int = MAX_LIST_PAGES,
                  on_snapshot: Optional[Callable[[], None]] = None) -> Iterator[Dict[str, Any]]:
        """Yield the pods of ``namespace`` (all namespaces when None), page by page.

        A continue token that expired (410) restarts the listing; pods already
        yielded may then be yielded again, so callers de-duplicate by UID.
        ``list_meta``, when given, receives the first page's list metadata (its
        resourceVersion is where a watch continues from).  A continue token
        seen before, or more than ``max_pages`` pages, end it with an ApiError.
        ``on_snapshot``: see list_pages.
        """
        path, query = _pods_request(namespace, label_selector, field_selector, limit=str(page_size))
        for items in self.list_pages(path, query, resource="pods", namespace=namespace or "", list_meta=list_meta,
                                     max_pages=max_pages, on_snapshot=on_snapshot):
            yield from items

    def list_pages(self, path: str, query: Mapping[str, str], *, resource: str, namespace: str = "",
                   list_meta: Optional[Dict[str, Any]] = None, max_pages: int = MAX_LIST_PAGES,
                   on_snapshot: Optional[Callable[[], None]] = None) -> Iterator[List[Dict[str, Any]]]:
        """Yield the items of a paged list, a page at a time (pods, events): see list_pods.  ``on_snapshot`` is called
        right before each request that starts a snapshot (the first page; the first again after an expired continue
        token): the pages that continue it are served from that snapshot, however much later they are asked for."""
        what = resource.split(".", 1)[0].rstrip("s")  # "pod", "event"
        restarts = pages = 0
        tokens: set = set()
        page = dict(query)
        while True:
            if on_snapshot is not None and "continue" not in page:
                on_snapshot()
            try:
                body = self.get_json(path, page, verb="list", resource=resource, namespace=namespace)
            except ApiError as exc:
                if exc.status == 410 and "continue" in page and restarts < 3:
                    restarts += 1
                    page = dict(query)
                    tokens.clear()
                    continue
                raise
            meta, items = body.get("metadata") or {}, body.get("items") or []
            if not (isinstance(meta, dict) and isinstance(items, list) and all(isinstance(i, dict) for i in items)):
                raise ConfigError("%s answered a %s listing with something that is not a %sList: check --server"
                                  % (self.server, what, what.capitalize()))
            if list_meta is not None and "continue" not in page:
                list_meta.clear()
                list_meta.update(meta)
            yield items
            token = meta.get("continue")
            if not token:
                return
            pages += 1
            if token in tokens or pages >= max_pages:
                raise ApiError(0, "the %s listing does not end: the API server %s after %d pages; its paging is "
                               "broken" % (what, "repeated a continue token" if token in tokens else "went on", pages),
                               verb="list", resource=resource, namespace=namespace)
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


class _Container:
    """One container of a listed pod, with what its status says about its instances."""

    __slots__ = ("namespace", "pod", "uid", "name", "restarts", "container_id", "state", "waiting_reason",
                 "has_previous", "previous_started_ns", "previous_ended_ns", "started_ns", "listed_ns", "may_restart")

    def __init__(self, namespace: str, pod: str, uid: str, name: str, *, restarts: int = 0, container_id: str = "",
                 state: str = "", waiting_reason: str = "", has_previous: bool = False, previous_started_ns: int = 0,
                 previous_ended_ns: int = 0, started_ns: int = 0, listed_ns: int = 0, may_restart: bool = True):
        self.namespace, self.pod, self.uid, self.name = namespace, pod, uid, name
        self.restarts = restarts
        self.container_id = container_id
        self.state = state  # running, waiting, terminated; empty when the kubelet has not reported it
        self.waiting_reason = waiting_reason
        self.has_previous = has_previous
        self.previous_started_ns = previous_started_ns  # the listed previous instance's start and end (0: unknown)
        self.previous_ended_ns = previous_ended_ns
        self.started_ns = started_ns  # when the current instance started (running only; 0 when unknown)
        self.listed_ns = listed_ns  # when the status above was read (our clock)
        self.may_restart = may_restart  # False under restartPolicy Never: the listed instance is the only one

    def __repr__(self) -> str:
        return "_Container(%s)" % ", ".join("%s=%r" % (name, getattr(self, name)) for name in self.__slots__)

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


def _timestamp_or_0(value: Any) -> int:
    try:
        return parse_timestamp(str(value)) if value else 0
    except (ValueError, TypeError):
        return 0


def _containers_of(pod: Mapping[str, Any], listed_ns: int = 0) -> List[_Container]:
    """The pod's containers, with its status as of ``listed_ns`` (our clock; 0: now)."""
    meta = _object(pod.get("metadata"))
    spec = _object(pod.get("spec"))
    status = _object(pod.get("status"))
    now = listed_ns or time.time_ns()
    pod_policy = spec.get("restartPolicy") or "Always"
    found = []
    for spec_key, status_key in (("initContainers", "initContainerStatuses"), ("containers", "containerStatuses"),
                                 ("ephemeralContainers", "ephemeralContainerStatuses")):
        statuses = {s.get("name"): s for s in _objects(status.get(status_key))}
        for container in _objects(spec.get(spec_key)):
            name = str(container.get("name") or "")
            # A container's own policy (a sidecar's Always) wins over the pod's; an ephemeral one never restarts.
            policy = "Never" if spec_key == "ephemeralContainers" else container.get("restartPolicy") or pod_policy
            entry = _Container(str(meta.get("namespace") or ""), str(meta.get("name") or ""), str(meta.get("uid") or ""),
                               name, listed_ns=now, may_restart=policy != "Never")
            st = statuses.get(name)
            if st:
                restarts = st.get("restartCount")
                entry.restarts = restarts if isinstance(restarts, int) and not isinstance(restarts, bool) else 0
                entry.container_id = str(st.get("containerID") or "")
                state = _object(st.get("state"))
                entry.state = str(next(iter(state), ""))
                entry.waiting_reason = str(_object(state.get("waiting")).get("reason") or "")
                entry.started_ns = _timestamp_or_0(_object(state.get("running")).get("startedAt"))
                ended = _object(_object(st.get("lastState")).get("terminated"))
                entry.has_previous = bool(ended)
                entry.previous_started_ns = _timestamp_or_0(ended.get("startedAt"))
                entry.previous_ended_ns = _timestamp_or_0(ended.get("finishedAt"))
            found.append(entry)
    return found


# ---------------------------------------------------------------------------
# State
# ---------------------------------------------------------------------------


class _State:
    """Per container, the last line on disk and the instance holding it; per file, its size, inode and last line.

    A file longer than its record was written after the last checkpoint by a run
    that died: it is continued after its own last complete line, never cut back.
    A save first makes the files it records durable, all at once, then writes the
    state: never the other way round.
    """

    def __init__(self, path: Optional[Path]):
        self.path = path
        self.containers: Dict[str, Dict[str, Any]] = {}
        self.files: Dict[str, Dict[str, Any]] = {}  # relpath -> size, inode, and the anchor of its last line
        self._lock = threading.Lock()
        self._save_lock = threading.Lock()  # one save at a time, so an older snapshot never lands last
        self._saved_at = time.monotonic()
        self._save_seconds = 0.0  # what the last save took
        self._dirty = False
        self._unsynced: set = set()  # files written since the last save
        self._written: set = set()  # files written in this run: they exist, the final prune need not look
        self.extra: Dict[str, Dict[str, Any]] = {}  # other top-level sections (the archive's "events", ...)
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
        if not isinstance(containers, dict) or not isinstance(files, dict) or data.get("version") not in (1, STATE_VERSION):
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
        self.extra = {k: dict(v) for k, v in data.items() if k not in ("version", "containers", "files") and isinstance(v, dict)}

    def record(self, key: str) -> Optional[Dict[str, Any]]:
        with self._lock:
            entry = self.containers.get(key)
            return dict(entry) if entry else None

    def file_record(self, relpath: str) -> Optional[Dict[str, Any]]:
        with self._lock:
            record = self.files.get(relpath)
            return dict(record) if record else None

    def register_file(self, relpath: str, record: Dict[str, Any]) -> None:
        """Record a new file before its first byte, for files whose last line cannot be read back."""
        with self._lock:
            self.files[relpath] = record
            self._dirty = True
        self.save()

    def commit(self, key: str, entry: Dict[str, Any], relpath: str, file_record: Dict[str, Any]) -> None:
        """Record lines written (not yet durable); the next save makes them so, then records them."""
        with self._lock:
            self.containers[key] = entry
            self.files[relpath] = file_record
            self._unsynced.add(relpath)
            self._written.add(relpath)
            self._dirty = True
        self.save_if_due()

    def lookup(self, section: str, key: str) -> Any:
        with self._lock:
            return (self.extra.get(section) or {}).get(key)

    def update_sections(self, change: Callable[..., Any], *sections: str) -> None:
        """Change top-level sections of the state other than containers and files, under the state's lock."""
        with self._lock:
            change(*(self.extra.setdefault(name, {}) for name in sections))
            self._dirty = True

    def forget(self, container: Callable[[str, Mapping[str, Any]], bool], relpaths: Iterable[str]) -> None:
        """Drop the records of the containers ``container`` picks and of the files ``relpaths`` (retention)."""
        with self._lock:
            for key in [k for k, v in self.containers.items() if container(k, v)]:
                del self.containers[key]
            for relpath in relpaths:
                self.files.pop(relpath, None)
                self._written.discard(relpath)
            self._dirty = True

    def rename_file(self, old: str, new: str, **changes: Any) -> None:
        with self._lock:
            record = self.files.pop(old, None)
            if record is not None:
                self.files[new] = dict(record, **changes)
            self._written.discard(old)
            self._dirty = True

    def save_if_due(self) -> None:
        """Save if the last save is old enough (see STATE_SAVE_SHARE) and no other thread is saving."""
        interval = max(STATE_SAVE_INTERVAL, self._save_seconds / STATE_SAVE_SHARE)
        if time.monotonic() - self._saved_at >= interval and self._save_lock.acquire(blocking=False):
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
        started = time.monotonic()
        with self._lock:
            if prune_before is not None:
                for key in [k for k, v in self.containers.items() if v.get("seen", 0) < prune_before]:
                    del self.containers[key]
                    self._dirty = True
                # A file's record outlives its containers: a pod of the same name continues after its last line.
                folder = os.fspath(self.path.parent) + "/"
                for relpath in [p for p in self.files if p not in self._written and not os.path.lexists(folder + p)]:
                    del self.files[relpath]
                    self._dirty = True
            if not self._dirty:
                return
            # The snapshot holds only lines already written: the flush below makes all of them durable.
            text = json.dumps(dict(self.extra, version=STATE_VERSION, containers=self.containers, files=self.files),
                              separators=(",", ":"))
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
        self._save_seconds = time.monotonic() - started


STATE_MAX_BYTES = 128 << 20  # far above any cluster's state; a bound for a state file that is no state file
# The fields the engine reads (version 1 said "count" for "run" and "restarts" for "instance", and had no CRC).
_ANCHOR_FIELDS = {"run": "count?", "count": "count?", "crc": "count?"}
_CONTAINER_RECORD = dict({"ts": "ts", "instance": "count?", "restarts": "count?", "held": "bool?", "final": "bool?",
                          "id": "str?", "seen": "number?"}, **_ANCHOR_FIELDS)
_FILE_RECORD = dict({"size": "count", "ino": "count?", "ts": "ts?"}, **_ANCHOR_FIELDS)


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
    if record.get("ts") is not None and record.get("run") is None and record.get("count") is None:
        return "a ts without its place in its run"
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


def _safe_dir(root: os.PathLike, *parts: str, made: Optional[set] = None) -> str:
    """Create root/parts... as 0700 folders, refusing symlinks so nothing lands outside ``root``.

    ``made`` remembers the folders checked in this run, so each costs one mkdir at most.  Paths are strings here:
    a pathlib object per folder cost more than the mkdir at 50,000 pods.
    """
    path = os.fspath(root)
    for part in parts:
        path = path + "/" + part
        if made is not None and path in made:
            continue
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            mode = os.lstat(path).st_mode
            if not stat.S_ISDIR(mode):
                raise OSError(errno.ENOTDIR, "not a folder (or a symlink)", path) from None
            if mode & 0o077:
                _make_private(Path(path))
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

    def __init__(self, put: Callable[[memoryview], None]):
        self.put = put
        self.discarded = False

    def write(self, data: bytes) -> int:
        if not self.discarded:
            self.put(memoryview(data))
        return len(data)

    def flush(self) -> None:
        pass


# Whose lines end a file the state does not describe yet (a run killed before its state save recorded it): the
# container key and the size the file had when that container began writing to it, set on the file itself before
# its first line.  Without it (no extended attributes here, a file written before) that file's last line is taken
# for a pod of the same name's, and a rotation past it is not reported as a gap.
OWNER_XATTR = "user.kubelogexporter.owner"


class _OutputFile:
    """A log file appended to in place, or, without state, written aside and renamed over the old one."""

    def __init__(self, path: str, *, compress: bool, replace: bool):
        self.path = path
        self.compress = compress
        self.replace = replace
        self.bytes_written = 0  # uncompressed bytes, this run
        self._gzip: Any = None  # a gzip.GzipFile while a member is open
        self._sink: Optional[_FdWriter] = None
        self._flushed_at = time.monotonic()
        self.created = False  # by this open
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        folder, name = os.path.split(path)
        self._target = os.path.join(folder, ".%s.%d.tmp" % (name, os.getpid())) if replace else path
        try:  # a new file gets its mode from open(); an old one may need it set
            self._fd = os.open(self._target, flags | os.O_EXCL, 0o600)
            self.created = True
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
        info = os.fstat(self._fd)
        self.ino = info.st_ino
        self.size = self.committed = info.st_size  # committed: where the last checkpoint ended
        if self.size:
            os.lseek(self._fd, self.size, os.SEEK_SET)
        self._offset = self.size  # the file's offset, kept here rather than asked for (a syscall) at each checkpoint
        self._handed = self.size  # pages before this offset were handed to the disk
        self._unhanded = 0  # bytes given to write() since

    def write(self, data: memoryview) -> None:
        if self.compress:
            if self._gzip is None:  # each checkpoint closes a gzip member, so the file always decompresses whole
                self._sink = _FdWriter(self._put)
                import gzip  # only --gzip needs it: keep start-up lean

                self._gzip = gzip.GzipFile(filename="", mode="wb", compresslevel=GZIP_LEVEL, fileobj=self._sink,
                                              mtime=0)
            self._gzip.write(data)
        else:
            self._put(data)
        self.bytes_written += len(data)
        self._unhanded += len(data)
        if self._unhanded >= WRITEBACK_BYTES:
            self._hand_to_disk()

    def _put(self, data: memoryview) -> None:
        _write_all(self._fd, data)
        self._offset += len(data)  # (a failed write is rolled back, which sets the offset again)

    def _hand_to_disk(self) -> None:
        """Start writing back what is written so far, without waiting (POSIX_FADV_DONTNEED starts the writeback
        of dirty pages and drops only clean ones; a later flush then waits for little)."""
        self._unhanded = 0
        if not hasattr(os, "posix_fadvise"):
            return
        position = self._offset
        if position > self._handed:
            os.posix_fadvise(self._fd, self._handed, position - self._handed, os.POSIX_FADV_DONTNEED)
            self._handed = position

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
        self.committed = self.size = self._offset
        return self.committed

    def sync(self) -> None:
        os.fsync(self._fd)

    def claim(self, key: str) -> bool:
        """Mark the lines written from here on as ``key``'s (see OWNER_XATTR); return whether the file's last line
        already is one of them, written by a run that died before its state save."""
        owner = None
        if not self.created and hasattr(os, "getxattr"):
            with contextlib.suppress(OSError, ValueError):
                mark, _, size = os.getxattr(self._fd, OWNER_XATTR).decode().rpartition(" ")
                owner = mark, int(size)
        if owner is not None and owner[0] == key and owner[1] <= self.size:
            return owner[1] < self.size
        if hasattr(os, "setxattr"):
            with contextlib.suppress(OSError):  # no extended attributes here: as before, no mark
                os.setxattr(self._fd, OWNER_XATTR, ("%s %d" % (key, self.size)).encode())
        return False

    def truncate(self, size: int) -> None:
        """Cut what follows ``size``: only ever a torn line, or a --no-timestamps run's lines past its checkpoint."""
        if size < self.committed:
            os.ftruncate(self._fd, size)
            os.lseek(self._fd, size, os.SEEK_SET)
            self.committed = self.size = self._offset = size
            self._handed = min(self._handed, size)

    def rollback(self) -> None:
        """Drop what was written since the last checkpoint (a write error, a long line cut in the middle)."""
        if self._sink is not None:
            self._sink.discarded = True  # the abandoned member must not write when it is collected
        self._gzip = None
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, self.committed)
            os.lseek(self._fd, self.committed, os.SEEK_SET)
            self._offset = self.committed
        self._handed = min(self._handed, self.committed)

    def close(self, *, keep: bool) -> None:
        if self.replace and keep:
            os.fsync(self._fd)  # no state records a replaced file: it must be whole before the rename
        # (a checkpoint past 0 is never taken back: only a file without one needs looking at)
        empty = self.created and not self.replace and not self.committed and os.fstat(self._fd).st_size == 0
        os.close(self._fd)
        if empty:  # made for lines that never came (a refused or empty log): leave no file behind
            with contextlib.suppress(OSError):
                os.unlink(self.path)
        if self.replace:
            if keep:
                os.replace(self._target, self.path)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(self._target)


def _last_line_start(buffer: bytes, start: int, end: int) -> int:
    return max(buffer.rfind(b"\n", start, end - 1) + 1, start)


def _recover_anchor(path: str, *, compressed: bool,
                    start: Optional[Mapping[str, Any]] = None) -> Tuple[Optional[_Anchor], int]:
    """(anchor of the last complete line, size of the complete part) of a timestamped log file.

    Reads from ``start``, a file record of the state (a size the file had, which ends a line and a gzip member, and
    the anchor there), or from the beginning.  What follows the last complete line (or whole gzip member) is a
    torn write of a run that died.
    """
    if start is None and not compressed:
        tail = _plain_tail(path)
        if tail is not None:
            return tail
    offset = int(start["size"]) if start else 0
    anchor = _Anchor.from_record(start) if start else None
    return _scan_anchor(path, compressed, offset, anchor)


def _plain_tail(path: str) -> Optional[Tuple[Optional[_Anchor], int]]:
    """The last line of a plain file from its last block alone; None when the block cannot tell."""
    with open(path, "rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        window = min(size, BLOCK_SIZE)
        handle.seek(size - window)
        data = bytearray(handle.read(window))
    end = data.rfind(b"\n") + 1
    first = 0 if window == size else data.find(b"\n") + 1  # the first line wholly in the block
    if end == 0 or first >= end:
        return (None, 0) if window == size and end == 0 else None  # a line longer than the block: scan it all
    last = _last_line_start(data, first, end)
    match = _TS_RE.match(data, last)
    if match is None:
        raise ValueError("its last line has no timestamp; move it away to export it anew")
    if window != size and (last == first or data.startswith(match.group(0), first)):
        return None  # the line or its run of equal times may begin before the block
    return _tail_anchor(data, memoryview(data), first, end, None), size - window + end


# A torn gzip member is rewritten in its place: its complete lines go first to a sidecar (FILE.salvage), synced,
# so that a kill between the cut and the rewrite's end leaves them there and the next run puts them back.  The
# header says where the member began, in which file (inode), and the lines' length and CRC-32.
SALVAGE_SUFFIX = ".salvage"
_SALVAGE_HEADER = b"kubelogexporter salvage at %020d of inode %020d: %020d bytes, crc %010d\n"
_SALVAGE_HEADER_SIZE = len(_SALVAGE_HEADER % (0, 0, 0, 0))
_SALVAGE_HEADER_RE = re.compile(rb"kubelogexporter salvage at (\d{20}) of inode (\d{20}): (\d{20}) bytes, crc (\d{10})\n")


def _salvage_member(output: _OutputFile, start: int, anchor: Optional[_Anchor]) -> Optional[_Anchor]:
    """A gzip member that a killed run left unfinished at ``start``: its complete lines are on disk, so they are
    written again as a whole member in its place (never taken back, not even by a kill in the middle: they are in
    the sidecar until the rewrite is durable); only the torn line after them goes."""
    sidecar = Path(output.path + SALVAGE_SUFFIX)
    tmp = sidecar.with_name(sidecar.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)  # a salvage killed before its sidecar was whole: the file was not cut
    decompressor = zlib.decompressobj(31)
    carry = b""
    length = crc = 0
    spill = os.fdopen(os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600), "w+b")
    try:
        with open(output.path, "rb") as handle:
            spill.write(bytes(_SALVAGE_HEADER_SIZE))
            handle.seek(start)
            for raw in iter(lambda: handle.read(BLOCK_SIZE), b""):
                try:
                    buffer = bytearray(carry + decompressor.decompress(raw))
                except zlib.error:
                    break
                end = buffer.rfind(b"\n") + 1
                if end:
                    if not _TS_RE.match(buffer, _last_line_start(buffer, 0, end)):
                        break  # not lines of ours: leave them to the cut
                    anchor = _tail_anchor(buffer, memoryview(buffer), 0, end, anchor)
                    lines = memoryview(buffer)[:end]
                    spill.write(lines)
                    length, crc = length + end, zlib.crc32(lines, crc)
                carry = bytes(buffer[end:])
        if not length:
            spill.close()
            os.unlink(tmp)
            output.truncate(start)
            return anchor
        spill.seek(0)
        spill.write(_SALVAGE_HEADER % (start, output.ino, length, crc))
        spill.flush()
        os.fsync(spill.fileno())
        os.replace(tmp, sidecar)
    except BaseException:
        spill.close()
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with spill:  # from here on the sidecar is what the member held: kept until the rewrite is durable
        _fsync_dir(sidecar.parent)
        spill.seek(_SALVAGE_HEADER_SIZE)
        _put_back(output, start, spill)
    os.unlink(sidecar)
    return anchor


def _finish_salvage(output: _OutputFile) -> None:
    """Finish a salvage that a killed run left behind (its sidecar, the authority for what the torn member held):
    the lines are written again in the member's place unless the file already holds them whole there."""
    sidecar = Path(output.path + SALVAGE_SUFFIX)
    try:
        fd = os.open(sidecar, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise _salvage_refused(sidecar, "a symbolic link" if exc.errno == errno.ELOOP else exc.strerror) from None
    with os.fdopen(fd, "rb") as handle:
        try:
            _check_own_file(fd, sidecar)
        except OSError as exc:
            raise _salvage_refused(sidecar, "a hard link" if exc.errno == errno.EMLINK else exc.strerror) from None
        match = _SALVAGE_HEADER_RE.fullmatch(handle.read(_SALVAGE_HEADER_SIZE))
        start, ino, length, crc = (int(value) for value in match.groups()) if match else (0, 0, 0, 0)
        if not length:  # a salvage without lines makes none
            raise _salvage_refused(sidecar, "not a salvage file")
        seen = check = 0
        for block in iter(lambda: handle.read(BLOCK_SIZE), b""):
            seen, check = seen + len(block), zlib.crc32(block, check)
        if (seen, check) != (length, crc):
            raise _salvage_refused(sidecar, "its lines do not match its header")
        if ino != output.ino or start > output.size:
            raise _salvage_refused(sidecar, "made for another file")
        if not _holds_member(output.path, start, length, crc):
            handle.seek(_SALVAGE_HEADER_SIZE)
            _put_back(output, start, handle)
    os.unlink(sidecar)


def _salvage_refused(sidecar: Path, why: str) -> ValueError:
    return ValueError("%s is not a salvage this run can finish (%s); look at it, then move it away"
                      % (sidecar.name, why))


def _put_back(output: _OutputFile, start: int, lines: Any) -> None:
    """Write the salvaged ``lines`` (a file, from its position on) as one whole gzip member at ``start``, durably."""
    output.truncate(start)
    try:
        for block in iter(lambda: lines.read(BLOCK_SIZE), b""):
            output.write(memoryview(block))
        output.checkpoint()
        output.sync()
    except BaseException:
        output.rollback()  # the sidecar stays: the next run puts them back
        raise
    output.bytes_written = 0  # lines of an earlier run, not this one's


def _holds_member(path: Path, start: int, length: int, crc: int) -> bool:
    """Whether a whole gzip member of exactly these lines begins at ``start`` (a rewrite that was finished)."""
    decompressor = zlib.decompressobj(31)
    seen = check = 0
    with open(path, "rb") as handle:
        handle.seek(start)
        for raw in iter(lambda: handle.read(BLOCK_SIZE), b""):
            try:
                data = decompressor.decompress(raw, length + 1 - seen)
            except zlib.error:
                return False
            seen, check = seen + len(data), zlib.crc32(data, check)
            if decompressor.eof or seen > length:
                break
    return decompressor.eof and (seen, check) == (length, crc)


def _scan_anchor(path: str, compressed: bool, offset: int, anchor: Optional[_Anchor]) -> Tuple[Optional[_Anchor], int]:
    """Stream the file from ``offset`` (gzip members one by one), so memory stays flat but for one line."""
    safe, complete = anchor, offset  # the anchor where the complete part ends
    carry = b""
    decompressor = zlib.decompressobj(31) if compressed else None
    with open(path, "rb") as handle:
        handle.seek(offset)
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
                buffer = bytearray(carry + data)
                end = buffer.rfind(b"\n") + 1
                if end:
                    if not _TS_RE.match(buffer, _last_line_start(buffer, 0, end)):
                        raise ValueError("its last line has no timestamp; move it away to export it anew")
                    anchor = _tail_anchor(buffer, memoryview(buffer), 0, end, anchor)
                carry = bytes(buffer[end:])
                if decompressor is None or decompressor.eof:  # a whole member: lines up to here are safe
                    if not carry:
                        complete, safe = offset, anchor
                    if decompressor is not None:
                        pending.append(decompressor.unused_data)
                        decompressor = zlib.decompressobj(31)
    if decompressor is None:
        complete, safe = offset - len(carry), anchor
    return safe, complete


# ---------------------------------------------------------------------------
# Resume: which lines of an answer go to the file
# ---------------------------------------------------------------------------

# The runtime stamps a line when it reads it from the container's stdout or stderr, so a log file can hold a line
# stamped slightly before the line written ahead of it.  The kubelet serves the file in file order and drops every
# line stamped before sinceTime (whole seconds) wherever it stands.  So a resume asks from at least RACE_SECONDS
# before the last line written, finds that line by its place among the lines served, and writes exactly what
# follows it, whatever the timestamps.  The bound: a line stamped more than RACE_SECONDS before a line already
# exported, but written after it, is out of reach (races between stdout and stderr are of microseconds).
RACE_SECONDS = 1
_RACE_NS = RACE_SECONDS * NS_PER_SECOND
# A line without a timestamp: the kubelet's error text.  The kubelet writes it after the last line it serves (its
# getContainerLogs writes the error that ReadLogs returns; ReadLogs skips a line of the file it cannot parse), so
# such text ends a body, and the block that holds it ends with it.  A block whose first and last lines are stamped
# is therefore taken whole; only one that ends unstamped is searched line by line.  A regex at every line start
# cost more than the rest of a large log's export (0.15 s per 256 MiB).
_UNSTAMPED_RE = re.compile(rb"\n(?!%s)" % _TS_RE.pattern)  # _TS_RE itself: a last line it refuses is found


class _Anchor(NamedTuple):
    """The last line written for a container, as served: its time, its place in the run of lines of exactly that
    time that ends with it (1 = the first), and a CRC-32 of the line, so that a line of another file with the same
    time is not taken for it."""

    ns: int
    run: int
    crc: Optional[int]  # None: from a state file of version 1

    @property
    def since(self) -> int:
        """The sinceTime of a resume after this line: a whole second, at least RACE_SECONDS before it."""
        return (self.ns // NS_PER_SECOND - RACE_SECONDS) * NS_PER_SECOND

    def record(self) -> Dict[str, Any]:
        return {"ts": _format_ts(self.ns), "run": self.run, "crc": self.crc}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Optional["_Anchor"]:
        """The anchor a state record holds (version 1 said ``count`` for ``run`` and kept no CRC)."""
        if not record.get("ts"):
            return None
        crc = record.get("crc")
        return cls(parse_timestamp(str(record["ts"])), int(record.get("run", record.get("count", 1))),
                   None if crc is None else int(crc))


def _tail_anchor(buffer: bytearray, view: memoryview, start: int, end: int, before: Optional[_Anchor]) -> _Anchor:
    """The anchor of the last of the complete, timestamped lines buffer[start:end].

    Counts back over the lines that carry the last line's exact timestamp; if they fill the whole range, the run
    goes on from ``before``, the line written just ahead of them.
    """
    last = _last_line_start(buffer, start, end)
    match = _TS_RE.match(buffer, last)
    stamp, ns = match.group(0), _match_ns(match)
    run, pos = 1, last
    while pos > start:
        prior = max(buffer.rfind(b"\n", start, pos - 1) + 1, start)
        if not buffer.startswith(stamp, prior):
            return _Anchor(ns, run, zlib.crc32(view[last:end - 1]))
        run, pos = run + 1, prior
    if before is not None and before.ns == ns:
        run += before.run
    return _Anchor(ns, run, zlib.crc32(view[last:end - 1]))


class _AnchorMissing(Exception):
    """The answer went past where the anchor's line would be, or ended without it: that line is not there.
    ``passed``: a line stamped after the anchor's came (within the race margin too); ``seen_ns``: the time of the
    answer's first line (None: it had none).

    Its argument is that anchor (a read resumed after a cut looks for the line written last, not the first one)."""

    def __init__(self, anchor: "_Anchor", *, passed: bool, seen_ns: Optional[int]):
        super().__init__(anchor)
        self.passed, self.seen_ns = passed, seen_ns


class _Young(Exception):
    """A first export's current log starts after the listing: the container may have restarted since."""


class _OpenLine:
    """A line longer than the read buffer, handed on in pieces as they arrive."""

    __slots__ = ("ns", "anchor", "crc", "write", "candidate", "error")

    def __init__(self, ns: int, anchor: Optional[_Anchor], write: bool, candidate: bool,
                 error: Optional[bytearray] = None):
        self.ns, self.anchor, self.write, self.candidate, self.error = ns, anchor, write, candidate, error
        self.crc = 0


class _LineFilter:
    """Decides, for the lines of one answer in the order served, which go to the file.

    The lines up to and including ``anchor`` are on disk already and are dropped; every line after it is written.
    The state is explicit: ``found`` (the anchor is behind us, or there was none), ``last`` (the anchor of the last
    line written: the file's last line), ``first_ns`` (the time of the first line written, the end of a gap) and
    ``errors`` (text without a timestamp: the kubelet's error messages, reported and never archived).
    """

    def __init__(self, anchor: Optional[_Anchor], last: Optional[_Anchor], write: Callable[[memoryview], None], *,
                 strip: bool, before_long_line: Callable[["_LineFilter"], None], young_ns: Optional[int] = None):
        self.anchor = anchor
        self.found = anchor is None
        self.last = last
        self.first_ns: Optional[int] = None
        self.errors: List[str] = []
        self._write = write
        self._strip = strip
        self._before_long_line = before_long_line
        self._young_ns = young_ns  # a first line written stamped at or after this raises _Young
        self._limit = anchor.ns + _RACE_NS if anchor is not None else 0
        self.seen_ns: Optional[int] = None  # while searching: the time of the first line served
        self._later = False  # while searching: a line stamped after the anchor's was served
        self._run_ns: Optional[int] = None  # while searching: the time of the run of equal times so far
        self._run = 0
        self.open: Optional[_OpenLine] = None

    # -- complete lines ------------------------------------------------------

    def lines(self, buffer: bytearray, view: memoryview, start: int, end: int) -> None:
        """Handle the complete lines buffer[start:end]."""
        if not self.found:
            start = self._search(buffer, view, start, end)
        while start < end:
            if not _TS_RE.match(buffer, start):
                start = self._error_line(buffer, start, end)
                continue
            good = end
            if not _TS_RE.match(buffer, _last_line_start(buffer, start, end)):  # the body's end: error text
                good = _UNSTAMPED_RE.search(buffer, start, end - 1).end()
            self._write_lines(buffer, view, start, good)
            start = good

    def _search(self, buffer: bytearray, view: memoryview, start: int, end: int) -> int:
        """Drop the lines up to the anchor; return where the lines after it start (``end`` while not found yet)."""
        anchor = self.anchor
        while start < end:
            stop = buffer.index(b"\n", start) + 1
            match = _TS_RE.match(buffer, start)
            if match is None:
                self._error_line(buffer, start, end)
            elif self._searched(_match_ns(match)) and (anchor.crc is None or zlib.crc32(view[start:stop - 1]) == anchor.crc):
                self.found = True
                return stop
            start = stop
        return end

    def _searched(self, ns: int) -> bool:
        """Count one more served line of time ``ns``; True when its place matches the anchor's."""
        if self.seen_ns is None:
            self.seen_ns = ns
        if ns > self.anchor.ns:
            if ns > self._limit:
                raise _AnchorMissing(self.anchor, passed=True, seen_ns=self.seen_ns)
            self._later = True
        if ns == self._run_ns:
            self._run += 1
        else:
            self._run_ns, self._run = ns, 1
        return ns == self.anchor.ns and self._run == self.anchor.run

    def _error_line(self, buffer: bytearray, start: int, end: int) -> int:
        stop = buffer.index(b"\n", start, end) + 1
        self.errors.append(bytes(buffer[start:min(stop, start + 500)]).decode("utf-8", "replace").strip())
        return stop

    def _write_lines(self, buffer: bytearray, view: memoryview, start: int, end: int) -> None:
        if self.first_ns is None:
            self._first(_match_ns(_TS_RE.match(buffer, start)))
        anchor = _tail_anchor(buffer, view, start, end, self.last)
        data = view[start:end]
        self._write(memoryview(_TS_PREFIX_RE.sub(b"", data)) if self._strip else data)
        self.last = anchor

    def _first(self, ns: int) -> None:
        if self._young_ns is not None and ns >= self._young_ns:
            raise _Young()
        self.first_ns = ns

    # -- a line longer than the buffer ---------------------------------------

    def piece(self, buffer: bytearray, view: memoryview, start: int, end: int) -> None:
        """A part of a line without its newline: the first part (``open`` is None) or one after it."""
        line = self.open
        if line is None:
            match = _TS_RE.match(buffer, start)
            if match is None:
                line = self.open = _OpenLine(0, None, False, False, bytearray())
            else:
                ns = _match_ns(match)
                last = self.last
                if self.found:
                    if self.first_ns is None and self._young_ns is not None and ns >= self._young_ns:
                        raise _Young()
                    self._before_long_line(self)  # the file then ends at a complete line if this one is cut
                    run = last.run + 1 if last is not None and last.ns == ns else 1
                    line = self.open = _OpenLine(ns, _Anchor(ns, run, None), True, False)
                else:
                    line = self.open = _OpenLine(ns, None, False, self._searched(ns))
            first = True
        else:
            first = False
        data = view[start:end]
        if line.error is not None:
            line.error += data[:500 - len(line.error)]
        if line.write or line.candidate:
            line.crc = zlib.crc32(data, line.crc)
        if line.write:
            self._write(memoryview(_TS_PREFIX_RE.sub(b"", data)) if self._strip and first else data)

    def end_piece(self, buffer: bytearray, view: memoryview, end: int) -> None:
        """The last part of the open line: view[:end], newline included."""
        line, self.open = self.open, None
        if line.error is not None:
            line.error += view[:min(end - 1, 500 - len(line.error))]
            self.errors.append(line.error.decode("utf-8", "replace").strip())
            return
        if line.write or line.candidate:
            line.crc = zlib.crc32(view[:end - 1], line.crc)
        if line.write:
            self._write(view[:end])
            self.last = line.anchor._replace(crc=line.crc)
            if self.first_ns is None:
                self.first_ns = line.ns  # only now: first_ns says a whole line was written
        elif line.candidate and (self.anchor.crc is None or line.crc == self.anchor.crc):
            self.found = True

    def finish(self) -> None:
        """The answer ended: an anchor not met by now is not in it."""
        if not self.found:
            raise _AnchorMissing(self.anchor, passed=self._later, seen_ns=self.seen_ns)


# ---------------------------------------------------------------------------
# Export: one container
# ---------------------------------------------------------------------------


class _Read(NamedTuple):
    """One request for one instance of a container's log, and what its answer means."""

    previous: bool
    anchor: Optional[_Anchor] = None  # write what follows this line, which the answer should hold
    since_ns: Optional[int] = None  # without an anchor: the lines from this time on (None: all)
    search: bool = False  # the current instance lacking the anchor's line may have restarted after the listing
    young: bool = False  # a first export's instance that may have restarted after the listing: see _plan
    quiet: bool = False  # the anchor comes from the file alone: its line missing is no gap worth reporting
    spent: bool = False  # every instance after the anchor's was read to its end: a later line is a newer one's
    file_line: bool = False  # the anchor is the file's own last line, in an instance no record names

    @property
    def since_time(self) -> Optional[int]:
        return self.anchor.since if self.anchor is not None else self.since_ns


class _Plan(NamedTuple):
    reads: Tuple[_Read, ...]
    lost: int = 0  # instances that restarted away between runs (unless the first read finds its anchor)


def _plan(c: _Container, record: Optional[Mapping[str, Any]], file_anchor: Optional[_Anchor], *,
          since_ns: Optional[int], use_state: bool, own_tail: bool = False) -> _Plan:
    plan = _instances_to_read(c, record, file_anchor, since_ns=since_ns, use_state=use_state, own_tail=own_tail)
    if c.state == "waiting" and plan.reads[0].previous:
        # Waiting to restart (CrashLoopBackOff), the kubelet serves the last instance that ended for the current
        # log as well as for previous=true (validateContainerLogStatus): it is read once.
        return plan._replace(reads=plan.reads[:1])
    return plan


def _instances_to_read(c: _Container, record: Optional[Mapping[str, Any]], file_anchor: Optional[_Anchor], *,
                       since_ns: Optional[int], use_state: bool, own_tail: bool = False) -> _Plan:
    """Which instances of a container to read, and from where.

    ``record`` is the state's record of the container (None on its first export); ``file_anchor`` the last line of
    its file when the file holds lines the record does not describe (a run that died before saving, a lost state,
    a pod of the same name before this one), and ``own_tail`` when the file says that line is this container's.
    A record's line is in the instance ``instance`` (a restartCount),
    or, when not ``held``, in one before it, ``instance`` having been read to its end since.
    """
    if file_anchor is not None:  # whichever instance holds it, the current one is asked first
        return _Plan((_Read(False, anchor=file_anchor, search=True, quiet=record is None and not own_tail,
                            file_line=True),))
    anchor = _Anchor.from_record(record) if record is not None else None
    if anchor is None:  # a first export: every line the API still has, the previous instance's first
        if use_state and c.has_previous:  # the current log starting late tells of a restart after the listing
            return _Plan((_Read(True, since_ns=since_ns), _Read(False, since_ns=since_ns, young=True)))
        if not use_state or c.state != "running" or not c.may_restart:
            return _Plan((_Read(False, since_ns=since_ns),))
        # A restart after the listing would make the listed instance "previous".  A container started just before
        # the listing is asked for that first (a quick 400 when there is none); an older one only when its log
        # turns out to start after the listing.
        if c.started_ns >= c.listed_ns - YOUNG_LOG_SECONDS * NS_PER_SECOND or not c.started_ns:
            return _Plan((_Read(True, since_ns=since_ns, young=True), _Read(False, since_ns=since_ns)))
        return _Plan((_Read(False, since_ns=since_ns, young=True),))
    instance, held = int(record.get("instance", record.get("restarts", 0))), bool(record.get("held", True))
    resume = _Read(False, anchor=anchor, search=True) if held else _Read(False, since_ns=anchor.since)
    if c.restarts == instance and not held and c.has_previous:
        # The line is in an instance before the current one, and each after it was read to its end since: the
        # previous instance has nothing new, unless it is the listed current one, made previous by a restart after
        # the listing.  Asking costs a request while the current instance has not written a line.
        return _Plan((_Read(True, anchor=anchor, spent=True), _Read(False, young=True)))
    if c.restarts <= instance:
        return _Plan((resume,))
    # A current instance read whole after the previous one is checked as a first export's is: a restart between
    # the two requests would have made the instance listed current the previous one.
    if c.restarts == instance + 1:  # restarted once since: the rest of the old instance, then the new one whole
        return _Plan((resume._replace(previous=True, search=False), _Read(False, young=True)))
    # The previous instance looks for the line all the same: a restart after an earlier run's listing may have
    # numbered its instance one too low.
    return _Plan((_Read(True, anchor=anchor if held else None), _Read(False, young=True)),
                 lost=c.restarts - instance - 1)


class _Stalled(Exception):
    """No complete line arrived for the read timeout."""


class _DiskError(OSError):
    """Writing the file failed (full, quota, RLIMIT_FSIZE, read-only): never taken for a broken stream."""


class _Outcome:
    """Where one container's export reports what it did: the batch's collector, or one follow-mode turn."""

    interrupted = False

    def exported(self, c: _Container) -> None: ...

    def unchanged(self, c: _Container) -> None: ...

    def skipped(self, c: _Container, reason: str) -> None: ...

    def failed(self, c: _Container, reason: str, status: int = 0) -> None: ...

    def gap(self, c: _Container, reason: str, since: str, until: Optional[str]) -> None: ...

    def wrote(self, count: int, relpath: str) -> None: ...


class _Stream:
    """Follow mode's hold on a container's stream: it can be asked to give its slot away."""

    def __init__(self) -> None:
        self.yield_requested = False
        self.sock: Optional[socket.socket] = None
        self.last_data = time.monotonic()

    def request_yield(self) -> None:
        """End the stream as if it had ended by itself (its lines checkpointed), so another container gets the slot."""
        self.yield_requested = True
        with contextlib.suppress(OSError, AttributeError):
            self.sock.shutdown(socket.SHUT_RDWR)


_buffers = threading.local()


def _worker_buffer() -> bytearray:
    """Each worker's read buffer, reused from container to container (a fresh one costs a 1 MiB memset)."""
    buffer = getattr(_buffers, "block", None)
    if buffer is None:
        buffer = _buffers.block = bytearray(BLOCK_SIZE)
    return buffer


class _Job:
    """Exports one container: the reads of its plan, into its file, with progress checkpointed as it goes.

    ``last`` always names the file's last line, so whatever cuts a stream, the next request resumes after it.
    """

    def __init__(self, client: KubeClient, store: Optional[_State], settings: "_Settings", container: _Container, *,
                 folders: set, stream: Optional[_Stream] = None):
        self.client = client
        self.store = store
        self.settings = settings
        self.folders = folders  # made or checked in this run: one mkdir per folder
        self.c = container
        self.stream = stream  # follow mode: the current instance is streamed until it ends or yields its slot
        self.lock = threading.Lock()  # follow mode: the supervisor checkpoints quiet streams too
        self.output: Optional[_OutputFile] = None
        self.last: Optional[_Anchor] = None
        self.instance = container.restarts  # the instance (restartCount) that holds ``last``...
        self.held = True  # ...or, when False, one before it, that instance having been read to its end
        self.partial = False  # the last answer ended inside a line that is still being written
        self.errors: List[str] = []
        self.line: Optional[_LineFilter] = None  # the answer being read
        self.outcome: Optional[_Outcome] = None  # where the run reports, gaps found on the way included
        self.first_ns: Optional[int] = None  # the time of the first line the last read wrote (a gap's end)
        self.own_tail = False  # a file the state does not describe ends with this container's lines all the same
        self.checkpointed_at = time.monotonic()
        self.successor: Tuple[Optional[int], int] = (None, 0)  # a new pod's creation, when asked: see _replaced

    @property
    def relpath(self) -> str:
        return "%s/%s/%s.log%s" % (self.c.namespace, self.c.pod, self.c.name, ".gz" if self.settings.gzip else "")

    # -- the whole container -------------------------------------------------

    def run(self, outcome: _Outcome) -> None:
        c = self.c
        problem = c.unsafe_name()
        if problem:
            return outcome.failed(c, problem)
        record = self.store.record(c.key) if self.store is not None else None
        if record is not None and record.get("final") and record.get("id") == c.container_id and int(
                record.get("instance", record.get("restarts", -1))) == c.restarts:
            self.store.touch(c.key, time.time())
            return outcome.unchanged(c)
        if not c.state or (c.state == "waiting" and c.restarts == 0 and not c.has_previous):
            return outcome.skipped(c, "waiting to start" + (": " + c.waiting_reason if c.waiting_reason else ""))
        try:
            file_anchor = self._open(record)
        except (OSError, ValueError) as exc:
            if self.output is not None:
                self.output.close(keep=False)
                self.output = None
            return outcome.failed(c, "cannot write %s: %s" % (self.relpath, getattr(exc, "strerror", None) or exc))
        plan = _plan(c, record, file_anchor, since_ns=self.settings.since_ns, use_state=self.store is not None,
                     own_tail=self.own_tail)
        if record is not None and file_anchor is None:  # where the record's line is, until this run writes another
            self.instance = int(record.get("instance", record.get("restarts", c.restarts)))
            self.held = bool(record.get("held", True))
        self.outcome = outcome
        if plan.lost and plan.reads[0].anchor is None:
            self._lost(plan.lost, str(record["ts"]))
        ok = False
        try:
            reason = self._execute(plan)
            if reason is not None:
                outcome.skipped(c, reason)
            else:
                ok = True
        except ApiError as exc:
            outcome.failed(c, exc.message, status=exc.status)
        except _Stopped:
            outcome.interrupted = True
        except OSError as exc:  # the disk: full, quota, RLIMIT_FSIZE, read-only
            self.output.rollback()
            self.output.close(keep=False)
            self.output = None
            return outcome.failed(c, "cannot write %s: %s" % (self.relpath, exc.strerror or exc))
        finally:
            if self.output is not None:
                self._finish(outcome, ok)
        if ok and self.errors:
            outcome.failed(c, "the kubelet reported: %s" % "; ".join(self.errors)[:1000])
        elif ok:
            outcome.exported(c)

    def _execute(self, plan: _Plan) -> Optional[str]:
        """The plan's reads in order, with the detours a restart after the listing calls for."""
        shift, absent_ns = 0, None
        for read in plan.reads:
            asked_ns = time.time_ns()  # the kubelet answers after this: an instance it did not know starts later
            newer_ns = self._newer_than_listed_previous(read, shift)
            try:
                # With an anchor, the check is on the answer's first line, whether or not it holds the anchor
                # (that answer is the instance holding the record's line, whatever the listing said).
                reason = self._read(read, shift, young_ns=newer_ns if newer_ns is not None and read.anchor is None
                                    else absent_ns)
            except _AnchorMissing as exc:
                done, shift, reason = self._after_anchor_missing(plan, read, exc, shift, newer_ns)
                if done:
                    return reason
            except _Young:
                if newer_ns is None:
                    return self._after_young(read, shift, after_previous=self.c.has_previous)
                shift, reason = 1, self._after_restart_since_listing(read)
            if read.previous and read.young:
                if reason is None:
                    shift = 1  # it restarted after the listing: the listed instance was that previous one
                else:  # no previous instance as of now: a current log whose first line is later is a new one's
                    absent_ns = asked_ns - int(CLOCK_SKEW_SECONDS * NS_PER_SECOND)
            if reason is not None and not read.previous:
                return reason
        return None

    def _after_anchor_missing(self, plan: _Plan, read: _Read, exc: _AnchorMissing, shift: int,
                              newer_ns: Optional[int]) -> Tuple[bool, int, Optional[str]]:
        """The answer to ``read`` lacks its anchor's line: the detour, first match wins.  Returns whether the plan
        ends there, the shift for its next reads and the reason the API gave, if any."""
        if read.search:
            return True, shift, self._after_missing_line(read)
        if read.spent:  # a later line: the instance listed current restarted after the listing
            return (False, 1, self._read(_Read(True), shift=1)) if exc.passed else (False, shift, None)
        if newer_ns is not None and exc.seen_ns is not None and exc.seen_ns >= newer_ns:
            return False, 1, self._after_restart_since_listing(read)
        if plan.lost and read.previous and exc.passed:  # as planned: the instances between are gone
            self._lost(plan.lost, _format_ts(read.anchor.ns))
            return False, shift, self._read(_Read(True), shift)
        if read.previous and not exc.passed:
            # No line stamped after the anchor's: rather than the previous instance rotated to a file with nothing
            # in it, the line is in the current instance, numbered as the one before by a restart after an earlier
            # run's listing.  The current one is searched for it (and when it lacks it too, that is the rotation,
            # reported as such).
            return True, shift, self._execute(_Plan((_Read(False, anchor=read.anchor, search=True),)))
        # the instance rotated after the line: what its file holds now is all newer
        return False, shift, self._after_gap(read, _Read(read.previous))

    def _lost(self, count: int, since: str) -> None:
        self.outcome.gap(self.c, "%d instance(s) restarted away between runs; their lines are lost" % count,
                         since=since, until=None)

    def _newer_than_listed_previous(self, read: _Read, shift: int) -> Optional[int]:
        """For a read of the listed previous instance: a time its lines cannot reach, so that an answer starting
        there is a newer instance's; else None."""
        return self._after_listed_previous() if read.previous and not read.young and not shift else None

    def _after_listed_previous(self) -> Optional[int]:
        """A time the listed previous instance's lines cannot reach (it had ended by then); None when unknown."""
        c = self.c
        if c.has_previous and c.previous_ended_ns:
            return c.previous_ended_ns + (1 + EXIT_DRAIN_SECONDS) * NS_PER_SECOND
        return None

    def _after_restart_since_listing(self, read: _Read) -> Optional[str]:
        """``previous=true`` answered with a log that starts after the listed previous instance ended: the container
        restarted after the listing, so that answer is the listed current instance, read now whole, and the listed
        previous one is no longer served."""
        c = self.c
        since_ns = read.anchor.ns if read.anchor is not None else c.previous_started_ns
        since, until = _format_ts(since_ns) if since_ns else "", _format_ts(c.previous_ended_ns)
        self.outcome.gap(c, "the container restarted again before its instance that ended at %s was read; its lines "
                            "%sare lost" % (until, "after %s " % since if read.anchor is not None else ""),
                         since=since, until=until)
        return self._read(_Read(True, since_ns=read.since_ns), shift=1)

    def _after_missing_line(self, read: _Read, shift: int = 0) -> Optional[str]:
        """The current instance lacks the last line written: it restarted after the listing (or after a cut read),
        so that line is in the previous instance now, or the log rotated and the lines between are lost.  (A file's
        own last line may be in the listed previous instance, which its time tells: then the listing had seen the
        restart.)"""
        bound = self._after_listed_previous() if read.file_line else None
        moved = shift + (0 if bound is not None and read.anchor.ns < bound else 1)
        held = self._rest_of_previous(read.anchor, shift=moved)
        if held:  # the new instance is all new
            return self._current_after_previous(moved)
        if held is False:  # the line's instance restarted away too: the previous one is all new, then the current
            self._after_gap(read, _Read(True), moved + 1)
            return self._current_after_previous(moved + 1)
        return self._after_gap(read, _Read(False), shift)

    def _rest_of_previous(self, anchor: _Anchor, *, shift: int) -> Optional[bool]:
        """Whether the previous instance holds ``anchor``'s line (the current one restarted since it was written);
        if so, the lines after it are written.  False when it holds later lines only (the line's instance restarted
        away too), None when nothing after the line's time."""
        first_ns, held = self.first_ns, None
        try:
            if self._read(_Read(True, anchor=anchor), shift=shift) is None:
                return True
        except _AnchorMissing as exc:
            held = False if exc.passed else None
        self.first_ns = first_ns  # (that read wrote nothing)
        return held

    def _current_after_previous(self, shift: int) -> Optional[str]:
        """The current instance whole, right after the rest of the previous one: checked as a plan's current read
        is, since another restart in between would make the instance just read the one before the previous."""
        read = _Read(False, young=True)
        try:
            return self._read(read, shift)
        except _Young:
            return self._after_young(read, shift, after_previous=True)

    def _after_young(self, read: _Read, shift: int, *, after_previous: bool) -> Optional[str]:
        """The current log starts after the listing: if a previous instance exists now that was not read before,
        it is the listed current one."""
        if not after_previous or self._previous_moved_on(read, shift):
            if self._read(_Read(True, since_ns=read.since_ns), shift=shift + 1) is None:
                return self._read(_Read(False), shift=shift + 1)
        return self._read(read._replace(young=False), shift)

    def _previous_moved_on(self, read: _Read, shift: int) -> bool:
        """Whether the previous instance is no longer the listed previous one, read just before: that one holds the
        file's last line (or serves nothing, as before); the listed current one has lines after it."""
        try:
            if self.last is not None:
                self._read(_Read(True, anchor=self.last), shift)
            else:
                self._read(_Read(True, since_ns=read.since_ns), shift, young_ns=0)
        except _Young:
            return True
        except _AnchorMissing as exc:
            return exc.passed
        return False

    def _after_gap(self, read: _Read, after: _Read, shift: int = 0) -> Optional[str]:
        """Read ``after`` (the lines the rotated file holds now), then report the gap since the anchor's line
        (unless the anchor is only the file's, which a pod of the same name before this one wrote)."""
        before = self.last
        reason = self._read(after, shift)
        if not read.quiet:
            self._gap(read.anchor.ns, self.first_ns if self.last is not before else None)
        return reason

    def _gap(self, since_ns: int, until_ns: Optional[int]) -> None:
        since = _format_ts(since_ns)
        until = _format_ts(until_ns) if until_ns is not None else None
        cause = "the pod was replaced by another of its name" if self._replaced(until_ns) else "the log rotated"
        self.outcome.gap(self.c, "%s before its lines after %s were exported; lines up to %s may be lost"
                         % (cause, since, until or "now"), since=since, until=until)

    def _replaced(self, until_ns: Optional[int]) -> bool:
        """Whether the lines after a gap (from ``until_ns``; None: none yet) are those of a pod that replaced the
        listed one under its name (a StatefulSet's): log requests go by name, and the new pod's log lacks the anchor
        as a rotated one does.  Only lines later than the listing, and than the last answer that found no other pod,
        can be a new pod's, so only then is the pod listed by name.  That answer only words the gap: nothing it does
        is passed on."""
        c, skew = self.c, CLOCK_SKEW_SECONDS * NS_PER_SECOND
        made_ns, asked_ns = self.successor
        since_ns = c.listed_ns if made_ns is not None else max(c.listed_ns, asked_ns)
        if not c.uid or (until_ns is not None and until_ns < since_ns - skew):
            return False
        if made_ns is None:
            asked_ns = time.time_ns()
            try:
                for pod in self.client.list_pods(c.namespace, field_selector="metadata.name=" + c.pod, page_size=1):
                    meta = _object(pod.get("metadata"))
                    if isinstance(meta.get("uid"), str) and meta["uid"] not in ("", c.uid):
                        self.successor = (_timestamp_or_0(meta.get("creationTimestamp")), asked_ns)
                        break
                else:
                    self.successor = (None, asked_ns)
            except Exception:  # an error, a malformed answer, a stop (which the next request raises again)
                pass
        made_ns = self.successor[0]
        # lines stamped before the new pod was made (whole seconds, another clock) were not its lines
        return made_ns is not None and (until_ns is None or made_ns <= until_ns + skew)

    # -- one instance ----------------------------------------------------------

    def _read(self, read: _Read, shift: int = 0, young_ns: Optional[int] = None) -> Optional[str]:
        """Copy one instance's answer into the file, resuming after cut streams; a reason when the API has no log
        for it.  ``shift`` is 1 once the container is known to have restarted after the listing; a first line
        stamped at or after ``young_ns`` raises _Young (by default, for a young read: the listing's margin)."""
        c = self.c
        instance = c.restarts + shift - (1 if read.previous else 0)
        follow = self.stream is not None and not read.previous and c.state != "terminated"
        finished = read.previous or c.state != "running"  # an ended instance: its last line is whole
        if young_ns is None and read.young and not read.previous:
            young_ns = c.listed_ns - YOUNG_LOG_SECONDS * NS_PER_SECOND
        self.first_ns = None
        failures = stalls = 0
        resumed = False  # the read's anchor is the last line this read wrote before a cut
        gap: List[Optional[int]] = []  # a resumed read whose line rotated away: [since, first line after]
        while True:
            if self.stream is not None and self.stream.yield_requested:
                return None
            try:
                response = self.client.open_log(c.namespace, c.pod, c.name, previous=read.previous,
                                                since_time=read.since_time, follow=follow)
            except ApiError as exc:
                reason = _skip_reason(exc, read.previous)
                if reason is None:
                    raise
                return reason
            if response is None:
                return "no log yet (pod not scheduled)"
            # Only the instance's first line tells whether it started after the listing: once a line is written,
            # a resume's first line is just a later one of the same instance.
            line = self.line = _LineFilter(read.anchor, self.last, self._write, strip=not self.settings.timestamps,
                                           before_long_line=lambda line: self._checkpoint(),
                                           young_ns=young_ns if self.first_ns is None else None)
            try:
                self._copy(response, line, instance, follow=follow, finished=finished)
            except _DiskError:
                self.client.drop_connection()
                self._settle(line, instance, cut=True)
                raise
            except (OSError, http.client.HTTPException, _Stalled) as exc:  # the stream broke (a cut socket too)
                self.client.drop_connection()
                self._settle(line, instance, cut=True)
                if gap and gap[1] is None:
                    gap[1] = line.first_ns
                if self.client.stop_event.is_set():
                    raise _Stopped() from None
                if self.stream is not None and self.stream.yield_requested:
                    return None
                if isinstance(exc, _Stalled):
                    stalls += 1
                    if stalls > 1:
                        raise ApiError(0, "log stream stalled: no complete line for %gs, twice" % self.client.timeout) from None
                elif line.first_ns is not None or (follow and isinstance(exc, socket.timeout)):
                    failures = 0  # it made progress, or a followed container was just quiet
                if failures >= self.client.retries:
                    raise ApiError(0, "log stream kept failing (%s); resumed %d times" % (exc, failures)) from None
                _log.debug("%s: stream broke (%r), resuming after the last complete line", c.label, exc)
                self.client.sleep(self.client.backoff_delay(failures))
                failures += 1
                if line.first_ns is not None:  # go on after the last line written
                    read, resumed = _Read(read.previous, anchor=self.last), True
                continue
            except _AnchorMissing:
                self.client.drop_connection()
                self._settle(line, instance, cut=True)
                if not resumed:
                    raise
                lost = True  # a later line came first
            except BaseException:
                self.client.drop_connection()
                self._settle(line, instance, cut=True)
                raise
            else:
                self._settle(line, instance, cut=False)
                if gap and gap[1] is None:
                    gap[1] = line.first_ns
                if self.stream is not None and self.stream.yield_requested:
                    self.client.drop_connection()  # the rest of the body is not read
                    return None
                lost = resumed and not line.found  # the answer ended first
            if lost:
                # The resume lacks the line written before the cut: the container restarted since, or the log
                # rotated (then what its file holds now is all newer, and the lines between are lost).
                if not read.previous and not gap:
                    return self._after_missing_line(read, shift)
                if gap:
                    self._gap(gap[0], gap[1])
                read, resumed, gap = _Read(read.previous), False, [read.anchor.ns, None]
                continue
            line.finish()
            if gap:
                self._gap(gap[0], gap[1])
            return None

    def _adopt(self, line: _LineFilter, instance: int) -> None:
        """What an answer wrote so far is the file's: its last line, in ``instance`` (so checkpoints record it)."""
        if line.first_ns is not None:
            self.last, self.instance, self.held = line.last, instance, True

    def _settle(self, line: _LineFilter, instance: int, *, cut: bool) -> None:
        """Take over what one answer did: its last line written, its error text, which instance holds the line."""
        if line.open is not None and line.open.write:
            self.output.rollback()  # a long line cut in the middle: the file ends at the last whole line again
        if line.first_ns is not None:
            self.first_ns = self.first_ns if self.first_ns is not None else line.first_ns
            self._adopt(line, instance)
        elif not cut and line.found and instance > self.instance:
            # Read to its end with nothing new: the line is in it when the answer held it, else in an older one.
            self.instance, self.held = instance, line.anchor is not None
        self.errors += line.errors

    def _copy(self, response: http.client.HTTPResponse, line: _LineFilter, instance: int, *, follow: bool,
              finished: bool) -> None:
        """Hand the answer's lines to the filter as they arrive; a line longer than the buffer goes in pieces.

        ``finished``: the instance has exited, so a last line without a newline is whole (the runtime wrote it at
        exit), not one still being written.
        """
        buffer = bytearray(FOLLOW_BLOCK_SIZE) if self.stream is not None else _worker_buffer()
        view = memoryview(buffer)
        self.partial = False
        if follow:
            self.stream.sock = self.client.current_socket()
            self.stream.sock.settimeout(FOLLOW_IDLE_TIMEOUT)
            if self.stream.yield_requested:  # asked while the request was being opened
                return
            filled = self._pump(response, line, buffer, view, instance, follow=True, stall=None)
        else:
            # A whole read is bounded, not each recv: a body trickling a byte at a time trips no socket timeout.
            with self.client.read_deadline() as stall:
                try:
                    filled = self._pump(response, line, buffer, view, instance, follow=False, stall=stall)
                except Exception:
                    if stall.expired:
                        raise _Stalled() from None
                    raise
                if stall.expired:
                    raise _Stalled()
        if self.stream is not None and self.stream.yield_requested:
            return
        self._end_of_body(line, buffer, view, filled, finished)

    def _pump(self, response: http.client.HTTPResponse, line: _LineFilter, buffer: bytearray, view: memoryview,
              instance: int, *, follow: bool, stall: Optional[_Deadline]) -> int:
        """Read the body to its end; return how many bytes after its last newline are left in the buffer."""
        filled = 0  # buffer[:filled] is the start of a line (or a piece of the open one), with no newline
        stop = self.client.stop_event
        stall_at = time.monotonic() + self.client.timeout  # follow mode: a line begun must end within the timeout
        rate = 0.0  # bytes a second of the last read
        while True:
            if stop.is_set():
                raise _Stopped()
            if follow:  # whatever has arrived, so lines reach the disk as they are written
                chunk = response.read1(len(buffer) - filled)
                received = len(chunk)
                view[filled:filled + received] = chunk
            else:
                # A read blocks until its size is in: start small and grow with the rate seen, so that a slow link
                # still hands over complete lines well within the stall deadline.
                size = min(len(buffer) - filled, max(FIRST_READ_BYTES, int(rate * self.client.timeout / 4)))
                began = time.monotonic()
                received = response.readinto(view[filled:filled + size])
                rate = received / max(time.monotonic() - began, 1e-6)
            if not received:
                return filled
            total = filled + received
            end = buffer.rfind(b"\n", filled, total) + 1  # only the new bytes: the rest holds no newline
            if end == 0:
                filled = total
                if filled == len(buffer):
                    with self.lock:
                        line.piece(buffer, view, 0, filled)
                    filled = 0
                if follow and (filled or line.open is not None) and time.monotonic() > stall_at:
                    raise _Stalled()
                continue
            with self.lock:
                self._take(line, buffer, view, end, instance)
            if stall is not None:
                stall.extend()
            stall_at = time.monotonic() + self.client.timeout
            filled = total - end
            if filled:
                view[:filled] = bytes(view[end:total])

    def _take(self, line: _LineFilter, buffer: bytearray, view: memoryview, end: int, instance: int) -> None:
        """The complete lines buffer[:end] (the first one may end a line handed on in pieces)."""
        start = 0
        if line.open is not None:
            start = buffer.index(b"\n") + 1
            line.end_piece(buffer, view, start)
        line.lines(buffer, view, start, end)
        self._adopt(line, instance)  # complete lines only: a long line begins after them, at a checkpoint
        if self.stream is not None:
            self.stream.last_data = time.monotonic()
            self.output.flush()
        if time.monotonic() - self.checkpointed_at >= CHECKPOINT_SECONDS and line.first_ns is not None:
            self._checkpoint()

    def _end_of_body(self, line: _LineFilter, buffer: bytearray, view: memoryview, filled: int,
                     finished: bool) -> None:
        """What is left after the last newline: the last line of an ended instance, the kubelet's error text, or a
        line still being written, which the next request asks for again (``_settle`` drops its pieces)."""
        if not filled and line.open is None:
            return
        if finished:  # the runtime wrote it at exit: whole without its newline
            buffer[filled:filled + 1] = b"\n"
            with self.lock:
                if line.open is not None:
                    line.end_piece(buffer, view, filled + 1)
                else:
                    line.lines(buffer, view, 0, filled + 1)
        elif line.open is None and not _TS_RE.match(buffer, 0):
            line.errors.append(bytes(view[:min(filled, 500)]).decode("utf-8", "replace").strip())
        else:
            self.partial = True
            _log.debug("%s: the last line is still being written; it will be exported next time", self.c.label)

    def _write(self, data: memoryview) -> None:
        try:
            self.output.write(data)
        except OSError as exc:
            raise _DiskError(exc.errno, exc.strerror, exc.filename) from None

    # -- the file --------------------------------------------------------------

    def _open(self, record: Optional[Mapping[str, Any]]) -> Optional[_Anchor]:
        """Open the container's file; return its own last line when the state does not describe the file."""
        settings = self.settings
        directory = _safe_dir(settings.output_dir, self.c.namespace, self.c.pod, made=self.folders)
        path = directory + "/" + self.relpath.rsplit("/", 1)[1]
        output = self.output = _OutputFile(path, compress=settings.gzip, replace=self.store is None)
        if self.store is None:
            return None
        if settings.gzip:
            _finish_salvage(output)
        described = self.store.file_record(self.relpath)
        if described is not None and described.get("ino", output.ino) != output.ino:
            described = None  # another file now has the name (replaced by a --no-state run, moved in by hand)
        if output.size == 0:
            if (record is None or output.created) and self.c.uid:  # (no uid: no pod to tell from another)
                output.claim(self.c.key)  # before its first line
            if not settings.timestamps and described is None:
                # Its lines will carry no timestamp to continue from if this run dies before its checkpoint.
                self.store.register_file(self.relpath, {"size": 0, "ino": output.ino})
            return None
        if described is not None and output.size == described.get("size"):
            anchor = _Anchor.from_record(described)
        elif not settings.timestamps:
            if described is None or output.size < described["size"]:
                raise ValueError("the state file does not describe it, and without timestamps its last line cannot "
                                 "be found; move it away to export it anew")
            output.truncate(described["size"])  # a run that died before its checkpoint: its lines come again
            anchor = _Anchor.from_record(described)
        else:
            # More than the state knows of (a run that died after writing), or nothing known: the file's own last
            # line is where to continue, and only a torn part after it goes.
            start = described if described is not None and output.size > described["size"] else None
            anchor, complete = _recover_anchor(path, compressed=settings.gzip, start=start)
            if settings.gzip and output.size > complete:
                anchor = _salvage_member(output, complete, anchor)
            else:
                output.truncate(complete)
        self.last = anchor  # so a run of equal times goes on counting
        if record is None and self.c.uid:
            self.own_tail = output.claim(self.c.key)
        if anchor is None or (record is not None and _Anchor.from_record(record) == anchor):
            return None  # the container's record names the file's last line: the plan goes by the record
        return anchor

    def _checkpoint(self, *, final: bool = False) -> None:
        """End the lines written so far in the file, then record them in the state: never the other way round."""
        try:
            size = self.output.checkpoint()
        except OSError as exc:
            raise _DiskError(exc.errno, exc.strerror, exc.filename) from None
        self.checkpointed_at = time.monotonic()
        if self.store is not None and self.last is not None:
            anchor = self.last.record()
            entry = dict(anchor, instance=self.instance, held=self.held, id=self.c.container_id, final=final,
                         seen=int(time.time()))
            self.store.commit(self.c.key, entry, self.relpath, dict(anchor, size=size, ino=self.output.ino))

    def checkpoint_if_due(self) -> None:
        """Follow mode: a line, then silence: record it after CHECKPOINT_SECONDS all the same."""
        with self.lock:
            if (self.output is not None and self.stream.last_data > self.checkpointed_at
                    and time.monotonic() - self.checkpointed_at >= CHECKPOINT_SECONDS
                    and (self.line is None or self.line.open is None)):  # never inside a line in pieces
                self._checkpoint()

    def _finish(self, outcome: _Outcome, ok: bool) -> None:
        with self.lock:
            output = self.output
            yielded = self.stream is not None and self.stream.yield_requested
            try:
                self._checkpoint(final=ok and self.c.state == "terminated" and not self.partial and not yielded
                                 and not self.errors)
            except OSError as exc:
                self.output = None
                output.rollback()
                output.close(keep=False)
                return outcome.failed(self.c, "cannot write %s: %s" % (self.relpath, exc.strerror or exc))
            self.output = None
            output.close(keep=ok or not output.replace)
            outcome.wrote(output.bytes_written, self.relpath)


def _skip_reason(exc: ApiError, previous: bool = False) -> Optional[str]:
    """Why a container has no log to export, for the API answers that are not failures.

    Any 400 to previous=true means there is no previous instance to read (the kubelet's wording varies: kwok's
    differs from the kubelet's); for the current instance only the kubelet's known sentences do."""
    if exc.status == 404:
        return "pod deleted"
    if exc.status == 400:
        lowered = exc.message.lower()
        if previous:
            return exc.message
        if "waiting to start" in lowered or "not found" in lowered or "is terminated" in lowered:
            return exc.message
    return None


# ---------------------------------------------------------------------------
# Export: a batch run
# ---------------------------------------------------------------------------


class ExportResult:
    """What a run did. ``failed``, ``skipped`` and ``gaps`` hold {"container", "reason", ...} records."""

    FIELDS = ("output_dir", "pods", "containers", "exported", "unchanged", "bytes_written", "files", "skipped",
              "failed", "gaps", "notes", "planned", "events", "pod_metadata", "removed", "removed_bytes",
              "removed_events", "compressed", "interrupted", "duration_seconds")

    def __init__(self, output_dir: str):
        self.output_dir = output_dir
        self.pods = self.containers = self.exported = self.unchanged = self.bytes_written = 0
        self.files: List[str] = []
        self.skipped: List[Dict[str, Any]] = []
        self.failed: List[Dict[str, Any]] = []
        self.gaps: List[Dict[str, Any]] = []
        self.notes: List[str] = []
        self.planned: List[str] = []
        self.events = 0  # event versions written (--events)
        self.pod_metadata = 0  # pod.json files written (changed or new)
        self.removed: List[str] = []  # by retention: files, then "ns/pod/" folders
        self.removed_bytes = 0
        self.removed_events = 0  # lines dropped from events.jsonl files by retention
        self.compressed: List[str] = []  # finished logs now .log.gz
        self.interrupted = False
        self.duration_seconds = 0.0

    def __repr__(self) -> str:
        return "ExportResult(%s)" % ", ".join("%s=%r" % (name, getattr(self, name)) for name in self.FIELDS)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.interrupted

    @property
    def exit_code(self) -> int:
        if any(f.get("status") in (401, 403) for f in self.failed):
            return EXIT_REFUSED
        return EXIT_OK if self.ok else EXIT_FAILED

    def to_dict(self) -> Dict[str, Any]:
        """The fields, as JSON takes them; lists and their records copied."""
        return {name: [dict(v) if isinstance(v, dict) else v for v in value] if isinstance(value, list) else value
                for name, value in ((name, getattr(self, name)) for name in self.FIELDS)}


class _Collector(_Outcome):
    """Gathers the outcomes of every container of a run, from worker threads, into its ExportResult."""

    def __init__(self, result: ExportResult, progress: Optional[Callable[[ExportResult], None]] = None):
        self.result = result
        self.progress = progress
        self.lock = threading.Lock()
        self.files: set = set()
        self.archive: Optional["_Archive"] = None  # pod metadata, events, retention (see # Archive)

    @property
    def interrupted(self) -> bool:  # type: ignore[override]
        return self.result.interrupted

    @interrupted.setter
    def interrupted(self, value: bool) -> None:
        self.result.interrupted = value

    def _record(self, field: str, c: _Container, reason: str, **extra: Any) -> None:
        with self.lock:
            getattr(self.result, field).append(dict({"container": c.label, "reason": reason}, **extra))
        (_log.error if field == "failed" else _log.info)("%s: %s", c.label, reason)

    def failed(self, c: _Container, reason: str, status: int = 0) -> None:
        self._record("failed", c, reason, status=status)

    def skipped(self, c: _Container, reason: str) -> None:
        self._record("skipped", c, reason)

    def gap(self, c: _Container, reason: str, since: str, until: Optional[str]) -> None:
        self._record("gaps", c, reason, since=since, until=until)

    def exported(self, c: _Container) -> None:
        with self.lock:
            self.result.exported += 1

    def unchanged(self, c: _Container) -> None:
        with self.lock:
            self.result.unchanged += 1

    def wrote(self, count: int, relpath: str) -> None:
        with self.lock:
            self.result.bytes_written += count
            if count and relpath not in self.files:  # a followed file is written by many turns
                self.files.add(relpath)
                self.result.files.append(relpath)

    def done(self) -> None:
        if self.progress is not None:
            self.progress(self.result)


def _own_namespace_instead(exc: ApiError, explicit_all: bool, account_dir: Path, client: KubeClient) -> str:
    """Where to go when listing all namespaces was forbidden and -A was not asked for: the pod's own namespace, or
    on a workstation the context's; else re-raise."""
    own = account_dir / SERVICE_NAMESPACE_FILENAME
    if exc.status != 403 or explicit_all:
        raise exc
    if own.is_file():
        return own.read_bytes().decode("utf-8", "replace").strip()
    if getattr(client, "namespace", None):
        return client.namespace
    raise exc


class _ListingClock:
    """When the listing of the pods being selected was read (its snapshot: continued pages come from it): the
    workers take the pods as they need them, the last maybe many minutes later, and the rules for young containers
    and restarts after the listing count from the listing."""

    __slots__ = ("ns",)

    def __init__(self) -> None:
        self.ns = 0

    def __call__(self) -> None:
        self.ns = time.time_ns()


def _list_pods(client: KubeClient, settings: "_Settings", account_dir: Path, result: ExportResult,
               clock: _ListingClock) -> Iterator[Dict[str, Any]]:
    selectors = {"label_selector": settings.selector, "field_selector": settings.field_selector, "on_snapshot": clock}
    if settings.namespaces:
        for namespace in settings.namespaces:
            yield from client.list_pods(namespace, **selectors)
        return
    pods = client.list_pods(None, **selectors)
    try:
        first = next(pods, None)
    except ApiError as exc:
        namespace = _own_namespace_instead(exc, settings.all_namespaces, account_dir, client)
        result.notes.append("cannot list pods in all namespaces (forbidden); exporting namespace %s only" % namespace)
        yield from client.list_pods(namespace, **selectors)
        return
    if first is not None:
        yield first
        yield from pods


def _select(pods: Iterable[Dict[str, Any]], settings: "_Settings", result: ExportResult,
            clock: _ListingClock) -> Iterator[_Container]:
    """The containers of the pods in this shard, each pod once (a relisted page repeats pods)."""
    seen = set()
    for pod in pods:
        meta = pod.get("metadata") or {}
        uid = meta.get("uid") or ""
        if uid in seen or not settings.in_shard(meta.get("namespace") or "", meta.get("name") or ""):
            continue
        seen.add(uid)
        result.pods += 1
        for container in _containers_of(pod, clock.ns):
            result.containers += 1
            yield container


def _planned_urls(client: KubeClient, store: Optional[_State], settings: "_Settings", c: _Container) -> List[str]:
    """--dry-run: the requests a run would start with, from the state as it is."""
    record = store.record(c.key) if store is not None else None
    plan = _plan(c, record, None, since_ns=settings.since_ns, use_state=settings.use_state)
    return [pod_log_url(client.server, c.namespace, c.pod, c.name, timestamps=True, previous=read.previous,
                        since_time=read.since_time) for read in plan.reads]


def _run_job(job: _Job, collector: _Collector) -> None:
    try:
        job.run(collector)
    except Exception as exc:  # a bug must not take the other containers down with it
        _log.exception("%s: unexpected error", job.c.label)
        collector.failed(job.c, "unexpected error: %r" % exc)
    finally:
        collector.done()


def _export_batch(client: KubeClient, store: Optional[_State], settings: "_Settings", collector: _Collector,
                  stop: threading.Event, account_dir: Path) -> None:
    """Each of ``concurrency`` workers takes the next selected container and exports it, listing the next page
    when it runs out: no queue and no hand-off through the main thread, and flat memory on any cluster."""
    result, clock = collector.result, _ListingClock()
    pods = _list_pods(client, settings, account_dir, result, clock)
    if collector.archive is not None:
        pods = collector.archive.tap(pods)  # pod.json; who is present, for retention
    containers = _select(pods, settings, result, clock)
    if settings.dry_run:
        for c in containers:
            result.planned += _planned_urls(client, store, settings, c)
        return
    folders: set = set()
    take = threading.Lock()
    failure: List[BaseException] = []

    def work() -> None:
        while True:
            with take:  # an ended listing (done, or failed) gives None to every later next()
                if stop.is_set():
                    result.interrupted = True
                    return
                try:
                    c = next(containers, None)
                except BaseException as exc:  # the listing failed: the run ends with it
                    failure.append(exc)
                    stop.set()
                    return
                if c is None:
                    return
            _run_job(_Job(client, store, settings, c, folders=folders), collector)

    workers = [threading.Thread(target=work, name="export-%d" % i, daemon=True) for i in range(settings.concurrency)]
    for worker in workers:
        worker.start()
    for worker in workers:
        while worker.is_alive():
            worker.join(0.2)
            if stop.is_set():
                client.abort()  # unblock workers waiting on a quiet stream
    if failure:
        if isinstance(failure[0], _Stopped):
            result.interrupted = True
        else:
            raise failure[0]


# ---------------------------------------------------------------------------
# Follow
# ---------------------------------------------------------------------------


class _Turn(_Outcome):
    """What one follow-mode turn of a container did; gaps and bytes go straight to the run's collector."""

    def __init__(self, shared: _Collector):
        self.shared = shared
        self.failure: Optional[Dict[str, Any]] = None
        self.skip: Optional[str] = None

    def failed(self, c: _Container, reason: str, status: int = 0) -> None:
        self.failure = {"container": c.label, "reason": reason, "status": status}
        _log.warning("%s: %s (retrying)", c.label, reason)

    def skipped(self, c: _Container, reason: str) -> None:
        self.skip = reason

    def gap(self, c: _Container, reason: str, since: str, until: Optional[str]) -> None:
        self.shared.gap(c, reason, since, until)

    def wrote(self, count: int, relpath: str) -> None:
        self.shared.wrote(count, relpath)


class _FollowTask:
    """A followed container, across the turns that carry its lines."""

    def __init__(self, container: _Container):
        self.container = container
        self.activity = time.monotonic()  # the last data (or its discovery): busier containers go first
        self.job: Optional[_Job] = None
        self.started = 0.0
        self.queued = False
        self.deleted = False
        self.failures = 0
        self.turns = 0  # how often it gave its stream away
        self.refused = False
        self.turn: Optional[_Turn] = None


class _Follower:
    """Follow mode: a watch on the pods feeds containers to ``concurrency`` streaming workers.

    Each turn of a container is the batch export with ``follow=true`` on its current instance, so state, resume
    and dedupe are the same as in batch runs and the two hand over to each other exactly.  With more containers
    than streams, quiet or long-held streams give their slot away in turn.
    """

    def __init__(self, client: KubeClient, store: _State, settings: "_Settings", collector: _Collector,
                 stop: threading.Event):
        self.client = client
        self.store = store
        self.settings = settings
        self.collector = collector
        self.stop = stop
        self.folders: set = set()
        self.lock = threading.Condition()
        self.tasks: Dict[str, _FollowTask] = {}
        self.queue: List[Tuple[int, float, int, str]] = []
        self.delayed: List[Tuple[float, str]] = []
        self.sequence = itertools.count()
        self.warned = False
        self.fatal: Optional[ApiError] = None
        self.busy: set = set()  # labels (so files) being streamed: one stream per file
        self.pods: set = set()  # uids seen, for the summary

    # -- pods in -------------------------------------------------------------

    def update(self, pod: Dict[str, Any], *, deleted: bool = False) -> None:
        meta = pod.get("metadata") or {}
        if not self.settings.in_shard(meta.get("namespace") or "", meta.get("name") or ""):
            return
        if self.collector.archive is not None:
            self.collector.archive.pod(pod)  # pod.json, also with the last state of a deleted pod
        with self.lock:
            self.pods.add(meta.get("uid"))
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
            if not self.warned and len(self.tasks) > self.settings.concurrency:
                self.warned = True
                note = ("more containers match than --concurrency allows streams (%d): quiet streams take turns, "
                        "so their lines arrive later; raise --concurrency to follow all at once"
                        % self.settings.concurrency)
                self.collector.result.notes.append(note)
                _log.warning("%s", note)  # now, not at exit: main() prints a follow run's notes only in --json
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
        for pod in self.client.list_pods(namespace, label_selector=self.settings.selector,
                                         field_selector=self.settings.field_selector, list_meta=meta):
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
                                                        label_selector=self.settings.selector,
                                                        field_selector=self.settings.field_selector):
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
                job = task.job = _Job(self.client, self.store, self.settings, task.container, folders=self.folders,
                                      stream=_Stream())
                task.started = time.monotonic()
            turn = _Turn(self.collector)
            try:
                job.run(turn)
            except Exception as exc:  # a bug must not stop the other streams
                _log.exception("%s: unexpected error", task.container.label)
                turn.failed(task.container, "unexpected error: %r" % exc)
            with self.lock:
                self.busy.discard(label)
                task.job, task.turn = None, turn
                task.activity = max(task.activity, job.stream.last_data)
                self._after(task, job, turn)

    def _after(self, task: _FollowTask, job: _Job, turn: _Turn) -> None:
        c = task.container
        if self.stop.is_set():
            return
        if turn.failure is not None:
            task.failures += 1
            if turn.failure.get("status") in (401, 403) and not task.refused:
                task.refused = True  # reported once; retried with backoff in case the permission is granted
                self.collector.failed(c, turn.failure["reason"], status=turn.failure["status"])
            self._later(task, min(MAX_BACKOFF_SECONDS, self.client.backoff * 2 ** task.failures))
            return
        task.failures = 0
        if job.c is not task.container and not task.deleted:
            self._enqueue(task)  # the pod changed while this turn used its old status: go again with the new
        elif job.stream.yield_requested:
            task.turns += 1
            self._enqueue(task)
        elif task.deleted or turn.skip == "pod deleted":
            del self.tasks[c.key]  # drained
        elif turn.skip is not None or c.state == "terminated":
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
            self.store.save_if_due()
            waiting = len(self.queue)
            if not waiting:
                return
            running = [t for t in self.tasks.values() if t.job is not None and not t.job.stream.yield_requested]
            running.sort(key=lambda t: t.job.stream.last_data)  # the quietest give way first
            for task in running:
                if waiting <= 0:
                    break
                stream = task.job.stream
                if now - stream.last_data >= IDLE_RELEASE_SECONDS or now - task.started >= MAX_HOLD_SECONDS:
                    stream.request_yield()
                    waiting -= 1

    def finish(self) -> None:
        with self.lock:
            result = self.collector.result
            for task in self.tasks.values():
                turn = task.turn
                if turn is None:
                    continue
                if turn.failure is not None and turn.failure.get("status") not in (401, 403):
                    result.failed.append(turn.failure)
                elif turn.skip is not None:
                    self.collector.skipped(task.container, turn.skip)
                else:
                    self.collector.exported(task.container)
            result.containers = len(self.tasks)
            result.pods = len(self.pods)


def _export_follow(client: KubeClient, store: _State, settings: "_Settings", collector: _Collector,
                   stop: threading.Event, account_dir: Path) -> None:
    follower = _Follower(client, store, settings, collector, stop)
    sources: List[Tuple[Optional[str], Optional[str]]] = [(namespace, None) for namespace in settings.namespaces]
    if not sources:
        try:
            sources = [(None, follower.relist(None))]
        except _Stopped:
            return
        except ApiError as exc:
            namespace = _own_namespace_instead(exc, settings.all_namespaces, account_dir, client)
            note = "cannot list pods in all namespaces (forbidden); following namespace %s only" % namespace
            collector.result.notes.append(note)
            _log.warning("%s", note)
            sources = [(namespace, None)]
    threads = [threading.Thread(target=follower.watch, args=source, name="watch", daemon=True) for source in sources]
    threads += [threading.Thread(target=follower.work, name="follow", daemon=True)
                for _ in range(settings.concurrency)]
    if collector.archive is not None:
        threads += collector.archive.event_watchers(client, [namespace for namespace, _ in sources], stop)
    for thread in threads:
        thread.start()
    try:
        while not stop.wait(0.25):
            follower.supervise()
    finally:
        stop.set()
        for thread in threads:
            while thread.is_alive():
                client.abort()  # streams and watches return at once; each turn checkpoints what it wrote
                thread.join(0.1)
        follower.finish()
    if follower.fatal is not None:
        raise follower.fatal


# ---------------------------------------------------------------------------
# Archive: pod metadata, events, retention
# ---------------------------------------------------------------------------

# What an archive of log files needs to stay readable after its pods are gone: each pod's metadata next to its logs
# (OUTPUT/<ns>/<pod>/pod.json), the namespace's Events (OUTPUT/<ns>/events.jsonl, each version of an event once), and
# retention that removes only what belongs to pods that are gone and quiet.  Everything here runs beside the export
# engine: it sees the pods listed, and acts at the end of a batch run whose listing succeeded.

POD_METADATA_FILENAME = "pod.json"
EVENTS_FILENAME = "events.jsonl"
EVENTS_API = "/apis/events.k8s.io/v1"
_EVENTS_RESOURCE = "events.events.k8s.io"
_FALLBACK_RE = re.compile(r"cannot list pods in all namespaces .*namespace (\S+) only")


def _termination(state: Any) -> Optional[Dict[str, Any]]:
    ended = (state or {}).get("terminated") if isinstance(state, dict) else None
    if not ended:
        return None
    return {k: ended[k] for k in ("reason", "exitCode", "signal", "message", "startedAt", "finishedAt")
            if ended.get(k) not in (None, "")}


def _pod_summary(pod: Mapping[str, Any], *, annotations: bool = False) -> Dict[str, Any]:
    """What pod.json keeps of a listed pod: who owned it, where and what it ran, why it restarted.

    Only fields that change with the pod's story (never resourceVersion, conditions' probe times or readiness), so an
    unchanged pod gives the same bytes.  Annotations only when asked: they can hold secrets.
    """
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    containers = []
    for spec_key, status_key, kind in (("initContainers", "initContainerStatuses", "init"),
                                       ("containers", "containerStatuses", "regular"),
                                       ("ephemeralContainers", "ephemeralContainerStatuses", "ephemeral")):
        statuses = {s.get("name"): s for s in status.get(status_key) or ()}
        for container in spec.get(spec_key) or ():
            st = statuses.get(container.get("name")) or {}
            state = st.get("state") or {}
            entry: Dict[str, Any] = {"name": container.get("name"), "kind": kind,
                                     "image": st.get("image") or container.get("image") or "",
                                     "imageID": st.get("imageID") or "", "restartCount": int(st.get("restartCount") or 0),
                                     "state": next(iter(state), "")}
            if "waiting" in state and (state["waiting"] or {}).get("reason"):
                entry["waitingReason"] = state["waiting"]["reason"]
            if "running" in state and (state["running"] or {}).get("startedAt"):
                entry["startedAt"] = state["running"]["startedAt"]
            for key, value in (("terminated", _termination(state)), ("lastTermination", _termination(st.get("lastState")))):
                if value:
                    entry[key] = value
            containers.append(entry)
    summary: Dict[str, Any] = {
        "namespace": meta.get("namespace") or "", "name": meta.get("name") or "", "uid": meta.get("uid") or "",
        "labels": dict(meta.get("labels") or {}),
        "ownerReferences": [{"kind": o.get("kind") or "", "name": o.get("name") or "", "controller": bool(o.get("controller"))}
                            for o in meta.get("ownerReferences") or ()],
        "nodeName": spec.get("nodeName") or "", "serviceAccountName": spec.get("serviceAccountName") or "",
        "phase": status.get("phase") or "", "creationTimestamp": meta.get("creationTimestamp"),
        "startTime": status.get("startTime"), "containers": containers,
    }
    for key, value in (("deletionTimestamp", meta.get("deletionTimestamp")), ("reason", status.get("reason")),
                       ("message", status.get("message"))):
        if value:
            summary[key] = value  # deletion once seen; an eviction's reason and message
    if annotations:
        summary["annotations"] = dict(meta.get("annotations") or {})
    return summary


def _pod_metadata_bytes(pod: Mapping[str, Any], *, annotations: bool = False) -> bytes:
    return (json.dumps(_pod_summary(pod, annotations=annotations), indent=2, sort_keys=True) + "\n").encode()


def _replace_if_changed(path: Path, data: bytes) -> bool:
    """Write ``data`` to ``path`` by rename (0600, never through a symlink) unless it already holds exactly that.

    Not synced here: the caller makes the files of a run durable in one go.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        pass
    else:
        with os.fdopen(fd, "rb") as handle:
            if handle.read(len(data) + 1) == data:
                return False
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return True


def _events_path(namespace: Optional[str]) -> str:
    return EVENTS_API + ("/namespaces/%s/events" % _quote(namespace) if namespace else "/events")


def _list_events(client: KubeClient, namespace: Optional[str], *, page_size: int = PAGE_SIZE,
                 list_meta: Optional[Dict[str, Any]] = None) -> Iterator[List[Dict[str, Any]]]:
    """Pages of Events (events.k8s.io/v1) of ``namespace`` (all when None); after an expired continue token the
    listing starts again (versions already written are not written twice)."""
    return client.list_pages(_events_path(namespace), {"limit": str(page_size)}, resource=_EVENTS_RESOURCE,
                             namespace=namespace or "", list_meta=list_meta)


def _watch_events(client: KubeClient, namespace: Optional[str], resource_version: str,
                  timeout_seconds: Optional[int] = None) -> Iterator[Tuple[str, Dict[str, Any]]]:
    timeout_seconds = timeout_seconds or WATCH_SECONDS
    query = {"watch": "true", "allowWatchBookmarks": "true", "resourceVersion": resource_version,
             "timeoutSeconds": str(timeout_seconds)}
    response = client.request(_events_path(namespace), query, verb="watch", resource=_EVENTS_RESOURCE,
                              namespace=namespace or "")
    client.current_socket().settimeout(timeout_seconds + 30)
    try:
        while True:
            line = response.readline()
            if not line:
                return
            if line.strip():
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    raise ApiError(int(obj.get("code") or 500), str(obj.get("message") or "watch failed"),
                                   verb="watch", resource=_EVENTS_RESOURCE, namespace=namespace or "")
                yield kind, obj
    except BaseException:
        client.drop_connection()
        raise


def _event_line(event: Mapping[str, Any]) -> bytes:
    meta = {k: v for k, v in (event.get("metadata") or {}).items() if k != "managedFields"}
    return json.dumps(dict(event, metadata=meta), separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def _event_version(event: Mapping[str, Any]) -> Tuple[str, str, str]:
    meta = event.get("metadata") or {}
    return str(meta.get("uid") or ""), str(meta.get("resourceVersion") or ""), str(meta.get("namespace") or "")


def _event_time(event: Mapping[str, Any]) -> Optional[float]:
    """When an event (version) last happened, in seconds since the epoch; None when it says nothing parseable."""
    for value in ((event.get("series") or {}).get("lastObservedTime"), event.get("deprecatedLastTimestamp"),
                  event.get("eventTime"), (event.get("metadata") or {}).get("creationTimestamp")):
        if value:
            with contextlib.suppress(ValueError, TypeError):
                return parse_timestamp(str(value)) / NS_PER_SECOND
    return None


def _retention_victims(files: Mapping[str, Tuple[float, int]], present: Iterable[Tuple[str, str]], now: float,
                       retain: float, *, in_scope: Callable[[str, str], bool] = lambda ns, pod: True,
                       protected: Iterable[str] = (), max_bytes: Optional[int] = None) -> List[str]:
    """Which files retention removes.  ``files``: relpath -> (mtime, size) of every file in the output folder.

    Only files of pods gone from the listing (by namespace and name: a pod of the same name continues the same
    files), in scope (the namespaces and shard listed), not written by this run, and not written for ``retain``
    seconds; a pod's pod.json once no log of it is left.  With ``max_bytes``, then the oldest remaining files of
    gone pods, until the folder fits.
    """
    present, protected = set(present), set(protected)
    by_pod: Dict[Tuple[str, str], List[str]] = {}
    for relpath in files:
        parts = relpath.split("/")
        if len(parts) == 3 and (parts[0], parts[1]) not in present and in_scope(parts[0], parts[1]):
            by_pod.setdefault((parts[0], parts[1]), []).append(relpath)
    victims: set = set()
    cutoff = now - retain

    def sweep(pod_files: List[str]) -> None:
        logs = [p for p in pod_files if not p.endswith("/" + POD_METADATA_FILENAME)]
        if all(p in victims for p in logs):
            victims.update(p for p in pod_files if p not in protected and files[p][0] <= cutoff)

    for pod_files in by_pod.values():
        if any(p in protected for p in pod_files):
            continue  # written this run: its pod is not gone after all
        victims.update(p for p in pod_files if not p.endswith("/" + POD_METADATA_FILENAME) and files[p][0] <= cutoff)
        sweep(pod_files)
    if max_bytes is not None:
        total = sum(size for relpath, (_, size) in files.items() if relpath not in victims)
        rest = sorted((files[p][0], p, key) for key, pod_files in by_pod.items()
                      if not any(q in protected for q in pod_files)
                      for p in pod_files if p not in victims and not p.endswith("/" + POD_METADATA_FILENAME))
        for _, relpath, key in rest:
            if total <= max_bytes:
                break
            victims.add(relpath)
            total -= files[relpath][1]
            pod_files = by_pod[key]
            if all(p in victims for p in pod_files if not p.endswith("/" + POD_METADATA_FILENAME)):
                for p in pod_files:  # the pod's last log went: its pod.json with it
                    if p not in victims:
                        victims.add(p)
                        total -= files[p][1]
    return sorted(victims)


class _Archive:
    """The run's archive work: pod.json per listed pod, events, and (batch runs) retention and compression."""

    def __init__(self, settings: "_Settings", store: Optional[_State], result: ExportResult, folders: set):
        self.settings = settings
        self.store = store
        self.result = result
        self.root = settings.output_dir
        self.folders = folders
        self.lock = threading.Lock()
        self.present: set = set()  # (namespace, name) of every pod listed
        self.present_uids: set = set()
        self.written: List[str] = []  # relpaths of pod.json files written, to be made durable
        self.recovered: set = set()  # events files checked against the state this run

    @classmethod
    def create(cls, settings: "_Settings", store: Optional[_State], result: ExportResult) -> Optional["_Archive"]:
        wanted = settings.pod_metadata or settings.events or settings.retain_seconds is not None or settings.compress_finished
        return cls(settings, store, result, set()) if wanted and not settings.dry_run else None

    # -- pods --------------------------------------------------------------------

    def tap(self, pods: Iterable[Dict[str, Any]]) -> Iterator[Dict[str, Any]]:
        for pod in pods:
            self.pod(pod)
            yield pod

    def pod(self, pod: Mapping[str, Any]) -> None:
        meta = pod.get("metadata") or {}
        namespace, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
        with self.lock:
            self.present.add((namespace, name))
            self.present_uids.add(meta.get("uid"))
        if not self.settings.pod_metadata or not self.settings.in_shard(namespace, name):
            return
        if _path_unsafe(namespace) or _path_unsafe(name):
            return  # the export refuses the name too, and says so
        data = _pod_metadata_bytes(pod, annotations=self.settings.pod_annotations)
        try:
            path = Path(_safe_dir(self.root, namespace, name, made=self.folders), POD_METADATA_FILENAME)
            changed = _replace_if_changed(path, data)
        except OSError as exc:
            self._failed("cannot write %s/%s/%s: %s" % (namespace, name, POD_METADATA_FILENAME, exc.strerror or exc))
            return
        if changed:
            with self.lock:
                self.result.pod_metadata += 1
                self.written.append("%s/%s/%s" % (namespace, name, POD_METADATA_FILENAME))

    def _failed(self, reason: str, status: int = 0) -> None:
        _log.error("%s", reason)
        with self.lock:
            self.result.failed.append({"container": "", "status": status, "reason": reason})

    def sync(self) -> None:
        with self.lock:
            written, self.written = self.written, []
        with contextlib.suppress(OSError):
            _make_durable(self.root, written)

    # -- events ------------------------------------------------------------------

    def owns_events(self, namespace: str) -> bool:
        """Each namespace's events file belongs to one shard."""
        return not self.settings.shard_count or self.settings.in_shard(namespace, "")

    def _recover(self, namespace: str) -> None:
        """Lines past what the state recorded (a run that died between the write and the state) count as written;
        a torn last line goes.  A file the state does not know is read whole."""
        relpath = "%s/%s" % (namespace, EVENTS_FILENAME)
        if relpath in self.recovered:
            return
        self.recovered.add(relpath)
        recorded = int(self.store.lookup("event_files", relpath) or 0)
        path = self.root / relpath
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        with os.fdopen(fd, "r+b") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size == recorded:
                return
            start = recorded if size > recorded else 0
            handle.seek(start)
            tail = handle.read()
            complete = tail.rfind(b"\n") + 1
            found = {}
            for line in tail[:complete].splitlines():
                with contextlib.suppress(ValueError, AttributeError):
                    uid, version, ns = _event_version(json.loads(line))
                    if uid:
                        found[uid] = [version, ns or namespace]
            if complete < len(tail):
                handle.truncate(start + complete)
                os.fsync(handle.fileno())

        def record(events: Dict[str, Any], files: Dict[str, Any]) -> None:
            events.update(found)
            files[relpath] = start + complete

        self.store.update_sections(record, "events", "event_files")

    def write_events(self, events: Iterable[Mapping[str, Any]]) -> int:
        """Append the versions not written before, one JSON line each, to their namespace's events.jsonl; make them
        durable, then record them in the state (a crash in between is caught by _recover)."""
        fresh: Dict[str, Dict[str, Tuple[str, Mapping[str, Any]]]] = {}  # namespace -> uid -> (version, event)
        for event in events:
            uid, version, namespace = _event_version(event)
            if uid and _is_kubernetes_name("namespace", namespace) and self.owns_events(namespace):
                self._recover(namespace)
                if (self.store.lookup("events", uid) or [None])[0] != version:
                    fresh.setdefault(namespace, {})[uid] = (version, event)  # the newest version of a page
        count = 0
        for namespace, items in fresh.items():
            relpath = "%s/%s" % (namespace, EVENTS_FILENAME)
            data = b"".join(_event_line(event) for _, event in items.values())
            try:
                folder = Path(_safe_dir(self.root, namespace, made=self.folders))
                fd = os.open(folder / EVENTS_FILENAME, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
                             | os.O_CLOEXEC, 0o600)
                try:
                    _write_all(fd, memoryview(data))
                    os.fsync(fd)
                    size = os.fstat(fd).st_size
                finally:
                    os.close(fd)
            except OSError as exc:
                self._failed("cannot write %s: %s" % (relpath, exc.strerror or exc))
                continue

            def record(known: Dict[str, Any], files: Dict[str, Any]) -> None:
                known.update((uid, [version, namespace]) for uid, (version, _) in items.items())
                files[relpath] = size

            self.store.update_sections(record, "events", "event_files")
            count += len(items)
            with self.lock:
                self.result.events += len(items)
                self.result.bytes_written += len(data)
        return count

    def forget_events(self, scope: Optional[str], listed: set) -> None:
        """After a complete listing: events of the scope that the cluster no longer has (their TTL ran out) are
        dropped from the state; a uid never comes back."""
        def prune(events: Dict[str, Any]) -> None:
            for uid in [u for u, (_, ns) in events.items() if (scope is None or ns == scope) and u not in listed
                        and self.owns_events(ns)]:
                del events[uid]

        self.store.update_sections(prune, "events")

    def export_events(self, client: KubeClient, scope: Optional[str], list_meta: Optional[Dict[str, Any]] = None) -> None:
        listed: set = set()
        for page in _list_events(client, scope, list_meta=list_meta):
            listed.update(_event_version(e)[0] for e in page)
            self.write_events(page)
        self.forget_events(scope, listed)

    def watch_events(self, client: KubeClient, scope: Optional[str], stop: threading.Event) -> None:
        """Follow mode: list, then watch from the list's resourceVersion; after 410, list again."""
        version: Optional[str] = None
        failures = 0
        while not stop.is_set():
            try:
                if version is None:
                    meta: Dict[str, Any] = {}
                    self.export_events(client, scope, list_meta=meta)
                    version = str(meta.get("resourceVersion") or "0")
                for kind, event in _watch_events(client, scope, version):
                    version = str((event.get("metadata") or {}).get("resourceVersion") or version)
                    failures = 0
                    if kind in ("ADDED", "MODIFIED"):
                        self.write_events([event])
                    elif kind == "DELETED":
                        uid = _event_version(event)[0]
                        self.store.update_sections(lambda events: events.pop(uid, None), "events")
            except _Stopped:
                return
            except ApiError as exc:
                if exc.status == 410:
                    version = None
                    continue
                if exc.refused:
                    self._failed("%s: grant %s to this identity (events are not followed)" % (
                        exc.message, exc.missing_permission()), exc.status)
                    return
                _log.warning("watching events failed: %s (retrying)", exc.message)
            except _NETWORK_ERRORS + (ValueError,) as exc:
                _log.debug("event watch broke (%r); resuming from resourceVersion %s", exc, version)
            if stop.is_set():
                return
            with contextlib.suppress(_Stopped):
                client.sleep(client.backoff_delay(min(failures, 6)) if failures else 0.05)
            failures += 1

    def event_watchers(self, client: KubeClient, scopes: Sequence[Optional[str]], stop: threading.Event) -> List[threading.Thread]:
        if not self.settings.events:
            return []
        return [threading.Thread(target=self.watch_events, args=(client, scope, stop), name="events", daemon=True)
                for scope in scopes]

    # -- the end of a batch run ----------------------------------------------------

    def scopes(self) -> List[Optional[str]]:
        """The namespaces the listing covered: those asked for, else all, else the one a forbidden listing fell to."""
        if self.settings.namespaces:
            return list(self.settings.namespaces)
        for note in self.result.notes:
            match = _FALLBACK_RE.search(note)
            if match:
                return [match.group(1)]
        return [None]

    def after_run(self, client: KubeClient, collector: "_Collector", stop: threading.Event) -> None:
        """After a batch run whose listing succeeded: events, then retention and compression (never when stopped).
        After follow mode: only make the pod.json files durable."""
        self.sync()
        if self.settings.follow or self.result.interrupted or stop.is_set():
            return
        scopes = self.scopes()
        if self.settings.events:
            for scope in scopes:
                try:
                    self.export_events(client, scope)
                except ApiError as exc:
                    hint = ": grant %s to this identity" % exc.missing_permission() if exc.refused else ""
                    self._failed("cannot list events: %s%s" % (exc.message, hint), exc.status)
        if self.settings.retain_seconds is not None or self.settings.compress_finished:
            self.clean(scopes, protected=set(collector.files))

    def _scan(self, scopes: Sequence[Optional[str]]) -> Dict[str, Tuple[float, int]]:
        """relpath -> (mtime, size) of the regular files of the namespace and pod folders in scope."""
        files: Dict[str, Tuple[float, int]] = {}
        namespaces = [s for s in scopes if s] if None not in scopes else sorted(os.listdir(self.root))
        for namespace in namespaces:
            if not _is_kubernetes_name("namespace", namespace):
                continue
            with contextlib.suppress(FileNotFoundError, NotADirectoryError), os.scandir(self.root / namespace) as pods:
                for entry in pods:
                    if not entry.is_dir(follow_symlinks=False):
                        continue
                    with os.scandir(entry.path) as items:
                        for item in items:
                            if item.is_file(follow_symlinks=False) and (item.name == POD_METADATA_FILENAME or
                                                                        item.name.endswith((".log", ".log.gz"))):
                                st = item.stat(follow_symlinks=False)
                                files["%s/%s/%s" % (namespace, entry.name, item.name)] = (st.st_mtime, st.st_size)
        return files

    def clean(self, scopes: Sequence[Optional[str]], *, protected: set) -> None:
        settings = self.settings
        files = self._scan(scopes)
        now = settings.clock()

        def in_scope(namespace: str, pod: str) -> bool:
            return settings.in_shard(namespace, pod)

        victims: List[str] = []
        if settings.retain_seconds is not None:
            victims = _retention_victims(files, self.present, now, settings.retain_seconds, in_scope=in_scope,
                                         protected=protected, max_bytes=settings.max_bytes)
        cutoff = now - (settings.retain_seconds if settings.retain_seconds is not None else float("inf"))

        def gone(key: str, entry: Mapping[str, Any]) -> bool:  # containers of gone pods, quiet since the cutoff
            # A record does not name its namespace: only a cluster-wide listing tells that its pod is gone.
            return scopes == [None] and key.split("/", 1)[0] not in self.present_uids and entry.get("seen", 0) <= cutoff
        removed_bytes = 0
        for relpath in victims:
            try:
                os.unlink(self.root / relpath)
            except FileNotFoundError:
                pass
            except OSError as exc:
                self._failed("cannot remove %s: %s" % (relpath, exc.strerror or exc))
                continue
            removed_bytes += files[relpath][1]
            self.result.removed.append(relpath)
        if self.store is not None and settings.retain_seconds is not None:
            self.store.forget(gone, victims)
        self.result.removed_bytes += removed_bytes
        if settings.compress_finished:
            for relpath in sorted(files):
                parts = relpath.split("/")
                if (relpath.endswith(".log") and relpath not in victims and relpath not in protected
                        and (parts[0], parts[1]) not in self.present and in_scope(parts[0], parts[1])):
                    self._compress(relpath)
        # Empty folders of gone pods, then empty namespace folders (not in sharded runs: another shard may be
        # creating a pod folder in one right now).
        pods = {tuple(p.split("/")[:2]) for p in files} | {tuple(p.split("/")[:2]) for p in victims}
        emptied = set()
        for namespace, pod in sorted(pods):
            if (namespace, pod) in self.present or not in_scope(namespace, pod):
                continue
            with contextlib.suppress(OSError):
                os.rmdir(self.root / namespace / pod)
                self.result.removed.append("%s/%s/" % (namespace, pod))
                emptied.add(namespace)
        if settings.retain_seconds is not None:
            emptied |= self._trim_all_events(scopes, cutoff)
        if not settings.shard_count:
            for namespace in sorted(emptied):
                with contextlib.suppress(OSError):
                    os.rmdir(self.root / namespace)
                    self.result.removed.append("%s/" % namespace)
        if self.result.removed:
            with contextlib.suppress(OSError):
                _fsync_dir(self.root)

    def _trim_all_events(self, scopes: Sequence[Optional[str]], cutoff: float) -> set:
        """Drop event lines older than the cutoff from the events files in scope; returns namespaces left empty."""
        namespaces = [s for s in scopes if s] if None not in scopes else sorted(os.listdir(self.root))
        emptied = set()
        for namespace in namespaces:
            if _is_kubernetes_name("namespace", namespace) and self.owns_events(namespace):
                try:
                    if self._trim_events(namespace, cutoff):
                        emptied.add(namespace)
                except OSError as exc:
                    self._failed("cannot trim %s/%s: %s" % (namespace, EVENTS_FILENAME, exc.strerror or exc))
        return emptied

    def _trim_events(self, namespace: str, cutoff: float) -> bool:
        """Rewrite <namespace>/events.jsonl without the lines older than ``cutoff`` (atomically, by rename), once
        its first line is older than the cutoff by a tenth of the retention (at most a day): so each line is
        rewritten a few times, not every run.  True when no line is left (the file is removed)."""
        relpath = "%s/%s" % (namespace, EVENTS_FILENAME)
        path = self.root / relpath
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            return False
        slack = min(86400.0, self.settings.retain_seconds / 10)
        with os.fdopen(fd, "rb") as source:
            # The oldest of the first lines (one run's listing is in name order, not in time order).
            head = source.read(1 << 16)
            times = []
            for line in head[:head.rfind(b"\n") + 1].splitlines():
                with contextlib.suppress(ValueError, AttributeError):
                    times.append(_event_time(json.loads(line)))
            oldest = min((t for t in times if t is not None), default=None)
            if oldest is None or oldest >= cutoff - slack:
                return False
            source.seek(0)
            tmp = path.with_name(path.name + ".tmp")
            out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            dropped = kept = dropped_bytes = 0
            try:
                with os.fdopen(out, "wb") as target:
                    for line in source:
                        when = None
                        with contextlib.suppress(ValueError, AttributeError):
                            when = _event_time(json.loads(line))
                        if when is not None and when < cutoff or not line.endswith(b"\n"):
                            dropped += 1  # (a torn last line: _recover cuts it too)
                            dropped_bytes += len(line)
                            continue
                        target.write(line)
                        kept += len(line)
                    target.flush()
                    os.fsync(target.fileno())
                if kept:
                    os.replace(tmp, path)
                else:
                    os.unlink(tmp)
                    os.unlink(path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        _fsync_dir(path.parent)

        def record(files: Dict[str, Any]) -> None:
            if kept:
                files[relpath] = kept
            else:
                files.pop(relpath, None)

        self.store.update_sections(record, "event_files")
        self.result.removed_events += dropped
        self.result.removed_bytes += dropped_bytes
        if not kept:
            self.result.removed.append(relpath)
        return not kept

    def _compress(self, relpath: str) -> None:
        """A finished plain log becomes <container>.log.gz (a gzip member), atomically; the state follows it."""
        import gzip
        import shutil

        target = relpath + ".gz"
        if self.store is not None and self.store.file_record(target) is not None:
            return  # a --gzip run's file of the same name: leave both
        source, path = self.root / relpath, self.root / target
        tmp = path.with_name(path.name + ".tmp")
        try:
            fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            with os.fdopen(fd, "rb") as plain:
                out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
                with os.fdopen(out, "wb") as raw:
                    with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=GZIP_LEVEL, mtime=0) as packed:
                        shutil.copyfileobj(plain, packed, BLOCK_SIZE)
                    raw.flush()
                    os.fsync(raw.fileno())
                    st = os.fstat(raw.fileno())
                last_write = os.fstat(plain.fileno()).st_mtime_ns
            os.utime(tmp, ns=(last_write, last_write))  # retention counts from the last line, not from this
            os.replace(tmp, path)
            _fsync_dir(path.parent)
            os.unlink(source)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            self._failed("cannot compress %s: %s" % (relpath, exc.strerror or exc))
            return
        if self.store is not None:
            self.store.rename_file(relpath, target, size=st.st_size, ino=st.st_ino)
        self.result.compressed.append(target)


_SIZE_RE = re.compile(r"(\d+)\s*([KMGT]?)(i?)B?", re.IGNORECASE)


def _parse_size(text: str) -> int:
    """1000, 500M, 50G, 2Ti -> bytes (K/M/G/T are powers of 1000, Ki/Mi/Gi/Ti of 1024, as in Kubernetes)."""
    match = _SIZE_RE.fullmatch(text.strip())
    if not match:
        raise ValueError("not a size: %r (use e.g. 500M, 50G, 2Ti)" % text)
    power = "KMGT".find(match.group(2).upper()) + 1 if match.group(2) else 0
    return int(match.group(1)) * (1024 if match.group(3) else 1000) ** power


def _archive_problem(*, selected: bool, state: bool, follow: bool, gzip: bool, events: bool,
                     retain: Optional[float], max_bytes: Optional[int], compress: bool) -> Optional[str]:
    """What makes the archive settings unusable together, or None."""
    if events and not state:
        return "events are exported exactly once through the state file: events exclude no-state"
    if max_bytes is not None and retain is None:
        return "max-bytes goes with retain: pass --retain too (e.g. --retain 30d --max-bytes 50G)"
    if max_bytes is not None and max_bytes < 1:
        return "max-bytes must be at least 1"
    if retain is not None and retain <= 0:
        return "retain must be a positive duration, e.g. 30d"
    for asked, what in ((retain is not None, "retain"), (compress, "compress-finished")):
        if not asked:
            continue
        if not state or follow:
            return "%s runs at the end of a batch run with a state file: it excludes follow and no-state" % what
        if selected:
            return ("%s needs to know which pods are gone, and a selector hides the others: run it without "
                    "-l/--field-selector" % what)
    if compress and gzip:
        return "compress-finished compresses plain logs; with gzip they are compressed already"
    return None


def _archive_summary(result: ExportResult) -> List[str]:
    extras = []
    if result.events:
        extras.append("%d event(s)" % result.events)
    if result.pod_metadata:
        extras.append("%d pod.json written" % result.pod_metadata)
    files = [p for p in result.removed if not p.endswith("/")]
    if result.removed:
        extras.append("removed %d file(s), %s" % (len(files), _human_bytes(result.removed_bytes)))
    if result.removed_events:
        extras.append("removed %d old event line(s)" % result.removed_events)
    if result.compressed:
        extras.append("compressed %d" % len(result.compressed))
    return extras


# ---------------------------------------------------------------------------
# export_logs: settings and the run
# ---------------------------------------------------------------------------


class _Settings(NamedTuple):
    """What to export and how: validated once, whether from export_logs' arguments or the command line."""

    output_dir: Path
    namespaces: Tuple[str, ...] = ()
    all_namespaces: bool = False
    selector: Optional[str] = None
    field_selector: Optional[str] = None
    since_ns: Optional[int] = None
    shard_index: Optional[int] = None
    shard_count: Optional[int] = None
    gzip: bool = False
    timestamps: bool = True
    use_state: bool = True
    dry_run: bool = False
    follow: bool = False
    concurrency: int = 4
    # The archive (see # Archive): pod.json, events, retention, compression of finished logs.
    pod_metadata: bool = False
    pod_annotations: bool = False
    events: bool = False
    retain_seconds: Optional[float] = None
    max_bytes: Optional[int] = None
    compress_finished: bool = False
    clock: Callable[[], float] = time.time  # retention's "now" (tests pass their own)

    @classmethod
    def create(cls, output_dir: os.PathLike = DEFAULT_OUTPUT_DIR, *, namespaces: Optional[Iterable[str]] = None,
               all_namespaces: bool = False, selector: Optional[str] = None, field_selector: Optional[str] = None,
               since: Optional[float] = None, since_time: Optional[str] = None, shard_index: Optional[int] = None,
               shard_count: Optional[int] = None, gzip: bool = False, timestamps: bool = True, state: bool = True,
               dry_run: bool = False, follow: bool = False, concurrency: int = 4, pod_metadata: bool = False,
               pod_annotations: bool = False, events: bool = False, retain: Optional[float] = None,
               max_bytes: Optional[int] = None, compress_finished: bool = False,
               clock: Callable[[], float] = time.time) -> "_Settings":
        """Raise ConfigError, with what to do, for settings that cannot work together."""
        namespaces = tuple(namespaces or ())
        if concurrency < 1:
            raise ConfigError("concurrency must be at least 1")
        if all_namespaces and namespaces:
            raise ConfigError("-A and -n exclude each other: pass one")
        if since is not None and since_time is not None:
            raise ConfigError("since and since_time exclude each other: pass one")
        since_ns = None
        if since is not None:
            since_ns = time.time_ns() - int(since * NS_PER_SECOND)
        elif since_time is not None:
            try:
                since_ns = parse_timestamp(since_time)
            except ValueError:
                raise ConfigError("since-time %r is not an RFC 3339 time: use e.g. 2026-11-29T10:00:00Z"
                                  % since_time) from None
        if (shard_index is None) != (shard_count is None):
            raise ConfigError("shard index and shard count go together")
        if shard_count is not None and not 0 <= shard_index < shard_count:
            raise ConfigError("shard index %s is outside 0..%d" % (shard_index, shard_count - 1))
        if follow and (dry_run or not state):
            raise ConfigError("follow mode keeps a state: it excludes dry-run and no-state")
        problem = _archive_problem(selected=bool(selector or field_selector), state=state, follow=follow, gzip=gzip,
                                   events=events, retain=retain, max_bytes=max_bytes, compress=compress_finished)
        if problem:
            raise ConfigError(problem)
        return cls(Path(output_dir), namespaces, all_namespaces, selector, field_selector, since_ns, shard_index,
                   shard_count, gzip, timestamps, state, dry_run, follow, concurrency, pod_metadata=pod_metadata,
                   pod_annotations=pod_annotations, events=events, retain_seconds=retain, max_bytes=max_bytes,
                   compress_finished=compress_finished, clock=clock)

    def in_shard(self, namespace: str, pod: str) -> bool:
        # crc32 is stable across runs, machines and Python versions (hash() is salted).
        return not self.shard_count or zlib.crc32(("%s/%s" % (namespace, pod)).encode()) % self.shard_count == self.shard_index

    @property
    def suffix(self) -> str:
        """Each shard of an Indexed Job keeps its own state and lock in the shared folder."""
        return ".shard-%d-of-%d" % (self.shard_index, self.shard_count) if self.shard_count else ""


def _lock_output(path: Path) -> int:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ConfigError("another kubelogexporter run is writing to %s: wait for it to finish" % path.parent) from None
    return fd


def _run(settings: _Settings, client: KubeClient, *, stop: threading.Event, account_dir: Path,
         progress: Optional[Callable[[ExportResult], None]] = None) -> ExportResult:
    started = time.monotonic()
    output = settings.output_dir
    result = ExportResult(output_dir=str(output))
    state_path = output / STATE_FILENAME.replace(".json", settings.suffix + ".json")
    lock_fd = None
    store = None
    try:
        if settings.dry_run:
            store = _State(state_path) if settings.use_state else None  # read only: dry runs save nothing
        else:
            try:
                _make_folders(output)
                lock_fd = _lock_output(output / (LOCK_FILENAME + settings.suffix))
            except OSError as exc:
                raise ConfigError("cannot write to %s (%s): pass a writable --output-dir" % (output, exc.strerror)) from None
            if settings.use_state:
                store = _State(state_path)
        collector = _Collector(result, progress)
        collector.archive = _Archive.create(settings, store, result)
        if settings.follow:
            _export_follow(client, store, settings, collector, stop, account_dir)
        else:
            _export_batch(client, store, settings, collector, stop, account_dir)
        if collector.archive is not None:  # reached only when the listing succeeded
            collector.archive.after_run(client, collector, stop)
    finally:
        try:
            if store is not None and not settings.dry_run:
                store.save(prune_before=time.time() - STATE_FORGET_AFTER)
        except OSError as exc:
            reason = "cannot save the state file %s: %s; the next run continues from the files" % (
                store.path, _os_reason(exc, store.path))
            _log.error("%s", reason)
            result.failed.append({"container": "", "status": 0, "reason": reason})
        finally:
            client.close()
            if lock_fd is not None:
                os.close(lock_fd)
            result.duration_seconds = round(time.monotonic() - started, 3)
    if stop.is_set() and not settings.follow:
        result.interrupted = True
    return result


def export_logs(output_dir: os.PathLike = DEFAULT_OUTPUT_DIR, *, client: Optional[KubeClient] = None,
                server: Optional[str] = None, token_file: Optional[os.PathLike] = None,
                ca_file: Optional[os.PathLike] = None, kubeconfig: Optional[os.PathLike] = None,
                context: Optional[str] = None, insecure_skip_tls_verify: bool = False,
                environ: Optional[Mapping[str, str]] = None, account_dir: os.PathLike = SERVICE_ACCOUNT_DIR,
                retries: int = RETRIES, backoff: float = BACKOFF_SECONDS, timeout: float = HTTP_TIMEOUT,
                stop_event: Optional[threading.Event] = None, progress: Optional[Callable[[ExportResult], None]] = None,
                **options: Any) -> ExportResult:
    """Export the logs of every container of the selected pods into ``output_dir``.

    ``options`` select and shape the export: ``namespaces``, ``all_namespaces``, ``selector``, ``field_selector``,
    ``since`` (seconds) or ``since_time`` (RFC 3339) for the first export of a container (later runs continue
    after the last line exported), ``shard_index``/``shard_count``, ``gzip``, ``timestamps``, ``state``,
    ``dry_run``, ``concurrency`` and ``follow``: stream every selected container as it writes, pods created later
    included, until ``stop_event`` is set (main() sets it on SIGTERM), into the same files and state.
    The archive: ``pod_metadata`` (and ``pod_annotations``) keep each pod's pod.json, ``events`` exports Events,
    ``retain`` (seconds, with ``max_bytes``) removes what gone pods left, ``compress_finished`` gzips their logs.

    Connects with ``client`` or, without one, as the command line does (``server``, ``token_file``, ``ca_file``,
    ``kubeconfig``, ``context``, else the pod's service account or the default kubeconfig: see
    KubeClient.from_environment).
    Raises ConfigError for unusable settings and ApiError when pods cannot be listed; per-container problems are
    reported in the returned ExportResult.
    """
    settings = _Settings.create(output_dir, **options)
    stop = stop_event or (client.stop_event if client is not None else threading.Event())
    if client is None:
        client = KubeClient.from_environment(environ=environ, account_dir=account_dir, server=server,
                                             token_file=token_file, ca_file=ca_file, kubeconfig=kubeconfig,
                                             context=context, insecure_skip_tls_verify=insecure_skip_tls_verify,
                                             retries=retries, backoff=backoff, timeout=timeout, stop_event=stop)
    else:
        client.stop_event = stop
    return _run(settings, client, stop=stop, account_dir=Path(account_dir), progress=progress)


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def _build_parser():
    import argparse

    class Parser(argparse.ArgumentParser):
        def error(self, message: str):  # type: ignore[override]  # one line, as every other error (the usage is in --help)
            self.exit(EXIT_USAGE, "kubelogexporter: error: %s (see --help)\n" % message)

    def positive(text: str) -> int:
        if not text.isdigit() or int(text) < 1:
            raise argparse.ArgumentTypeError("must be a whole number of at least 1, not %r" % text)
        return int(text)

    def index(text: str) -> int:
        if not text.isdigit():
            raise argparse.ArgumentTypeError("must be a whole number of at least 0, not %r" % text)
        return int(text)

    def seconds(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = 0.0
        if not 0 < value < float("inf"):
            raise argparse.ArgumentTypeError("must be a number of seconds more than 0, not %r" % text)
        return value

    def duration(text: str) -> float:
        try:
            return _parse_duration(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    def size(text: str) -> int:
        try:
            return _parse_size(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parser = Parser(
        prog="kubelogexporter",
        description="Export the logs of Kubernetes pods to OUTPUT_DIR/<namespace>/<pod>/<container>.log, "
                    "each line exactly once across runs.  Connects like kubectl: with the current context of "
                    "$KUBECONFIG or ~/.kube/config, or inside a pod with its service account.",
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
    select.add_argument("--since", type=duration, metavar="DURATION", help="first export of a container starts this long ago (90s, 15m, 2h, 1d)")
    select.add_argument("--since-time", metavar="RFC3339", help="first export of a container starts at this time")
    select.add_argument("--shard-index", type=index, metavar="I", help="export shard I of --shard-count (default $JOB_COMPLETION_INDEX)")
    select.add_argument("--shard-count", type=positive, metavar="N", help="split pods into N shards by a stable hash of namespace/name")

    write = parser.add_argument_group("output")
    write.add_argument("-o", "--output-dir", default=DEFAULT_OUTPUT_DIR, metavar="DIR", help="where to write (default ./logs)")
    write.add_argument("--gzip", action="store_true", help="write <container>.log.gz, one gzip member per run")
    write.add_argument("--no-timestamps", dest="timestamps", action="store_false", help="strip the kubelet's timestamp from each line")
    write.add_argument("--no-state", dest="state", action="store_false",
                       help="export complete current logs and replace the files, without a state file")
    write.add_argument("--dry-run", action="store_true", help="print the log URLs that would be fetched, fetch nothing")
    write.add_argument("--follow", action="store_true",
                       help="keep streaming every selected container, new pods included, until SIGTERM")

    archive = parser.add_argument_group("archive")
    archive.add_argument("--pod-metadata", action="store_true",
                         help="keep <namespace>/<pod>/pod.json: owner, node, images, restarts, last termination")
    archive.add_argument("--pod-annotations", action="store_true",
                         help="include annotations in pod.json (off by default: they can hold secrets)")
    archive.add_argument("--events", action="store_true",
                         help="export Events (events.k8s.io/v1) to <namespace>/events.jsonl, each version once; "
                              "follow mode watches them")
    archive.add_argument("--retain", type=duration, metavar="DURATION",
                         help="at the end of a run, remove the files of pods gone and unwritten this long (30d)")
    archive.add_argument("--max-bytes", type=size, metavar="SIZE",
                         help="with --retain: then remove the oldest files of gone pods until the folder fits (50G)")
    archive.add_argument("--compress-finished", action="store_true",
                         help="gzip the plain logs of gone pods to <container>.log.gz")

    connect = parser.add_argument_group("connection")
    connect.add_argument("--kubeconfig", metavar="FILE", help="kubeconfig file (default $KUBECONFIG, else ~/.kube/config; "
                                                              "inside a pod, the service account)")
    connect.add_argument("--context", metavar="NAME", help="kubeconfig context (default its current context)")
    connect.add_argument("--server", metavar="URL", help="API server URL, e.g. http://127.0.0.1:8001 for kubectl proxy "
                                                        "(default the context's, or $KUBERNETES_SERVICE_HOST in a pod)")
    connect.add_argument("--token-file", metavar="FILE", help="bearer token file (default the context's user, or the "
                                                             "service account's)")
    connect.add_argument("--ca-file", metavar="FILE", help="CA certificate file (default the context's cluster's, or "
                                                          "the service account's)")
    connect.add_argument("--insecure-skip-tls-verify", action="store_true", help="do not verify the server's certificate (unsafe)")
    connect.add_argument("--concurrency", type=positive, default=4, metavar="N", help="simultaneous log streams (default 4)")
    connect.add_argument("--timeout", type=seconds, default=HTTP_TIMEOUT, metavar="SECONDS",
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
    extras += _archive_summary(result)
    if result.interrupted:
        extras.append("interrupted")
    return line + ("; " + ", ".join(extras) if extras else "")


def _rbac_hint(namespace: str = "") -> str:
    """A command that grants reading pods and their logs (the built-in view role has both)."""
    binding = "rolebinding log-reader -n %s" % namespace if namespace else "clusterrolebinding log-reader"
    return "e.g. kubectl create %s --clusterrole=view --serviceaccount=NS:NAME, or --user=NAME" % binding


def _refusal_hint(exc: ApiError) -> str:
    if exc.status == 401:
        return "the API server rejected the credentials; check --token-file, or the kubeconfig user with kubectl get pods"
    return "grant %s to this identity, %s" % (exc.missing_permission(), _rbac_hint(exc.namespace))


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

    try:
        settings = _settings_from(args)
    except ConfigError as exc:
        return fail(EXIT_USAGE, str(exc))

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
        client = KubeClient.from_environment(server=args.server, token_file=args.token_file, ca_file=args.ca_file,
                                             kubeconfig=args.kubeconfig, context=args.context,
                                             insecure_skip_tls_verify=args.insecure_skip_tls_verify, stop_event=stop,
                                             timeout=args.timeout)
        result = _run(settings, client, stop=stop, account_dir=Path(SERVICE_ACCOUNT_DIR),
                      progress=progress if live else None)
    except ConfigError as exc:
        return fail(EXIT_USAGE, str(exc))
    except ApiError as exc:
        if exc.refused:
            return fail(EXIT_REFUSED, "%s: %s" % (exc.message, _refusal_hint(exc)))
        return fail(EXIT_FAILED, exc.message)
    finally:
        _log.removeHandler(handler)
        if live:
            sys.stderr.write("\r\033[K")

    _report(args, result, sys.stdout, sys.stderr)
    return result.exit_code


def _settings_from(args: Any) -> _Settings:
    """The settings the parsed command line asks for; ConfigError with what to do."""
    shard_index = args.shard_index
    if shard_index is not None and args.shard_count is None:
        raise ConfigError("--shard-index needs --shard-count")
    for namespace in args.namespaces or ():
        if not _is_kubernetes_name("namespace", namespace):
            raise ConfigError("-n %r is not a namespace name (a DNS label: lowercase letters, digits and '-', at most "
                              "63)" % namespace)
    if args.shard_count is not None and shard_index is None:
        index = os.environ.get(JOB_COMPLETION_INDEX_ENV, "")
        if not index.isdigit():
            raise ConfigError("--shard-count needs --shard-index or $%s (an Indexed Job sets it)"
                              % JOB_COMPLETION_INDEX_ENV)
        shard_index = int(index)
    return _Settings.create(
        args.output_dir, namespaces=args.namespaces, all_namespaces=args.all_namespaces, selector=args.selector,
        field_selector=args.field_selector, since=args.since, since_time=args.since_time, shard_index=shard_index,
        shard_count=args.shard_count, gzip=args.gzip, timestamps=args.timestamps, state=args.state,
        dry_run=args.dry_run, follow=args.follow, concurrency=args.concurrency, pod_metadata=args.pod_metadata,
        pod_annotations=args.pod_annotations, events=args.events, retain=args.retain, max_bytes=args.max_bytes,
        compress_finished=args.compress_finished)


def _report(args: Any, result: ExportResult, out: Any, err: Any) -> None:
    """What a run prints: the URLs of a dry run, the JSON summary, notes, gaps, the summary line, refusals."""
    if args.namespaces and not args.follow and not result.pods and not result.interrupted:
        result.notes.append("no pods %sin namespace %s: check the name with kubectl get namespaces" % (
            "matching the selectors " if args.selector or args.field_selector else "", ", ".join(args.namespaces)))
    if args.dry_run:
        for url in result.planned:
            out.write(url + "\n")
    if args.json:
        out.write(json.dumps(result.to_dict(), indent=None, sort_keys=True) + "\n")
    if not args.quiet:
        for note in result.notes if not args.follow else ():  # follow mode said them as they came
            err.write("kubelogexporter: note: %s\n" % _printable(note))
        for gap in result.gaps:
            err.write("kubelogexporter: warning: %s\n" % _printable("%s: %s" % (gap["container"], gap["reason"])))
        if not args.dry_run:
            err.write("kubelogexporter: %s\n" % _summary_line(result))
    refused = [f for f in result.failed if f.get("status") in (401, 403) and f.get("container")]  # (events: said)
    if refused:
        err.write("kubelogexporter: error: the API refused %d log request(s): grant \"get pods/log\" to this "
                  "identity, %s\n" % (len(refused), _rbac_hint()))


if __name__ == "__main__":
    raise SystemExit(main())
