"""A fake Kubernetes API server for kubelogexporter's tests and benchmarks.

`FakeCluster` holds pods and their container logs in memory; `FakeAPIServer`
serves them over real HTTP(S) the way kube-apiserver (plus the kubelet behind
`pods/log`) does, for what a log exporter and `kubectl get/logs` use:
discovery, pod and namespace get/list (paging, selectors, Table output),
pod logs with PodLogOptions, pod watches (`?watch=true`: replay from a
resourceVersion out of a bounded event history, 410 Expired when compacted,
bookmarks, timeoutSeconds), Status errors, bearer-token and client-certificate auth, RBAC-like
authorization.  `FaultPlan` injects the failures a real cluster produces.

Stdlib only, so benchmarks can use it too.  Logs are kept as pre-rendered
bytes (one "file" per container run, timestamps in the fixed 9-digit form),
so serving a log is a memoryview slice plus big chunked writes: no per-line
Python work on the hot path.  sinceTime/tailLines are byte searches (binary
search on timestamps); only non-monotonic timestamps with sinceTime, and the
first request for the trimmed / no-timestamp forms (then cached per log
version) loop over lines.  Build big benchmark logs with set_log_bytes.
"""
from __future__ import annotations

import base64
import calendar
import hashlib
import inspect
import itertools
import json
import re
import select
import socket
import ssl
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Tuple
from urllib.parse import parse_qs, unquote, urlsplit

NS = 10**9
BASE_TIME_NS = calendar.timegm((2026, 11, 29, 10, 0, 0)) * NS  # first log line's default time

# ---------------------------------------------------------------- timestamps

_RFC3339 = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[Tt](\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(?:[Zz]|([+-])(\d\d):(\d\d))$")


def parse_ts(s) -> int:
    """RFC 3339 (any fraction length, Z or offset) -> int ns since the epoch."""
    if isinstance(s, (bytes, bytearray, memoryview)):
        s = bytes(s).decode("ascii", "replace")
    m = _RFC3339.match(s)
    if not m:
        raise ValueError(f"not an RFC3339 timestamp: {s!r}")
    sec = calendar.timegm(tuple(int(g) for g in m.group(1, 2, 3, 4, 5, 6)))
    if m.group(8):
        off = (int(m.group(9)) * 60 + int(m.group(10))) * 60
        sec += -off if m.group(8) == "+" else off
    return sec * NS + int((m.group(7) or "").ljust(9, "0"))


ts = parse_ts  # the short name tests use: ts("2026-11-29T10:00:00.5Z")


def format_ts(ns: int, fmt: str = "fixed") -> str:
    """'fixed': kubelet's 2006-01-02T15:04:05.000000000Z07:00; 'trimmed': Go's RFC3339Nano."""
    sec, frac = divmod(ns, NS)
    head = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
    if fmt == "fixed":
        return f"{head}.{frac:09d}Z"
    return f"{head}.{frac:09d}".rstrip("0").rstrip(".") + "Z"


def _rfc3339_seconds(ns: int) -> str:  # metav1.Time's wire form
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ns // NS))


def _convert(body: bytes, variant: str) -> bytes:
    """Stored fixed form -> 'trimmed' timestamps or 'plain' (none).  One tight loop
    per line: ~0.5 us/line, 3-4x faster than re.sub, whose per-match cost dominates."""
    if variant == "plain":
        return b"\n".join([ln[ln.find(b" ") + 1:] for ln in body.split(b"\n")])
    if variant != "trimmed":
        return body
    out: List[bytes] = []
    add = out.append
    for ln in body.split(b"\n"):
        if ln[29:31] == b"Z " and ln[19:20] == b".":  # 2026-11-29T10:00:00.120000000Z
            frac = ln[20:29].rstrip(b"0")
            add(ln[:19] + b"." + frac + ln[29:] if frac else ln[:19] + ln[29:])
        else:
            add(ln)
    return b"\n".join(out)


def _ts_at(body: bytes, pos: int) -> Optional[int]:
    sp = body.find(b" ", pos, pos + 64)
    try:
        return parse_ts(body[pos:sp]) if sp > 0 else None
    except ValueError:
        return None


def _tail_start(body: bytes, n: int) -> int:
    """Byte offset where the last `n` lines start (kubelet's tailLines)."""
    end = len(body) - 1 if body.endswith(b"\n") else len(body)
    for _ in range(n):
        i = body.rfind(b"\n", 0, end)
        if i < 0:
            return 0
        end = i
    return end + 1 if n > 0 else len(body)


def _since_start(body: bytes, since: int, lo: int) -> int:
    """First line start >= lo whose timestamp >= since; binary search on the
    raw bytes (timestamps must be non-decreasing), O(log n) parses."""
    hi = len(body)
    while lo < hi:
        mid = (lo + hi) // 2
        i = body.rfind(b"\n", lo, mid)
        s = i + 1 if i >= 0 else lo
        t = _ts_at(body, s)
        if t is None or t >= since:
            hi = s
        else:
            j = body.find(b"\n", s, hi)
            lo = j + 1 if j >= 0 else hi
    return lo


def _select(body: bytes, monotonic: bool, since: Optional[int], tail: Optional[int]):
    """The kubelet's filters: tailLines first, then drop lines older than `since`."""
    start = _tail_start(body, tail) if tail is not None else 0
    if since is None:
        return memoryview(body)[start:]
    if monotonic:
        return memoryview(body)[_since_start(body, since, start):]
    lines = body[start:].split(b"\n")
    last = lines.pop()  # b"" when the body ends with a newline
    def keep_line(ln: bytes) -> bool:
        t = _ts_at(ln, 0)
        return t is None or t >= since
    keep = [ln + b"\n" for ln in lines if keep_line(ln)]
    if last and keep_line(last):
        keep.append(last)
    return b"".join(keep)


# ---------------------------------------------------------------- the cluster model

class _Instance:
    """One run of a container: its log file as bytes, timestamps in fixed form.
    Appends add chunks; body() joins them lazily (once per change)."""

    def __init__(self, container_id: str, started: bool, now: int):
        self.container_id = container_id
        self.started = started
        self.started_at = now
        self.finished_at: Optional[int] = None
        self.exit_code = 0
        self.chunks: List[bytes] = []
        self.size = 0
        self.generation = 0        # bumped by rotation
        self.monotonic = True      # timestamps never go backwards -> binary search works
        self.cache: Dict[str, Tuple[tuple, bytes]] = {}

    def version(self) -> tuple:
        return (self.generation, self.size)

    def body(self) -> bytes:
        if len(self.chunks) > 1:
            self.chunks = [b"".join(self.chunks)]
        return self.chunks[0] if self.chunks else b""

    def after(self, offset: int) -> bytes:
        """Bytes appended after `offset` (for follow), without joining the whole body."""
        out, pos = [], self.size
        for ch in reversed(self.chunks):
            if pos <= offset:
                break
            pos -= len(ch)
            out.append(ch[max(0, offset - pos):])
        return b"".join(reversed(out))

    def add(self, data: bytes) -> None:
        if data:
            self.chunks.append(data)
            self.size += len(data)

    def converted(self, variant: str, body: bytes, version: tuple) -> bytes:
        """`body` (a snapshot taken at `version`) in a given form, cached per version."""
        if variant == "fixed":
            return body
        hit = self.cache.get(variant)
        if hit and hit[0] == version:
            return hit[1]
        out = _convert(body, variant)
        self.cache[variant] = (version, out)
        return out


class Container:
    def __init__(self, pod: "Pod", name: str, kind: str, now: int):
        self.pod, self.name, self.kind = pod, name, kind
        self.image = f"registry.example/{name}:1.0"
        self.restart_count = 0
        self.state = "running"            # running | waiting | terminated
        self.reason = ""
        self.last_ts: Optional[int] = None  # timestamp of the newest line ever written
        self.current = _Instance(self._new_id(), True, now)
        self.previous: Optional[_Instance] = None

    def _new_id(self) -> str:
        seed = f"{self.pod.uid}/{self.name}/{self.restart_count}".encode()
        return "containerd://" + hashlib.sha256(seed).hexdigest()

    def status_json(self) -> dict:
        cur = self.current
        if self.state == "running":
            state = {"running": {"startedAt": _rfc3339_seconds(cur.started_at)}}
        elif self.state == "waiting":
            state = {"waiting": {"reason": self.reason}}
        else:
            state = {"terminated": {"exitCode": cur.exit_code, "reason": self.reason,
                                    "startedAt": _rfc3339_seconds(cur.started_at),
                                    "finishedAt": _rfc3339_seconds(cur.finished_at or cur.started_at),
                                    "containerID": cur.container_id}}
        last = {}
        if self.previous is not None:
            p = self.previous
            last = {"terminated": {"exitCode": p.exit_code, "reason": "Error" if p.exit_code else "Completed",
                                   "startedAt": _rfc3339_seconds(p.started_at),
                                   "finishedAt": _rfc3339_seconds(p.finished_at or p.started_at),
                                   "containerID": p.container_id}}
        out = {"name": self.name, "state": state, "lastState": last,
               "ready": self.state == "running", "restartCount": self.restart_count,
               "image": self.image, "imageID": self.image + "@sha256:" + "0" * 64,
               "started": self.state == "running"}
        cid = cur.container_id if cur.started else (self.previous.container_id if self.previous else None)
        if cid:
            out["containerID"] = cid
        return out


class Pod:
    def __init__(self, namespace, name, uid, labels, node_name, phase, now, restart_policy="Always"):
        self.namespace, self.name, self.uid = namespace, name, uid
        self.restart_policy = restart_policy
        self.labels = dict(labels or {})
        self.node_name = node_name      # None: not scheduled
        self.phase = phase
        self.created = now
        self.resource_version = 0
        self.containers: Dict[str, Container] = {}  # init, regular, ephemeral, in spec order

    def container_names(self) -> List[str]:
        return list(self.containers)

    def field(self, name: str) -> Optional[str]:
        return self.fields().get(name)

    def fields(self) -> Dict[str, str]:
        """Every field a field selector can use, with its current value."""
        return {"metadata.name": self.name, "metadata.namespace": self.namespace,
                "spec.nodeName": self.node_name or "", "status.phase": self.phase,
                "spec.restartPolicy": self.restart_policy, "spec.schedulerName": "default-scheduler",
                "spec.serviceAccountName": "default", "status.podIP": self.pod_ip(),
                "status.nominatedNodeName": ""}

    def pod_ip(self) -> str:
        n = int(hashlib.sha256(self.uid.encode()).hexdigest()[:4], 16)
        return f"10.244.{n >> 8}.{n & 255}" if self.node_name else ""

    def metadata(self) -> dict:
        return {"name": self.name, "namespace": self.namespace, "uid": self.uid,
                "resourceVersion": str(self.resource_version),
                "creationTimestamp": _rfc3339_seconds(self.created), "labels": dict(self.labels)}

    def to_json(self) -> dict:
        spec: dict = {"containers": []}
        status: dict = {"phase": self.phase}
        for c in self.containers.values():
            spec.setdefault(c.kind, []).append({"name": c.name, "image": c.image,
                                                "imagePullPolicy": "IfNotPresent"})
        spec.update(restartPolicy=self.restart_policy, serviceAccountName="default",
                    schedulerName="default-scheduler")
        if self.node_name:
            spec["nodeName"] = self.node_name
            status.update(hostIP="10.0.0.1", podIP=self.pod_ip(), startTime=_rfc3339_seconds(self.created))
            key = {"containers": "containerStatuses", "initContainers": "initContainerStatuses",
                   "ephemeralContainers": "ephemeralContainerStatuses"}
            for c in self.containers.values():
                status.setdefault(key[c.kind], []).append(c.status_json())
            status["conditions"] = [{"type": "PodScheduled", "status": "True"}]
        else:
            status["conditions"] = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]
        return {"kind": "Pod", "apiVersion": "v1", "metadata": self.metadata(), "spec": spec, "status": status}


class _WatchEvent:
    """One pod change in the cluster's watch history: the pod as it was right after
    the change, and the state before it (for selector transitions, like the
    apiserver's watch cache).  `match` / `prev_match`: (namespace, labels, fields)."""
    __slots__ = ("seq", "rv", "type", "obj", "match", "prev_obj", "prev_match", "lines")

    def __init__(self, seq, rv, etype, obj, match, prev_obj, prev_match):
        self.seq, self.rv, self.type, self.obj, self.match = seq, rv, etype, obj, match
        self.prev_obj, self.prev_match = prev_obj, prev_match
        self.lines: Dict[str, bytes] = {}  # encoded event line per sent type (JSON, not Table)


class FakeCluster:
    """Pods, containers and their logs.  One lock guards everything; `changed`
    (a Condition on it) is notified on every mutation, for log follow and watches.

    Every pod change (anything bumping a pod's resourceVersion) is recorded as a
    watch event; the last `watch_history` events are kept (a watch from an older
    resourceVersion gets 410 Expired, like after etcd compaction).  Log appends
    do not change the pod."""

    def __init__(self, clock: Callable[[], int] = time.time_ns, watch_history: int = 10_000):
        self.clock = clock
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self._pods: Dict[Tuple[str, str], Pod] = {}
        self._namespaces: Dict[str, Tuple[str, int, int]] = {}  # name -> (uid, created, rv)
        self._rv = 1000
        self.watch_history = watch_history  # may be changed later; applies from the next event
        self._events: deque = deque()       # of _WatchEvent, oldest first
        self._event_base = 0                # seq of _events[0]
        self._evicted_rv = 0                # rv of the newest dropped event: the oldest RV still watchable
        self._last_state: Dict[Tuple[str, str], Tuple[dict, tuple]] = {}  # pod -> (obj, match) of its last event
        # Kubernetes Events (events.k8s.io/v1), apart from the pod watch history above.
        self.k8s_events: Dict[Tuple[str, str], dict] = {}  # (namespace, name) -> Event object
        self._k8s_event_history: deque = deque(maxlen=10_000)  # (rv, type, namespace, object), oldest first
        self._k8s_event_compacted = 0  # rv of the newest event change dropped: older watches get 410

    # -- helpers (call with the lock held)
    def _bump(self) -> int:
        self._rv += 1
        self.changed.notify_all()
        return self._rv

    def _touch(self, pod: Pod, etype: str = "MODIFIED") -> None:
        pod.resource_version = self._bump()
        self._record(etype, pod)

    def _record(self, etype: str, pod: Pod) -> None:
        """Append a watch event for `pod`'s current state (resourceVersion already bumped)."""
        key = (pod.namespace, pod.name)
        obj = pod.to_json()
        match = (pod.namespace, dict(pod.labels), pod.fields())
        if etype == "DELETED":
            self._last_state.pop(key, None)
            prev_obj, prev_match = obj, match
        else:
            prev_obj, prev_match = self._last_state.get(key, (None, None))
            self._last_state[key] = (obj, match)
        seq = self._event_base + len(self._events)
        self._events.append(_WatchEvent(seq, pod.resource_version, etype, obj, match, prev_obj, prev_match))
        self._trim_history(max(0, self.watch_history))

    def _trim_history(self, keep: int) -> None:
        while len(self._events) > keep:
            self._evicted_rv = self._events.popleft().rv
            self._event_base += 1

    def compact_watch_history(self, keep: int = 0) -> None:
        """Drop all but the newest `keep` watch events now (like etcd compaction):
        watches from a resourceVersion older than what is left get 410 Expired."""
        with self.lock:
            self._trim_history(keep)

    def _events_since(self, rv: int) -> int:
        """seq of the first retained event with resourceVersion > rv (the end if none)."""
        ev = self._events
        lo, hi = 0, len(ev)
        while lo < hi:
            mid = (lo + hi) // 2
            if ev[mid].rv <= rv:
                lo = mid + 1
            else:
                hi = mid
        return self._event_base + lo

    def _container(self, namespace, pod, container) -> Container:
        return self.pod(namespace, pod).containers[container]

    # -- namespaces and pods
    def add_namespace(self, name: str) -> None:
        with self.lock:
            if name not in self._namespaces:
                self._namespaces[name] = (str(uuid.uuid4()), self.clock(), self._bump())

    def namespaces(self) -> List[str]:
        with self.lock:
            return sorted(self._namespaces)

    def add_pod(self, namespace, name, *, containers=("app",), init_containers=(), ephemeral_containers=(),
                uid=None, node_name="node-1", labels=None, phase="Running", scheduled=True,
                restart_policy="Always") -> Pod:
        with self.lock:
            if (namespace, name) in self._pods:
                raise ValueError(f"pod {namespace}/{name} already exists")
            self.add_namespace(namespace)
            now = self.clock()
            pod = Pod(namespace, name, uid or str(uuid.uuid4()), labels,
                      node_name if scheduled else None, phase if scheduled else "Pending", now, restart_policy)
            for kind, names in (("initContainers", init_containers), ("containers", containers),
                                ("ephemeralContainers", ephemeral_containers)):
                for cname in names:
                    if cname in pod.containers:
                        raise ValueError(f"duplicate container name {cname!r}")
                    c = pod.containers[cname] = Container(pod, cname, kind, now)
                    if kind == "initContainers" and pod.phase != "Pending":
                        c.state, c.reason = "terminated", "Completed"   # init containers ran to completion
                    elif pod.phase == "Pending":
                        c.state, c.reason, c.current.started = "waiting", "ContainerCreating", False
            self._pods[(namespace, name)] = pod
            self._touch(pod, "ADDED")
            return pod

    def delete_pod(self, namespace, name) -> None:
        with self.lock:
            pod = self._pods.pop((namespace, name))
            self._touch(pod, "DELETED")  # the watch event carries the last state, new resourceVersion

    def pod(self, namespace, name) -> Pod:
        with self.lock:
            return self._pods[(namespace, name)]

    def pods(self) -> List[Pod]:
        with self.lock:
            return [self._pods[k] for k in sorted(self._pods)]

    def set_phase(self, namespace, name, phase) -> None:
        with self.lock:
            pod = self.pod(namespace, name)
            pod.phase = phase
            self._touch(pod)

    # -- logs
    def append_log(self, namespace, pod, container, lines: Iterable, *, at: Optional[int] = None,
                   step_ns: int = 1_000_000, timestamps: Optional[List[int]] = None) -> List[int]:
        """Append lines (str/bytes, no newline) to the container's current run; returns their timestamps."""
        data = [ln.encode() if isinstance(ln, str) else ln if type(ln) is bytes else bytes(ln) for ln in lines]
        if b"\n" in b"".join(data):
            raise ValueError("a log line must not contain a newline")
        with self.lock:
            c = self._container(namespace, pod, container)
            if timestamps is None:
                first = at if at is not None else BASE_TIME_NS if c.last_ts is None else c.last_ts + step_ns
                stamps = [first + i * step_ns for i in range(len(data))]
            elif len(timestamps) != len(data):
                raise ValueError("timestamps and lines differ in length")
            else:
                stamps = list(timestamps)
            if not stamps:
                return []
            seq = ([c.last_ts] if c.last_ts is not None else []) + stamps
            if step_ns < 0 or timestamps is not None or at is not None:
                if any(b < a for a, b in zip(seq, seq[1:])):
                    c.current.monotonic = False  # sinceTime falls back to a per-line filter
            out: List[bytes] = []
            add, head_sec, head = out.append, None, b""
            for t, text in zip(stamps, data):
                sec = t // NS
                if sec != head_sec:  # strftime once per second of log time
                    head_sec, head = sec, time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(sec)).encode()
                add(b"%s%09dZ %s\n" % (head, t - sec * NS, text))
            c.current.add(b"".join(out))
            c.last_ts = max(stamps[-1], c.last_ts if c.last_ts is not None else stamps[-1])
            self.changed.notify_all()
            return stamps

    def set_log_bytes(self, namespace, pod, container, body: bytes) -> None:
        """Replace the current run's log with a pre-rendered body ("<RFC3339> text\\n"
        lines, non-decreasing timestamps), served as-is with timestamps=true."""
        with self.lock:
            c = self._container(namespace, pod, container)
            inst = c.current
            inst.chunks, inst.size, inst.monotonic = [bytes(body)], len(body), True
            inst.generation += 1
            end = len(body) - 1 if body.endswith(b"\n") else len(body)
            c.last_ts = _ts_at(body, body.rfind(b"\n", 0, end) + 1) if body else c.last_ts
            self.changed.notify_all()

    def log_bytes(self, namespace, pod, container, previous=False) -> bytes:
        """The stored body (fixed timestamps), for assertions."""
        with self.lock:
            c = self._container(namespace, pod, container)
            inst = c.previous if previous else c.current
            return inst.body() if inst else b""

    def restart_container(self, namespace, pod, container, exit_code: int = 1) -> None:
        """The current run ends and becomes the only kept previous one; a new empty run starts."""
        with self.lock:
            c = self._container(namespace, pod, container)
            now = self.clock()
            c.current.finished_at = now
            c.current.exit_code = exit_code
            c.previous = c.current
            c.restart_count += 1
            c.current = _Instance(c._new_id(), True, now)
            c.state, c.reason = "running", ""
            self._touch(c.pod)

    def rotate_log(self, namespace, pod, container) -> None:
        """Log rotation: the current run's lines so far are gone (the kubelet only reads the live file)."""
        with self.lock:
            inst = self._container(namespace, pod, container).current
            inst.chunks, inst.size, inst.monotonic = [], 0, True
            inst.generation += 1
            self.changed.notify_all()

    def set_waiting(self, namespace, pod, container, reason="ContainerCreating") -> None:
        with self.lock:
            c = self._container(namespace, pod, container)
            c.state, c.reason = "waiting", reason
            self._touch(c.pod)

    def start_container(self, namespace, pod, container) -> None:
        with self.lock:
            c = self._container(namespace, pod, container)
            c.state, c.reason = "running", ""
            if not c.current.started:
                c.current.started, c.current.started_at = True, self.clock()
            self._touch(c.pod)

    def terminate_container(self, namespace, pod, container, exit_code=0, reason="Completed") -> None:
        """The container exits and is not restarted (its logs stay readable)."""
        with self.lock:
            c = self._container(namespace, pod, container)
            c.state, c.reason = "terminated", reason
            c.current.finished_at, c.current.exit_code = self.clock(), exit_code
            self._touch(c.pod)

    # -- Kubernetes Events (events.k8s.io/v1)
    def _event_changed(self, etype: str, obj: dict) -> None:
        obj["metadata"]["resourceVersion"] = str(self._bump())
        if len(self._k8s_event_history) == self._k8s_event_history.maxlen:
            self._k8s_event_compacted = self._k8s_event_history[0][0]
        self._k8s_event_history.append((self._rv, etype, obj["metadata"]["namespace"], json.loads(json.dumps(obj))))

    def add_event(self, namespace, *, reason, note="", regarding=None, type="Normal", name=None,
                  action="") -> str:
        """A new Event about pod `regarding` (a name) or nothing; returns its name."""
        with self.lock:
            self.add_namespace(namespace)
            now = self.clock()
            name = name or f"{regarding or namespace}.{uuid.uuid4().hex[:16]}"
            if (namespace, name) in self.k8s_events:
                raise ValueError(f"event {namespace}/{name} already exists")
            obj = {"kind": "Event", "apiVersion": "events.k8s.io/v1",
                   "metadata": {"name": name, "namespace": namespace, "uid": str(uuid.uuid4()),
                                "creationTimestamp": _rfc3339_seconds(now),
                                "managedFields": [{"manager": "kubelet", "operation": "Update"}]},
                   "eventTime": format_ts(now, "fixed")[:-4] + "Z",  # MicroTime
                   "reportingController": "kubelet", "reportingInstance": "node-1",
                   "action": action or reason, "reason": reason, "note": note, "type": type}
            if regarding:
                pod = self._pods.get((namespace, regarding))
                obj["regarding"] = {"kind": "Pod", "namespace": namespace, "name": regarding, "apiVersion": "v1",
                                    "uid": pod.uid if pod else ""}
            self.k8s_events[(namespace, name)] = obj
            self._event_changed("ADDED", obj)
            return name

    def repeat_event(self, namespace, name) -> None:
        """The event happened again: its series count goes up (a new resourceVersion)."""
        with self.lock:
            obj = self.k8s_events[(namespace, name)]
            series = obj.setdefault("series", {"count": 1})
            series["count"] += 1
            series["lastObservedTime"] = format_ts(self.clock(), "fixed")[:-4] + "Z"
            self._event_changed("MODIFIED", obj)

    def delete_event(self, namespace, name) -> None:
        """The event's TTL ran out (one hour by default)."""
        with self.lock:
            obj = self.k8s_events.pop((namespace, name))
            self._event_changed("DELETED", obj)

    def compact_event_history(self) -> None:
        """Event watches from any resourceVersion seen so far get 410 Expired."""
        with self.lock:
            if self._k8s_event_history:
                self._k8s_event_compacted = self._k8s_event_history[-1][0]
            self._k8s_event_history.clear()

    # -- what the API serves (lock held by caller)
    def _namespace_json(self, name) -> dict:
        uid, created, rv = self._namespaces[name]
        return {"kind": "Namespace", "apiVersion": "v1",
                "metadata": {"name": name, "uid": uid, "resourceVersion": str(rv),
                             "creationTimestamp": _rfc3339_seconds(created),
                             "labels": {"kubernetes.io/metadata.name": name}},
                "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}


# ---------------------------------------------------------------- RBAC

def authorizer_from_rbac(objects: Iterable[dict]) -> Callable[..., bool]:
    """authorize(user, verb, resource, subresource, namespace, name=None) implementing
    RBAC for the given Role/ClusterRole/RoleBinding/ClusterRoleBinding dicts (parsed
    YAML; `List` kinds and None documents allowed).  Users: system:serviceaccount:NS:NAME
    (groups system:serviceaccounts[:NS], system:authenticated) or plain names.
    Not implemented: aggregationRule, nonResourceURLs (discovery is always allowed)."""
    flat: List[dict] = []
    for obj in objects:
        if obj and obj.get("kind") == "List":
            flat.extend(o for o in obj.get("items", []) if o)
        elif obj:
            flat.append(obj)
    cluster_roles = {o["metadata"]["name"]: o.get("rules") or [] for o in flat if o["kind"] == "ClusterRole"}
    roles = {(o["metadata"].get("namespace", "default"), o["metadata"]["name"]): o.get("rules") or []
             for o in flat if o["kind"] == "Role"}
    grants = []  # (namespace or None = everywhere, binding namespace, subjects, rules)
    for o in flat:
        if o["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        ref = o["roleRef"]
        if o["kind"] == "ClusterRoleBinding":
            scope = None
            rules = cluster_roles.get(ref["name"], []) if ref["kind"] == "ClusterRole" else []
        else:
            scope = o["metadata"].get("namespace", "default")
            rules = (cluster_roles.get(ref["name"], []) if ref["kind"] == "ClusterRole"
                     else roles.get((scope, ref["name"]), []))
        grants.append((scope, o.get("subjects") or [], rules))

    def groups_of(user: str) -> List[str]:
        if user == "system:anonymous":
            return ["system:unauthenticated"]
        parts = user.split(":")
        if len(parts) == 4 and parts[:2] == ["system", "serviceaccount"]:
            return ["system:serviceaccounts", f"system:serviceaccounts:{parts[2]}", "system:authenticated"]
        return ["system:authenticated"]

    def subject_matches(s: dict, user: str, groups: List[str], scope: Optional[str]) -> bool:
        if s.get("kind") == "ServiceAccount":
            ns = s.get("namespace") or scope
            return user == f"system:serviceaccount:{ns}:{s.get('name')}"
        if s.get("kind") == "User":
            return user == s.get("name")
        if s.get("kind") == "Group":
            return s.get("name") in groups
        return False

    def rule_allows(r: dict, verb, resource, subresource, name, group="") -> bool:
        if not ({"*", verb} & set(r.get("verbs") or [])):
            return False
        if not ({"*", group} & set(r.get("apiGroups") or [])):
            return False
        full = f"{resource}/{subresource}" if subresource else resource
        res = set(r.get("resources") or [])
        if not ("*" in res or full in res or (subresource and f"*/{subresource}" in res)):
            return False
        names = r.get("resourceNames") or []
        return not names or name in names

    def authorize(user, verb, resource, subresource, namespace, name=None, group="") -> bool:
        groups = groups_of(user)
        for scope, subjects, rules in grants:
            if scope is not None and scope != namespace:
                continue
            if any(subject_matches(s, user, groups, scope) for s in subjects) and \
                    any(rule_allows(r, verb, resource, subresource, name, group) for r in rules):
                return True
        return False

    return authorize


# ---------------------------------------------------------------- selectors

class _APIError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: Optional[dict] = None):
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details


def _bad_request(msg: str) -> _APIError:
    return _APIError(400, "BadRequest", msg)


def _split_top(s: str) -> List[str]:
    """Split on commas outside parentheses ("a in (x,y),b" -> 2 terms)."""
    out, depth, cur = [], 0, ""
    for ch in s:
        depth += (ch == "(") - (ch == ")")
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return [t.strip() for t in out if t.strip()]


_LABEL_TERMS = [
    (re.compile(r"^([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)$"), "set"),
    (re.compile(r"^([\w./-]+)\s*(==|=|!=)\s*([\w./-]*)$"), "eq"),
    (re.compile(r"^(!?)([\w./-]+)$"), "exists"),
]


def parse_label_selector(sel: str) -> Callable[[dict], bool]:
    preds = []
    for term in _split_top(sel):
        for rx, kind in _LABEL_TERMS:
            m = rx.match(term)
            if m:
                break
        else:
            raise _bad_request(f"unable to parse requirement: {term}")
        if kind == "set":
            k, op, vals = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",")}
            preds.append(lambda L, k=k, op=op, vals=vals: (L.get(k) in vals) == (op == "in")
                         if k in L else op == "notin")
        elif kind == "eq":
            k, op, v = m.groups()
            preds.append(lambda L, k=k, op=op, v=v: (L.get(k) == v) == (op != "!="))
        else:
            neg, k = m.groups()
            preds.append(lambda L, k=k, neg=neg: (k in L) != bool(neg))
    return lambda labels: all(p(labels) for p in preds)


def parse_field_selector(sel: str, supported: Iterable[str]) -> List[Tuple[str, bool, str]]:
    terms = []
    for term in _split_top(sel):
        m = re.match(r"^([\w.]+)\s*(==|=|!=)\s*(.*)$", term)
        if not m:
            raise _bad_request(f"invalid selector: '{sel}'; can't understand '{term}'")
        if m.group(1) not in supported:
            raise _bad_request(f"field label not supported: {m.group(1)}")
        terms.append((m.group(1), m.group(2) != "!=", m.group(3)))
    return terms


_POD_FIELDS = ("metadata.name", "metadata.namespace", "spec.nodeName", "status.phase", "spec.restartPolicy",
               "spec.schedulerName", "spec.serviceAccountName", "status.podIP", "status.nominatedNodeName")


# ---------------------------------------------------------------- faults

@dataclass
class _Fault:
    kind: str
    times: Optional[int]  # None: forever
    args: dict


class FaultPlan:
    """Scheduled failures, consumed by matching requests (thread-safe).  `times`
    is how many requests a fault hits (default 1; None = every request)."""

    def __init__(self, server: "FakeAPIServer"):
        self._server = server
        self._lock = threading.Lock()
        self._faults: List[_Fault] = []

    def _add(self, kind, times, **args) -> None:
        with self._lock:
            self._faults.append(_Fault(kind, times, args))

    def _take(self, kind: str, pred: Callable[[dict], bool] = lambda a: True) -> List[dict]:
        """Consume one use of every matching fault of this kind."""
        hits = []
        with self._lock:
            for f in list(self._faults):
                if f.kind == kind and pred(f.args):
                    hits.append(f.args)
                    if f.times is not None:
                        f.times -= 1
                        if f.times <= 0:
                            self._faults.remove(f)
        return hits

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    @staticmethod
    def _target(ns=None, pod=None, container=None) -> dict:
        return {"namespace": ns, "pod": pod, "container": container}

    # -- transport / server faults
    def cut_log(self, namespace=None, pod=None, container=None, *, at_byte: int, times=1) -> None:
        """Send `at_byte` body bytes, then drop the connection (mid-chunk, no 0-chunk)."""
        self._add("cut", times, at_byte=at_byte, **self._target(namespace, pod, container))

    def throttle(self, times=1, retry_after=1, path_contains="", kind=None) -> None:
        """429 + Retry-After.  kind "apf": text/plain body like API Priority and Fairness
        (default for get/list); "status": a Status (default for logs)."""
        self._add("throttle", times, retry_after=retry_after, path_contains=path_contains, style=kind)

    def fail(self, status=500, times=1, path_contains="", message=None) -> None:
        self._add("fail", times, status=status, path_contains=path_contains, message=message)

    def kubelet_unreachable(self, times=1, path_contains="") -> None:
        """A log request whose kubelet does not answer: what kube-apiserver then says (500, a Status
        with no reason, Go's dial error), as seen against v1.36 with the kubelet stopped."""
        self._add("unreachable", times, path_contains=path_contains)

    def rbac_not_synced(self, times=1) -> None:
        """Log requests answered 403 Forbidden although RBAC allows them: what kube-apiserver v1.36 does
        after a restart with requests that reach it before its RBAC cache has synced (seen held up to ~3 s,
        then 403 with "...: RBAC: [clusterrole.rbac.authorization.k8s.io "..." not found, ...]")."""
        self._add("rbac_not_synced", times)

    def expire_continue(self, times=1) -> None:
        self._add("expire", times)

    def loop_continue(self, times=None) -> None:
        """A continued pod list answers with the very continue token it was given: a listing without end."""
        self._add("loop_continue", times)

    def answer(self, body: dict, status=200, times=1, path_contains="") -> None:
        """Answer with `body` as JSON, whatever was asked: a server (or a proxy) that sends what no API server does."""
        self._add("answer", times, body=body, status=status, path_contains=path_contains)

    def redirect(self, location, status=301, times=1, path_contains="") -> None:
        """A 3xx with a Location header and a plain-text body, as a proxy or a moved server sends."""
        self._add("redirect", times, location=location, status=status, path_contains=path_contains)

    def hang(self, times=1, path_contains="") -> None:
        """Read the request and never answer it (the connection stays open until the server stops)."""
        self._add("hang", times, path_contains=path_contains)

    def trickle(self, interval, times=1, path_contains="", after_bytes=0) -> None:
        """Send the response's first `after_bytes` bytes at once, then one byte every `interval` seconds."""
        self._add("trickle", times, interval=interval, path_contains=path_contains, after_bytes=after_bytes)

    def cut_watch(self, after_events: int = 0, times=1) -> None:
        """A pod watch drops its connection right after `after_events` event lines
        (any type, bookmarks included): no terminating chunk.  If the watch ends
        before that (timeout, server stop), it is dropped the same way."""
        self._add("cut_watch", times, after_events=after_events)

    def expire_watch(self, times=1) -> None:
        """A pod watch gets a single 410 Expired ERROR event, whatever its resourceVersion."""
        self._add("expire_watch", times)

    def revoke_token(self, token: str) -> None:
        self._server.tokens.pop(token, None)

    # -- log hooks: callback(namespace, pod, container, query)
    def before_log(self, callback, namespace=None, pod=None, container=None, times=1) -> None:
        """Called before the pod is looked up, e.g. to delete or restart it."""
        self._add("before", times, callback=callback, **self._target(namespace, pod, container))

    def mid_log(self, callback, at_byte: int, namespace=None, pod=None, container=None, times=1) -> None:
        """Called once `at_byte` body bytes have been sent; the body then goes on."""
        self._add("mid", times, callback=callback, at_byte=at_byte, **self._target(namespace, pod, container))

    def cut_open_log(self, namespace, pod, container) -> None:
        """The container's open log stream (a follow) is cut in the middle of the next data it sends."""
        with self._server._lock:
            self._server._open_cuts.add((namespace, pod, container))

    def endless_log(self, namespace=None, pod=None, container=None, *, chunk: bytes = b"x" * 65536,
                    interval: float = 0.0, seconds: float = 30.0, times=1) -> None:
        """After the body, send `chunk` again and again, no newline, every `interval` seconds: a line that
        never ends (a progress bar gone wild) or, with a long interval, a trickle.  Stops after `seconds`."""
        self._add("endless", times, chunk=chunk, interval=interval, seconds=seconds,
                  **self._target(namespace, pod, container))

    def log_error_tail(self, namespace, pod, container, text: str, times=1) -> None:
        """After the body, write `text` as-is (the kubelet writes its error string,
        no timestamp, no newline added) and end the body normally."""
        self._add("tail", times, text=text, **self._target(namespace, pod, container))


def _endless(chunk: bytes, interval: float, seconds: float, gone) -> Iterator[bytes]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not gone():
        yield chunk
        if interval:
            time.sleep(interval)


def _matches_target(args: dict, ns, pod, container) -> bool:
    return all(args.get(k) in (None, v) for k, v in (("namespace", ns), ("pod", pod), ("container", container)))


# ---------------------------------------------------------------- the HTTP server

@dataclass
class RequestRecord:
    method: str
    path: str
    query: Dict[str, List[str]]
    headers: Dict[str, str]
    user: Optional[str] = None
    status: int = 0      # set before the response is written
    bytes_sent: int = 0  # body bytes, updated before each write
    done: bool = False   # the server has finished with this request


class _ConnectionCut(Exception):
    pass


class _TrickleWriter:
    """Stands in for a handler's wfile: writes the first `after` bytes, then one byte per `interval`."""

    def __init__(self, raw, interval: float, after: int, stopping: Callable[[], bool]):
        self.raw, self.interval, self.after, self.stopping = raw, interval, after, stopping

    def write(self, data) -> int:
        view = memoryview(data)
        head = min(self.after, len(view))
        if head:
            self.raw.write(view[:head])
            self.after -= head
        for i in range(head, len(view)):
            if self.stopping():
                raise _ConnectionCut()
            time.sleep(self.interval)
            self.raw.write(view[i:i + 1])
        return len(view)

    def flush(self) -> None:
        self.raw.flush()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"   # keep-alive and chunked bodies
    disable_nagle_algorithm = True  # small JSON replies must not wait for delayed ACKs
    server: "_HTTPServer"

    def do_GET(self):
        self.server.api._handle(self)

    def _not_allowed(self):
        self.close_connection = True  # we never read request bodies
        self.server.api._handle(self, allowed=False)

    do_POST = do_PUT = do_PATCH = do_DELETE = _not_allowed

    def log_message(self, format, *args):  # quiet
        pass


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024

    def __init__(self, addr, api: "FakeAPIServer"):
        self.api = api
        if ":" in addr[0]:
            self.address_family = socket.AF_INET6
        super().__init__(addr, _Handler)

    def finish_request(self, request, client_address):
        # TLS handshake here, in the connection's own thread, not in the accept loop.
        with self.api._lock:
            self.api.connections_accepted += 1
        conn = request
        if self.api.ssl_context is not None:
            try:
                request.settimeout(10)
                conn = self.api.ssl_context.wrap_socket(request, server_side=True)
                conn.settimeout(None)
            except (OSError, ssl.SSLError):
                return
        self.api._track(conn, True)
        try:
            _Handler(conn, client_address, self)
        except (OSError, ssl.SSLError):
            pass
        finally:
            self.api._track(conn, False)
            try:
                conn.close()
            except OSError:
                pass


_DISCOVERY_V1 = {
    "kind": "APIResourceList", "groupVersion": "v1",
    "resources": [
        {"name": "namespaces", "singularName": "namespace", "namespaced": False, "kind": "Namespace",
         "verbs": ["get", "list"], "shortNames": ["ns"]},
        {"name": "pods", "singularName": "pod", "namespaced": True, "kind": "Pod",
         "verbs": ["get", "list", "watch"], "shortNames": ["po"], "categories": ["all"]},
        {"name": "pods/log", "singularName": "", "namespaced": True, "kind": "Pod", "verbs": ["get"]},
    ],
}



_EMPTY_LISTS = {  # (group/version, resource) -> kind, for kubectl cluster-info dump
    ("v1", "nodes"): "Node", ("v1", "events"): "Event", ("v1", "services"): "Service",
    ("v1", "replicationcontrollers"): "ReplicationController", ("apps/v1", "daemonsets"): "DaemonSet",
    ("apps/v1", "deployments"): "Deployment", ("apps/v1", "replicasets"): "ReplicaSet",
}


def _empty_list_kind(parts: List[str]) -> Optional[Tuple[str, str, str, str]]:
    """(group/version, kind, resource, namespace) when `parts` lists one of _EMPTY_LISTS."""
    if parts[:2] == ["api", "v1"]:
        gv, rest = "v1", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        gv, rest = "/".join(parts[1:3]), parts[3:]
    else:
        return None
    ns = ""
    if len(rest) == 3 and rest[0] == "namespaces":
        ns, rest = rest[1], rest[2:]
    kind = _EMPTY_LISTS.get((gv, rest[0])) if len(rest) == 1 and not (ns and rest[0] == "nodes") else None
    return (gv, kind, rest[0], ns) if kind else None


class FakeAPIServer:
    """See the module docstring.  `tokens` maps bearer token -> user name (no tokens and
    require_auth False = no auth);
    `authorize(user, verb, resource, subresource, namespace[, name=])` -> bool.
    Watches: `bookmark_interval` seconds between BOOKMARK events (allowWatchBookmarks);
    `watch_liveness_interval` how often an idle watch checks that its client is still
    connected (None: never); `active_watches` / `max_active_watches` count them."""

    def __init__(self, cluster: FakeCluster, *, ssl_context: Optional[ssl.SSLContext] = None,
                 host="127.0.0.1", port=0, ts_format="fixed", chunk_size=65536,
                 tokens: Optional[Dict[str, str]] = None, authorize=None,
                 bookmark_interval: float = 1.0):
        if ts_format not in ("fixed", "trimmed"):
            raise ValueError("ts_format must be 'fixed' or 'trimmed'")
        self.cluster = cluster
        self.ssl_context = ssl_context
        self.ts_format = ts_format
        self.chunk_size = chunk_size
        self.tokens: Dict[str, str] = dict(tokens or {})
        # Auth stays on once tokens were given, so revoking the last token gives 401s.
        self.require_auth = bool(self.tokens)
        # Without an authorizer every user may do everything, except that with auth on, as RBAC, nobody grants
        # system:anonymous anything.
        self.authorize: Callable[..., bool] = authorize or (
            lambda user, *a, **k: user != "system:anonymous" or not (self.tokens or self.require_auth))
        self.requests: List[RequestRecord] = []
        self.errors: List[BaseException] = []  # unexpected exceptions while serving
        self.faults = FaultPlan(self)
        self.active_log_streams = 0
        self.connections_accepted = 0  # TCP connections (keep-alive reuse keeps this low)
        self.max_active_log_streams = 0
        self._open_cuts: set = set()  # (namespace, pod, container) whose open stream is cut at its next data
        self.bookmark_interval = bookmark_interval
        self.watch_liveness_interval: Optional[float] = 1.0
        self.active_watches = 0
        self.max_active_watches = 0
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._snapshots: dict = {}  # a paged list's matching items as of its first page: (query, rv) -> [(key, obj)]
        self._conns: set = set()
        self._stopping = False
        self._thread: Optional[threading.Thread] = None
        self._httpd = _HTTPServer((host, port), self)
        h, p = self._httpd.server_address[:2]
        self.host, self.port = h, p
        scheme = "https" if ssl_context else "http"
        self.url = f"{scheme}://[{h}]:{p}" if ":" in h else f"{scheme}://{h}:{p}"

    # -- lifecycle
    def start(self) -> "FakeAPIServer":
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fakeapi", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping = True
        with self.cluster.changed:
            self.cluster.changed.notify_all()  # wake followers and watches
        with self._idle:  # let watches write their terminating chunk before connections go
            self._idle.wait_for(lambda: self.active_watches == 0, 2.0)
        if self._thread:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.server_close()
        with self._lock:
            conns = list(self._conns)
        for c in conns:  # keep-alive connections would otherwise linger in their threads
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _track(self, conn, add: bool) -> None:
        with self._lock:
            (self._conns.add if add else self._conns.discard)(conn)

    def log_requests(self) -> List[RequestRecord]:
        with self._lock:
            return [r for r in self.requests if r.path.endswith("/log")]

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until every request seen so far is done (a client may have read the
        last byte before the server's bookkeeping finished)."""
        with self._idle:
            return self._idle.wait_for(
                lambda: self.active_log_streams == 0 and all(r.done for r in self.requests), timeout)

    # -- request plumbing
    def _handle(self, h: _Handler, allowed=True) -> None:
        url = urlsplit(h.path)
        rec = RequestRecord(h.command, url.path, parse_qs(url.query, keep_blank_values=True), dict(h.headers))
        with self._lock:  # recorded on arrival, in arrival order
            self.requests.append(rec)
        wfile = h.wfile
        for a in self.faults._take("trickle", lambda a: a["path_contains"] in h.path):
            h.wfile = _TrickleWriter(wfile, a["interval"], a["after_bytes"], lambda: self._stopping)
        try:
            try:
                if not allowed:
                    raise _APIError(405, "MethodNotAllowed", f"{h.command} is not supported by the fake API server")
                self._route(h, rec, url.path, rec.query)
            except _APIError as e:
                self._send_status(h, rec, e.code, e.reason, e.message, e.details)
        except _ConnectionCut:
            h.close_connection = True
            try:
                h.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        except (OSError, ssl.SSLError):  # client went away
            h.close_connection = True
        except Exception as e:  # a bug here or in a test's hook: record it, answer 500 if still possible
            with self._lock:
                self.errors.append(e)
            h.close_connection = True
            if rec.status == 0:
                try:
                    self._send_status(h, rec, 500, "InternalError", f"Internal error occurred: {e!r}")
                except OSError:
                    pass
        finally:
            h.wfile = wfile
            with self._idle:
                rec.done = True
                self._idle.notify_all()

    def _send(self, h, rec, code: int, body: bytes = b"", ctype="application/json", headers=()) -> None:
        head = [f"HTTP/1.1 {code} {HTTPStatus(code).phrase}", f"Date: {h.date_time_string()}",
                "Cache-Control: no-cache, private"]
        if code != 204:
            head += [f"Content-Type: {ctype}", f"Content-Length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in headers]
        rec.status, rec.bytes_sent = code, len(body)
        h.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)

    def _send_json(self, h, rec, obj, code=200) -> None:
        self._send(h, rec, code, json.dumps(obj, separators=(",", ":")).encode())

    def _send_status(self, h, rec, code, reason, message, details=None, headers=()) -> None:
        obj = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": message, "reason": reason}
        if details:
            obj["details"] = details
        obj["code"] = code
        self._send(h, rec, code, json.dumps(obj, separators=(",", ":")).encode(), headers=headers)

    def _authenticate(self, h) -> str:
        if not (self.tokens or self.require_auth):
            return "system:anonymous"
        auth = h.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        user = self.tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if user is None and not auth:
            # No credentials at all: the real API server (anonymous auth on, its default) takes the request as
            # system:anonymous and lets RBAC answer, usually 403; only credentials it rejects get 401.
            user = _client_cert_user(h.connection) or "system:anonymous"
        if user is None:
            raise _APIError(401, "Unauthorized", "Unauthorized")
        return user

    def _check(self, user, verb, resource, sub, ns, name=None, group="") -> None:
        fn = self.authorize
        try:
            params = inspect.signature(fn).parameters
            wants_name = "name" in params or any(p.kind == p.VAR_KEYWORD for p in params.values())
            wants_group = "group" in params or any(p.kind == p.VAR_KEYWORD for p in params.values())
        except (TypeError, ValueError):
            wants_name = wants_group = False
        extra = {"group": group} if group and wants_group else {}  # core-group checks: the old call
        ok = fn(user, verb, resource, sub, ns, name=name, **extra) if wants_name else fn(user, verb, resource, sub, ns)
        if ok:
            return
        who = f'{resource} "{name}"' if name else resource
        res = f"{resource}/{sub}" if sub else resource
        scope = f'in the namespace "{ns}"' if ns else "at the cluster scope"
        details = {"name": name, "kind": resource} if name else {"kind": resource}
        raise _APIError(403, "Forbidden",
                        f'{who} is forbidden: User "{user}" cannot {verb} resource "{res}" in API group "{group}" {scope}',
                        details)

    def _server_faults(self, h, rec, target: str, is_log: bool) -> bool:
        """throttle / fail faults; True if a response was sent."""
        match = lambda a: a["path_contains"] in target  # noqa: E731
        for a in self.faults._take("throttle", match):
            hdr = [("Retry-After", str(a["retry_after"]))]
            style = a["style"] or ("status" if is_log else "apf")
            if style == "apf":  # what API Priority and Fairness writes (http.Error)
                self._send(h, rec, 429, b"Too many requests, please try again later.\n",
                           "text/plain; charset=utf-8", hdr + [("X-Content-Type-Options", "nosniff")])
            else:
                self._send_status(h, rec, 429, "TooManyRequests", "Too many requests, please try again later.",
                                  {"retryAfterSeconds": a["retry_after"]}, hdr)
            return True
        for a in self.faults._take("rbac_not_synced") if is_log else ():
            parts = target.split("?", 1)[0].split("/")  # /api/v1/namespaces/<ns>/pods/<pod>/log
            scheme, _, token = h.headers.get("Authorization", "").partition(" ")
            user = self.tokens.get(token.strip(), "system:anonymous")
            self._send_status(h, rec, 403, "Forbidden",
                              f'pods "{parts[6]}" is forbidden: User "{user}" cannot get resource "pods/log" in API '
                              f'group "" in the namespace "{parts[4]}"', {"name": parts[6], "kind": "pods"})
            return True
        for a in self.faults._take("unreachable", match) if is_log else ():
            # pods/log proxies to https://<node InternalIP>:<kubelet port>/containerLogs/<ns>/<pod>/<container>
            parts = target.split("?", 1)[0].split("/")  # /api/v1/namespaces/<ns>/pods/<pod>/log
            q = parse_qs(target.partition("?")[2])
            kq = "&".join(f"{k}={q[k][0]}" for k in ("follow", "previous", "timestamps", "sinceTime", "tailLines")
                          if k in q)
            url = f"https://127.0.0.1:10250/containerLogs/{parts[4]}/{parts[6]}/{(q.get('container') or [''])[0]}"
            obj = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                   "message": f'Get "{url}{"?" + kq if kq else ""}": dial tcp 127.0.0.1:10250: connect: '
                              "connection refused", "code": 500}
            self._send(h, rec, 500, json.dumps(obj, separators=(",", ":")).encode() + b"\n")
            return True
        for a in self.faults._take("fail", match):
            code = a["status"]
            msg = a["message"]
            if code == 503:
                self._send_status(h, rec, 503, "ServiceUnavailable",
                                  msg or "the server is currently unable to handle the request")
            elif code == 504:
                self._send_status(h, rec, 504, "Timeout", msg or "Timeout: request did not complete within the"
                                  " requested timeout - context deadline exceeded", {"retryAfterSeconds": 1})
            else:
                msg = msg or "fake failure"
                self._send_status(h, rec, code, "InternalError", f"Internal error occurred: {msg}",
                                  {"causes": [{"message": msg}]})
            return True
        for a in self.faults._take("answer", match):
            self._send(h, rec, a["status"], json.dumps(a["body"]).encode() + b"\n")
            return True
        for a in self.faults._take("redirect", match):
            self._send(h, rec, a["status"], b"moved\n", "text/plain; charset=utf-8", [("Location", a["location"])])
            return True
        for a in self.faults._take("hang", match):
            with self.cluster.changed:
                self.cluster.changed.wait_for(lambda: self._stopping)
            raise _ConnectionCut()
        return False

    def _route(self, h, rec, path: str, q) -> None:
        parts = [unquote(p) for p in path.strip("/").split("/")] if path.strip("/") else []
        user = rec.user = self._authenticate(h)
        is_log = len(parts) == 7 and parts[:3] == ["api", "v1", "namespaces"] and parts[4:] == ["pods", parts[5], "log"]
        if self._server_faults(h, rec, h.path, is_log):
            return
        if parts == ["version"]:
            return self._send_json(h, rec, {"major": "1", "minor": "32", "gitVersion": "v1.32.0-fake",
                                            "gitCommit": "0" * 40, "gitTreeState": "clean",
                                            "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.23",
                                            "compiler": "gc", "platform": "linux/amd64"})
        if parts == ["api"]:
            # Plain APIVersions with Content-Type application/json: client-go then falls
            # back from aggregated discovery to the legacy /api/v1 document.
            return self._send_json(h, rec, {"kind": "APIVersions", "versions": ["v1"],
                                            "serverAddressByClientCIDRs": [
                                                {"clientCIDR": "0.0.0.0/0", "serverAddress": f"{self.host}:{self.port}"}]})
        if parts == ["apis"]:
            return self._send_json(h, rec, {"kind": "APIGroupList", "apiVersion": "v1", "groups": []})
        if parts == ["api", "v1"]:
            return self._send_json(h, rec, _DISCOVERY_V1)
        if parts[:2] == ["api", "v1"]:
            rest = parts[2:]
            if rest[:1] == ["watch"]:  # deprecated /api/v1/watch/... form of ?watch=true
                rest, q = rest[1:], dict(q, watch=["true"])
            if _bool(q, "watch") and (rest == ["pods"] or (len(rest) == 3 and rest[0] == "namespaces"
                                                           and rest[2] == "pods")):
                ns = rest[1] if len(rest) == 3 else None
                self._check(user, "watch", "pods", "", ns or "")
                return self._watch(h, rec, q, ns)
            if _bool(q, "watch"):  # only pod lists can be watched here
                raise _APIError(404, "NotFound", "the server could not find the requested resource", {})
            if rest == ["pods"]:
                self._check(user, "list", "pods", "", "")
                return self._list(h, rec, q, "pods", None)
            if rest == ["namespaces"]:
                self._check(user, "list", "namespaces", "", "")
                return self._list(h, rec, q, "namespaces", None)
            if len(rest) == 2 and rest[0] == "namespaces":
                self._check(user, "get", "namespaces", "", "", rest[1])
                return self._get(h, rec, q, "namespaces", None, rest[1])
            if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] == "pods":
                ns = rest[1]
                if len(rest) == 3:
                    self._check(user, "list", "pods", "", ns)
                    return self._list(h, rec, q, "pods", ns)
                if len(rest) == 4:
                    self._check(user, "get", "pods", "", ns, rest[3])
                    return self._get(h, rec, q, "pods", ns, rest[3])
                if len(rest) == 5 and rest[4] == "log":
                    self._check(user, "get", "pods", "log", ns, rest[3])
                    return self._pod_log(h, rec, q, ns, rest[3])
        if parts[:3] == ["apis", "events.k8s.io", "v1"] and (
                parts[3:] == ["events"] or (len(parts) == 6 and parts[3] == "namespaces" and parts[5] == "events")):
            ns = parts[4] if len(parts) == 6 else None
            verb = "watch" if _bool(q, "watch") else "list"
            self._check(user, verb, "events", "", ns or "", group="events.k8s.io")
            return self._watch_k8s_events(h, rec, q, ns) if verb == "watch" else self._list_k8s_events(h, rec, q, ns)
        empty = _empty_list_kind(parts)
        if empty:  # what `kubectl cluster-info dump` lists besides pods: always none here
            group, kind, resource, ns = empty
            self._check(user, "list", resource, "", ns)
            return self._send_json(h, rec, {"kind": kind + "List", "apiVersion": group,
                                            "metadata": {"resourceVersion": str(self.cluster._rv)}, "items": []})
        raise _APIError(404, "NotFound", "the server could not find the requested resource", {})

    # -- get / list
    def _get(self, h, rec, q, resource, ns, name) -> None:
        with self.cluster.lock:
            if resource == "pods":
                pod = self.cluster._pods.get((ns, name))
                obj = pod.to_json() if pod else None
            else:
                obj = self.cluster._namespace_json(name) if name in self.cluster._namespaces else None
        if obj is None:
            raise _APIError(404, "NotFound", f'{resource} "{name}" not found', {"name": name, "kind": resource})
        if _wants_table(h):
            return self._send_json(h, rec, _table(resource, [obj], {"resourceVersion": obj["metadata"]["resourceVersion"]},
                                                  q, self.cluster.clock()))
        self._send_json(h, rec, obj)

    def _list(self, h, rec, q, resource, ns) -> None:
        limit = _int(q, "limit") or 0
        token = _one(q, "continue")
        start_after, rv = None, None
        if token:
            if self.faults._take("expire"):
                raise _APIError(410, "Expired", "The provided continue parameter is too old to display a consistent "
                                "list result. You can start a new list without the continue parameter.")
            try:
                c = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
                start_after, rv = c["start"], int(c["rv"])
            except (ValueError, KeyError, TypeError):
                raise _bad_request(f"continue key is not valid: {token}")
        labels = parse_label_selector(_one(q, "labelSelector") or "")
        fields = parse_field_selector(_one(q, "fieldSelector") or "",
                                      _POD_FIELDS if resource == "pods" else ("metadata.name", "status.phase"))
        # The real list is a snapshot at `rv`: its continued pages show the objects as they were at its first page
        # (kube-apiserver reads them from etcd at that revision), however much later they are asked for.
        with self.cluster.lock:
            rv = rv or self.cluster._rv
            snapshot_key = (resource, ns, _one(q, "labelSelector"), _one(q, "fieldSelector"), rv)
            match = self._snapshots.get(snapshot_key) if token else None
            if match is None:
                if resource == "pods":
                    cands = [(f"{p.namespace}/{p.name}", p.labels, p.field, p.to_json)
                             for p in self.cluster._pods.values() if ns is None or p.namespace == ns]
                else:
                    cands = [(n, {"kubernetes.io/metadata.name": n},
                              {"metadata.name": n, "status.phase": "Active"}.get,
                              (lambda n=n: self.cluster._namespace_json(n)))
                             for n in self.cluster._namespaces]
                cands.sort(key=lambda c: c[0])  # etcd order is key order
                match = [(c[0], c[3]()) for c in cands if labels(c[1]) and all((c[2](n) == v) == eq
                                                                                for n, eq, v in fields)]
                if limit and len(match) > limit:
                    self._snapshots[snapshot_key] = match
            match = [m for m in match if start_after is None or m[0] > start_after]
            items = [m[1] for m in (match[:limit] if limit else match)]  # only serialized: snapshots stay intact
        meta: dict = {"resourceVersion": str(rv)}
        if limit and len(match) > limit:
            last = match[limit - 1][0]
            meta["continue"] = base64.urlsafe_b64encode(json.dumps(
                {"v": "meta.k8s.io/v1", "rv": rv, "start": last}).encode()).decode().rstrip("=")
            if not (_one(q, "labelSelector") or _one(q, "fieldSelector")):
                meta["remainingItemCount"] = len(match) - limit
        if token and self.faults._take("loop_continue"):
            meta["continue"] = token
        if _wants_table(h):
            return self._send_json(h, rec, _table(resource, items, meta, q, self.cluster.clock()))
        kind = "PodList" if resource == "pods" else "NamespaceList"
        self._send_json(h, rec, {"kind": kind, "apiVersion": "v1", "metadata": meta, "items": items})

    # -- Kubernetes Events (events.k8s.io/v1): list (paged) and watch
    def _list_k8s_events(self, h, rec, q, ns) -> None:
        limit = _int(q, "limit") or 0
        token = _one(q, "continue")
        start_after = None
        if token:
            try:
                start_after = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))["start"]
            except (ValueError, KeyError, TypeError):
                raise _bad_request(f"continue key is not valid: {token}")
        with self.cluster.lock:
            keys = sorted(f"{k[0]}/{k[1]}" for k in self.cluster.k8s_events if ns is None or k[0] == ns)
            match = [k for k in keys if start_after is None or k > start_after]
            page = match[:limit] if limit else match
            items = [json.loads(json.dumps(self.cluster.k8s_events[tuple(k.split("/", 1))])) for k in page]
            meta: dict = {"resourceVersion": str(self.cluster._rv)}
        if limit and len(match) > limit:
            meta["continue"] = base64.urlsafe_b64encode(json.dumps({"start": page[-1]}).encode()).decode().rstrip("=")
        self._send_json(h, rec, {"kind": "EventList", "apiVersion": "events.k8s.io/v1", "metadata": meta,
                                 "items": items})

    def _watch_k8s_events(self, h, rec, q, ns) -> None:
        """Event watch from a resourceVersion: ADDED / MODIFIED / DELETED lines, 410 when compacted."""
        try:
            rv = int(_one(q, "resourceVersion") or "0")
        except ValueError:
            raise _bad_request("invalid resource version")
        timeout = _int(q, "timeoutSeconds")
        deadline = time.monotonic() + timeout if timeout and timeout > 0 else None
        cl = self.cluster
        with self._lock:
            self.active_watches += 1
        try:
            rec.status = 200
            h.wfile.write((f"HTTP/1.1 200 OK\r\nDate: {h.date_time_string()}\r\nCache-Control: no-cache, private\r\n"
                           "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").encode())

            def send(obj: dict) -> None:
                line = json.dumps(obj, separators=(",", ":")).encode() + b"\n"
                rec.bytes_sent += len(line)
                h.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))

            def expired() -> None:
                send({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                                  "message": f"too old resource version: {rv}", "reason": "Expired",
                                                  "code": 410}})
                h.wfile.write(b"0\r\n\r\n")

            if rv and rv < cl._k8s_event_compacted:
                return expired()
            next_live = time.monotonic() + 1.0
            while True:
                with cl.changed:
                    while True:
                        if rv < cl._k8s_event_compacted:  # compacted under an open watch: what it missed is gone
                            return expired()
                        if self._stopping or (deadline is not None and time.monotonic() >= deadline):
                            h.wfile.write(b"0\r\n\r\n")
                            return
                        new = [e for e in cl._k8s_event_history if e[0] > rv and (ns is None or e[2] == ns)]
                        if new:
                            rv = new[-1][0]
                            break
                        if time.monotonic() >= next_live:
                            if self._client_gone(h):
                                h.close_connection = True
                                return
                            next_live = time.monotonic() + 1.0
                        cl.changed.wait(0.2)
                for _, etype, _, obj in new:
                    send({"type": etype, "object": obj})
        finally:
            with self._idle:
                self.active_watches -= 1
                self._idle.notify_all()

    # -- watch
    def _watch(self, h, rec, q, ns) -> None:
        with self._lock:
            self.active_watches += 1
            self.max_active_watches = max(self.max_active_watches, self.active_watches)
        try:
            self._watch_inner(h, rec, q, ns)
        finally:
            with self._idle:
                self.active_watches -= 1
                self._idle.notify_all()

    def _watch_inner(self, h, rec, q, ns: Optional[str]) -> None:
        """Pod watch: newline-delimited {"type","object"} events, one chunk each."""
        labels = parse_label_selector(_one(q, "labelSelector") or "")
        fields = parse_field_selector(_one(q, "fieldSelector") or "", _POD_FIELDS)
        timeout = _int(q, "timeoutSeconds")
        bookmarks = _bool(q, "allowWatchBookmarks")
        send_initial = _bool(q, "sendInitialEvents")
        rv_param = _one(q, "resourceVersion") or ""
        rv = 0
        if rv_param not in ("", "0"):
            try:
                rv = int(rv_param)
            except ValueError:
                raise _bad_request(f"invalid resource version: {rv_param!r}")
        table = _wants_table(h)
        expired = bool(self.faults._take("expire_watch"))
        cuts = [a["after_events"] for a in self.faults._take("cut_watch")]
        cut_at = min(cuts) if cuts else None
        deadline = time.monotonic() + timeout if timeout and timeout > 0 else None
        cl = self.cluster

        def passes(match) -> bool:
            pns, plabels, pfields = match
            return (ns is None or pns == ns) and labels(plabels) and \
                all((pfields.get(n) == v) == eq for n, eq, v in fields)

        def line(etype: str, obj: dict) -> bytes:
            if table and etype in ("ADDED", "MODIFIED", "DELETED"):
                obj = _table("pods", [obj], {"resourceVersion": obj["metadata"]["resourceVersion"]}, q, cl.clock())
            return json.dumps({"type": etype, "object": obj}, separators=(",", ":")).encode() + b"\n"

        def event_line(ev: _WatchEvent) -> Optional[bytes]:
            """The apiserver's cacheWatcher: selector transitions become ADDED / DELETED."""
            cur = ev.type != "DELETED" and passes(ev.match)
            old = ev.prev_match is not None and passes(ev.prev_match)
            if cur:
                etype, obj = ("MODIFIED" if old else "ADDED"), ev.obj
            elif old:  # gone or no longer matching: the previous object, with the event's resourceVersion
                etype, obj = "DELETED", ev.prev_obj
                if obj["metadata"]["resourceVersion"] != str(ev.rv):
                    obj = dict(obj, metadata=dict(obj["metadata"], resourceVersion=str(ev.rv)))
            else:
                return None
            if table:
                return line(etype, obj)
            hit = ev.lines.get(etype)
            if hit is None:
                hit = ev.lines[etype] = line(etype, obj)
            return hit

        def bookmark(at_rv: int, annotations=None) -> bytes:
            md: dict = {"resourceVersion": str(at_rv)}
            if annotations:
                md["annotations"] = annotations
            return line("BOOKMARK", {"kind": "Pod", "apiVersion": "v1", "metadata": md})

        error = None
        with cl.lock:
            if expired or (not send_initial and rv_param not in ("", "0") and rv < cl._evicted_rv):
                oldest = cl._rv if expired else cl._evicted_rv
                error = line("ERROR", {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                       "message": f"too old resource version: {rv} ({oldest})",
                                       "reason": "Expired", "code": 410})
            elif send_initial or rv_param in ("", "0"):
                initial = [p.to_json() for _, p in sorted(cl._pods.items())
                           if passes((p.namespace, p.labels, p.fields()))]
                next_seq, start_rv = cl._event_base + len(cl._events), cl._rv
            else:
                initial, next_seq, start_rv = [], cl._events_since(rv), rv

        sent = 0  # event lines written

        def write(lines: List[bytes]) -> None:
            nonlocal sent
            out: List[bytes] = []
            for ln in lines:
                if cut_at is not None and sent >= cut_at:
                    break
                out += [b"%x\r\n" % len(ln), ln, b"\r\n"]
                rec.bytes_sent += len(ln)
                sent += 1
            if out:
                h.wfile.write(b"".join(out))
            if cut_at is not None and sent >= cut_at:
                raise _ConnectionCut()

        def end() -> None:
            if cut_at is not None:  # the cut point was never reached: still no terminating chunk
                raise _ConnectionCut()
            h.wfile.write(b"0\r\n\r\n")

        rec.status = 200
        h.wfile.write((f"HTTP/1.1 200 OK\r\nDate: {h.date_time_string()}\r\nCache-Control: no-cache, private\r\n"
                       "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").encode())
        write([])  # cut_watch(after_events=0): right after the headers
        if error is not None:
            write([error])
            return end()
        write([line("ADDED", o) for o in initial])
        if send_initial and bookmarks:  # WatchList: the end of the initial state
            write([bookmark(start_rv, {"k8s.io/initial-events-end": "true"})])
        now = time.monotonic()
        next_bm = now + self.bookmark_interval if bookmarks else None
        live = self.watch_liveness_interval
        next_live = now + live if live is not None else None
        while True:
            evs: List[_WatchEvent] = []
            bm_rv = None
            with cl.changed:
                while True:
                    if self._stopping:
                        return end()
                    if next_seq < cl._event_base:  # fell behind the history: the apiserver closes slow watchers
                        return end()
                    now = time.monotonic()
                    if deadline is not None and now >= deadline:
                        return end()
                    evs = list(itertools.islice(cl._events, next_seq - cl._event_base, None))
                    if evs:
                        next_seq += len(evs)
                        break
                    if next_bm is not None and now >= next_bm:
                        bm_rv = cl._rv  # every event up to here has been sent (or filtered out)
                        next_bm = now + self.bookmark_interval
                        break
                    if next_live is not None and now >= next_live:
                        if self._client_gone(h):
                            h.close_connection = True
                            return
                        next_live = now + live
                    waits = [t - now for t in (deadline, next_bm, next_live) if t is not None]
                    cl.changed.wait(min(waits) if waits else None)
            out = [ln for ln in map(event_line, evs) if ln is not None]  # encoded outside the lock
            if bm_rv is not None:
                out.append(bookmark(bm_rv))
            write(out)

    @staticmethod
    def _client_gone(h) -> bool:
        """Mid-watch the client sends nothing: a readable socket means it closed."""
        try:
            return bool(select.select([h.connection], [], [], 0)[0])
        except (OSError, ValueError):
            return True

    # -- logs
    def _pod_log(self, h, rec, q, ns, name) -> None:
        with self._lock:
            self.active_log_streams += 1
            self.max_active_log_streams = max(self.max_active_log_streams, self.active_log_streams)
        try:
            self._pod_log_inner(h, rec, q, ns, name)
        finally:
            with self._idle:
                self.active_log_streams -= 1
                self._idle.notify_all()

    def _pod_log_inner(self, h, rec, q, ns, name) -> None:
        cname = _one(q, "container")
        for a in self.faults._take("before", lambda a: _matches_target(a, ns, name, cname)):
            a["callback"](ns, name, cname, q)
        timestamps, previous, follow = _bool(q, "timestamps"), _bool(q, "previous"), _bool(q, "follow")
        since_seconds, tail, limit_bytes = _int(q, "sinceSeconds"), _int(q, "tailLines"), _int(q, "limitBytes")
        since = None
        if _one(q, "sinceTime"):
            try:  # metav1.Time travels as whole-second RFC3339: the kubelet sees it truncated
                since = parse_ts(_one(q, "sinceTime")) // NS * NS
            except ValueError as e:
                raise _bad_request(str(e))
        invalid = None
        if since is not None and since_seconds is not None:
            invalid = "[]: Forbidden: at most one of `sinceTime` or `sinceSeconds` may be specified"
        elif since_seconds is not None and since_seconds < 1:
            invalid = f"sinceSeconds: Invalid value: {since_seconds}: must be greater than 0"
        elif tail is not None and tail < 0:
            invalid = f"tailLines: Invalid value: {tail}: must be greater than or equal to 0"
        elif limit_bytes is not None and limit_bytes < 1:
            invalid = f"limitBytes: Invalid value: {limit_bytes}: must be greater than 0"
        if invalid:
            raise _APIError(422, "Invalid", f'PodLogOptions "{name}" is invalid: {invalid}',
                            {"name": name, "kind": "PodLogOptions"})
        if since_seconds is not None:
            since = self.cluster.clock() - since_seconds * NS

        with self.cluster.lock:
            pod = self.cluster._pods.get((ns, name))
            if pod is None:
                raise _APIError(404, "NotFound", f'pods "{name}" not found', {"name": name, "kind": "pods"})
            names = pod.container_names()
            if not cname:  # apiserver's ValidateContainer
                regular = [c for c in pod.containers.values() if c.kind == "containers"]
                if len(regular) != 1:
                    raise _bad_request(f"a container name must be specified for pod {name}, "
                                       f"choose one of: [{' '.join(names)}]")
                cname = regular[0].name
            elif cname not in pod.containers:
                raise _bad_request(f"container {cname} is not valid for pod {name}")
            if not pod.node_name:  # not scheduled: no kubelet to ask, empty 204
                return self._send(h, rec, 204)
            c = pod.containers[cname]
            inst = self._instance_for_log(c, name, previous)
            body, monotonic, version = inst.body(), inst.monotonic, inst.version()
            is_current = inst is c.current

        variant = self.ts_format if timestamps else "plain"
        if since is None and tail is None:  # whole body: cached conversions, zero copy
            data = memoryview(inst.converted(variant, body, version))
        else:
            data = _select(body, monotonic, since, tail)
            if variant != "fixed":
                data = _convert(bytes(data), variant)
        pieces: Iterator = iter([data])
        if follow and is_current:
            pieces = itertools.chain(pieces, self._follow(ns, name, cname, inst, version, variant, since,
                                                          gone=lambda: self._client_gone(h)))
        if limit_bytes is not None:
            pieces = _limit(pieces, limit_bytes)
        target = lambda a: _matches_target(a, ns, name, cname)  # noqa: E731
        cuts = [a["at_byte"] for a in self.faults._take("cut", target)]
        mids = sorted(((a["at_byte"], a["callback"]) for a in self.faults._take("mid", target)), key=lambda m: m[0])
        for a in self.faults._take("endless", target):
            pieces = itertools.chain(pieces, _endless(a["chunk"], a["interval"], a["seconds"],
                                                      gone=lambda: self._client_gone(h)))
        tail_text = "".join(a["text"] for a in self.faults._take("tail", target)).encode()
        self._stream(h, rec, pieces, min(cuts) if cuts else None, mids, (ns, name, cname, q), tail_text)

    @staticmethod
    def _instance_for_log(c: Container, pod: str, previous: bool) -> _Instance:
        """The kubelet's validateContainerLogStatus, for our states."""
        if previous:
            if c.previous is None:
                raise _bad_request(f'previous terminated container "{c.name}" in pod "{pod}" not found')
            return c.previous
        if c.state in ("running", "terminated"):
            return c.current
        if c.previous is not None:  # waiting after a crash (CrashLoopBackOff): the last run's log
            return c.previous
        why = {"ErrImagePull": "image can't be pulled",
               "ImagePullBackOff": "trying and failing to pull image"}.get(c.reason, c.reason)
        raise _bad_request(f'container "{c.name}" in pod "{pod}" is waiting to start: {why}')

    def _follow(self, ns, name, cname, inst: _Instance, version, variant, since, gone=lambda: False) -> Iterator[bytes]:
        """follow=true: new lines of this run until it ends, the pod goes, the client leaves, or the server stops."""
        gen, offset = version
        cl = self.cluster
        while True:
            with cl.changed:
                while True:
                    pod = cl._pods.get((ns, name))
                    c = pod.containers.get(cname) if pod else None
                    if self._stopping:
                        return
                    if inst.generation != gen:  # rotated: the kubelet reopens the new file
                        gen, offset = inst.generation, 0
                    if inst.size > offset:  # the kubelet drains the file even after the container ended
                        new, monotonic = inst.after(offset), inst.monotonic
                        offset = inst.size
                        break
                    if c is None or c.current is not inst or c.state != "running" or gone():
                        return
                    cl.changed.wait(0.1)
            if since is not None:
                new = bytes(_select(new, monotonic, since, None))
            yield _convert(new, variant)

    def _stream(self, h, rec, pieces, cut_at, mids, hook_args, tail_text: bytes) -> None:
        """Chunked text/plain body: chunk_size chunks, batched into ~1 MiB sendall
        calls (fewer syscalls and TLS writes; what keeps this faster than clients).
        `cut_at` drops the connection mid-chunk; `mids` run callbacks at byte offsets."""
        out: List = [(f"HTTP/1.1 200 OK\r\nDate: {h.date_time_string()}\r\nCache-Control: no-cache, private\r\n"
                      "Content-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n").encode()]
        rec.status = 200
        size, sent, queued = self.chunk_size, 0, 0

        def flush():
            nonlocal queued
            rec.bytes_sent = sent
            h.wfile.write(b"".join(out))
            out.clear()
            queued = 0

        for piece in itertools.chain(pieces, [tail_text]):
            if self._open_cuts and tuple(hook_args[:3]) in self._open_cuts and len(piece) > 1:
                with self._lock:
                    self._open_cuts.discard(tuple(hook_args[:3]))
                cut_at = sent + len(piece) // 2  # mid-line, mid-chunk
            mv = memoryview(piece)
            pos, n = 0, len(mv)
            while True:
                if mids and mids[0][0] <= sent:
                    flush()  # the client has the bytes before the callback runs
                    while mids and mids[0][0] <= sent:
                        mids.pop(0)[1](*hook_args)
                if pos >= n:
                    break
                end = min(pos + size, n)
                if mids and sent < mids[0][0] < sent + (end - pos):
                    end = pos + (mids[0][0] - sent)
                chunk = mv[pos:end]
                if cut_at is not None and sent + len(chunk) > cut_at:
                    keep = cut_at - sent  # the header promises the whole chunk; only part arrives
                    out += [b"%x\r\n" % len(chunk), chunk[:keep]]
                    sent += keep
                    flush()
                    raise _ConnectionCut()
                out += [b"%x\r\n" % len(chunk), chunk, b"\r\n"]
                sent += len(chunk)
                queued += len(chunk)
                pos = end
                if queued >= 1 << 20:
                    flush()
            flush()  # a follow piece must reach the client before we block for the next
        if cut_at is not None:  # cut point at/after the end: still no terminating chunk
            raise _ConnectionCut()
        out.append(b"0\r\n\r\n")
        flush()


def _limit(pieces: Iterator, n: int) -> Iterator:
    for p in pieces:
        if n <= 0:
            return
        p = p[:n]
        n -= len(p)
        yield p


# ---------------------------------------------------------------- Table output (kubectl get)

def _wants_table(h) -> bool:
    return "as=Table" in h.headers.get("Accept", "")


def _age(created_ns: int, now_ns: int) -> str:
    s = max(0, (now_ns - created_ns) // NS)
    if s < 120:
        return f"{s}s"
    if s < 3 * 3600:
        return f"{s // 60}m"
    if s < 48 * 3600:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def _table(resource: str, items: List[dict], meta: dict, q, now: int) -> dict:
    def col(name, desc, fmt="", prio=0):
        return {"name": name, "type": "string", "format": fmt, "description": desc, "priority": prio}

    if resource == "pods":
        cols = [col("Name", "Name of the pod", "name"), col("Ready", "Ready containers"),
                col("Status", "Pod status"), col("Restarts", "Container restarts"), col("Age", "Age"),
                col("IP", "Pod IP", prio=1), col("Node", "Node name", prio=1)]
    else:
        cols = [col("Name", "Name of the namespace", "name"), col("Status", "Phase"), col("Age", "Age")]
    include = _one(q, "includeObject") or "Metadata"
    rows = []
    for obj in items:
        m = obj["metadata"]
        age = _age(parse_ts(m["creationTimestamp"]), now)
        if resource == "pods":
            sts = obj["status"].get("containerStatuses", [])
            status = obj["status"]["phase"]
            for s in sts:
                st = s["state"]
                if "waiting" in st:
                    status = st["waiting"]["reason"]
                elif "terminated" in st and status == "Running":
                    status = st["terminated"]["reason"]
            cells = [m["name"], f"{sum(s['ready'] for s in sts)}/{len(obj['spec']['containers'])}", status,
                     sum(s["restartCount"] for s in sts), age, obj["status"].get("podIP", "<none>") or "<none>",
                     obj["spec"].get("nodeName", "<none>")]
        else:
            cells = [m["name"], "Active", age]
        row: dict = {"cells": cells}
        if include == "Object":
            row["object"] = obj
        elif include != "None":
            row["object"] = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": m}
        rows.append(row)
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "columnDefinitions": cols, "rows": rows}


# ---------------------------------------------------------------- query parsing

def _one(q, key) -> Optional[str]:
    v = q.get(key)
    return v[0] if v else None


def _int(q, key) -> Optional[int]:
    v = _one(q, key)
    if v is None or v == "":
        return None
    try:
        return int(v)
    except ValueError:
        raise _bad_request(f'{key}: strconv.ParseInt: parsing "{v}": invalid syntax')


def _bool(q, key) -> bool:
    """apimachinery's Convert_Slice_string_To_bool: present and not 0/f/false means true."""
    v = _one(q, key)
    if v is None:
        return False
    return not (v == "0" or v.lower() in ("f", "false"))


# ---------------------------------------------------------------- helpers for tests

def server_ssl_context(ca, hosts=("127.0.0.1", "localhost", "::1"), client_ca=None) -> ssl.SSLContext:
    """A server SSLContext with a certificate for `hosts` issued by a trustme.CA.  With
    `client_ca` (a trustme.CA), clients may also present a certificate it issued, as
    kube-apiserver's --client-ca-file allows: its common name is the user."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*hosts).configure_cert(ctx)
    ctx.set_alpn_protocols(["http/1.1"])
    if client_ca is not None:
        ctx.verify_mode = ssl.CERT_OPTIONAL  # verified when given, like the API server
        ctx.load_verify_locations(cadata=client_ca.cert_pem.bytes().decode("ascii"))
    return ctx


def _client_cert_user(conn) -> Optional[str]:
    """The common name of a verified client certificate (the API server's x509 authenticator)."""
    cert = conn.getpeercert() if isinstance(conn, ssl.SSLSocket) else None
    for rdn in (cert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return value
    return None


def log_lines(path) -> List[str]:
    """A file's lines without their newlines (only "\\n" splits)."""
    text = Path(path).read_bytes().decode("utf-8", "replace")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines
