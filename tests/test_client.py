"""KubeClient against the fake API server: paging, retries, auth, keep-alive, streaming."""

import http.server
import logging
import os
import socket
import threading
import time

import pytest

from conftest import SA_USER, wait_for

from kubelogexporter import ApiError, ConfigError, KubeClient, pod_log_url


@pytest.fixture
def client(apiserver, service_account):
    client = KubeClient.from_service_account(environ={}, account_dir=service_account, server=apiserver.url,
                                             backoff=0.001, retries=3)
    yield client
    client.close()


def names(pods):
    return [p["metadata"]["name"] for p in pods]


def test_pod_lists_are_paged_with_continue(cluster, apiserver, client):
    for i in range(5):
        cluster.add_pod("shop", "web-%d" % i)
    assert names(client.list_pods("shop", page_size=2)) == ["web-%d" % i for i in range(5)]
    pages = [r.query for r in apiserver.requests]
    assert [q["limit"] for q in pages] == [["2"]] * 3
    assert "continue" not in pages[0] and all("continue" in q for q in pages[1:])


def test_an_expired_continue_token_restarts_the_listing(cluster, apiserver, client):
    for i in range(5):
        cluster.add_pod("shop", "web-%d" % i)
    apiserver.faults.expire_continue()
    listed = names(client.list_pods(None, page_size=2))
    assert set(listed) == {"web-%d" % i for i in range(5)}
    assert 410 in [r.status for r in apiserver.requests]


def test_the_listing_clock_is_read_before_each_snapshot_not_each_page(cluster, apiserver, client):
    """Continued pages are served from the first page's snapshot: their pods' statuses are as of then, however
    late a page is asked for; only a relist after an expired token takes a new snapshot."""
    for i in range(5):
        cluster.add_pod("shop", "web-%d" % i)
    snapshots = []
    pods = client.list_pods("shop", page_size=2, on_snapshot=lambda: snapshots.append(len(apiserver.requests)))
    assert names(pods) == ["web-%d" % i for i in range(5)] and snapshots == [0]
    apiserver.faults.expire_continue()
    snapshots.clear()
    assert len(set(names(client.list_pods("shop", page_size=2, on_snapshot=lambda: snapshots.append(1))))) == 5
    assert snapshots == [1, 1]


def test_selectors_reach_the_api(cluster, apiserver, client):
    cluster.add_pod("shop", "web", labels={"app": "web"}, node_name="node-1")
    cluster.add_pod("shop", "db", labels={"app": "db"}, node_name="node-2")
    assert names(client.list_pods(None, label_selector="app=web")) == ["web"]
    assert names(client.list_pods(None, field_selector="spec.nodeName=node-2")) == ["db"]


def test_priority_and_fairness_throttling_is_retried(cluster, apiserver, client):
    cluster.add_pod("shop", "web")
    apiserver.faults.throttle(times=2, retry_after=0, path_contains="/pods")
    assert names(client.list_pods(None)) == ["web"]
    assert [r.status for r in apiserver.requests] == [429, 429, 200]


def test_a_401_rereads_the_token_once(cluster, apiserver, service_account, client):
    cluster.add_pod("shop", "web")
    client.get_json("/api/v1/namespaces/shop/pods")  # token-1 read and used
    (service_account / "token").write_text("token-2")
    apiserver.tokens.clear()
    apiserver.tokens["token-2"] = SA_USER
    assert names(client.list_pods("shop")) == ["web"]
    assert [r.status for r in apiserver.requests] == [200, 401, 200]


def test_a_401_that_persists_is_refused(cluster, apiserver, client):
    apiserver.tokens.clear()
    apiserver.tokens["another"] = SA_USER
    with pytest.raises(ApiError) as error:
        list(client.list_pods(None))
    assert (error.value.status, error.value.refused, error.value.message) == (401, True, "Unauthorized")
    assert len(apiserver.requests) == 2


def test_forbidden_keeps_the_servers_message_and_names_the_permission(cluster, apiserver, client):
    apiserver.authorize = lambda *a, **k: False
    with pytest.raises(ApiError) as error:
        list(client.list_pods("shop"))
    assert error.value.status == 403 and error.value.reason == "Forbidden"
    assert error.value.message == ('pods is forbidden: User "system:serviceaccount:logging:log-exporter-sa" cannot '
                                   'list resource "pods" in API group "" in the namespace "shop"')
    assert error.value.missing_permission() == '"list pods" in namespace "shop"'


def test_invalid_parameters_surface_the_status_message(cluster, apiserver, client):
    cluster.add_pod("shop", "web")
    with pytest.raises(ApiError) as error:
        client.open_log("shop", "web", "app", tail_lines=-1)
    assert error.value.status == 422 and "tailLines: Invalid value" in error.value.message


def test_requests_share_one_keep_alive_connection(cluster, apiserver, client):
    cluster.add_pod("shop", "web")
    cluster.append_log("shop", "web", "app", ["hello"] * 10)
    for _ in range(5):
        list(client.list_pods("shop"))
        assert b"".join(client.stream_log("shop", "web", "app")).count(b"hello") == 10
    assert apiserver.connections_accepted == 1


def test_stream_log_yields_the_body_in_blocks(cluster, apiserver, api, client):
    cluster.add_pod("shop", "web")
    cluster.append_log("shop", "web", "app", ["line %d" % i for i in range(2000)])
    blocks = list(client.stream_log("shop", "web", "app", block_size=4096))
    assert len(blocks) > 1 and max(map(len, blocks)) <= 4096
    _, _, whole = api.request("/api/v1/namespaces/shop/pods/web/log?container=app&timestamps=true")
    assert b"".join(blocks) == whole


def test_an_unscheduled_pod_has_no_log(cluster, apiserver, client):
    cluster.add_pod("shop", "pending", scheduled=False)
    assert client.open_log("shop", "pending", "app") is None
    assert list(client.stream_log("shop", "pending", "app")) == []


def test_an_unreachable_server_fails_after_the_retries(service_account):
    client = KubeClient.from_service_account(environ={}, account_dir=service_account, server="https://127.0.0.1:9",
                                             backoff=0.001, retries=2)
    with pytest.raises(ApiError, match="cannot reach https://127.0.0.1:9") as error:
        list(client.list_pods(None))
    assert error.value.status == 0 and not error.value.refused


def test_tls_is_verified(apiserver, service_account, tmp_path):
    import trustme

    other = tmp_path / "other-ca.crt"
    trustme.CA().cert_pem.write_to_path(str(other))
    client = KubeClient.from_service_account(environ={}, account_dir=service_account, server=apiserver.url,
                                             ca_file=other, backoff=1.0)
    started = time.monotonic()
    with pytest.raises(ConfigError, match="cannot verify the certificate of .*: pass --ca-file with the cluster's CA"):
        list(client.list_pods(None))  # a configuration error: no retries
    assert time.monotonic() - started < 1.0
    assert apiserver.requests == [] and apiserver.connections_accepted == 1


@pytest.mark.parametrize("options, query", [
    ({}, ""),
    ({"container": "app", "timestamps": True}, "?container=app&timestamps=true"),
    ({"container": "app", "previous": True, "since_time": 1795946400_999_999_999},
     "?container=app&previous=true&sinceTime=2026-11-29T10%3A00%3A00Z"),
    ({"tail_lines": 10, "limit_bytes": 4096}, "?tailLines=10&limitBytes=4096"),
    ({"since_time": -62135596800 * 10**9}, "?sinceTime=0001-01-01T00%3A00%3A00Z"),  # four-digit years
    ({"since_time": -10**30}, "?sinceTime=0001-01-01T00%3A00%3A00Z"),
])
def test_pod_log_url_matches_the_walkthrough(options, query):
    assert pod_log_url("https://kubernetes/", "kube-system", "coredns-d798c9dd-pdswq", **options) == (
        "https://kubernetes/api/v1/namespaces/kube-system/pods/coredns-d798c9dd-pdswq/log" + query)


@pytest.mark.parametrize("value", ["", "app", "a b", "a+b", "ü", "a&b=c", "x:y/z", "%41", "~._-", "a\nb"])
def test_queries_are_encoded_as_urlencode_encodes_them(value):
    import urllib.parse
    import kubelogexporter as kle
    query = {"container": value, value: "true", "labelSelector": "app in (%s)" % value}
    assert kle._encode_query(query) == urllib.parse.urlencode(query)
    assert kle._quote(value) == urllib.parse.quote(value, safe="")


def test_an_answer_left_unread_does_not_spoil_the_next_request(cluster, apiserver, client):
    cluster.add_pod("shop", "web")
    cluster.append_log("shop", "web", "app", ["hello %d" % i for i in range(5000)])
    response = client.open_log("shop", "web", "app")
    assert response.read(10)  # most of its body is still on the wire
    assert names(client.list_pods("shop")) == ["web"]  # on a new connection, not after the old body
    assert apiserver.connections_accepted == 2
    assert response.isclosed()  # and the old one's socket is let go at once, not when the answer is collected


def test_response_headers_are_read_as_http_client_reads_them(cluster, apiserver, client):
    cluster.add_pod("shop", "web")
    cluster.append_log("shop", "web", "app", ["hello"])
    response = client.open_log("shop", "web", "app")
    assert response.getheader("content-type", "").startswith("text/plain")
    assert response.getheader("CONTENT-TYPE") == response.headers.get("Content-Type")
    assert response.getheader("X-Not-There", "none") == "none"
    assert response.read().endswith(b"hello\n") and response.isclosed()


def test_a_credential_with_a_line_break_is_refused_without_showing_it(apiserver, service_account):
    class Source:
        def get(self):
            return "abc\r\nX-Injected: secret-part"

        def refresh(self, wait=0):
            return self.get()

        def redact(self, text):
            return text.replace(self.get(), "<token>")

    client = KubeClient(apiserver.url, ca_file=service_account / "ca.crt", token_source=Source())
    with pytest.raises(ConfigError) as error:
        list(client.list_pods(None))
    assert "line break" in str(error.value) and "secret-part" not in str(error.value)
    assert apiserver.requests == []


def test_a_redirect_names_its_status_and_location(cluster, apiserver, client):
    apiserver.faults.redirect("https://elsewhere.example:6443/api/v1/pods", path_contains="/pods")
    with pytest.raises(ApiError) as error:
        list(client.list_pods(None))
    assert error.value.status == 301
    assert error.value.message == ("HTTP 301 Moved Permanently to https://elsewhere.example:6443/api/v1/pods: "
                                   "pass the API server's own address with --server")


def test_a_token_rotated_through_an_empty_file_is_read_again(cluster, apiserver, service_account, tmp_path):
    fifo = tmp_path / "token"
    os.mkfifo(str(fifo))

    def readers():  # this process's open ends of the FIFO: the client's reads
        fds = []
        for fd in os.listdir("/proc/self/fd"):
            try:
                fds.append(os.readlink("/proc/self/fd/" + fd))
            except OSError:
                pass
        return fds.count(str(fifo))

    def rotate():  # each read of the token file gets the next content: the old token, a rewrite's empty file, the new one
        for content in ("token-1", "", "token-2"):
            writer = os.open(str(fifo), os.O_WRONLY)  # returns once a read has opened the file
            os.write(writer, content.encode())
            wait_for(lambda: readers() == 2)  # that read's end is open too: it cannot end before the close below
            os.close(writer)
            wait_for(lambda: readers() == 0)  # that read is over: the next open is the next read

    thread = threading.Thread(target=rotate, daemon=True)
    thread.start()
    client = KubeClient(apiserver.url, token_file=fifo, ca_file=service_account / "ca.crt", backoff=0.001, retries=0)
    cluster.add_pod("shop", "web")
    apiserver.tokens.clear()
    apiserver.tokens["token-2"] = SA_USER  # token-1 revoked while its file is being rewritten
    assert names(client.list_pods("shop")) == ["web"]
    thread.join(5)
    assert not thread.is_alive() and [r.status for r in apiserver.requests] == [401, 200]


@pytest.fixture
def warnings():
    """What the client says on stderr (main() shows the module's warnings there)."""
    records = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: records.append(record.getMessage())
    logger = logging.getLogger("kubelogexporter")
    logger.addHandler(handler)
    level, logger.level = logger.level, logging.WARNING
    yield records
    logger.removeHandler(handler)
    logger.setLevel(level)


def quick_client(server, service_account, **options):
    options = dict(dict(backoff=0.001, retries=0, timeout=5.0), **options)
    return KubeClient(server, token_file=service_account / "token", ca_file=service_account / "ca.crt", **options)


def test_connecting_and_the_tls_handshake_time_out_together(service_account):
    with socket.socket() as listener:  # the kernel accepts the connection; nobody ever answers the handshake
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        client = quick_client("https://127.0.0.1:%d" % listener.getsockname()[1], service_account, connect_timeout=0.2)
        started = time.monotonic()
        with pytest.raises(ApiError, match="TLS handshake timed out after 0.2s"):
            list(client.list_pods(None))
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("fault, options, message", [
    ("hang", {"response_timeout": 0.2}, "no response within 0.2s"),
    ("headers", {"response_timeout": 0.3}, "no response within 0.3s"),  # a byte every 50 ms: no recv times out
    ("body", {"timeout": 0.3}, "less than 64 KiB in 0.3s"),
])
def test_a_stalled_or_trickling_answer_fails_within_its_timeout(cluster, apiserver, service_account, fault, options,
                                                                message):
    cluster.add_pod("shop", "web")
    if fault == "hang":
        apiserver.faults.hang(path_contains="/pods")
    else:
        apiserver.faults.trickle(0.05, path_contains="/pods", after_bytes=0 if fault == "headers" else 200)
    client = quick_client(apiserver.url, service_account, **options)
    started = time.monotonic()
    with pytest.raises(ApiError, match=message):
        list(client.list_pods(None))
    assert time.monotonic() - started < 2
    client.close()


def test_a_trickling_log_without_a_complete_line_is_cut(cluster, apiserver, service_account):
    cluster.add_pod("shop", "web")
    cluster.append_log("shop", "web", "app", ["a line longer than the read timeout allows at this pace"])
    apiserver.faults.trickle(0.05, path_contains="/log", after_bytes=150)
    client = quick_client(apiserver.url, service_account, timeout=0.3)
    started = time.monotonic()
    with pytest.raises(socket.timeout, match="no complete line in 0.3s"):
        list(client.stream_log("shop", "web", "app"))
    assert time.monotonic() - started < 2
    client.close()


def test_a_failing_request_gives_up_after_its_retry_time_and_says_what_it_waits_for(cluster, apiserver,
                                                                                   service_account, warnings):
    apiserver.faults.hang(path_contains="/pods", times=None)
    client = quick_client(apiserver.url, service_account, response_timeout=0.1, retries=100, retry_seconds=0.5)
    started = time.monotonic()
    with pytest.raises(ApiError, match=r"no response within 0.1s \(gave up after \d attempt\(s\) in \ds\)"):
        list(client.list_pods(None))
    assert 0.4 < time.monotonic() - started < 2
    assert warnings and all(w.startswith("GET /api/v1/pods: cannot reach %s: no response within 0.1s; retrying in "
                                         % apiserver.url) for w in warnings)


def test_server_errors_and_throttling_say_what_they_wait_for(cluster, apiserver, client, warnings):
    cluster.add_pod("shop", "web")
    apiserver.faults.fail(503, path_contains="/pods")
    apiserver.faults.throttle(retry_after=0, path_contains="/pods")
    assert names(client.list_pods(None)) == ["web"]
    assert [w.split(";")[0] for w in warnings] == [
        "GET /api/v1/pods: throttled by the API server (429)",
        "GET /api/v1/pods: HTTP 503: the server is currently unable to handle the request"]
    assert all("; waiting 0.0s as its Retry-After asks" in w or "; retrying in " in w for w in warnings)


@pytest.mark.timeout(20)
@pytest.mark.parametrize("loop, max_pages, message", [
    (True, 10_000, "repeated a continue token after 2 pages"),
    (False, 3, "went on after 3 pages"),
])
def test_a_listing_without_end_stops_with_an_error(cluster, apiserver, client, loop, max_pages, message):
    for i in range(6):
        cluster.add_pod("shop", "web-%d" % i)
    if loop:
        apiserver.faults.loop_continue()
    with pytest.raises(ApiError, match="the pod listing does not end: the API server " + message):
        list(client.list_pods(None, page_size=1, max_pages=max_pages))


@pytest.mark.parametrize("line", [b"[1]", b'{"type": "ADDED", "object": [1]}', b"[" * 200_000 + b"]" * 200_000])
def test_a_watch_line_that_is_no_event_breaks_the_watch_as_a_value_error(line):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(line) + 1))
            self.end_headers()
            self.wfile.write(line + b"\n")

        def log_message(self, *a):
            pass

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler) as server:
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        client = KubeClient("http://127.0.0.1:%d" % server.server_address[1], retries=0)
        try:
            with pytest.raises(ValueError, match="not a watch event"):
                list(client.watch_pods(None, resource_version="1"))
        finally:
            client.close()
            server.shutdown()
