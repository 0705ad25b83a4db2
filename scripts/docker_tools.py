"""The docker command as the scripts, the Makefile and the tests use it, and the table of variants.

- PROJECT_NAME, from project.env, which names the tests' and the bench's throwaway images too, and
  WSGI_APP, the entry point the images serve and the tests import;
- DOCKER, the command, which may hold arguments ("sudo docker"): the DOCKER environment variable;
- docker() and docker_result(): run it, and fail with the command and what it printed;
- walk_image(): every file of an image, read without starting it;
- wait_until_serving(): poll /healthz on a published port until it answers or the container exits;
- variants(): each variant's Dockerfile and hardening flags, read from the Makefile, their one home.

`python3 scripts/docker_tools.py wait PORT CONTAINER SECONDS` is the Makefile's wait for `make run`.
"""

import http.client
import os
import re
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROJECT_ENV = (ROOT / "project.env").read_text()
PROJECT_NAME = re.search(r"^PROJECT_NAME=(\S+)$", PROJECT_ENV, re.MULTILINE).group(1)
WSGI_APP = re.search(r"^WSGI_APP=(\S+)$", PROJECT_ENV, re.MULTILINE).group(1)
DOCKER = os.environ.get("DOCKER", "docker").split()
MB = 1_000_000  # as `docker images` counts


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


def docker_result(*args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    return run_command(*DOCKER, *args, check=check, timeout=timeout)


def docker(*args: str, timeout: float = 900) -> str:
    """Run one docker command and return what it printed; raise CommandFailed if it fails."""
    return docker_result(*args, timeout=timeout).stdout


def walk_image(image: str) -> Iterator[tuple[tarfile.TarInfo, Callable[[], bytes]]]:
    """Every entry of an image's filesystem, with a function that reads a file's bytes (once: the
    archive is a stream).

    The image is exported from a container that is created, never started, and removed afterwards.
    """
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


def serving(port: int, timeout: float = 1) -> bool:
    """Whether GET /healthz on 127.0.0.1:port answers 200 now."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", "/healthz")
        return connection.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


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


def variants() -> dict[str, dict]:
    """The Makefile's table: each variant's Dockerfile and the hardening flags `make run` adds."""
    table = run("make", "--no-print-directory", "--silent", "-C", str(ROOT), "variants")
    found = {}
    for line in table.splitlines():
        name, dockerfile, *flags = line.split()
        found[name] = {"dockerfile": dockerfile, "hardening": flags}
    return found


def exit_on_failure(main: Callable[[], int], program: str) -> int | str:
    """Run a script's main; a failed command ends it with its message, not a traceback."""
    try:
        return main()
    except CommandFailed as error:
        return f"{program}: {error}"


def main(argv: list[str]) -> int:
    if len(argv) != 4 or argv[0] != "wait":
        print("usage: docker_tools.py wait PORT CONTAINER SECONDS", file=sys.stderr)
        return 2
    try:
        wait_until_serving(int(argv[1]), argv[2], float(argv[3]))
    except CommandFailed as error:
        print(f"make: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
