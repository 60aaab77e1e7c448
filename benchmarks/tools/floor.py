"""The keep-alive floor: the least a Python program must do to export every log.

Lists pods page by page (limit=500), then fetches each container's log with
timestamps in a pool of --concurrency threads, one keep-alive HTTPS connection
per thread, copying the body to OUTPUT/<ns>/<pod>/<container>.log through one
1 MiB buffer.  No state, no retries, no line handling.  --fsync makes each file
durable before it counts as written (what the exporter promises).
"""
import argparse
import http.client
import json
import os
import ssl
import sys
import threading
import urllib.parse
from concurrent.futures import ThreadPoolExecutor


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--server", required=True)
    p.add_argument("--token-file", required=True)
    p.add_argument("--ca-file", required=True)
    p.add_argument("-o", "--output-dir", required=True)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--fsync", action="store_true")
    args = p.parse_args()
    url = urllib.parse.urlsplit(args.server)
    ctx = ssl.create_default_context(cafile=args.ca_file)
    with open(args.token_file) as f:
        headers = {"Authorization": "Bearer " + f.read().strip(), "Accept-Encoding": "identity"}
    local = threading.local()

    def get(path):
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = http.client.HTTPSConnection(url.hostname, url.port, context=ctx)
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        if resp.status != 200:
            raise RuntimeError("GET %s: %d %s" % (path, resp.status, resp.read(300)))
        return resp

    def fetch(ns, pod, container):
        q = urllib.parse.quote
        resp = get("/api/v1/namespaces/%s/pods/%s/log?container=%s&timestamps=true" % (q(ns), q(pod), q(container)))
        d = os.path.join(args.output_dir, ns, pod)
        os.makedirs(d, exist_ok=True)
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        fd = os.open(os.path.join(d, container + ".log"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            while True:
                n = resp.readinto(buf)
                if not n:
                    break
                os.write(fd, view[:n])
            if args.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)

    with ThreadPoolExecutor(args.concurrency) as pool:
        futures = []
        cont = ""
        while True:
            page = json.loads(get("/api/v1/pods?limit=500" + ("&continue=" + urllib.parse.quote(cont) if cont else "")).read())
            for pod in page["items"]:
                m = pod["metadata"]
                for c in pod["spec"]["containers"]:
                    futures.append(pool.submit(fetch, m["namespace"], m["name"], c["name"]))
            cont = page["metadata"].get("continue")
            if not cont:
                break
        for f in futures:
            f.result()
    return 0


if __name__ == "__main__":
    sys.exit(main())
