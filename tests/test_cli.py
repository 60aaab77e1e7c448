"""The command line: main([...]) return codes and what it prints."""

import http.server
import json
import os
import signal
import subprocess
import sys
import threading

import pytest

from kubelogexporter import main

from conftest import ROOT  # noqa: E402


@pytest.fixture
def args(apiserver, service_account, tmp_path):
    return ["--server", apiserver.url, "--token-file", str(service_account / "token"),
            "--ca-file", str(service_account / "ca.crt"), "-o", str(tmp_path / "logs")]


@pytest.fixture
def shop(cluster):
    cluster.add_pod("shop", "web", containers=["app", "proxy"])
    cluster.append_log("shop", "web", "app", ["hello"])
    cluster.append_log("shop", "web", "proxy", ["GET / 200"])
    return cluster


def test_a_run_prints_one_summary_line(shop, args, capsys):
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("kubelogexporter: exported 2 of 2 containers from 1 pods: ") and err.count("\n") == 1


def test_json_prints_one_summary_object(shop, args, capsys, tmp_path):
    assert main(args + ["--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["pods"], summary["containers"], summary["exported"]) == (1, 2, 2)
    assert sorted(summary["files"]) == ["shop/web/app.log", "shop/web/proxy.log"]
    assert summary["failed"] == [] and summary["skipped"] == [] and summary["bytes_written"] > 0


def test_quiet_prints_nothing_on_success(shop, args, capsys):
    assert main(args + ["-q"]) == 0
    assert capsys.readouterr() == ("", "")


def test_verbose_shows_requests_and_never_the_token(shop, args, capsys, tmp_path, apiserver):
    assert main(args + ["-v", "--json"]) == 0
    out, err = capsys.readouterr()
    assert "GET /api/v1/pods?limit=500 -> 200" in err
    assert "GET /api/v1/namespaces/shop/pods/web/log?container=app&timestamps=true -> 200" in err
    written = b"".join(p.read_bytes() for p in (tmp_path / "logs").rglob("*") if p.is_file())
    assert "token-1" not in out + err and b"token-1" not in written
    assert all(r.headers.get("Authorization") == "Bearer token-1" for r in apiserver.requests)


def test_dry_run_prints_the_urls_it_would_fetch(shop, args, capsys, apiserver):
    assert main(args + ["--dry-run"]) == 0
    # containers started just now: previous=true first, in case one restarted after the listing
    assert capsys.readouterr().out.splitlines() == [
        apiserver.url + "/api/v1/namespaces/shop/pods/web/log?container=%s%s&timestamps=true" % (c, previous)
        for c in ("app", "proxy") for previous in ("&previous=true", "")]


@pytest.mark.parametrize("extra, message", [
    (["--since", "yesterday"], "not a duration: 'yesterday' (use e.g. 90s, 15m, 2h, 1d)"),
    (["--concurrency", "0"], "argument --concurrency: must be a whole number of at least 1, not '0'"),
    (["--shard-count", "3"], "--shard-count needs --shard-index or $JOB_COMPLETION_INDEX"),
    (["--shard-index", "1"], "--shard-index needs --shard-count"),
    (["-A", "-n", "shop"], "-A and -n exclude each other"),
    (["--since-time", "10:00"], "is not an RFC 3339 time"),
    (["--since", "1h", "--since-time", "2026-11-29T10:00:00Z"], "exclude each other"),
    (["--timeout", "0"], "argument --timeout: must be a number of seconds more than 0, not '0'"),
    (["--since", "9" * 400 + "d"], "is too long: use at most 10000d"),
    (["-n", "../shop"], "-n '../shop' is not a namespace name"),
    (["-n", "Shop"], "-n 'Shop' is not a namespace name"),
])
def test_bad_values_are_usage_errors(shop, args, capsys, extra, message):
    assert main(args + extra) == 2
    out, err = capsys.readouterr()
    assert message in err and err.startswith("kubelogexporter: error: ") and err.count("\n") == 1


def test_unknown_flag_is_a_usage_error(capsys):
    assert main(["--frobnicate"]) == 2
    assert "unrecognized arguments: --frobnicate" in capsys.readouterr().err


def test_missing_token_says_what_to_do(tmp_path, capsys):
    assert main(["--server", "https://127.0.0.1:1", "--token-file", str(tmp_path / "nope"), "-o", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        "kubelogexporter: error: token file %s not found: run inside a pod with a service account, "
        "or pass --token-file\n" % (tmp_path / "nope"))


def test_unreadable_ca_is_a_usage_error(args, tmp_path, capsys):
    bad = tmp_path / "bad.crt"
    bad.write_text("garbage")
    assert main(args + ["--ca-file", str(bad)]) == 2
    assert "cannot load CA file" in capsys.readouterr().err
    assert not (tmp_path / "logs").exists()


def test_the_default_account_is_refused_with_the_apis_message(shop, args, apiserver, capsys):
    apiserver.tokens["token-1"] = "system:serviceaccount:default:default"
    apiserver.authorize = lambda user, *a, **k: user != "system:serviceaccount:default:default"
    assert main(args + ["-A"]) == 3
    err = capsys.readouterr().err
    assert err == ('kubelogexporter: error: pods is forbidden: User "system:serviceaccount:default:default" cannot '
                   'list resource "pods" in API group "" at the cluster scope: grant "list pods" cluster-wide to '
                   'this identity, e.g. kubectl create clusterrolebinding log-reader --clusterrole=view '
                   '--serviceaccount=NS:NAME, or --user=NAME\n')


def test_a_refused_log_read_exits_3(shop, args, apiserver, capsys):
    apiserver.authorize = lambda user, verb, resource, sub, ns, **k: sub != "log"
    assert main(args) == 3
    err = capsys.readouterr().err
    assert 'cannot get resource "pods/log"' in err and '"get pods/log"' in err


def test_an_invalid_token_exits_3(shop, args, apiserver, capsys):
    apiserver.tokens.clear()
    apiserver.tokens["other"] = "someone"
    assert main(args) == 3
    assert capsys.readouterr().err.startswith("kubelogexporter: error: Unauthorized: the API server rejected the "
                                              "credentials; check --token-file")


def test_a_failed_container_exits_1(shop, args, apiserver, capsys):
    apiserver.faults.log_error_tail("shop", "web", "app", "unable to retrieve container logs")
    assert main(args) == 1
    assert "kubelogexporter: error: shop/web/app: the kubelet reported: unable to retrieve container logs" in capsys.readouterr().err


def test_shard_index_comes_from_the_indexed_job(shop, args, monkeypatch, capsys):
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "0")
    assert main(args + ["--shard-count", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["pods"] == 1


def test_insecure_warns(shop, args, capsys):
    assert main(args + ["--insecure-skip-tls-verify"]) == 0
    assert "warning: TLS verification is off" in capsys.readouterr().err


@pytest.mark.parametrize("command", [
    [sys.executable, "-m", "kubelogexporter", "--version"],
    [sys.executable, str(ROOT / "kubelogexporter.py"), "--version"],
])
def test_runs_as_a_module_and_as_a_script(command):
    proc = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    assert (proc.returncode, proc.stdout) == (0, "kubelogexporter 0.1.0\n")


@pytest.mark.parametrize("extra, message", [
    (["--server", ""], "server '' is not an http(s) URL"),
    (["--server", "https://[::1"], "is not an http(s) URL"),
    (["--server", "https://h:badport"], "is not an http(s) URL"),
    (["--server", "https://h:99999"], "is not an http(s) URL"),
])
def test_bad_server_urls_are_usage_errors(args, capsys, extra, message):
    assert main(args + extra) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("kubelogexporter: error: ") and err.count("\n") == 1


def test_a_token_file_that_is_not_utf8_is_a_usage_error(shop, args, service_account, capsys):
    (service_account / "token").write_bytes(b"\xff\xfe")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "is not UTF-8 text" in err and err.count("\n") == 1


def test_since_time_in_year_one_reaches_the_api_as_four_digits(shop, args, apiserver, capsys):
    assert main(args + ["--since-time", "0001-01-01T00:00:00Z"]) == 0
    assert {r.query["sinceTime"][0] for r in apiserver.log_requests()} == {"0001-01-01T00:00:00Z"}


def _state_symlink_to_dev_zero(path):
    path.symlink_to("/dev/zero")


def _state_fifo(path):
    os.mkfifo(str(path))


@pytest.mark.parametrize("make_state, message", [
    ('{"version": 1, "containers": "abc"}', "has an unknown format"),
    ('{"version": 1, "containers": 5}', "has an unknown format"),
    ('{"version": 1, "files": [1]}', "has an unknown format"),
    ('[1]', "has an unknown format"),
    ("[" * 200_000 + "]" * 200_000, "is unreadable (nested too deep)"),
    (_state_symlink_to_dev_zero, "is unreadable (a symbolic link)"),
    (_state_fifo, "is unreadable (not a regular file)"),
])
def test_a_state_file_that_is_no_state_is_one_line_and_exit_2(shop, args, tmp_path, capsys, make_state, message):
    state = tmp_path / "logs" / ".kubelogexporter-state.json"
    state.parent.mkdir()
    if callable(make_state):
        make_state(state)
    else:
        state.write_text(make_state)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err == "kubelogexporter: error: state file %s %s: move it away to export from scratch\n" % (state, message)


class _JsonServer(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *a):
        pass


@pytest.mark.parametrize("body", [b"[]", b'{"items": {"a": 1}}', b'{"items": [1, 2]}',
                                  b"[" * 200_000 + b"]" * 200_000])
def test_a_pod_list_that_is_no_pod_list_is_one_line_and_exit_2(tmp_path, capsys, body):
    handler = type("Handler", (_JsonServer,), {"body": body})
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        try:
            code = main(["--server", "http://127.0.0.1:%d" % server.server_address[1], "-o", str(tmp_path / "logs")])
        finally:
            server.shutdown()
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "check --server" in err, err


@pytest.mark.parametrize("field, value", [("ts", "yesterday"), ("count", "many"), ("size", -1), ("ts", 5)])
def test_a_bad_state_record_is_reported_once_and_its_file_continues_exactly(shop, args, tmp_path, capsys, field,
                                                                           value):
    assert main(args) == 0
    state_path = tmp_path / "logs" / ".kubelogexporter-state.json"
    state = json.loads(state_path.read_text())
    records = state["files" if field == "size" else "containers"]
    key = sorted(records)[0]
    records[key][field] = value
    state_path.write_text(json.dumps(state))
    shop.append_log("shop", "web", "app", ["again"])
    capsys.readouterr()
    assert main(args) == 0
    err = capsys.readouterr().err
    assert err.count("bad record") == 1 and err.count("\n") == 2, err
    assert [line.split(" ", 1)[1] for line in (tmp_path / "logs/shop/web/app.log").read_text().splitlines()] == [
        "hello", "again"]


def test_a_sigterm_at_once_after_start_stops_the_run_instead_of_killing_it(shop, args):
    # The child starts with SIGTERM blocked, so the signal sent right after the start waits for the first moment
    # the program takes it: it must be handled (interrupted, exit 1), never the default action (exit -15).
    proc = subprocess.Popen([sys.executable, str(ROOT / "kubelogexporter.py")] + args, stderr=subprocess.PIPE,
                            text=True, preexec_fn=lambda: signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM}))
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1 and "interrupted" in err and "Traceback" not in err, err


def test_the_program_keeps_its_sigterm_handler_until_it_exits(shop, args, monkeypatch, capsys):
    previous = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    monkeypatch.setattr(sys, "argv", ["kubelogexporter"] + args)
    try:
        assert main() == 0
        assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, previous[0])
        signal.raise_signal(signal.SIGTERM)  # just after the summary: no effect on the exit code
    finally:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])
    assert main(args) == 0 and signal.getsignal(signal.SIGTERM) is previous[0]  # a caller's process gets it back


def test_names_with_control_characters_are_escaped_on_stderr(cluster, args, apiserver, capsys):
    pod = "evil\x1b[2K\rkubelogexporter: exported 9 of 9 containers\n"
    cluster.add_pod("shop", pod)
    cluster.append_log("shop", pod, "app", ["hello"])
    apiserver.faults.log_error_tail("shop", pod, "app", "unable to retrieve container logs")
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\r" not in err and err.count("\n") == 2, err
    assert "shop/evil\\x1b[2K\\rkubelogexporter: exported 9 of 9 containers\\n/app: the kubelet reported" in err


def test_the_token_never_shows_even_when_the_server_echoes_it(shop, args, apiserver, capsys):
    apiserver.faults.fail(status=403, path_contains="/pods", message="request had Authorization: Bearer token-1")
    assert main(args) == 3
    err = capsys.readouterr().err
    assert "token-1" not in err and "Authorization: Bearer <token>" in err and err.count("\n") == 1, err


def test_timeout_bounds_a_silent_server_and_the_retry_says_so(shop, args, apiserver, capsys):
    apiserver.faults.hang(path_contains="/api/v1/pods")
    assert main(args + ["--timeout", "0.3"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("kubelogexporter: warning: GET /api/v1/pods: cannot reach %s: no response within 0.3s; "
                             "retrying in " % apiserver.url) and len(err) == 2, err


def test_start_up_imports_only_what_every_run_needs():
    """What importing costs every run (#12): gzip and ctypes come only on the paths that need them, argparse only
    with main(); dataclasses (with inspect) never."""
    code = "import sys, kubelogexporter; print(' '.join(sorted(sys.modules)))"
    loaded = set(subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout.split())
    assert "kubelogexporter" in loaded
    assert loaded.isdisjoint({"dataclasses", "inspect", "gzip", "ctypes", "argparse"})


def test_the_json_summary_is_a_copy_with_every_field():
    from kubelogexporter import ExportResult

    result = ExportResult("/logs")
    result.failed.append({"container": "shop/web/app", "reason": "gone"})
    summary = result.to_dict()
    assert list(summary) == list(ExportResult.FIELDS) and summary["output_dir"] == "/logs"
    summary["failed"][0]["reason"] = "changed"
    summary["files"].append("x")
    assert result.failed == [{"container": "shop/web/app", "reason": "gone"}] and result.files == []
    assert "failed=[{'container': 'shop/web/app', 'reason': 'gone'}]" in repr(result)
