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
