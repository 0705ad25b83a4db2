"""Run the Kubernetes pod spec for real with `podman kube play`, prove what it asks for, take it down.

    kube_play.py IMAGE

renders the manifests as `kubectl apply -k .` would (kubectl's kustomize), and plays them with
Podman against IMAGE, the secure image this project built (copied from DOCKER's store into
PODMAN's when they are not the same engine). What is played differs from what is rendered only as
play_rendering() says: one replica, the image, and the container's ports published on 127.0.0.1
(Podman publishes a port without a hostPort on the same port of every address, so two replicas
would ask for one host port). It then proves, with the container's own Python, what Kubernetes
would enforce: it serves on the port the Service names, runs as the manifest's UID and GID, not
root's, with no capabilities and no way to gain any, on a read-only root with a writable /tmp, and its probes' path
answers; and after `podman kube down` no pod, container or volume of the play is left.

PODMAN is the podman command (it may hold arguments: "podman --root DIR --runroot DIR"), DOCKER
the engine the image was built with. Podman gives a container of the play the open-file and
process limits `make run` names for Podman (PODMAN_ULIMITS), through a containers.conf of the
play's own (CONTAINERS_CONF): as root it would ask for 1,048,576, more than some hosts allow.
"""

import contextlib
import copy
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import yaml

# docker_tools, the helper every script shares, sits in scripts/, one folder up.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from docker_tools import DOCKER, PODMAN_ULIMITS, ROOT, CommandFailed, free_port, run_command, serving, tool

PODMAN = os.environ.get("PODMAN", "podman").split()
# The init process of the pause container that holds a pod's namespaces, where Podman looks for it:
# Debian's podman does not depend on its package.
CATATONIT = ("/usr/libexec/podman/catatonit", "/usr/lib/podman/catatonit", "/usr/bin/catatonit")
# What every container of the play may open and start, as `make run` names it for Podman.
CONTAINERS_CONF = f"[containers]\ndefault_ulimits = {json.dumps([f'{n}={v}' for n, v in PODMAN_ULIMITS.items()])}\n"
# What the container's Python reports of its PID 1 (the server) and of writing where it may not.
REPORT = """
import json
status = dict(line.split(":\\t", 1) for line in open("/proc/1/status").read().splitlines())
def write(path):
    try:
        open(path, "w").close()
        return "written"
    except OSError as error:
        return error.strerror
print(json.dumps({
    "uid": status["Uid"].split(), "gid": status["Gid"].split(),
    "capabilities": {name: int(status[name], 16) for name in ("CapPrm", "CapEff", "CapBnd", "CapAmb")},
    "no_new_privs": status["NoNewPrivs"].strip(), "seccomp": status["Seccomp"].strip(),
    "write": {path: write(path) for path in ("/app/kube-play", "/kube-play", "/tmp/kube-play")},
}))
"""


def say(message: str) -> None:
    print(f"kube-play: {message}", flush=True)


def render() -> list[dict]:
    """The resources `kubectl apply -k .` would apply."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise CommandFailed(
            "kubectl renders the manifests and is not installed: https://kubernetes.io/docs/tasks/tools/"
        )
    return list(yaml.safe_load_all(run_command(kubectl, "kustomize", str(ROOT)).stdout))


def by_kind(resources: list[dict], kind: str) -> dict:
    [found] = [resource for resource in resources if resource["kind"] == kind]
    return found


def play_rendering(resources: list[dict], image: str, host_ports: dict[int, int]) -> list[dict]:
    """The resources as Podman plays them: the Deployment with one replica, its container running
    image, and each container port published on 127.0.0.1 at host_ports[port]. Nothing else changes."""
    played = copy.deepcopy(resources)
    deployment = by_kind(played, "Deployment")
    deployment["spec"]["replicas"] = 1
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    container["image"] = image
    for port in container["ports"]:
        port.update(hostIP="127.0.0.1", hostPort=host_ports[port["containerPort"]])
    return played


def podman(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    return run_command(*PODMAN, *args, check=check, timeout=timeout)


def local_name(image: str) -> str:
    """The name Podman gives an image of this machine's own: localhost/NAME:TAG."""
    return image if "/" in image else f"localhost/{image}"


@contextlib.contextmanager
def image_in_podman(image: str) -> Iterator[str]:
    """image in PODMAN's store, under its local name: there already when DOCKER is PODMAN, else
    copied from DOCKER's store for the play and removed afterwards."""
    name = local_name(image)
    if DOCKER == PODMAN:
        yield name
        return
    say(f"copying {image} from {' '.join(DOCKER)}'s store into {' '.join(PODMAN)}'s.")
    # Podman names a loaded image after Docker's reading of its name (docker.io/library/...).
    names = {f"docker.io/library/{image}", name}
    new = [tag for tag in names if podman("image", "exists", tag, check=False).returncode != 0]
    with tempfile.TemporaryDirectory(prefix="kube-play-") as folder:
        archive = Path(folder) / "image.tar"
        run_command(*DOCKER, "save", "--output", str(archive), image)
        loaded = podman("load", "--quiet", "--input", str(archive)).stdout.split()[-1]
    podman("tag", loaded, name)
    try:
        yield name
    finally:
        if new:
            podman("rmi", *new, check=False)


def played_ids(output: str) -> dict[str, list[str]]:
    """The pods and containers `podman kube play` reports it made, by the headings of its output."""
    ids, heading = {"Pod": [], "Container": []}, None
    for line in output.splitlines():
        if line.rstrip(":") in ids:
            heading = line.rstrip(":")
        elif heading and line.strip():
            ids[heading].append(line.strip())
    return ids


def wait_serving(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not serving(port):
        if time.monotonic() > deadline:
            raise CommandFailed(f"nothing answered /healthz on 127.0.0.1:{port} within {timeout:.0f} s.")
        time.sleep(0.2)


def get(port: int, path: str) -> int:
    """The status of GET path on 127.0.0.1:port."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path)
        return connection.getresponse().status
    finally:
        connection.close()


def check(failures: list[str], claim: str, holds: bool, detail: object = "") -> None:
    """Say whether claim holds, with what was found if not; add it to failures if not."""
    say(f"{'ok' if holds else 'FAILED'}: {claim}" + ("" if holds else f" ({detail})"))
    if not holds:
        failures.append(claim)


def prove(resources: list[dict], ports: dict[int, int], container_id: str) -> list[str]:
    """Check the running pod against what the manifests ask for; the claims that failed."""
    failures = []
    pod = by_kind(resources, "Deployment")["spec"]["template"]["spec"]
    [container] = pod["containers"]
    named = {port["name"]: port["containerPort"] for port in container["ports"]}
    service_port = by_kind(resources, "Service")["spec"]["ports"][0]
    target = named.get(service_port["targetPort"], service_port["targetPort"])
    status = get(ports[target], "/healthz")
    claim = f"serves on port {target}, the Service's targetPort {service_port['targetPort']!r}"
    check(failures, claim, status == 200, status)
    for kind in ("readinessProbe", "livenessProbe"):
        probe = container[kind]["httpGet"]
        port = named.get(probe["port"], probe["port"])
        status = get(ports[port], probe["path"])
        check(failures, f"the {kind}'s GET {probe['path']} on port {port} answers 200", status == 200, status)

    # The image's own Python, found on the PATH it sets (the secure image has no shell).
    report = json.loads(podman("exec", container_id, "python", "-c", REPORT).stdout)
    context = {**pod["securityContext"], **container["securityContext"]}
    user, group = str(context["runAsUser"]), str(context["runAsGroup"])
    as_user = set(report["uid"]) == {user} and set(report["gid"]) == {group}
    check(failures, f"runs as UID {user} and GID {group}", as_user, report)
    check(failures, "does not run as root", "0" not in report["uid"], report["uid"])
    capabilities = report["capabilities"]
    check(failures, "holds no capability, nor can gain one", not any(capabilities.values()), capabilities)
    check(failures, "may not gain privileges (no_new_privs)", report["no_new_privs"] == "1", report["no_new_privs"])
    check(failures, "runs under a seccomp filter (RuntimeDefault)", report["seccomp"] == "2", report["seccomp"])
    written = report["write"]
    read_only = written["/app/kube-play"] == written["/kube-play"] == "Read-only file system"
    check(failures, "its root filesystem is read-only", read_only, written)
    check(failures, "its /tmp volume is writable", written["/tmp/kube-play"] == "written", written)
    return failures


def leftovers(ids: dict[str, list[str]], volumes_before: set[str], ports: dict[int, int]) -> list[str]:
    """What of the play is still there: its pods and containers, volumes made since it started, and
    host ports that still answer."""
    left = [found for found in ids["Pod"] if podman("pod", "exists", found, check=False).returncode == 0]
    left += [found for found in ids["Container"] if podman("container", "exists", found, check=False).returncode == 0]
    left += sorted(set(podman("volume", "ls", "--quiet").stdout.split()) - volumes_before)
    return left + [f"127.0.0.1:{port}" for port in ports.values() if serving(port, timeout=0.5)]


def app_container(ids: dict[str, list[str]]) -> str:
    """Of the containers the play made, the one that is not the pod's infra (pause) container."""
    [found] = [
        container
        for container in ids["Container"]
        if podman("inspect", "--format", "{{.IsInfra}}", container).stdout.strip() == "false"
    ]
    return found


def play(image: str, resources: list[dict]) -> int:
    """Play the resources against image, prove what they ask for, take them down; 0 if all held."""
    if PODMAN[0] == "podman":
        tool("podman")
    if not any(Path(path).exists() for path in CATATONIT):
        tool("catatonit")
    [container] = by_kind(resources, "Deployment")["spec"]["template"]["spec"]["containers"]
    ports = {port["containerPort"]: free_port() for port in container["ports"]}
    volumes_before = set(podman("volume", "ls", "--quiet").stdout.split())
    with tempfile.TemporaryDirectory(prefix="kube-play-") as folder, image_in_podman(image) as name:
        (Path(folder) / "containers.conf").write_text(CONTAINERS_CONF)
        os.environ["CONTAINERS_CONF"] = str(Path(folder) / "containers.conf")
        spec = Path(folder) / "play.yaml"
        spec.write_text(yaml.safe_dump_all(play_rendering(resources, name, ports)))
        say(f"podman kube play of the rendered manifests, {name}, one replica, ports {ports} on 127.0.0.1.")
        played = podman("kube", "play", str(spec), check=False)
        ids = played_ids(played.stdout)
        try:
            if played.returncode != 0:
                raise CommandFailed(f"`podman kube play` failed:\n{(played.stderr or played.stdout).strip()[-3000:]}")
            container_id = app_container(ids)
            wait_serving(ports[container["ports"][0]["containerPort"]])
            failures = prove(resources, ports, container_id)
        finally:
            podman("kube", "down", str(spec), check=False)
        left = leftovers(ids, volumes_before, ports)
        check(failures, "podman kube down leaves no pod, container, volume or port", not left, left)
    if failures:
        say(f"{len(failures)} of what the manifests ask for did not hold: {'; '.join(failures)}.")
        return 1
    say("the pod spec ran as the manifests ask, and is gone.")
    return 0


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: kube_play.py IMAGE", file=sys.stderr)
        return 2
    try:
        return play(argv[0], render())
    except CommandFailed as error:
        print(f"kube-play: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
