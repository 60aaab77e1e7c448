"""Running from a workstation like kubectl: kubeconfig files (JSON, YAML through kubectl, merged $KUBECONFIG),
contexts, every kind of user (token, tokenFile, client certificates, exec plugins), TLS settings, and the
precedence between flags, kubeconfig and the in-cluster service account.  Everything talks to the fake API server;
no test reads ~/.kube or the process's own $KUBECONFIG."""

import base64
import contextlib
import json
import os
import shutil
import socket
import stat
import sys
import tempfile
import textwrap
import threading
import time

import pytest

import fakeapi
from conftest import SA_USER, TOKEN, log_lines

from kubelogexporter import ApiError, ConfigError, KubeClient, export_logs, main

KUBECTL = shutil.which("kubectl", path=os.path.dirname(sys.executable)) or shutil.which("kubectl")


@pytest.fixture(autouse=True)
def no_ambient_config(monkeypatch, tmp_path):
    """main() reads os.environ: give it an empty home and no cluster of its own."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"):
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.fixture
def shop(cluster):
    cluster.add_pod("shop", "web", containers=["app"])
    cluster.pod("shop", "web").containers["app"].current.started_at -= 3600 * 10**9  # one log request per run
    cluster.append_log("shop", "web", "app", ["hello", "world"])
    return cluster


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def kubeconfig(server, user, *, ca=None, cluster_extra=None, name="fake", namespace=None, current=True):
    """A one-context kubeconfig as a dict."""
    cluster = {"server": server}
    if ca is not None:
        cluster["certificate-authority-data"] = b64(ca.cert_pem.bytes())
    cluster.update(cluster_extra or {})
    context = {"cluster": name, "user": name}
    if namespace:
        context["namespace"] = namespace
    return {"apiVersion": "v1", "kind": "Config", "current-context": name if current else "",
            "clusters": [{"name": name, "cluster": cluster}], "users": [{"name": name, "user": user}],
            "contexts": [{"name": name, "context": context}], "preferences": {}}


def write(path, config):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config))
    return path


def run(capsys, *args):
    started = time.monotonic()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err, time.monotonic() - started


# ---------------------------------------------------------------- users


def test_token_user_with_inline_ca(shop, apiserver, ca, tmp_path, capsys):
    config = write(tmp_path / "kubeconfig", kubeconfig(apiserver.url, {"token": TOKEN}, ca=ca))
    code, _, err, _ = run(capsys, "--kubeconfig", str(config), "-o", str(tmp_path / "logs"))
    assert code == 0, err
    assert log_lines(tmp_path / "logs/shop/web/app.log")[1].endswith(" world")
    assert {r.user for r in apiserver.requests} == {SA_USER}


def test_token_file_and_ca_file_relative_to_the_kubeconfig(shop, apiserver, ca, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "conf"
    folder.mkdir()
    (folder / "secrets").mkdir()
    (folder / "secrets/token").write_text(TOKEN + "\n")
    (folder / "ca.crt").write_bytes(ca.cert_pem.bytes())
    config = write(folder / "config", kubeconfig(apiserver.url, {"tokenFile": "secrets/token"},
                                                 cluster_extra={"certificate-authority": "ca.crt"}))
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # relative to the kubeconfig's folder, not the working directory
    code, _, err, _ = run(capsys, "--kubeconfig", str(config), "-o", "logs")
    assert code == 0, err
    assert (elsewhere / "logs/shop/web/app.log").exists()
    assert apiserver.requests[0].headers["Authorization"] == "Bearer " + TOKEN


@pytest.fixture
def jane(ca):
    """A client certificate for user "jane", issued by the CA the fake API server trusts for clients."""
    return ca.issue_cert("jane@example.com", common_name="jane")


@pytest.fixture
def jane_files(jane, tmp_path):
    """jane's certificate and key as files (tmp_path/jane.crt, tmp_path/jane.key)."""
    jane.cert_chain_pems[0].write_to_path(str(tmp_path / "jane.crt"))
    jane.private_key_pem.write_to_path(str(tmp_path / "jane.key"))
    return tmp_path / "jane.crt", tmp_path / "jane.key"


def assert_only_jane_by_certificate(apiserver):
    assert {r.user for r in apiserver.requests} == {"jane"}
    assert all("Authorization" not in r.headers for r in apiserver.requests)


def test_client_certificate_files(shop, apiserver, ca, jane_files, tmp_path, capsys):
    config = write(tmp_path / "kubeconfig", kubeconfig(apiserver.url, {"client-certificate": "jane.crt",
                                                                       "client-key": "jane.key"}, ca=ca))
    code, _, err, _ = run(capsys, "--kubeconfig", str(config), "-o", str(tmp_path / "logs"))
    assert code == 0, err
    assert_only_jane_by_certificate(apiserver)


def test_inline_client_certificate_leaves_no_key_on_disk(shop, apiserver, ca, jane, tmp_path, capsys, monkeypatch):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    user = {"client-certificate-data": b64(jane.cert_chain_pems[0].bytes()),
            "client-key-data": b64(jane.private_key_pem.bytes())}
    config = write(tmp_path / "kubeconfig", kubeconfig(apiserver.url, user, ca=ca))
    code, _, err, _ = run(capsys, "--kubeconfig", str(config), "-o", str(tmp_path / "logs"))
    assert code == 0, err
    assert {r.user for r in apiserver.requests} == {"jane"}
    assert list(scratch.iterdir()) == []


def test_a_client_certificate_without_its_key_says_so(apiserver, ca, jane, tmp_path, capsys):
    user = {"client-certificate-data": b64(jane.cert_chain_pems[0].bytes())}
    config = write(tmp_path / "kubeconfig", kubeconfig(apiserver.url, user, ca=ca))
    code, _, err, _ = run(capsys, "--kubeconfig", str(config), "-o", str(tmp_path / "logs"))
    assert code == 2
    assert err.count("\n") == 1 and "client certificate without its key" in err


# ---------------------------------------------------------------- exec plugins

PLUGIN = """\
#!{python}
import datetime, json, os, sys
folder = os.environ["PLUGIN_DIR"]
runs = os.path.join(folder, "runs")
n = int(open(runs).read()) + 1 if os.path.exists(runs) else 1
open(runs, "w").write(str(n))
plan = json.load(open(os.path.join(folder, "plan.json")))
with open(os.path.join(folder, "calls.jsonl"), "a") as calls:
    calls.write(json.dumps({{"argv": sys.argv[1:], "info": json.loads(os.environ["KUBERNETES_EXEC_INFO"]),
                             "extra": os.environ.get("EXTRA")}}) + "\\n")
if plan.get("fail"):
    sys.stderr.write("plugin: you must log in\\n")
    sys.exit(3)
status = {{}}
if plan.get("cert"):
    status["clientCertificateData"] = open(plan["cert"]).read()
    status["clientKeyData"] = open(plan["key"]).read()
else:
    status["token"] = "exec-%d" % n
if plan.get("ttl") is not None:
    expiry = datetime.datetime.utcnow() + datetime.timedelta(seconds=plan["ttl"])
    status["expirationTimestamp"] = expiry.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
print(json.dumps({{"apiVersion": plan["apiVersion"], "kind": "ExecCredential", "status": status}}))
"""


class Plugin:
    def __init__(self, folder, api_version):
        self.folder, self.api_version = folder, api_version
        folder.mkdir(exist_ok=True)
        script = folder / "bin" / "auth-plugin"
        script.parent.mkdir(exist_ok=True)
        script.write_text(PLUGIN.format(python=sys.executable))
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
        self.plan()

    def plan(self, **plan):
        (self.folder / "plan.json").write_text(json.dumps(dict(plan, apiVersion=self.api_version)))

    @property
    def runs(self):
        path = self.folder / "runs"
        return int(path.read_text()) if path.exists() else 0

    @property
    def calls(self):
        return [json.loads(line) for line in (self.folder / "calls.jsonl").read_text().splitlines()]

    def user(self, **extra):
        spec = {"apiVersion": self.api_version, "command": "./bin/auth-plugin", "args": None,
                "env": [{"name": "PLUGIN_DIR", "value": str(self.folder)}], "interactiveMode": "IfAvailable",
                "provideClusterInfo": False}
        spec.update(extra)
        return {"exec": spec}


@pytest.fixture(params=["client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1"])
def plugin(request, tmp_path):
    return Plugin(tmp_path / "plugin", request.param)


def test_exec_plugin_token(shop, apiserver, ca, plugin, tmp_path, capsys):
    apiserver.tokens["exec-1"] = "jane"
    user = plugin.user(args=["get-token", "--cluster", "fake"],
                       env=[{"name": "PLUGIN_DIR", "value": str(plugin.folder)}, {"name": "EXTRA", "value": "x"}],
                       provideClusterInfo=True)
    config = write(plugin.folder / "kubeconfig", kubeconfig(
        apiserver.url, user, ca=ca, cluster_extra={"extensions": [
            {"name": "client.authentication.k8s.io/exec", "extension": {"audience": "logs"}}]}))
    code, _, err, _ = run(capsys, "--kubeconfig", str(config), "-o", str(tmp_path / "logs"))
    assert code == 0, err
    assert plugin.runs == 1 and {r.user for r in apiserver.requests} == {"jane"}
    call = plugin.calls[0]
    assert call["argv"] == ["get-token", "--cluster", "fake"] and call["extra"] == "x"
    assert call["info"]["apiVersion"] == plugin.api_version and call["info"]["kind"] == "ExecCredential"
    assert call["info"]["spec"]["interactive"] is False  # stdin is not a terminal under pytest
    cluster = call["info"]["spec"]["cluster"]
    assert cluster["server"] == apiserver.url and cluster["config"] == {"audience": "logs"}
    assert base64.b64decode(cluster["certificate-authority-data"]) == ca.cert_pem.bytes()


def test_exec_plugin_without_cluster_info_and_with_kubectls_nulls(apiserver, ca, plugin):
    apiserver.tokens["exec-1"] = "jane"
    config = write(plugin.folder / "kubeconfig", kubeconfig(apiserver.url, plugin.user(env=None), ca=ca))
    with pytest.raises(ConfigError, match="auth-plugin"):  # env: null: the plugin misses PLUGIN_DIR and fails
        KubeClient.from_kubeconfig(config, environ={"PATH": os.defpath})
    config = write(plugin.folder / "kubeconfig", kubeconfig(apiserver.url, plugin.user(), ca=ca))
    client = KubeClient.from_kubeconfig(config, environ={"PATH": os.defpath})
    assert list(client.list_pods()) == []
    assert plugin.calls[0]["argv"] == [] and "cluster" not in plugin.calls[0]["info"]["spec"]


def test_exec_plugin_cluster_info_carries_a_ca_files_content(apiserver, ca, plugin):
    apiserver.tokens["exec-1"] = "jane"
    (plugin.folder / "ca.crt").write_bytes(ca.cert_pem.bytes())
    config = write(plugin.folder / "kubeconfig", kubeconfig(apiserver.url, plugin.user(provideClusterInfo=True),
                                                            cluster_extra={"certificate-authority": "ca.crt"}))
    assert list(KubeClient.from_kubeconfig(config, environ={}).list_pods()) == []
    cluster = plugin.calls[0]["info"]["spec"]["cluster"]
    assert base64.b64decode(cluster["certificate-authority-data"]) == ca.cert_pem.bytes()


def test_exec_plugin_reruns_when_its_token_expires(apiserver, ca, plugin):
    apiserver.tokens.update({"exec-1": "jane", "exec-2": "jane"})
    plugin.plan(ttl=1.0)
    config = write(plugin.folder / "kubeconfig", kubeconfig(apiserver.url, plugin.user(), ca=ca))
    client = KubeClient.from_kubeconfig(config, environ={})
    list(client.list_pods())
    list(client.list_pods())
    assert plugin.runs == 1
    time.sleep(1.1)
    list(client.list_pods())
    assert plugin.runs == 2
    assert [r.headers["Authorization"] for r in apiserver.requests] == ["Bearer exec-1"] * 2 + ["Bearer exec-2"]


def test_exec_plugin_reruns_after_a_401(apiserver, ca, plugin):
    apiserver.tokens["exec-2"] = "jane"  # the first token is not (or no longer) valid
    config = write(plugin.folder / "kubeconfig", kubeconfig(apiserver.url, plugin.user(), ca=ca))
    client = KubeClient.from_kubeconfig(config, environ={})
    assert list(client.list_pods()) == []
    assert plugin.runs == 2
    assert [r.status for r in apiserver.requests] == [401, 200]


def test_a_failing_rerun_keeps_the_last_token_and_says_why_once(apiserver, ca, plugin, caplog):
    apiserver.tokens["exec-1"] = "jane"
    plugin.plan(ttl=0.3)
    config = write(plugin.folder / "kubeconfig", kubeconfig(apiserver.url, plugin.user(), ca=ca))
    client = KubeClient.from_kubeconfig(config, environ={})
    plugin.plan(fail=True)  # the login expired, say
    time.sleep(0.4)
    with caplog.at_level("ERROR", logger="kubelogexporter"):
        assert list(client.list_pods()) == []  # the server still takes the old token
        apiserver.faults.revoke_token("exec-1")
        with pytest.raises(ApiError) as refused:
            list(client.list_pods())
    assert refused.value.status == 401
    assert plugin.runs == 2  # one failed rerun; the 401 right after it does not run the plugin again
    assert [r.getMessage() for r in caplog.records] == [
        'exec plugin "%s" of user "fake" failed with exit code 3: run it yourself to see why, or log in again'
        % (plugin.folder / "bin/auth-plugin")]


def jane_plugin_kubeconfig(tmp_path, apiserver, ca, jane_files):
    """An exec plugin that issues jane's certificate, and a kubeconfig that uses it."""
    plugin = Plugin(tmp_path / "plugin", "client.authentication.k8s.io/v1")
    plugin.plan(cert=str(jane_files[0]), key=str(jane_files[1]))
    return plugin, write(plugin.folder / "kubeconfig", kubeconfig(apiserver.url, plugin.user(), ca=ca))


def test_exec_plugin_client_certificate(shop, apiserver, ca, jane_files, tmp_path, capsys):
    _, config = jane_plugin_kubeconfig(tmp_path, apiserver, ca, jane_files)
    code, _, err, _ = run(capsys, "--kubeconfig", str(config), "-o", str(tmp_path / "logs"))
    assert code == 0, err
    assert_only_jane_by_certificate(apiserver)


def test_exec_plugin_client_certificate_is_renewed_after_a_401(shop, apiserver, ca, jane_files, tmp_path,
                                                                monkeypatch):
    plugin, config = jane_plugin_kubeconfig(tmp_path, apiserver, ca, jane_files)
    client = KubeClient.from_kubeconfig(config, environ={})
    assert len(list(client.list_pods())) == 1
    accepted = apiserver.connections_accepted
    # The server stops accepting the certificate once (it expired, say): the plugin runs again, and the retry
    # goes out on a new connection that presents the new certificate.
    authenticate = apiserver._authenticate
    calls = []

    def unauthorized_once(h):
        calls.append(h)
        if len(calls) == 1:
            raise fakeapi._APIError(401, "Unauthorized", "Unauthorized")
        return authenticate(h)
    monkeypatch.setattr(apiserver, "_authenticate", unauthorized_once)
    assert len(list(client.list_pods())) == 1
    assert plugin.runs == 2 and apiserver.connections_accepted == accepted + 1
    assert [r.status for r in apiserver.requests][-2:] == [401, 200]


@pytest.mark.parametrize("plan, user, message", [
    ({"fail": True}, {}, 'exec plugin ".*auth-plugin" of user "fake" failed with exit code 3: run it yourself'),
    ({}, {"command": "no-such-plugin", "installHint": "Install it:\n  brew install no-such-plugin"},
     'exec plugin "no-such-plugin" of user "fake" not found: Install it: brew install no-such-plugin$'),
    ({}, {"interactiveMode": "Always"}, "needs a terminal"),
    ({}, {"apiVersion": "client.authentication.k8s.io/v1alpha1"}, "use client.authentication.k8s.io/v1 or"),
])
def test_exec_plugin_problems_are_one_line_exit_2(apiserver, ca, tmp_path, capsys, monkeypatch, plan, user, message):
    import re

    plugin = Plugin(tmp_path / "plugin", "client.authentication.k8s.io/v1")
    plugin.plan(**plan)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    config = write(plugin.folder / "kubeconfig", kubeconfig(apiserver.url, plugin.user(**user), ca=ca))
    code, _, err, _ = run(capsys, "--kubeconfig", str(config), "-o", str(tmp_path / "logs"))
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 1 and re.search(message, lines[0]), err
    assert apiserver.requests == []


def test_v1_exec_plugin_needs_interactive_mode(apiserver, ca, tmp_path):
    plugin = Plugin(tmp_path / "plugin", "client.authentication.k8s.io/v1")
    config = write(plugin.folder / "kubeconfig", kubeconfig(apiserver.url, plugin.user(interactiveMode=None), ca=ca))
    with pytest.raises(ConfigError, match="interactiveMode"):
        KubeClient.from_kubeconfig(config, environ={})
    assert plugin.runs == 0


# ---------------------------------------------------------------- files, merging, contexts


def test_merged_kubeconfig_first_file_wins(shop, apiserver, ca, tmp_path, capsys, monkeypatch):
    first = kubeconfig(apiserver.url, {"token": TOKEN}, ca=ca, current=False)
    second = kubeconfig("https://127.0.0.1:1", {"token": "wrong"}, ca=ca)  # same names: the first file's win
    second["contexts"].append({"name": "other", "context": {"cluster": "fake", "user": "fake", "namespace": "x"}})
    second["current-context"] = "other"  # only the second file sets one: it counts
    a, b = write(tmp_path / "a.json", first), write(tmp_path / "b.json", second)
    environ = {"KUBECONFIG": os.pathsep.join([str(a), str(tmp_path / "missing"), str(b), str(a)])}
    client = KubeClient.from_kubeconfig(environ=environ)
    assert client.server == apiserver.url and client.namespace == "x"
    assert len(list(client.list_pods())) == 1
    monkeypatch.setenv("KUBECONFIG", environ["KUBECONFIG"])
    code, _, err, _ = run(capsys, "-o", str(tmp_path / "logs"))  # no connection flag at all
    assert code == 0, err
    assert (tmp_path / "logs/shop/web/app.log").exists()


def test_home_kube_config_is_the_default(shop, apiserver, ca, tmp_path, capsys, no_ambient_config):
    write(no_ambient_config / ".kube" / "config", kubeconfig(apiserver.url, {"token": TOKEN}, ca=ca))
    code, _, err, _ = run(capsys, "-o", str(tmp_path / "logs"))
    assert code == 0, err
    assert err.startswith("kubelogexporter: exported 1 of 1 containers from 1 pods")


def test_context_flag_picks_another_context(shop, apiserver, ca, tmp_path, capsys):
    config = kubeconfig("https://127.0.0.1:1", {"token": "wrong"}, ca=ca)  # the current context: unreachable
    good = kubeconfig(apiserver.url, {"token": TOKEN}, ca=ca, name="good")
    for kind in ("clusters", "users", "contexts"):
        config[kind] += good[kind]
    path = write(tmp_path / "kubeconfig", config)
    code, _, err, _ = run(capsys, "--kubeconfig", str(path), "--context", "good", "-o", str(tmp_path / "logs"))
    assert code == 0, err
    assert len(apiserver.requests) == 2


def test_unknown_context_is_one_line_exit_2(tmp_path, apiserver, ca, capsys):
    path = write(tmp_path / "kubeconfig", kubeconfig(apiserver.url, {"token": TOKEN}, ca=ca))
    code, _, err, seconds = run(capsys, "--kubeconfig", str(path), "--context", "nosuch", "-o", str(tmp_path / "logs"))
    assert (code, err) == (2, 'kubelogexporter: error: context "nosuch" not found in %s: pass --context with one '
                              'of: fake\n' % path)
    assert seconds < 1 and apiserver.requests == []


def test_no_current_context_says_what_to_do(tmp_path, apiserver, ca, capsys):
    path = write(tmp_path / "kubeconfig", kubeconfig(apiserver.url, {"token": TOKEN}, ca=ca, current=False))
    code, _, err, _ = run(capsys, "--kubeconfig", str(path), "-o", str(tmp_path / "logs"))
    assert code == 2 and "sets no current-context: pass --context NAME (fake)" in err


def test_nothing_to_connect_to_says_what_to_do(tmp_path, capsys):
    code, _, err, seconds = run(capsys, "-o", str(tmp_path / "logs"))
    assert code == 2 and seconds < 1
    assert err.count("\n") == 1
    assert "no kubeconfig at" in err and "--kubeconfig FILE" in err and "kubectl proxy" in err


@pytest.mark.skipif(KUBECTL is None, reason="kubectl not installed")
def test_yaml_kubeconfig_is_read_through_kubectl(shop, apiserver, ca, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "conf"
    folder.mkdir()
    (folder / "ca.crt").write_bytes(ca.cert_pem.bytes())
    path = folder / "config"
    path.write_text(textwrap.dedent("""\
        apiVersion: v1
        kind: Config
        clusters:
        - name: fake
          cluster:
            server: {server}
            certificate-authority: ca.crt   # relative to this file
        users:
        - name: fake
          user:
            token: {token}
        contexts:
        - name: fake
          context: {{cluster: fake, user: fake, namespace: shop}}
        current-context: fake
        """).format(server=apiserver.url, token=TOKEN))
    monkeypatch.setenv("PATH", os.path.dirname(KUBECTL))
    client = KubeClient.from_kubeconfig(path, environ={"PATH": os.path.dirname(KUBECTL), "HOME": str(tmp_path)})
    assert client.namespace == "shop"
    assert len(list(client.list_pods())) == 1
    code, _, err, _ = run(capsys, "--kubeconfig", str(path), "-o", str(tmp_path / "logs"))
    assert code == 0, err


@pytest.mark.skipif(KUBECTL is None, reason="kubectl not installed")
def test_broken_yaml_kubeconfig_says_what_kubectl_said(tmp_path, capsys, monkeypatch):
    path = tmp_path / "config"
    path.write_text("apiVersion: v1\nclusters: [\n")
    monkeypatch.setenv("PATH", os.path.dirname(KUBECTL))
    code, _, err, _ = run(capsys, "--kubeconfig", str(path), "-o", str(tmp_path / "logs"))
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("kubelogexporter: error: kubectl cannot read kubeconfig %s (" % path) and "fix the file" in err


def test_yaml_kubeconfig_without_kubectl_is_one_line_exit_2(tmp_path, capsys, monkeypatch, apiserver):
    path = tmp_path / "config"
    path.write_text("apiVersion: v1\nkind: Config\ncurrent-context: x\n")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    code, _, err, seconds = run(capsys, "--kubeconfig", str(path), "-o", str(tmp_path / "logs"))
    assert code == 2 and seconds < 1 and err.count("\n") == 1
    assert "is YAML" in err and "kubectl is not on PATH" in err and "kubectl config view --raw -o json" in err


# ---------------------------------------------------------------- TLS


def test_an_untrusted_server_is_exit_2_at_once_naming_the_ca_setting(apiserver, tmp_path, capsys):
    import trustme

    path = write(tmp_path / "kubeconfig", kubeconfig(apiserver.url, {"token": TOKEN}, ca=trustme.CA()))
    code, _, err, seconds = run(capsys, "--kubeconfig", str(path), "-o", str(tmp_path / "logs"))
    assert code == 2 and seconds < 1, err
    assert err.count("\n") == 1 and "cannot verify the certificate of %s" % apiserver.url in err
    assert 'check certificate-authority-data of cluster "fake" in %s' % path in err
    assert apiserver.requests == [] and apiserver.connections_accepted == 1  # no retries


def test_tls_server_name_is_what_the_certificate_is_checked_against(shop, ca, tmp_path, capsys):
    # A certificate for a DNS name only, reached by IP address: it verifies only against tls-server-name.
    context = fakeapi.server_ssl_context(ca, ("kubernetes.internal",))
    with fakeapi.FakeAPIServer(shop, ssl_context=context, tokens={TOKEN: SA_USER}) as server:
        config = kubeconfig(server.url, {"token": TOKEN}, ca=ca)
        code, _, err, _ = run(capsys, "--kubeconfig", str(write(tmp_path / "plain", config)), "-o", str(tmp_path / "a"))
        assert code == 2 and err.count("\n") == 1 and "set tls-server-name in the kubeconfig" in err
        config["clusters"][0]["cluster"]["tls-server-name"] = "kubernetes.internal"
        client = KubeClient.from_kubeconfig(write(tmp_path / "named", config), environ={})
        assert len(list(client.list_pods())) == 1


def test_insecure_skip_tls_verify_in_the_kubeconfig(shop, apiserver, tmp_path):
    config = kubeconfig(apiserver.url, {"token": TOKEN}, cluster_extra={"insecure-skip-tls-verify": True})
    client = KubeClient.from_kubeconfig(write(tmp_path / "kubeconfig", config), environ={})
    assert len(list(client.list_pods())) == 1


class ConnectProxy:
    """An HTTP proxy that only tunnels (CONNECT), recording what it was asked."""

    def __init__(self):
        self.requests = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = "http://127.0.0.1:%d" % self.listener.getsockname()[1]
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self.tunnel, args=(client,), daemon=True).start()

    def tunnel(self, client):
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = client.recv(4096)
            if not chunk:
                return client.close()
            head += chunk
        lines = head.decode("latin-1").split("\r\n")
        self.requests.append(lines[0:1] + sorted(line for line in lines[1:] if line.startswith("Proxy-")))
        host, _, port = lines[0].split()[1].rpartition(":")
        upstream = socket.create_connection((host, int(port)))
        client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")

        def pipe(src, dst):
            try:
                while True:
                    data = src.recv(65536)
                    if not data:
                        break
                    dst.sendall(data)
            except OSError:
                pass
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        threading.Thread(target=pipe, args=(upstream, client), daemon=True).start()
        pipe(client, upstream)

    def close(self):
        self.listener.close()


def test_proxy_url_tunnels_through_an_http_proxy(shop, apiserver, ca, tmp_path, capsys):
    proxy = ConnectProxy()
    try:
        user_url = proxy.url.replace("http://", "http://ops:s%40cret@")
        config = kubeconfig(apiserver.url, {"token": TOKEN}, ca=ca, cluster_extra={"proxy-url": user_url})
        code, _, err, _ = run(capsys, "--kubeconfig", str(write(tmp_path / "kubeconfig", config)),
                              "-o", str(tmp_path / "logs"))
        assert code == 0, err
        target = "%s:%d" % (apiserver.host, apiserver.port)
        assert proxy.requests[0] == ["CONNECT %s HTTP/1.0" % target,
                                     "Proxy-Authorization: Basic " + b64(b"ops:s@cret")]
        assert {r.user for r in apiserver.requests} == {SA_USER}
    finally:
        proxy.close()


@pytest.mark.parametrize("user, cluster_extra, message", [
    ({"auth-provider": {"name": "gcp", "config": {}}}, {},
     'uses auth-provider "gcp", which kubectl 1.26\\+ and kubelogexporter do not support: switch it to an exec plugin'),
    ({"token": TOKEN}, {"proxy-url": "socks5://ops:secret@proxy:1080"},
     "sets proxy-url socks5://ops:\\*\\*\\*@proxy:1080; kubelogexporter tunnels https servers through http:// "
     "proxies only: run kubectl proxy"),
])
def test_unsupported_settings_say_so_in_one_line(apiserver, ca, tmp_path, capsys, user, cluster_extra, message):
    import re

    path = write(tmp_path / "kubeconfig", kubeconfig(apiserver.url, user, ca=ca, cluster_extra=cluster_extra))
    code, _, err, _ = run(capsys, "--kubeconfig", str(path), "-o", str(tmp_path / "logs"))
    assert code == 2 and err.count("\n") == 1 and re.search(message, err), err


# ---------------------------------------------------------------- precedence and the library


def test_in_cluster_beats_kubeconfig_and_explicit_kubeconfig_beats_in_cluster(apiserver, ca, service_account,
                                                                              sa_environ, tmp_path):
    path = write(tmp_path / "kubeconfig", kubeconfig("https://127.0.0.1:2", {"token": TOKEN}, ca=ca))
    environ = dict(sa_environ, KUBECONFIG=str(path))
    assert KubeClient.from_environment(environ=environ, account_dir=service_account).server == apiserver.url
    assert KubeClient.from_environment(environ=environ, account_dir=service_account,
                                       kubeconfig=path).server == "https://127.0.0.1:2"
    assert KubeClient.from_environment(environ=environ, account_dir=service_account,
                                       context="fake").server == "https://127.0.0.1:2"
    # --server wins over the kubeconfig, whose user and CA still apply
    client = KubeClient.from_environment(environ=environ, account_dir=tmp_path / "none", kubeconfig=path,
                                         server=apiserver.url)
    assert list(client.list_pods()) == []
    # outside a pod (no service host), $KUBECONFIG applies
    assert KubeClient.from_environment(environ={"KUBECONFIG": str(path)},
                                       account_dir=service_account).server == "https://127.0.0.1:2"


def test_export_logs_with_a_client(shop, apiserver, ca, tmp_path):
    path = write(tmp_path / "kubeconfig", kubeconfig(apiserver.url, {"token": TOKEN}, ca=ca, namespace="shop"))
    client = KubeClient.from_kubeconfig(path)
    result = export_logs(tmp_path / "logs", namespaces=[client.namespace], client=client)
    assert (result.exit_code, result.pods, result.exported) == (0, 1, 1)
    assert log_lines(tmp_path / "logs/shop/web/app.log")[0].endswith(" hello")


def test_a_namespace_without_pods_says_so(shop, apiserver, ca, tmp_path, capsys):
    path = write(tmp_path / "kubeconfig", kubeconfig(apiserver.url, {"token": TOKEN}, ca=ca))
    code, _, err, _ = run(capsys, "--kubeconfig", str(path), "-n", "nosuch", "-o", str(tmp_path / "logs"))
    assert code == 0
    assert "kubelogexporter: note: no pods in namespace nosuch: check the name with kubectl get namespaces\n" in err
    code, _, err, _ = run(capsys, "--kubeconfig", str(path), "-n", "shop", "-o", str(tmp_path / "logs"))
    assert code == 0 and "note:" not in err


def test_a_forbidden_cluster_listing_falls_back_to_the_context_namespace(shop, apiserver, ca, tmp_path, capsys):
    apiserver.authorize = lambda user, verb, resource, sub, namespace, **_: namespace == "shop"
    shop.add_pod("other", "theirs")
    config = write(tmp_path / "kubeconfig", kubeconfig(apiserver.url, {"token": TOKEN}, ca=ca, namespace="shop"))
    code, _, err, _ = run(capsys, "--kubeconfig", str(config), "-o", str(tmp_path / "logs"))
    assert code == 0, err
    assert "exporting namespace shop only" in err
    assert [p.name for p in (tmp_path / "logs").iterdir() if p.is_dir()] == ["shop"]
