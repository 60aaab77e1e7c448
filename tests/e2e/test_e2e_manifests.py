"""The manifests against a real kube-apiserver: admission, validation, Pod Security `restricted`."""
from __future__ import annotations

import copy
import json

import pytest
import yaml

from e2ekit import ROOT

OVERLAYS = ["manifests", "manifests/overlays/follow", "manifests/overlays/image",
            "manifests/overlays/namespaced", "manifests/overlays/sharded"]


def _objects(k8s, path):
    text = k8s.kubectl("kustomize", str(ROOT / path)).stdout
    return [d for d in yaml.safe_load_all(text) if d]


def _into_namespace(docs, ns):
    """A variant's objects moved to namespace `ns` (cluster-scoped names kept)."""
    for d in docs:
        if d["kind"] == "Namespace":
            d["metadata"]["name"] = ns
        elif "namespace" in d["metadata"]:
            d["metadata"]["namespace"] = ns
        for s in d.get("subjects", []):
            s["namespace"] = ns
    return docs


@pytest.mark.parametrize("path", OVERLAYS)
def test_every_variant_is_accepted_by_the_real_server(k8s, path):
    # Validation and admission of every object, on a fresh install (server-side dry run into a
    # namespace of its own: nothing is changed). The session fixture applied manifests/ for real.
    ns = f"variant-{path.rsplit('/', 1)[-1]}"
    docs = _into_namespace(_objects(k8s, path), ns)
    # a dry-run namespace holds nothing: create it for real first (the variant's own, labels and all)
    ns_doc = next((d for d in docs if d["kind"] == "Namespace"),
                  {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    k8s.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(ns_doc))
    text = "\n---\n".join(yaml.safe_dump(d) for d in docs)
    r = k8s.kubectl("apply", "--server-side", "-f", "-", "--dry-run=server", input=text, check=False)
    assert r.returncode == 0, r.stderr
    assert len([ln for ln in r.stdout.splitlines() if "(server dry run)" in ln]) == len(docs), r.stdout
    assert "Warning" not in r.stderr, r.stderr  # e.g. a PodSecurity warning or an unknown field


def test_switching_the_live_default_to_sharded_needs_a_new_claim(k8s):
    # what the README says: a claim's access modes cannot change (RWO -> RWX)
    r = k8s.kubectl("apply", "--server-side", "-k", str(ROOT / "manifests/overlays/sharded"), "--dry-run=server", check=False)
    assert r.returncode != 0
    assert 'PersistentVolumeClaim "log-exporter-logs" is invalid' in r.stderr and "immutable" in r.stderr


def test_default_install_is_live(k8s):
    cm = json.loads(k8s.kubectl("get", "configmap", "-n", "log-exporter", "-l",
                                "app.kubernetes.io/name=kubelogexporter", "-o", "json").stdout)["items"]
    # the ConfigMap generator's hashed name, holding the script byte for byte
    assert len(cm) == 1 and cm[0]["metadata"]["name"].startswith("log-exporter-script-")
    assert cm[0]["data"]["kubelogexporter.py"] == (ROOT / "kubelogexporter.py").read_text()
    cj = json.loads(k8s.kubectl("get", "cronjob", "log-exporter", "-n", "log-exporter", "-o", "json").stdout)
    vols = {v["name"]: v for v in cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["volumes"]}
    assert any(v.get("configMap", {}).get("name") == cm[0]["metadata"]["name"] for v in vols.values())
    can = k8s.kubectl("auth", "can-i", "get", "pods", "--subresource=log", "-A",
                      "--as=system:serviceaccount:log-exporter:log-exporter-sa", check=False)
    assert can.stdout.strip() == "yes"
    cannot = k8s.kubectl("auth", "can-i", "get", "secrets", "-A",
                         "--as=system:serviceaccount:log-exporter:log-exporter-sa", check=False)
    assert cannot.stdout.strip() == "no"


def _pod_templates():
    out = []
    for path in OVERLAYS:
        for obj in _objects_static(path):
            spec = obj.get("spec", {})
            tmpl = spec.get("jobTemplate", {}).get("spec", {}).get("template") or spec.get("template")
            if tmpl:
                out.append(pytest.param(path, obj["kind"], tmpl, id=f"{path}:{obj['kind']}"))
    return out


_CACHE = {}


def _objects_static(path):
    # collection time: kubectl from the venv, no cluster needed for `kubectl kustomize`
    import subprocess
    from e2ekit import kubectl_binary
    if path not in _CACHE:
        text = subprocess.run([kubectl_binary(), "kustomize", str(ROOT / path)], capture_output=True,
                              text=True, check=True).stdout
        _CACHE[path] = [d for d in yaml.safe_load_all(text) if d]
    return _CACHE[path]


@pytest.fixture(scope="module")
def restricted_ns(k8s):
    return k8s.namespace("pss", labels={"pod-security.kubernetes.io/enforce": "restricted",
                                        "pod-security.kubernetes.io/enforce-version": "latest"})


def _pod_from(tmpl, ns):
    spec = copy.deepcopy(tmpl["spec"])
    spec.pop("serviceAccountName", None)
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "pss-check", "namespace": ns, "labels": tmpl.get("metadata", {}).get("labels", {})},
            "spec": spec}


@pytest.mark.parametrize("path,kind,tmpl", _pod_templates())
def test_pod_template_passes_pod_security_restricted(k8s, restricted_ns, path, kind, tmpl):
    pod = _pod_from(tmpl, restricted_ns)
    r = k8s.kubectl("create", "--dry-run=server", "-o", "name", "-f", "-", input=json.dumps(pod), check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "pod/pss-check"


def test_restricted_namespace_really_rejects_a_weaker_pod(k8s, restricted_ns):
    # the check above could not pass by accident: the same template minus one setting is refused
    tmpl = next(p.values[2] for p in _pod_templates() if p.values[1] == "CronJob")
    pod = _pod_from(tmpl, restricted_ns)
    pod["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    r = k8s.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(pod), check=False)
    assert r.returncode != 0
    assert 'violates PodSecurity "restricted:latest"' in r.stderr and "allowPrivilegeEscalation" in r.stderr
