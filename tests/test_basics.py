"""The basics the lesson shows with the command a learner types (docs/lesson/0-basics.md), kept true
on the images the Makefile builds: the container's writable layer, RUN at build time and CMD at run
time, exec and shell form, ENTRYPOINT and CMD (the last CMD counts), ENV and `docker run --env`,
WORKDIR, EXPOSE against publishing with -p, and what `docker history` shows of the layers.
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
from docker_tools import engine, free_port, serving, walk_layers

pytestmark = pytest.mark.integration

# What the lesson shows a learner typing into the secure image, which has no shell: its own Python.
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


@pytest.fixture
def derived(tmp_path):
    """Build an image FROM one of the images under test with a few lines more, as the lesson does
    with `printf ... | docker build -`; every image built is removed afterwards."""
    tags = []

    def build(dockerfile: str) -> str:
        tag = f"{PROJECT_NAME}-test-{uuid.uuid4().hex[:8]}:derived"
        folder = tmp_path / tag.rsplit(":", 1)[0]
        folder.mkdir()
        (folder / "Dockerfile").write_text(dockerfile)
        tags.append(tag)
        docker("build", "--quiet", "--tag", tag, str(folder))
        return tag

    yield build
    for tag in tags:
        docker("image", "rm", "--force", tag, check=False)


def test_run_runs_once_at_build_time_and_cmd_at_every_start(images, derived):
    image = derived(f'FROM {images["naive"]}\nRUN date +%s%N > /built\nCMD ["sh", "-c", "cat /built; date +%s%N"]\n')
    first = run_once(image).stdout.split()
    second = run_once(image).stdout.split()
    assert first[0] == second[0], (first, second)
    assert int(first[0]) < int(first[1]) < int(second[1]), (first, second)


def test_the_last_cmd_gives_the_entrypoint_its_default_arguments(images, derived):
    """Two CMDs: the last, --version, is what gunicorn gets with no arguments; arguments after the
    image name replace it, and the ENTRYPOINT stays."""
    image = derived(f'FROM {images["production"]}\nCMD ["--help"]\nCMD ["--version"]\n')
    config = inspect(image)["Config"]
    assert (config["Entrypoint"], config["Cmd"]) == (["gunicorn", "--config", "/app/gunicorn.conf.py"], ["--version"])
    pinned = re.search(r"^gunicorn==(\S+)", (ROOT / "requirements.txt").read_text(), re.MULTILINE).group(1)
    assert run_once(image).stdout.strip() == f"gunicorn (version {pinned})"
    checked = run_once(image, "--check-config")
    assert checked.returncode == 0 and "version" not in checked.stdout + checked.stderr, checked


def test_workdir_is_where_the_container_starts(images):
    assert inspect(images["production"])["Config"]["WorkingDir"] == "/app"
    started = docker("run", "--rm", "--entrypoint", "pwd", images["production"], timeout=60)
    assert started.stdout.strip() == "/app"


def test_expose_publishes_nothing_and_p_publishes_on_the_address_it_names(images):
    """EXPOSE 8080 is in the image; without -p the server runs and the host's port stays closed,
    and -p 127.0.0.1:PORT:8080 opens that port on that address only."""
    image = images["production"]
    assert set(inspect(image)["Config"]["ExposedPorts"]) == {"8080/tcp"}
    port = free_port()
    name = f"{PROJECT_NAME}-test-{uuid.uuid4().hex[:8]}"
    try:
        docker("run", "--detach", "--name", name, image)
        deadline = time.monotonic() + 30
        # The image's own health check asks the server from inside; it answers once gunicorn serves.
        while docker("exec", name, "python3", "/app/healthcheck.py", check=False).returncode != 0:
            assert time.monotonic() < deadline, "the server never answered inside the container"
            time.sleep(0.2)
        assert docker("port", name).stdout.strip() == ""
        assert not serving(port)
    finally:
        docker("rm", "--force", name, check=False)
    with running(image, host_port=port) as container:
        assert docker("port", container.id, "8080/tcp").stdout.split() == [f"127.0.0.1:{port}"]
        assert serving(port)


def test_history_shows_requirements_txt_mounted_for_the_install_and_in_no_layer(images):
    """Production mounts requirements.txt for the one RUN that installs from it, where a COPY would
    keep it in its layer even after a later layer deleted it: `docker history` shows that RUN (its
    mounts left out) and no COPY of the file, and no layer of the image holds it. The instructions that only
    configure the image (ENV, USER, EXPOSE, ENTRYPOINT) add 0 bytes."""
    image = images["production"]
    history = docker("history", "--human=false", "--no-trunc", "--format", "{{.CreatedBy}}|{{.Size}}", image).stdout
    layers = [line.rsplit("|", 1) for line in history.splitlines()]
    installs = [made_by for made_by, _ in layers if "install --require-hashes -r /tmp/requirements.txt" in made_by]
    assert installs, layers
    assert not [made_by for made_by, _ in layers if made_by.startswith("COPY requirements.txt")], layers
    configuring = [int(size) for made_by, size in layers if re.match(r"(ENV|USER|EXPOSE|ENTRYPOINT) ", made_by)]
    assert len(configuring) >= 4 and set(configuring) == {0}, layers
    held = [member.name for member, _ in walk_layers(image) if member.name.endswith("requirements.txt")]
    assert held == [], held
