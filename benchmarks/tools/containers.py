"""Read a PodList (JSON) on stdin; print one line per container for the shell drivers.

    containers.py              "NAMESPACE POD CONTAINER" lines, for xargs -n 3
    containers.py --curl-config API OUT
                               a curl config (url = ... / output = ...) per container, for curl -K -
"""
import json
import sys


def main() -> None:
    pods = json.load(sys.stdin)["items"]
    out = sys.stdout
    curl = sys.argv[1:2] == ["--curl-config"]
    api, root = (sys.argv[2], sys.argv[3]) if curl else ("", "")
    for pod in pods:
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        for c in pod["spec"]["containers"]:
            if curl:
                out.write('url = "%s/api/v1/namespaces/%s/pods/%s/log?container=%s&timestamps=true"\n'
                          'output = "%s/%s/%s/%s.log"\n' % (api, ns, name, c["name"], root, ns, name, c["name"]))
            else:
                out.write("%s %s %s\n" % (ns, name, c["name"]))


if __name__ == "__main__":
    main()
