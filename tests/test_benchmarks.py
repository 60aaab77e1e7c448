"""benchmarks/run.py --quick must keep working: every available tool runs every workload once
on tiny sizes (about 15-25 s) and the report has a row per tool.  Not a measurement."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT  # noqa: E402
RUN = ROOT / "benchmarks" / "run.py"
pytestmark = pytest.mark.slow  # ~12 s: with the e2e suite, so that the fast one stays under a minute


def test_quick_benchmark_runs(tmp_path):
    pytest.importorskip("trustme")  # the benchmark server's certificates (the test extra has it)
    spec = importlib.util.spec_from_file_location("kle_benchmarks_run", RUN)  # for its tool list
    bench = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # dataclasses look it up there
    spec.loader.exec_module(bench)
    tools = [t for t in bench.TOOLS if not t.needs()]
    if importlib.util.find_spec("kubernetes") is None:  # CI installs only the test extra
        assert not any(t.key.startswith("k8s-") for t in tools)
    out = tmp_path / "report" / "BENCHMARKS.md"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])  # kubectl in the venv
    sizes = ["--sizes", "1", "--pods", "6", "--multi-pods", "2", "--quiet-pods", "2", "--quiet-log-kib", "4"]
    r = subprocess.run([sys.executable, str(RUN), "--quick", "--output", str(out), "--workdir", str(tmp_path / "work")]
                       + sizes,
                       capture_output=True, text=True, timeout=110, env=env, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    report = out.read_text()
    results = json.loads((out.parent / "results.json").read_text())
    for tool in tools:
        assert "| %s |" % tool.label in report, "no row for %s" % tool.key
        ran = [x for x in results["runs"] if x["tool"] == tool.key]
        assert ran and all(not x["error"] and not x["check"] for x in ran), ran
    for section in ("## 1. One large log", "## 2. Fan-out", "## 2b. Many pods", "started days before the run",
                    "started 5 s before the run", "### Tiny pods: ",
                    "## 3. Quiet rerun", "## Targets"):
        assert section in report
    assert "CPUs" in report and "Python" in report
