"""The module itself: standard library only, Python 3.8+, quiet on import, a public API that exists."""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import kubelogexporter

MODULE = Path(kubelogexporter.__file__)

# sys.stdlib_module_names exists from 3.10; the module must import nothing outside it.
STDLIB = getattr(sys, "stdlib_module_names", None)


def imported_modules(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield node.module.split(".")[0]


@pytest.mark.skipif(STDLIB is None, reason="needs sys.stdlib_module_names (3.10+)")
def test_imports_only_the_standard_library():
    names = set(imported_modules(ast.parse(MODULE.read_text())))
    assert names, "found no imports at all: the check is broken"
    assert sorted(n for n in names if n not in STDLIB and n != "__future__") == []


def test_runs_on_python_3_8():
    vermin = shutil.which("vermin", path=str(Path(sys.executable).parent)) or shutil.which("vermin")
    if vermin is None:
        pytest.skip("vermin not installed")
    proc = subprocess.run([vermin, "--no-tips", "--violations", "-t=3.8-", "--eval-annotations", str(MODULE)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Minimum required versions" in proc.stdout


def test_import_prints_nothing_and_starts_nothing():
    code = "import threading, kubelogexporter; print(threading.active_count())"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=MODULE.parent)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "1\n" and proc.stderr == ""


def test_public_names_exist():
    assert kubelogexporter.__all__
    for name in kubelogexporter.__all__:
        assert hasattr(kubelogexporter, name), name


def test_errors_form_one_hierarchy():
    assert issubclass(kubelogexporter.ConfigError, kubelogexporter.ExportError)
    assert issubclass(kubelogexporter.ApiError, kubelogexporter.ExportError)
    error = kubelogexporter.ApiError(403, "pods is forbidden", reason="Forbidden", verb="list", resource="pods")
    assert (error.status, error.reason, str(error), error.refused) == (403, "Forbidden", "pods is forbidden", True)
    assert error.missing_permission() == '"list pods" cluster-wide'


def oldest_python():
    """Python 3.8 if this machine has one (pyenv keeps it here), to run the script under the oldest supported."""
    import glob

    candidates = sorted(glob.glob("/root/.pyenv/versions/3.8*/bin/python3.8")) + [shutil.which("python3.8")]
    for candidate in filter(None, candidates):  # a pyenv shim may exist without a usable interpreter
        if subprocess.run([candidate, "-c", "pass"], capture_output=True).returncode == 0:
            return candidate
    return None


@pytest.mark.skipif(oldest_python() is None, reason="no Python 3.8 on this machine")
def test_exports_under_python_3_8(cluster, apiserver, service_account, tmp_path):
    cluster.add_pod("shop", "web")
    cluster.append_log("shop", "web", "app", ["hello from 3.8"])
    proc = subprocess.run([oldest_python(), str(MODULE), "--server", apiserver.url, "--token-file",
                           str(service_account / "token"), "--ca-file", str(service_account / "ca.crt"),
                           "-o", str(tmp_path / "logs"), "--gzip"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    import gzip

    assert gzip.decompress((tmp_path / "logs" / "shop" / "web" / "app.log.gz").read_bytes()).endswith(
        b" hello from 3.8\n")
