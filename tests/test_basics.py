"""The basics the README shows with the command a learner types ("The basics, shown"), kept true on
the images the Makefile builds: the container's writable layer, exec and shell form, ENTRYPOINT and
CMD, ENV and `docker run --env`.
"""

import re
import subprocess
import time
import uuid

import pytest
from containers import (
    LOCKDOWN,
    PROJECT_NAME,
    ROOT,
    Container,
    docker,
    inspect,
    running,
    wait_until_healthy,
    wait_until_serving,
)
from docker_tools import engine, serving

pytestmark = pytest.mark.integration

# What the README shows a learner typing into the secure image, which has no shell: its own Python.
SECURE_PYTHON = "/opt/venv/bin/python"


def run_once(image: str, *args: str) -> subprocess.CompletedProcess:
    """`docker run IMAGE ARGS...` in the foreground; the container is removed even if it hangs."""
    name = f"{PROJECT_NAME}-test-{uuid.uuid4().hex[:8]}"
    try:
        return docker("run", "--name", name, image, *args, timeout=60)
    finally:
        docker("rm", "--force", name, check=False)


def test_a_write_lands_in_the_containers_own_layer_and_the_image_stays_as_it_was(images):
    with running(images["production"]) as container:
        docker("exec", container.id, "touch", "/home/app/note")
        changes = docker("diff", container.id).stdout.splitlines()
    assert "A /home/app/note" in changes, changes
    fresh = docker("run", "--rm", "--entrypoint", "ls", images["production"], "-A", "/home/app").stdout
    assert "note" not in fresh.split(), fresh


def test_a_read_only_root_refuses_the_write_and_the_layer_stays_empty(images):
    with running(images["secure"], *LOCKDOWN) as container:
        refused = docker("exec", container.id, SECURE_PYTHON, "-c", "open('/app/note', 'w')", check=False)
        changes = docker("diff", container.id).stdout
    assert refused.returncode != 0
    assert "Read-only file system: '/app/note'" in refused.stderr, refused.stderr
    assert "/app/note" not in changes, changes


# Production with gunicorn started by a shell-form CMD: Docker runs it as `/bin/sh -c "..."`.
SHELL_FORM = "FROM {image}\nENTRYPOINT []\nCMD gunicorn --config /app/gunicorn.conf.py\n"


@pytest.fixture
def shell_form(images, tmp_path):
    """The production image with a shell-form CMD instead of its exec-form ENTRYPOINT, built here
    and removed afterwards."""
    tag = f"{PROJECT_NAME}-test-{uuid.uuid4().hex[:8]}:shell-form"
    (tmp_path / "Dockerfile").write_text(SHELL_FORM.format(image=images["production"]))
    try:
        docker("build", "--quiet", "--tag", tag, str(tmp_path))
        yield tag
    finally:
        docker("image", "rm", "--force", tag, check=False)


def stopped(container: Container) -> tuple[float, int]:
    """`docker stop` with its default 10 s grace: how long it took, and the exit code."""
    started = time.monotonic()
    docker("stop", container.id)
    return time.monotonic() - started, inspect(container.id)["State"]["ExitCode"]


def test_a_shell_form_cmd_keeps_sigterm_from_gunicorn_so_docker_stop_kills_it(images, shell_form):
    with running(shell_form) as container:
        # Podman's top reads these columns itself; given ps options, it runs ps in the container.
        columns = ("pid", "args") if engine() == "podman" else ("-o", "pid,args")
        pid_1 = docker("top", container.id, *columns).stdout.splitlines()[1]
        shell_seconds, shell_code = stopped(container)
    with running(images["production"]) as container:
        exec_seconds, exec_code = stopped(container)
    assert "/bin/sh -c gunicorn" in pid_1, pid_1
    assert shell_code == 137 and 9.5 < shell_seconds < 20, (shell_code, shell_seconds)
    assert exec_code == 0 and exec_seconds < 3, (exec_code, exec_seconds)


def test_arguments_after_the_image_name_follow_its_entrypoint_or_replace_its_cmd(images):
    """Production's ENTRYPOINT is gunicorn, so an argument goes to gunicorn; naive has only a CMD,
    so the arguments are the whole command."""
    pinned = re.search(r"^gunicorn==(\S+)", (ROOT / "requirements.txt").read_text(), re.MULTILINE).group(1)
    assert run_once(images["production"], "--version").stdout.strip() == f"gunicorn (version {pinned})"
    assert re.fullmatch(r"Python 3\.\d+\.\d+", run_once(images["naive"], "python3", "--version").stdout.strip())


def test_env_gives_a_default_that_docker_run_env_replaces_in_the_running_container(images):
    environment = dict(variable.split("=", 1) for variable in inspect(images["production"])["Config"]["Env"])
    assert environment["PORT"] == "8080"
    with running(images["production"], "--env", "PORT=9000", "--publish", "127.0.0.1::9000", wait=False) as container:
        bound = docker("port", container.id, "9000/tcp").stdout.split()[0]
        moved = Container(id=container.id, port=int(bound.rsplit(":", 1)[1]))
        wait_until_serving(moved)
        assert docker("exec", moved.id, "printenv", "PORT").stdout.strip() == "9000"
        # The health check reads the same variable, so it follows the server to its new port.
        wait_until_healthy(moved)
        assert not serving(container.port)
