"""Connection settings: the in-cluster defaults, read from an environ and a folder given as parameters."""

import pytest

from kubelogexporter import ConfigError, KubeClient, export_logs


@pytest.fixture
def account(tmp_path, ca):
    folder = tmp_path / "serviceaccount"
    folder.mkdir()
    (folder / "token").write_text("s3cr3t-token\n")
    ca.cert_pem.write_to_path(str(folder / "ca.crt"))
    (folder / "namespace").write_text("logging")
    return folder


@pytest.mark.parametrize("environ, server", [
    ({"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}, "https://10.96.0.1:443"),
    ({"KUBERNETES_SERVICE_HOST": "fd00:10:96::1", "KUBERNETES_SERVICE_PORT": "6443"}, "https://[fd00:10:96::1]:6443"),
    ({"KUBERNETES_SERVICE_HOST": "10.96.0.1"}, "https://10.96.0.1:443"),
    ({}, "https://kubernetes.default.svc"),
])
def test_server_comes_from_the_service_environment(account, environ, server):
    client = KubeClient.from_service_account(environ=environ, account_dir=account)
    assert client.server == server


def test_explicit_server_wins_over_the_environment(account):
    client = KubeClient.from_service_account(environ={"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, account_dir=account,
                                             server="https://api.example:6443/")
    assert client.server == "https://api.example:6443"


def test_token_and_ca_come_from_the_account_folder(account):
    client = KubeClient.from_service_account(environ={}, account_dir=account)
    assert client._headers("application/json", refresh_token=False)["Authorization"] == "Bearer s3cr3t-token"


def test_token_never_shows_in_repr(account):
    client = KubeClient.from_service_account(environ={}, account_dir=account)
    assert "s3cr3t" not in repr(client) and "s3cr3t" not in repr(client._token)


def test_plain_http_server_sends_no_token(account):
    # kubectl proxy needs none, and a token must never cross the wire in clear text.
    client = KubeClient.from_service_account(environ={}, account_dir=account, server="http://127.0.0.1:8001",
                                             token_file=account / "token")
    assert "Authorization" not in client._headers("application/json", refresh_token=False)


def test_missing_token_file_says_what_to_do(tmp_path):
    with pytest.raises(ConfigError, match=r"token file .*token not found: run inside a pod .* or pass --token-file"):
        KubeClient.from_service_account(environ={}, account_dir=tmp_path)


def test_empty_token_file_is_refused(account):
    (account / "token").write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        KubeClient.from_service_account(environ={}, account_dir=account)


def test_a_token_file_that_is_not_utf8_is_a_config_error(account):
    (account / "token").write_bytes(b"s3cr3t\xff\xfe")
    with pytest.raises(ConfigError, match="token file .* is not UTF-8 text"):
        KubeClient.from_service_account(environ={}, account_dir=account)


@pytest.mark.parametrize("content, message", [
    (None, "CA file .* not found: pass --ca-file"),
    ("not a certificate", "cannot load CA file"),
])
def test_bad_ca_file_is_a_config_error(account, content, message):
    ca_file = account / "other-ca.crt"
    if content is not None:
        ca_file.write_text(content)
    with pytest.raises(ConfigError, match=message):
        KubeClient.from_service_account(environ={}, account_dir=account, ca_file=ca_file)


def test_missing_default_ca_falls_back_to_the_system_store(account):
    (account / "ca.crt").unlink()
    client = KubeClient.from_service_account(environ={}, account_dir=account)
    assert client._ssl.verify_mode.name == "CERT_REQUIRED" and client._ssl.check_hostname


def test_insecure_skip_tls_verify_turns_verification_off(account):
    client = KubeClient.from_service_account(environ={}, account_dir=account, insecure_skip_tls_verify=True)
    assert client._ssl.verify_mode.name == "CERT_NONE"


@pytest.mark.parametrize("server", ["ftp://x", "kubernetes:443", "https://", "", "https://[::1", "https://h:badport",
                                    "https://h:99999", "https://h:0"])
def test_server_must_be_an_http_url(account, server):
    with pytest.raises(ConfigError, match="not an http"):
        KubeClient.from_service_account(environ={}, account_dir=account, server=server)


@pytest.mark.parametrize("options, message", [
    ({"concurrency": 0}, "concurrency"),
    ({"since": 60, "since_time": "2026-11-29T10:00:00Z"}, "exclude each other"),
    ({"since_time": "yesterday"}, "not an RFC 3339 time"),
    ({"shard_index": 3, "shard_count": 3}, "outside 0..2"),
    ({"shard_index": 1}, "go together"),
])
def test_bad_options_fail_before_anything_is_written(account, tmp_path, options, message):
    output = tmp_path / "out"
    with pytest.raises(ConfigError, match=message):
        export_logs(output, environ={}, account_dir=account, **options)
    assert not output.exists()


def test_a_token_with_control_characters_is_refused_without_showing_it(account):
    (account / "token").write_text("s3cr3t\x01token")
    with pytest.raises(ConfigError) as error:
        KubeClient.from_service_account(environ={}, account_dir=account)
    assert "s3cr3t" not in str(error.value) and "characters a bearer token cannot have" in str(error.value)
