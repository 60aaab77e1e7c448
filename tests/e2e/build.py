#!/usr/bin/env python3
"""Build (or reuse) the real control plane's binaries: etcd, kube-apiserver, kwok.

Each comes from a small Go module under tests/e2e/k8s/<name>/ (go.mod and go.sum
committed) and is built with `go build` from the Go module proxy. Binaries are
cached outside the checkout, keyed by name and version, so a warm machine (and a
fresh clone on it, as CI uses) rebuilds nothing:

    $KLE_E2E_CACHE (default ~/.cache/kubelogexporter-e2e)/<name>-<version>/<name>

Usage: python3 tests/e2e/build.py          # build what is missing, print the paths
       python3 tests/e2e/build.py --check  # exit 1 if any binary is missing, build nothing

A cold build takes several minutes on 2 cores (kube-apiserver is most of it); the
Go module and build caches (`go env GOMODCACHE GOCACHE`) are reused as usual.
Standard library only.
"""
import hashlib
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODULES = HERE / "k8s"
CACHE_ENV = "KLE_E2E_CACHE"

# name -> (module folder, main package, module whose version names the build)
COMPONENTS = {
    "etcd": ("etcd", "go.etcd.io/etcd/server/v3", "go.etcd.io/etcd/server/v3"),
    "kube-apiserver": ("kube-apiserver", "k8s.io/kubernetes/cmd/kube-apiserver", "k8s.io/kubernetes"),
    "kwok": ("kwok", "sigs.k8s.io/kwok/cmd/kwok", "sigs.k8s.io/kwok"),
}


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "kubelogexporter-e2e")


def version_of(name: str) -> str:
    folder, _, module = COMPONENTS[name]
    text = (MODULES / folder / "go.mod").read_text()
    m = re.search(r"^\s*(?:require\s+)?" + re.escape(module) + r"\s+(v\S+)", text, re.M)
    if not m:
        raise SystemExit(f"build.py: {module} is not required in {folder}/go.mod")
    return m.group(1)


def _key(name: str) -> str:
    """<version>-<hash of go.mod+go.sum>: a changed dependency set is a new build."""
    folder = MODULES / COMPONENTS[name][0]
    h = hashlib.sha256()
    for f in ("go.mod", "go.sum"):
        h.update((folder / f).read_bytes())
    return f"{version_of(name)}-{h.hexdigest()[:8]}"


def binary_path(name: str) -> Path:
    return cache_dir() / f"{name}-{_key(name)}" / name


def _ldflags(name: str) -> str:
    if name != "kube-apiserver":
        return "-s -w"
    v = version_of(name)
    major, minor = v.lstrip("v").split(".")[:2]
    pkg = "k8s.io/component-base/version"
    return (f"-s -w -X {pkg}.gitVersion={v} -X {pkg}.gitMajor={major} -X {pkg}.gitMinor={minor}"
            f" -X {pkg}.gitTreeState=clean")


def _say(msg: str) -> None:
    print(f"[e2e build] {msg}", file=sys.stderr, flush=True)


def build(name: str) -> Path:
    out = binary_path(name)
    if out.is_file() and os.access(out, os.X_OK):
        return out
    go = shutil.which("go")
    if not go:
        raise SystemExit("build.py: `go` is not on PATH; the e2e binaries are built with Go (1.26 or newer)")
    folder, pkg, _ = COMPONENTS[name]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{name}.{os.getpid()}.tmp")
    cmd = [go, "build", "-mod=readonly", "-trimpath", "-ldflags", _ldflags(name), "-o", str(tmp), pkg]
    env = dict(os.environ, GOTOOLCHAIN=os.environ.get("GOTOOLCHAIN", "local"),
               GOFLAGS=os.environ.get("GOFLAGS", "-buildvcs=false"))
    _say(f"building {name} {version_of(name)} into {out.parent} (cold, all three: ~9 min on 2 cores) ...")
    start = time.monotonic()
    done = threading.Event()

    def ticker():
        while not done.wait(30):
            _say(f"  ... {name} still building, {time.monotonic() - start:.0f}s")

    threading.Thread(target=ticker, daemon=True).start()
    try:
        r = subprocess.run(cmd, cwd=MODULES / folder, env=env)
    finally:
        done.set()
    if r.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise SystemExit(f"build.py: `{' '.join(cmd)}` in {MODULES / folder} failed with exit {r.returncode}")
    os.replace(tmp, out)
    _say(f"built {name} in {time.monotonic() - start:.0f}s")
    return out


def ensure_all() -> dict:
    """Build whatever is missing; return {name: path}."""
    return {name: build(name) for name in COMPONENTS}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--check" in argv:
        missing = [n for n in COMPONENTS if not binary_path(n).is_file()]
        for n in COMPONENTS:
            print(f"{n}: {binary_path(n)}{' (missing)' if n in missing else ''}")
        return 1 if missing else 0
    start = time.monotonic()
    for name, path in ensure_all().items():
        print(f"{name} {version_of(name)}: {path}")
    _say(f"binaries ready in {time.monotonic() - start:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
