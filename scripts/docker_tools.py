"""The docker command as the scripts, the Makefile and the tests use it, and the table of variants.

- PROJECT_NAME, from project.env, which names the tests' and the bench's throwaway images too, and
  WSGI_APP, the entry point the images serve and the tests import;
- DOCKER, the command, which may hold arguments ("sudo docker"): the DOCKER environment variable;
  engine(), which engine it runs, Docker or Podman (whose `docker` may be Podman's alias), and
  podman_run_flags(), what every Podman container is told that Docker does by itself;
- docker() and docker_result(): run it, and fail with the command and what it printed;
- walk_image(): every file of an image, read without starting it, as it runs or layer by layer;
- free_port(), request() and wait_until_serving(): a port nothing listens on, one HTTP request to a
  port of 127.0.0.1 with its whole answer, and polling /healthz on a published port until it answers
  or the container exits;
- pull() and age_days(): a pull bounded in time, and an image's age, for scripts/1-setup/base-image.sh;
- variants(): each variant's Dockerfile and hardening flags, read from the Makefile, their one home;
  hardened(): the variants among them that run hardened; ci_builds(): the images CI builds;
- engine_platform() and emulated_platform(): the platform the engine runs natively, as it reports
  it, and of linux/amd64 and linux/arm64 the other one, which it runs under emulation;
- tool(): a command from Debian's packages at a pinned version, installed if it is missing.

`python3 scripts/docker_tools.py wait PORT CONTAINER SECONDS` is the Makefile's wait for `make run`;
`pull SECONDS IMAGE [PLATFORM]` and `age-days IMAGE` are what base-image.sh asks of Python, where
the shell's tools differ between Linux and macOS (GNU timeout, date -d); `emulated-platform` prints
the Makefile's default COMPARE_PLATFORM and PUBLISH_PLATFORM; `install NAME` installs one of the
pinned tools, for scripts/1-setup/ensure-podman.sh; `ci-matrix` prints CI's build matrix, and
`ci-images NAME` the IMAGE=DOCKERFILE arguments of compare.py for the images it built.
"""

import functools
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROJECT_ENV = (ROOT / "project.env").read_text()
PROJECT_NAME = re.search(r"^PROJECT_NAME=(\S+)$", PROJECT_ENV, re.MULTILINE).group(1)
WSGI_APP = re.search(r"^WSGI_APP=(\S+)$", PROJECT_ENV, re.MULTILINE).group(1)
DOCKER = os.environ.get("DOCKER", "docker").split()
MB = 1_000_000  # as `docker images` counts
# The tools from Debian's packages: the version each is pinned to. cosign comes from trixie, which
# `make engine` adds as a source on Debian 12. Bump one by changing its version here, after
# `apt-cache policy NAME` shows the new one; a tool already on PATH is used as it is.
DEBIAN_PACKAGES = {
    "cosign": ("cosign", "2.5.0-2+b5"),
    "skopeo": ("skopeo", "1.9.3+ds1-1+b10"),
    "docker-registry": ("docker-registry", "2.8.2+ds1-1"),
    # The engine of DOCKER=podman, and the init process of the pods `make kube-play` starts.
    "podman": ("podman", "4.3.1+ds1-8+deb12u1+b3"),
    "catatonit": ("catatonit", "0.1.7-1+b2"),
}


class CommandFailed(Exception):
    """A command failed; the message says which, and what it printed."""


def run_command(*command: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run a command; with check, raise CommandFailed when it exits with an error."""
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise CommandFailed(f"`{' '.join(command)}` failed:\n{(result.stderr or result.stdout).strip()[-3000:]}")
    return result


def run(*command: str, timeout: float = 900) -> str:
    """Run a command and return what it printed; raise CommandFailed if it fails."""
    return run_command(*command, timeout=timeout).stdout


# The open files and processes a Podman container gets, as `make run` names them (ENGINE_RUN_FLAGS):
# as root, Podman asks for 1,048,576 of each, more than a host whose own limit is lower lets it set.
PODMAN_ULIMITS = {"nofile": "4096:4096", "nproc": "4096:4096"}


def podman_run_flags() -> list[str]:
    """What `make run` tells Podman that Docker does by itself: the limits, and under --read-only no
    tmpfs but the ones asked for (Podman adds /run and /var/tmp otherwise)."""
    limits = [flag for name, limit in PODMAN_ULIMITS.items() for flag in ("--ulimit", f"{name}={limit}")]
    return [*limits, "--read-only-tmpfs=false"]


@functools.cache
def engine() -> str:
    """ "podman" when DOCKER runs Podman (podman, or the docker alias of podman-docker), else "docker"."""
    try:
        version = subprocess.run([*DOCKER, "--version"], capture_output=True, text=True, timeout=30).stdout
    except OSError:
        return "docker"
    return "podman" if "podman" in version.lower() else "docker"


def as_docker_writes_it(inspected: dict) -> dict:
    """One object of `inspect`, images as Docker writes them: Podman's leaves out of Config what is
    unset (User, Cmd) and keeps the health check beside it."""
    if engine() == "podman" and "State" not in inspected:
        config = {"User": "", "Cmd": None, "Healthcheck": inspected.get("Healthcheck"), **inspected["Config"]}
        return {**inspected, "Config": config}
    return inspected


def tool(name: str) -> str:
    """The command of a tool of DEBIAN_PACKAGES, installed from Debian's packages if it is missing."""
    found = shutil.which(name)
    if found:
        return found
    package, version = DEBIAN_PACKAGES[name]
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise CommandFailed(f"{name} is not installed: install it (Debian: apt-get install {package}) and try again.")
    print(f"installing {package} {version} from Debian's packages.", file=sys.stderr, flush=True)
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", f"{package}={version}"]
    result = subprocess.run(install, capture_output=True, text=True, env=environment)
    if result.returncode != 0:
        # Package lists that are missing or older than the pinned version: fetch them, then again.
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, env=environment)
        result = subprocess.run(install, capture_output=True, text=True, env=environment)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or [""])[-1]
        raise CommandFailed(
            f"installing {package}={version} failed ({last}); run `make engine` first, "
            "which adds Debian's trixie source on Debian 12, or install it yourself."
        )
    if package == "docker-registry" and shutil.which("systemctl"):
        # Debian's package starts a registry of its own on :5000, all interfaces, wanting passwords.
        subprocess.run(["systemctl", "disable", "--now", "docker-registry"], capture_output=True)
    return shutil.which(name) or name


def docker_result(*args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run one docker command; under Podman, a container it runs or creates gets podman_run_flags()."""
    if engine() == "podman" and args[:1] in (("run",), ("create",)):
        args = (args[0], *podman_run_flags(), *args[1:])
    return run_command(*DOCKER, *args, check=check, timeout=timeout)


def docker(*args: str, timeout: float = 900) -> str:
    """Run one docker command and return what it printed; raise CommandFailed if it fails."""
    return docker_result(*args, timeout=timeout).stdout


def measured_build(tag: str) -> list[str]:
    """The `docker build` options that label an image with its tag's repository, so that
    remove_measured() finds every image a measuring run built, also those a later build under the same
    tag left without a name."""
    return ["--tag", tag, "--label", f"{PROJECT_NAME}.measured-as={tag.rpartition(':')[0]}"]


def build_inputs(dockerfile: Path, base: str, ca_bundle: str | None = None) -> list[str]:
    """The `docker build` options make gives a build of dockerfile: base in place of the image its FROM
    names, project.env's entry point if it asks for one (ARG WSGI_APP), and a proxy's CA as a secret."""
    text = dockerfile.read_text()
    # FROM's name as BuildKit reads it: the ARGs declared before the first FROM expanded.
    header = text.split("\nFROM ", 1)[0]
    defaults = dict(re.findall(r"^ARG (\w+)=(\S+)$", header, re.MULTILINE))
    named = next(
        line.split()[1] for line in text.splitlines() if line.startswith("FROM ") and line.split()[1] != "scratch"
    )
    named = re.sub(r"\$\{(\w+)\}", lambda match: defaults.get(match[1], match[0]), named)
    options = ["--build-context", f"{named}=docker-image://{base}"]
    if re.search(r"^ARG WSGI_APP$", text, re.MULTILINE):
        options += ["--build-arg", f"WSGI_APP={WSGI_APP}"]
    if ca_bundle:
        options += ["--secret", f"id=ca-bundle,src={ca_bundle}"]
    return options


def remove_measured(tags: list[str]) -> None:
    """Remove the tags and every image built under their repositories with measured_build(), named or not."""
    docker_result("image", "rm", "--force", *tags, check=False)
    for repository in {tag.rpartition(":")[0] for tag in tags}:
        label = f"label={PROJECT_NAME}.measured-as={repository}"
        left = set(docker("images", "--all", "--quiet", "--filter", label).split())
        if left:
            docker_result("image", "rm", "--force", *left, check=False)


def walk_image(image: str, layers: bool = False) -> Iterator[tuple[tarfile.TarInfo, Callable[[], bytes]]]:
    """Every entry of an image's filesystem, with a function that reads a file's bytes (once: the
    archive is a stream).

    The image is exported from a container that is created, never started, and removed afterwards.
    With layers, the entries come instead from every layer `docker save` writes, lowest first: a
    file that one layer adds and a later one deletes is still in the image, and is among them.
    """
    if layers:
        yield from walk_layers(image)
        return
    container = docker("create", image).strip()
    try:
        with (
            subprocess.Popen([*DOCKER, "export", container], stdout=subprocess.PIPE) as export,
            tarfile.open(fileobj=export.stdout, mode="r|") as archive,
        ):
            for member in archive:
                yield member, lambda member=member: archive.extractfile(member).read()
    finally:
        docker_result("rm", "--force", container, check=False)


def walk_layers(image: str) -> Iterator[tuple[tarfile.TarInfo, Callable[[], bytes]]]:
    """walk_image's layer by layer walk, through a `docker save` archive in a folder of its own."""
    with tempfile.TemporaryDirectory(prefix="layers-") as work:
        archive = Path(work) / "image.tar"
        docker("save", "--output", str(archive), image)
        with tarfile.open(archive) as saved:
            [manifest] = json.load(saved.extractfile("manifest.json"))
            for layer in manifest["Layers"]:
                with tarfile.open(fileobj=saved.extractfile(layer)) as files:
                    for member in files:
                        yield member, lambda files=files, member=member: files.extractfile(member).read()


def free_port() -> int:
    """A port of 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Response:
    status: int
    headers: dict
    body: bytes

    def json(self):
        return json.loads(self.body)


def request(
    port: int,
    path: str = "/healthz",
    method: str = "GET",
    body: bytes | None = None,
    headers: dict | None = None,
    host: str = "127.0.0.1",
    timeout: float = 5,
) -> Response:
    """One HTTP request on a connection of its own; the whole response, read. A connection refused,
    a timeout or a broken answer raises OSError or http.client.HTTPException."""
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return Response(response.status, dict(response.getheaders()), response.read())
    finally:
        connection.close()


def serving(port: int, timeout: float = 1) -> bool:
    """Whether GET /healthz on 127.0.0.1:port answers 200 now."""
    try:
        return request(port, timeout=timeout).status == 200
    except (OSError, http.client.HTTPException):
        return False


def wait_until_serving(port: int, container: str, timeout: float, poll: float = 0.2) -> float:
    """Poll /healthz until it answers 200; return the seconds it took.

    Raise CommandFailed, with the container's log, as soon as the container has stopped (checked
    every 0.2 s at most, so a short poll stays short), or when it has not answered within timeout
    seconds.
    """
    started = checked = time.monotonic()
    while time.monotonic() - started < timeout:
        if serving(port):
            return time.monotonic() - started
        if time.monotonic() - checked >= 0.2:
            checked = time.monotonic()
            state = docker_result(
                "inspect", "--format", "{{.State.Running}} {{.State.ExitCode}}", container, check=False
            )
            running, _, exit_code = state.stdout.strip().partition(" ")
            if running != "true":
                raise CommandFailed(
                    f"{container} exited with {exit_code or '?'} as it started; its log:\n{logs(container)}"
                )
        time.sleep(poll)
    raise CommandFailed(f"{container} did not answer /healthz within {timeout:.0f} s; its log:\n{logs(container)}")


def logs(container: str) -> str:
    result = docker_result("logs", container, check=False)
    return (result.stdout + result.stderr).strip()


# How pull() says that it stopped a pull, as GNU timeout does.
TIMED_OUT = 124


def pull(image: str, platform: str, seconds: float) -> int:
    """Pull an image quietly, for at most seconds; return docker's exit status, or TIMED_OUT.

    A registry that drops packets instead of refusing them can leave a pull hanging for good. docker's
    error goes to stderr, where base-image.sh reads what kind of failure it was.
    """
    command = [*DOCKER, "pull", "--quiet", *(["--platform", platform] if platform else []), image]
    try:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    except OSError as error:
        print(f"cannot run {' '.join(DOCKER)}: {error.strerror}", file=sys.stderr)
        return 127  # what a shell returns for a command it cannot run
    with process:
        try:
            return process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            # SIGTERM first, which "sudo docker" passes on to docker; SIGKILL if it is ignored.
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
    print(f"the pull did not finish within {seconds:.0f} s", file=sys.stderr)
    return TIMED_OUT


def age_days(image: str) -> int:
    """Whole days since an image was created, by the time the engine records (RFC 3339 as JSON, which
    Podman writes too; its plain {{.Created}} is Go's own format)."""
    created = datetime.fromisoformat(json.loads(docker("image", "inspect", "--format", "{{json .Created}}", image)))
    return (datetime.now(UTC) - created).days


def variants() -> dict[str, dict]:
    """The Makefile's table: each variant's Dockerfile and the hardening flags `make run` adds."""
    table = run("make", "--no-print-directory", "--silent", "-C", str(ROOT), "variants")
    found = {}
    for line in table.splitlines():
        name, dockerfile, *flags = line.split()
        found[name] = {"dockerfile": dockerfile, "hardening": flags}
    return found


def hardened(table: dict[str, dict]) -> tuple[str, ...]:
    """The variants built to run hardened: those `make run` gives hardening flags (all but naive)."""
    return tuple(name for name, row in table.items() if row["hardening"])


# The two platforms the images are built for: an engine runs one natively, the other under emulation.
AMD64, ARM64 = "linux/amd64", "linux/arm64"


def engine_platform() -> str:
    """The engine's own platform, as it reports it: linux/amd64, or linux/arm64 on Apple Silicon,
    whatever the machine that runs make (a Mac runs the engine in a Linux VM)."""
    template = "{{.Server.OsArch}}" if engine() == "podman" else "{{.Server.Os}}/{{.Server.Arch}}"
    return docker("version", "--format", template).strip()


def emulated_platform(native: str) -> str:
    """Of linux/amd64 and linux/arm64, the one an engine whose own platform is native runs under
    emulation: linux/amd64 on Apple Silicon, linux/arm64 on an amd64 machine."""
    return AMD64 if native == ARM64 else ARM64


# The variants CI also builds for linux/arm64, under QEMU: those `make push` publishes for two platforms.
TWO_PLATFORMS = ("production", "secure")


def ci_builds() -> list[dict]:
    """The images CI builds, from the Makefile's table: every variant for the runner's platform,
    linux/amd64, which the Makefile's PLATFORM leaves empty, and those of TWO_PLATFORMS the project
    has for linux/arm64 too, whose tags and artifacts end in -arm64."""
    table = variants()
    builds = [{"variant": name, "dockerfile": row["dockerfile"]} for name, row in table.items()]
    for name in (name for name in TWO_PLATFORMS if name in table):
        builds.append({"variant": name, "dockerfile": table[name]["dockerfile"], "platform": ARM64, "arch": "-arm64"})
    return builds


def exit_on_failure(main: Callable[[], int], program: str) -> int | str:
    """Run a script's main; a failed command ends it with its message, not a traceback."""
    try:
        return main()
    except CommandFailed as error:
        return f"{program}: {error}"


USAGE = """usage: docker_tools.py wait PORT CONTAINER SECONDS
       docker_tools.py pull SECONDS IMAGE [PLATFORM]
       docker_tools.py age-days IMAGE
       docker_tools.py emulated-platform
       docker_tools.py install NAME
       docker_tools.py ci-matrix
       docker_tools.py ci-images NAME"""


def main(argv: list[str]) -> int:
    command, arguments = (argv[0], argv[1:]) if argv else ("", [])
    if command == "wait" and len(arguments) == 3:
        try:
            wait_until_serving(int(arguments[0]), arguments[1], float(arguments[2]))
        except CommandFailed as error:
            print(f"make: {error}", file=sys.stderr)
            return 1
        return 0
    if command == "pull" and len(arguments) in (2, 3):
        return pull(arguments[1], arguments[2] if len(arguments) == 3 else "", float(arguments[0]))
    if command == "age-days" and len(arguments) == 1:
        try:
            print(age_days(arguments[0]))
        except CommandFailed as error:
            print(error, file=sys.stderr)
            return 1
        return 0
    if command == "emulated-platform" and not arguments:
        try:
            print(emulated_platform(engine_platform()))
        except (CommandFailed, OSError) as error:
            print(f"cannot ask the engine its platform: {error}", file=sys.stderr)
            return 1
        return 0
    if command == "install" and len(arguments) == 1 and arguments[0] in DEBIAN_PACKAGES:
        try:
            print(tool(arguments[0]))
        except CommandFailed as error:
            print(error, file=sys.stderr)
            return 1
        return 0
    if command == "ci-matrix" and not arguments:
        print(json.dumps({"include": ci_builds()}))
        return 0
    if command == "ci-images" and len(arguments) == 1:
        print(" ".join(f"{arguments[0]}:{b['variant']}{b.get('arch', '')}={b['dockerfile']}" for b in ci_builds()))
        return 0
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
