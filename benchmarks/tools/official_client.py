"""Export every container's log with the official `kubernetes` Python client.

    --mode whole    read_namespaced_pod_log(...) as its docs show it: the whole
                    body returned as a str, then written to the file
    --mode stream   the same call with _preload_content=False, copied to the
                    file in 1 MiB reads (release_conn() afterwards)

Configured from a kubeconfig (config.load_kube_config, as the docs do outside
a cluster), pods listed page by page (limit=500), logs fetched with
timestamps in a pool of --concurrency threads sharing one ApiClient.
"""
import argparse
import os
import sys
from concurrent.futures import ThreadPoolExecutor

from kubernetes import client, config


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("-o", "--output-dir", required=True)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--mode", choices=("whole", "stream"), required=True)
    args = p.parse_args()
    config.load_kube_config(config_file=args.kubeconfig)
    v1 = client.CoreV1Api()

    def fetch(ns, pod, container):
        d = os.path.join(args.output_dir, ns, pod)
        os.makedirs(d, exist_ok=True)
        path = os.path.join(d, container + ".log")
        if args.mode == "whole":
            log = v1.read_namespaced_pod_log(pod, ns, container=container, timestamps=True)
            with open(path, "w", encoding="utf-8", newline="") as f:
                f.write(log)
        else:
            resp = v1.read_namespaced_pod_log(pod, ns, container=container, timestamps=True, _preload_content=False)
            try:
                with open(path, "wb") as f:
                    for chunk in resp.stream(1 << 20):
                        f.write(chunk)
            finally:
                resp.release_conn()

    with ThreadPoolExecutor(args.concurrency) as pool:
        futures = []
        cont = None
        while True:
            page = v1.list_pod_for_all_namespaces(limit=500, _continue=cont)
            for pod in page.items:
                for c in pod.spec.containers:
                    futures.append(pool.submit(fetch, pod.metadata.namespace, pod.metadata.name, c.name))
            cont = page.metadata._continue
            if not cont:
                break
        for f in futures:
            f.result()
    return 0


if __name__ == "__main__":
    sys.exit(main())
