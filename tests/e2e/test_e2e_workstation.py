"""From a workstation: the control plane's admin kubeconfig (a client certificate), as kubectl uses it."""
from __future__ import annotations

import os
import subprocess
import sys
import time

from e2ekit import ROOT, cri_append, files_under, lines


def test_the_admin_kubeconfig_exports_like_kubectl(k8s, tmp_path):
    ns = k8s.namespace("laptop")
    k8s.pod(ns, "web")
    f = k8s.log_file(ns, "web", "app")
    want = cri_append(f, lines(time.time_ns() - 120 * 10**9, 20, "from a laptop"))
    k8s.give_logs(ns, "web", {"app": (f, None)})
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
    env.update(KUBECONFIG=str(k8s.c.kubeconfig), HOME=str(tmp_path))  # no pod around: the kubeconfig it is
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, str(ROOT / "kubelogexporter.py"), "-n", ns, "-o", str(out)],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert files_under(out) == {f"{ns}/web/app.log": want} == {f"{ns}/web/app.log": k8s.kubectl_logs(ns, "web", "app")}
    r = subprocess.run([sys.executable, str(ROOT / "kubelogexporter.py"), "-n", ns, "-o", str(out), "--context",
                        "nosuch"], capture_output=True, text=True, env=env, timeout=30)
    assert r.returncode == 2 and "nosuch" in r.stderr and r.stderr.count("\n") == 1, r.stderr
