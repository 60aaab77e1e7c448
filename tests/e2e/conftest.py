"""End-to-end fixtures: one real control plane (etcd, kube-apiserver, kwok) per session.

The binaries come from tests/e2e/build.py (built once before the tests, cached outside the
checkout); tests talk only to 127.0.0.1. Set KLE_E2E_KEEP=DIR to keep the control plane's
folder (logs of etcd, kube-apiserver and kwok) after the run.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

E2E = Path(__file__).resolve().parent
if str(E2E) not in sys.path:
    sys.path.append(str(E2E))

from e2ekit import ROOT, K8s, clustermod  # noqa: E402


def pytest_collection_modifyitems(items):
    for item in items:
        if Path(str(item.fspath)).resolve().is_relative_to(E2E):
            item.add_marker(pytest.mark.e2e)


def pytest_collection_finish(session):
    # Build (or find cached) binaries before any test runs, outside the per-test timeout:
    # a cold build takes minutes. Only when e2e tests were selected.
    if any(Path(str(i.fspath)).resolve().is_relative_to(E2E) for i in session.items):
        import build
        build.ensure_all()


# -- fixtures ------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def k8s(tmp_path_factory) -> K8s:
    keep = os.environ.get("KLE_E2E_KEEP")
    root = Path(keep) if keep else tmp_path_factory.mktemp("control-plane")
    c = clustermod.Cluster(root)
    t0 = time.monotonic()
    try:
        c.up()
    except BaseException:
        c.down()
        raise
    print(f"\n[e2e] control plane up in {time.monotonic() - t0:.1f}s at {c.server} ({root})", file=sys.stderr)
    k = K8s(c)
    try:
        k.kubectl("apply", "--server-side", "-k", str(ROOT / "manifests"))
        yield k
    finally:
        c.down()


@pytest.fixture
def exporter_sa(k8s, tmp_path) -> Path:
    """A service-account folder for log-exporter-sa: a TokenRequest token and the API server's CA."""
    return k8s.service_account_dir(tmp_path, k8s.token())
