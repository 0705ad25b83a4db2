"""Helpers the integration tests share: build with make, run docker, start containers, talk HTTP.

Every container started here is removed when its `with` block ends, whether the test passed or not.
"""

import contextlib
import itertools
import json
import os
import re
import statistics
import subprocess
import tarfile
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker_tools
import pytest
from docker_tools import (
    DOCKER,
    PROJECT_NAME,
    ROOT,
    CommandFailed,
    Response,
    as_docker_writes_it,
    docker_result,
    engine,
    hardened,
    request,
    variants,
    walk_image,
)

# The variants, and the lesson's lockdown line, which is how secure runs: the Makefile's table.
TABLE = variants()
VARIANTS = tuple(TABLE)
# The images built to be run hardened: all but naive, which a copy made with copier does not have.
HARDENED = hardened(TABLE)
# The security headers with the values the docs promise, on every response; HSTS over HTTPS only.
# The Content-Security-Policy is the app's own setting (the security_headers fixture adds it).
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
# The policy an app gets unless it sets its own: right for a JSON API.
API_CONTENT_SECURITY_POLICY = "default-src 'none'; frame-ancestors 'none'"
HSTS = "max-age=31536000; includeSubDomains"
LOCKDOWN = tuple(TABLE["secure"]["hardening"])
# The limits `make run` and compose.yaml give every container (test_deploy.py holds the three together).
LIMITS = ("--memory", "256m", "--cpus", "1", "--pids-limit", "128")
# The Kubernetes pods' memory limit, within which the runtime tests hold the hardened images.
POD_MEMORY = "128m"


def rename_project(project: Path, name: str) -> None:
    """Name a copy of the project otherwise, as a user does: the PROJECT_NAME line of its project.env."""
    env = project / "project.env"
    env.write_text(re.sub(r"^PROJECT_NAME=.*$", f"PROJECT_NAME={name}", env.read_text(), flags=re.MULTILINE))


def docker(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run one docker command; on failure, fail the test with the command and what it printed."""
    try:
        return docker_result(*args, check=check, timeout=timeout)
    except CommandFailed as error:
        pytest.fail(str(error))


def make(
    *args: str,
    project: Path = ROOT,
    docker_command: str = " ".join(DOCKER),
    env: dict[str, str] | None = None,
    timeout: float = 900,
) -> subprocess.CompletedProcess:
    """Run a target of a project's Makefile (this one's by default) as a user would, in the
    environment env (this process's if None)."""
    command = ["make", "--no-print-directory", *args, f"DOCKER={docker_command}"]
    return subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=timeout)


def must(result: subprocess.CompletedProcess, what: str) -> None:
    """Fail the test with the end of a command's output unless it succeeded."""
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip().splitlines()
        pytest.fail(f"{what} failed; the end of its output:\n" + "\n".join(output[-40:]))


def build(variant: str, image: str, *make_args: str, timeout: float = 900) -> None:
    """Build one variant with the Makefile, as a user would; fail with the end of its output."""
    must(make(f"build-{variant}", f"IMAGE={image}", *make_args, timeout=timeout), f"`make build-{variant}`")


def image_name(kind: str = "test") -> str:
    """A name of the tests' own for the images they build: the project's, the kind, eight random hex digits."""
    return f"{PROJECT_NAME}-{kind}-{uuid.uuid4().hex[:8]}"


def prebuilt_images(variants: tuple[str, ...], tag_suffix: str = "") -> dict[str, str] | None:
    """With FLASK_APP_TEST_IMAGE=NAME, NAME:VARIANT plus tag_suffix for each variant, as they are (CI
    builds them once and tests exactly those); None without it."""
    prebuilt = os.environ.get("FLASK_APP_TEST_IMAGE")
    if not prebuilt:
        return None
    tags = {variant: f"{prebuilt}:{variant}{tag_suffix}" for variant in variants}
    missing = [tag for tag in tags.values() if docker("image", "inspect", tag, check=False).returncode != 0]
    if missing:
        pytest.fail(f"FLASK_APP_TEST_IMAGE={prebuilt}, but {', '.join(missing)} is not there; build or load it.")
    return tags


def build_images(
    name: str, variants: tuple[str, ...], *make_args: str, tag_suffix: str = "", timeout: float = 900
) -> dict[str, str]:
    """NAME:VARIANT plus tag_suffix for each variant, built with the Makefile; a tag that is there
    already, built by another worker of a parallel run, is used as it is."""
    tags = {variant: f"{name}:{variant}{tag_suffix}" for variant in variants}
    for variant, tag in tags.items():
        if docker("image", "inspect", tag, check=False).returncode != 0:
            build(variant, name, *make_args, timeout=timeout)
    return tags


@contextlib.contextmanager
def images_under_test(
    variants: tuple[str, ...], *make_args: str, tag_suffix: str = "", timeout: float = 900
) -> Iterator[dict[str, str]]:
    """The images the tests run, NAME:VARIANT plus tag_suffix for each variant: built with the
    Makefile under a name of their own, and removed at the end; or FLASK_APP_TEST_IMAGE's, left in
    place (see prebuilt_images)."""
    if prebuilt := prebuilt_images(variants, tag_suffix):
        yield prebuilt
        return
    name = image_name()
    try:
        yield build_images(name, variants, *make_args, tag_suffix=tag_suffix, timeout=timeout)
    finally:
        docker("image", "rm", "--force", *(f"{name}:{variant}{tag_suffix}" for variant in variants), check=False)


def remove_unnamed_images_made_since(before: set[str]) -> None:
    """Remove the images without a name that make built and that were not there before, and then
    those whose last child that removed (a build stage's)."""
    left = unnamed_images_make_built() - before
    while left:
        subprocess.run([*DOCKER, "image", "rm", *left], capture_output=True, timeout=300)
        left, removed = unnamed_images_make_built() - before, left
        if left >= removed:
            break


def unnamed_images_make_built() -> set[str]:
    """The IDs of images without a name that make built (they carry its OCI source label)."""
    filters = ["--filter", "dangling=true", "--filter", "label=org.opencontainers.image.source"]
    listed = subprocess.run([*DOCKER, "images", "--quiet", "--no-trunc", *filters], capture_output=True, text=True)
    return set(listed.stdout.split())


# The control the tests hold the hardened images against, built by the tests themselves so that no
# project needs to ship it: every mistake in one Dockerfile, the same as the lesson's naive. It
# copies the whole context before installing, so a code change reinstalls every dependency; it has
# no USER, so it runs as root, and no HEALTHCHECK; it keeps the base's setuid programs; and it runs
# Flask's development server, which warns that it is not for production, names its versions in the
# Server header and, as PID 1, ignores SIGTERM.
CONTROL_DOCKERFILE = """FROM {base}
WORKDIR /app
COPY . .
RUN --mount=type=secret,id=ca-bundle,target=/etc/ssl/certs/ca-certificates.crt \\
    pip install -r requirements.txt
EXPOSE 8080
CMD ["flask", "--app", "{app}", "run", "--host", "0.0.0.0", "--port", "8080", "--no-debug"]
"""


def flask_app(entry_point: str) -> str:
    """flask --app's name for a WSGI entry point whose module is in src/: app:app is src/app:app,
    myservice.web:create_app() is src/myservice/web:create_app()."""
    module, _, name = entry_point.partition(":")
    return f"src/{module.replace('.', '/')}:{name}"


def write_control_dockerfile(folder: Path) -> Path:
    """The control's Dockerfile: where the project has the lesson's Dockerfile.naive (the sample),
    that one, whose mistakes are these, so that what the lesson says of naive is what the tests
    prove; elsewhere (a copy) CONTROL_DOCKERFILE, written in folder on the base the project's
    Dockerfile pins, serving project.env's entry point."""
    naive = ROOT / "Dockerfile.naive"
    if naive.exists():
        return naive
    base = re.search(r"^FROM (\S+)$", (ROOT / "Dockerfile").read_text(), re.MULTILINE).group(1)
    dockerfile = folder / "Dockerfile.control"
    dockerfile.write_text(CONTROL_DOCKERFILE.format(base=base, app=flask_app(docker_tools.WSGI_APP)))
    return dockerfile


def build_control(name: str, folder: Path, project: Path = ROOT, *make_args: str) -> str:
    """The control NAME:production, built from project by its Makefile as production is, from the
    Dockerfile write_control_dockerfile() puts in folder; one there already, built by another worker
    of a parallel run, is used as it is."""
    tag = f"{name}:production"
    if docker("image", "inspect", tag, check=False).returncode != 0:
        arguments = (f"IMAGE={name}", f"DOCKERFILE_production={write_control_dockerfile(folder)}", *make_args)
        must(make("build-production", *arguments, project=project), "building the control")
    return tag


@contextlib.contextmanager
def control_image(folder: Path, project: Path = ROOT, *make_args: str) -> Iterator[str]:
    """The control built under a name of its own (see build_control); its tag, removed at the end."""
    name = image_name("control")
    try:
        yield build_control(name, folder, project, *make_args)
    finally:
        docker("image", "rm", "--force", f"{name}:production", check=False)


def platform_tag(platform: str) -> str:
    """What the Makefile adds to a tag built for another platform than the engine's: -arm64."""
    return "-" + platform.removeprefix("linux/").replace("/", "-")


def copy_from_image(image: str, path: str, destination: Path) -> Path:
    """Copy a file or folder of an image out of a container that never starts; return where it went."""
    container = docker("create", image).stdout.strip()
    try:
        # Podman's cp follows a link it is given by itself, and has no --follow-link.
        follow = () if engine() == "podman" else ("--follow-link",)
        docker("cp", *follow, f"{container}:{path}", str(destination))
    finally:
        docker("rm", "--force", container, check=False)
    return destination


def inspect(target: str) -> dict:
    """`docker inspect` of one image or container, as a dict, as Docker writes it."""
    return as_docker_writes_it(json.loads(docker("inspect", target).stdout)[0])


@dataclass
class Container:
    id: str
    port: int

    def get(self, path: str = "/healthz") -> Response:
        return request(self.port, path)

    def logs(self) -> str:
        result = docker("logs", self.id, check=False)
        return result.stdout + result.stderr


def assert_serves(container: "Container") -> None:
    """What every app built on this template answers, whatever else it does: the health route."""
    health = container.get("/healthz")
    assert (health.status, health.json()) == (200, {"status": "ok"})


def wait_until_serving(container: Container, timeout: float = 30) -> None:
    """Poll /healthz until it answers 200; fail with the container's log if it stops or never does."""
    try:
        docker_tools.wait_until_serving(container.port, container.id, timeout)
    except CommandFailed as error:
        pytest.fail(str(error))


def wait_until_healthy(container: Container, timeout: float = 60) -> None:
    """Poll the engine's health status until it is healthy; fail at unhealthy or after timeout.

    Docker runs the image's HEALTHCHECK on its schedule. Podman does so through systemd timers, and
    where there is none for it (no systemd, or no user session for rootless Podman) never by itself:
    under Podman the test runs the image's check at each poll, as `podman healthcheck run` does.
    """
    deadline = time.monotonic() + timeout
    while (status := inspect(container.id)["State"]["Health"]["Status"]) != "healthy":
        assert status != "unhealthy", f"the container became unhealthy; its log:\n{container.logs()}"
        assert time.monotonic() < deadline, f"still {status} after {timeout:.0f} s"
        if engine() == "podman":
            docker("healthcheck", "run", container.id, check=False)
        time.sleep(0.2)


def wait_for_log(container: Container, text: str, timeout: float = 30) -> None:
    """Poll the container's log until text appears in it; fail with the log after timeout."""
    deadline = time.monotonic() + timeout
    while text not in (log := container.logs()):
        assert time.monotonic() < deadline, f"{text!r} not in the log after {timeout:.0f} s:\n{log[-3000:]}"
        time.sleep(0.1)


@contextlib.contextmanager
def running(
    image: str, *flags: str, host_port: int | None = None, wait: bool = True, command: tuple[str, ...] = ()
) -> Iterator[Container]:
    """Run image detached with its port 8080 published on 127.0.0.1; remove it afterwards.

    host_port None picks a free port, so tests never collide with each other or with `make run`.
    command, if any, is passed after the image: arguments to its entrypoint.
    """
    name = f"{PROJECT_NAME}-test-{uuid.uuid4().hex[:8]}"
    publish = f"127.0.0.1:{host_port or ''}:8080"
    result = docker("run", "--detach", "--name", name, "--publish", publish, *flags, image, *command, check=False)
    try:
        if result.returncode != 0:
            busy = host_port and re.search(r"address already in use|port is already allocated", result.stderr)
            hint = f" Port {host_port} is taken: stop what uses it (make stop?) and run again." if busy else ""
            pytest.fail(f"`docker run {image}` failed: {result.stderr.strip()}{hint}")
        bound = docker("port", name, "8080/tcp").stdout.split()[0]
        container = Container(id=name, port=int(bound.rsplit(":", 1)[1]))
        if wait:
            wait_until_serving(container)
        yield container
    finally:
        docker("rm", "--force", "--volumes", name, check=False)


# How fast memory may grow once warm, by its trend: measured at under 70 bytes a request, and at
# 1,170 to 1,190 with a leak of 1 KB a request (1,000 requests between samples, 9 samples).
GROWTH_BYTES_PER_REQUEST = 400


def growth_per_request(samples_mb: list[float], requests_between: int) -> float:
    """Memory's growth in bytes per request, judged by its trend: the median of the rises from each
    sample to the next, each taken after `requests_between` more requests. A leak raises every one
    of them; a transient (one high sample, or a step up that stays) raises one or two, and the
    median ignores them."""
    rises = [later - earlier for earlier, later in itertools.pairwise(samples_mb)]
    return statistics.median(rises) * docker_tools.MB / requests_between


# Routes the tests add to the app an image serves, for what needs one that reads the request's body
# (an upload in flight at `docker stop`, malformed bodies), or one that shows what the app believes
# of a request (forwarded headers): an app built on the template may have neither.
PROBE_ROUTE = "/probe/upload"
PROBE_REQUEST_ROUTE = "/probe/request"
# It says in the log when it starts to read a body, so a test can wait for that moment.
PROBE_READING = "probe: reading the body"
PROBE_MODULE = f'''"""The app the image serves (its WSGI_APP), with the routes the tests add."""

import os

from flask import jsonify, request
from gunicorn.util import import_app

app = import_app(os.environ["WSGI_APP"])


@app.post("{PROBE_ROUTE}")
def probe_upload():
    print("{PROBE_READING}", flush=True)
    return jsonify(received_bytes=len(request.get_data()))


@app.get("{PROBE_REQUEST_ROUTE}")
def probe_request():
    return jsonify(remote_addr=request.remote_addr, host=request.host, scheme=request.scheme)
'''


@contextlib.contextmanager
def probe_folder() -> Iterator[Path]:
    """A folder holding probe.py, which any user can read, so a container of any UID can import it.
    It lies in the project's .pytest_cache, not the system's temporary folder: an engine in a VM
    mounts only the folders it shares with the host (Colima: the home folder), and a checkout is
    in one of them."""
    cache = ROOT / ".pytest_cache"
    cache.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="probe-", dir=cache) as folder:
        Path(folder).chmod(0o755)
        (Path(folder) / "probe.py").write_text(PROBE_MODULE)
        (Path(folder) / "probe.py").chmod(0o644)
        yield Path(folder)


def probed(image: str, folder: Path, *flags: str) -> contextlib.AbstractContextManager[Container]:
    """Run a gunicorn image serving its own app with the probe's routes added, read-only mounted."""
    mount = ("--volume", f"{folder}:/probe:ro")
    return running(image, *mount, *flags, command=("--pythonpath", "/probe", "probe:app"))


def process_uids(container: Container) -> list[int]:
    """The real UIDs of every process in the container, as the engine's ps sees them (docker top),
    wherever the engine runs: on this machine or in a VM. Podman's top runs ps inside the container
    for these columns, which the secure image has not: there each process's host PID is read on
    this machine, where Podman runs, and its UID mapped back into the container's user namespace."""
    if engine() == "podman":
        return [container_uid(int(pid)) for pid in docker("top", container.id, "hpid").stdout.split()[1:]]
    lines = docker("top", container.id, "-eo", "pid,uid").stdout.splitlines()[1:]
    return [int(line.split()[1]) for line in lines]


def container_uid(host_pid: int) -> int:
    """The real UID of a process of this machine, as its user namespace numbers it (uid_map)."""
    proc = Path("/proc") / str(host_pid)
    [real] = [int(line.split()[1]) for line in (proc / "status").read_text().splitlines() if line.startswith("Uid:")]
    for line in (proc / "uid_map").read_text().splitlines():
        inside, outside, count = (int(number) for number in line.split())
        if outside <= real < outside + count:
            return inside + real - outside
    pytest.fail(f"UID {real} of process {host_pid} is not mapped into its container's user namespace")


def image_files(
    image: str, needles: tuple[bytes, ...] = (), layers: bool = False
) -> tuple[dict[str, tarfile.TarInfo], set[str]]:
    """Every path in an image's filesystem with its metadata, and the files that contain any needle;
    with layers, in any of its layers (see walk_image), the last layer's entry for a path kept."""
    paths, matches = {}, set()
    for member, read in walk_image(image, layers=layers):
        paths[member.name.rstrip("/")] = member
        if needles and member.isfile():
            content = read()
            if any(needle in content for needle in needles):
                matches.add(member.name)
    return paths, matches


# ELF's e_machine numbers for the architectures an image is built for.
ELF_MACHINES = {3: "i386", 40: "arm", 62: "x86-64", 183: "aarch64", 243: "riscv"}


def elf_machine(header: bytes) -> str | None:
    """The architecture an ELF file is built for, from its first 20 bytes; None if it is not ELF."""
    if len(header) < 20 or header[:4] != b"\x7fELF":
        return None
    machine = int.from_bytes(header[18:20], "little" if header[5] == 1 else "big")
    return ELF_MACHINES.get(machine, f"machine {machine}")


def image_elf_files(image: str) -> dict[str, str]:
    """Every ELF file in an image's filesystem, with the architecture it is built for."""
    machines = {}
    for member, read in walk_image(image):
        if member.isfile() and (machine := elf_machine(read()[:20])):
            machines[member.name] = machine
    return machines
