"""The Makefile and its scripts as a user meets them: which base image they choose, what they stamp
on an image, how they treat port 8080 and containers they did not start, a DOCKER with arguments,
and a machine whose tools are BSD's, as a Mac's are, rather than GNU's.
"""

import contextlib
import os
import re
import shutil
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from containers import DOCKER, PROJECT_NAME, ROOT, TABLE, VARIANTS, docker, inspect, make, must
from docker_tools import WSGI_APP, podman_run_flags

# What `docker pull` prints when it fails, as Docker Engine words it, and whether it means that no
# registry could be reached (then, and only then, the stand-in base is used).
PULL_ERRORS = {
    "no DNS": (
        'Error response from daemon: Get "https://registry-1.docker.io/v2/": dial tcp: lookup registry-1.docker.io '
        "on 10.255.255.53:53: no such host",
        True,
    ),
    "connection refused": (
        'Error response from daemon: Get "https://registry-1.docker.io/v2/": dial tcp 54.236.113.205:443: '
        "connect: connection refused",
        True,
    ),
    "connection timed out": (
        'Error response from daemon: Get "https://registry-1.docker.io/v2/": net/http: request canceled while '
        "waiting for connection (Client.Timeout exceeded while awaiting headers)",
        True,
    ),
    "a tag that does not exist": (
        "Error response from daemon: manifest for python:3.13.99-slim-trixie not found: manifest unknown: "
        "manifest unknown",
        False,
    ),
    "a misspelt repository": (
        "Error response from daemon: pull access denied for pyhton, repository does not exist or may require "
        "'docker login': denied: requested access to the resource is denied",
        False,
    ),
    "wrong credentials": (
        'Error response from daemon: Head "https://registry-1.docker.io/v2/library/python/manifests/3.13": '
        "unauthorized: incorrect username or password",
        False,
    ),
    "a rate limit": (
        "Error response from daemon: toomanyrequests: You have reached your pull rate limit. You may increase the "
        "limit by authenticating and upgrading: https://www.docker.com/increase-rate-limit",
        False,
    ),
}

STUB_DOCKER = """#!/usr/bin/env bash
# A docker command that has only the stand-in base image, and whose pulls fail with $STUB_PULL_ERROR
# and status $STUB_PULL_STATUS (1), or, with $STUB_PULL_PID set, hang after writing their PID there.
if [ "$1 $2" = "image inspect" ]; then
    [ "${*: -1}" = "$STAND_IN" ] || exit 1
    case "$4" in
    *Created*) echo "\\"$STUB_CREATED\\"" ;;
    *packages*) echo "$STUB_PACKAGES" ;;
    esac
    exit 0
fi
if [ "$1" = pull ] && [ -n "${STUB_PULL_PID:-}" ]; then
    echo $$ >"$STUB_PULL_PID"
    exec sleep 120
fi
if [ "$1" = pull ]; then
    echo "$STUB_PULL_ERROR" >&2
    exit "${STUB_PULL_STATUS:-1}"
fi
echo "unexpected: docker $*" >&2
exit 2
"""


def base_image(tmp_path: Path, pull_error: str, age_days: int = 2, **env: str) -> subprocess.CompletedProcess:
    """Run scripts/1-setup/base-image.sh with a docker whose pull fails so, a stand-in this old, and these
    environment variables besides."""
    script = ROOT / "scripts" / "1-setup" / "base-image.sh"
    stub = tmp_path / "docker"
    stub.write_text(STUB_DOCKER)
    stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
    # Should a test reach the stand-in's build, it fails there rather than download Debian.
    (tmp_path / "mmdebstrap").write_text("#!/bin/sh\necho 'mmdebstrap: not in these tests' >&2\nexit 1\n")
    (tmp_path / "mmdebstrap").chmod(0o755)
    created = time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime(time.time() - age_days * 86400 - 60))
    environment = {
        **os.environ,
        "DOCKER": f"env {stub}",  # two words, as DOCKER="sudo docker" would be
        "PYTHON": sys.executable,
        "STAND_IN": "python-stand-in:debian13",
        "STUB_CREATED": created,
        "STUB_PULL_ERROR": pull_error,
        # The packages the script asks for, so that the stand-in is current.
        "STUB_PACKAGES": re.search(r"^STAND_IN_PACKAGES=(\S+)$", script.read_text(), re.MULTILINE).group(1),
        **env,
    }
    environment["PATH"] = f"{tmp_path}{os.pathsep}{environment['PATH']}"
    return subprocess.run(
        [script, "python:3.13.17-slim-trixie"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.unit
@pytest.mark.parametrize("error, unreachable", PULL_ERRORS.values(), ids=PULL_ERRORS.keys())
def test_the_stand_in_base_is_used_only_when_no_registry_answers(tmp_path, error, unreachable):
    result = base_image(tmp_path, error)
    if unreachable:
        assert (result.returncode, result.stdout) == (0, "python-stand-in:debian13\n"), result.stderr
        assert "built 2 days ago" in result.stderr
    else:
        assert result.returncode == 1 and result.stdout == "", result.stderr
        assert error in result.stderr
        assert "no stand-in is used" in result.stderr


def commands_except(folder: Path, *left_out: str) -> str:
    """A PATH of one folder that links this machine's commands in /usr/bin and /bin but those."""
    folder.mkdir(exist_ok=True)
    for directory in ("/usr/bin", "/bin"):
        for command in Path(directory).iterdir():
            if command.name not in left_out and not (folder / command.name).exists():
                (folder / command.name).symlink_to(command)
    return str(folder)


@pytest.fixture(scope="session")
def bsd_tools(tmp_path_factory) -> str:
    """A PATH with this machine's commands but for GNU's timeout, whose date rejects -d as BSD date
    does: what a Mac offers the scripts. Everything else is the same, so a failure is those two."""
    real_date = shutil.which("date")
    folder = Path(commands_except(tmp_path_factory.mktemp("bsd-tools"), "timeout", "date"))
    date = folder / "date"
    date.write_text(
        "#!/bin/sh\n"
        'for argument in "$@"; do\n'
        '    case $argument in -d* | -[a-z]*d | --date*) echo "date: illegal option -- d" >&2; exit 1 ;; esac\n'
        "done\n"
        f'exec {real_date} "$@"\n'
    )
    date.chmod(0o755)
    return str(folder)


@pytest.mark.unit
def test_the_bsd_tools_path_has_no_timeout_and_a_date_without_d(bsd_tools):
    assert shutil.which("timeout", path=bsd_tools) is None
    result = subprocess.run(["date", "-u", "-d", "@0"], env={"PATH": bsd_tools}, capture_output=True, text=True)
    assert result.returncode == 1 and "illegal option -- d" in result.stderr


@pytest.mark.unit
@pytest.mark.parametrize("error, unreachable", PULL_ERRORS.values(), ids=PULL_ERRORS.keys())
def test_base_image_sh_chooses_its_base_without_gnu_timeout_or_date_d(tmp_path, bsd_tools, error, unreachable):
    result = base_image(tmp_path, error, PATH=bsd_tools)
    if unreachable:
        assert (result.returncode, result.stdout) == (0, "python-stand-in:debian13\n"), result.stderr
        assert "built 2 days ago" in result.stderr
    else:
        assert (result.returncode, result.stdout) == (1, ""), result.stderr
        assert "the registry answered, so no stand-in is used" in result.stderr
    assert "command not found" not in result.stderr


@pytest.mark.unit
def test_a_pull_that_hangs_is_stopped_and_the_stand_in_used(tmp_path):
    pid_file = tmp_path / "pull.pid"
    started = time.monotonic()
    result = base_image(tmp_path, "", PULL_TIMEOUT="1", STUB_PULL_PID=str(pid_file))
    assert (result.returncode, result.stdout) == (0, "python-stand-in:debian13\n"), result.stderr
    assert "no registry answers (the pull did not finish within 1 s)" in result.stderr
    assert time.monotonic() - started < 30
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)


# Failures of a pull that no registry took part in: they are shown, and neither blamed on a
# registry nor hidden behind the stand-in.
NOT_THE_REGISTRY = {
    "a command that is missing": ("scripts/1-setup/base-image.sh: line 9: timeout: command not found", 127),
    "an engine that does not answer": (
        "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?",
        1,
    ),
}


@pytest.mark.unit
@pytest.mark.parametrize("error, status", NOT_THE_REGISTRY.values(), ids=NOT_THE_REGISTRY.keys())
def test_a_pull_that_failed_before_any_registry_answered_is_not_blamed_on_one(tmp_path, error, status):
    result = base_image(tmp_path, error, STUB_PULL_STATUS=str(status))
    assert (result.returncode, result.stdout) == (1, ""), result.stderr
    assert f"cannot pull python:3.13.17-slim-trixie: {error}" in result.stderr
    assert "registry" not in result.stderr


@pytest.mark.unit
def test_a_docker_command_that_does_not_exist_is_named_and_not_blamed_on_a_registry(tmp_path):
    result = base_image(tmp_path, "", DOCKER=str(tmp_path / "no-docker"))
    assert (result.returncode, result.stdout) == (1, ""), result.stderr
    assert f"cannot run {tmp_path / 'no-docker'}: No such file or directory" in result.stderr
    assert "registry" not in result.stderr


def makefile_alone(folder: Path, project_env: str | None = None) -> None:
    """The Makefile in a folder of its own, with the Dockerfiles of its table, beside a project.env of
    the given text (none if None)."""
    (folder / "Makefile").write_bytes((ROOT / "Makefile").read_bytes())
    for row in TABLE.values():
        (folder / row["dockerfile"]).write_bytes((ROOT / row["dockerfile"]).read_bytes())
    if project_env is not None:
        (folder / "project.env").write_text(project_env)


@pytest.mark.unit
def test_the_table_of_variants_follows_the_dockerfiles_the_project_has(tmp_path):
    """A copy made with copier has Dockerfile and Dockerfile.multistage alone, and neither the lesson's
    script nor the documentation site: its table, its help and its targets say so."""
    makefile_alone(tmp_path, (ROOT / "project.env").read_text())
    for dockerfile in ("Dockerfile.naive", "Dockerfile.slim"):
        (tmp_path / dockerfile).unlink(missing_ok=True)
    table = make("--silent", "variants", project=tmp_path)
    assert [line.split()[:2] for line in table.stdout.splitlines()] == [
        ["production", "Dockerfile"],
        ["secure", "Dockerfile.multistage"],
    ]
    targets = [
        line.split()[0] for line in make("help", project=tmp_path).stdout.splitlines()[1:] if line.startswith("  ")
    ]
    assert {"build-production", "run-secure", "scan", "bench"} <= set(targets)
    assert not {"build-naive", "run-naive", "build-slim", "run-slim", "lessons", "docs", "docs-serve"} & set(targets)
    naive = make("build-naive", project=tmp_path)
    assert naive.returncode != 0
    assert "build-naive needs Dockerfile.naive, which this project does not have" in naive.stderr
    lessons = make("lessons", project=tmp_path)
    assert lessons.returncode != 0 and "lessons measures the template's lesson" in lessons.stderr
    docs = make("docs", project=tmp_path)
    assert docs.returncode != 0 and "the documentation site is the template's" in docs.stderr
    # -o: the images and the test environment taken as made, so that -n prints scan's own command alone.
    scan = make("-n", "-o", "images", f"VENV={sys.prefix}", "-o", f"{sys.prefix}/bin/pytest", "scan", project=tmp_path)
    assert "--report-only" not in scan.stdout and f"{PROJECT_NAME}:secure" in scan.stdout


@pytest.mark.unit
def test_the_image_source_label_drops_credentials_from_the_remote(tmp_path):
    makefile_alone(tmp_path, (ROOT / "project.env").read_text())
    remote = "https://builder:ghp_s3cretToken@git.example.com/team/orders.git"
    subprocess.run(["git", "init", "--quiet", tmp_path], check=True)
    subprocess.run(["git", "-C", tmp_path, "remote", "add", "origin", remote], check=True)
    dry_run = make("-n", "build-production", project=tmp_path)
    must(dry_run, "make -n build-production")
    assert "org.opencontainers.image.source=https://git.example.com/team/orders.git" in dry_run.stdout
    assert "s3cret" not in dry_run.stdout and "builder" not in dry_run.stdout


# A docker command whose engine, an arm64 one, answers or not ($STUB_ENGINE), with buildx and Compose.
STUB_ENGINE_DOCKER = """#!/bin/sh
case "$1" in
info) [ "$STUB_ENGINE" = answers ] && echo "Ubuntu 24.04 LTS" ;;
version) echo arm64 ;;
buildx | compose) [ "$2" = version ] ;;
*) echo "unexpected: docker $*" >&2; exit 2 ;;
esac
"""


def ensure_docker(tmp_path: Path, system: str, engine: str, platform: str = "") -> subprocess.CompletedProcess:
    """Run scripts/1-setup/ensure-docker.sh where uname says system, no apt-get, dockerd or sudo exists,
    and docker's engine answers or not."""
    path = commands_except(tmp_path / "bin", "apt-get", "apt", "dockerd", "docker", "sudo", "uname")
    (tmp_path / "bin" / "uname").write_text(f"#!/bin/sh\necho {system}\n")
    (tmp_path / "bin" / "docker").write_text(STUB_ENGINE_DOCKER)
    for stub in ("uname", "docker"):
        (tmp_path / "bin" / stub).chmod(0o755)
    return subprocess.run(
        [ROOT / "scripts" / "1-setup" / "ensure-docker.sh"],
        env={**os.environ, "PATH": path, "DOCKER": "docker", "STUB_ENGINE": engine, "PLATFORM": platform},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.unit
@pytest.mark.parametrize(
    "system, advice",
    [
        ("Darwin", "On macOS, install and start Docker Desktop, OrbStack or Colima"),
        (
            "MINGW64_NT-10.0-22631",
            "On Windows, install Docker Desktop with its WSL2 back end, and run make inside WSL2",
        ),
        ("Linux", "Start Docker, or install it (Docker Engine: https://docs.docker.com/engine/install/"),
    ],
    ids=["macOS", "Windows", "Linux without apt"],
)
def test_make_engine_without_apt_names_what_to_install_and_installs_nothing(tmp_path, system, advice):
    result = ensure_docker(tmp_path, system, engine="silent")
    assert result.returncode == 1
    # One sentence, and nothing else: no install was tried.
    [line] = result.stderr.splitlines()
    assert line.startswith(f"ensure-docker.sh: no Docker engine answers. {advice}"), result.stderr


@pytest.mark.unit
@pytest.mark.parametrize("platform", ["", "linux/amd64"], ids=["its own platform", "amd64 on Apple Silicon"])
def test_make_engine_on_macos_with_an_engine_answering_does_nothing(tmp_path, platform):
    result = ensure_docker(tmp_path, "Darwin", engine="answers", platform=platform)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


@pytest.mark.unit
@pytest.mark.parametrize(
    ("engine", "emulated"),
    [("linux/amd64", "linux/arm64"), ("linux/arm64", "linux/amd64")],
    ids=["amd64", "Apple Silicon"],
)
def test_compare_push_and_test_emulated_take_the_platform_the_engine_does_not_run_natively(tmp_path, engine, emulated):
    docker = tmp_path / "docker"
    docker.write_text(f'#!/bin/sh\n[ "$1" = version ] && echo {engine}\n')
    docker.chmod(0o755)
    settings = make("help", docker_command=str(docker)).stdout
    assert f" COMPARE_PLATFORM={emulated} " in settings and f" PUBLISH_PLATFORM={emulated} " in settings, settings
    dry_run = make("-n", "test-emulated", docker_command=str(docker)).stdout
    assert f'PLATFORM="{emulated}" scripts/1-setup/ensure-docker.sh' in dry_run, dry_run


@pytest.mark.unit
def test_make_engine_with_podman_missing_names_what_to_install_and_installs_nothing(tmp_path):
    """Without podman, apt-get, docker and dockerd: one sentence, and no engine install is tried."""
    path = commands_except(tmp_path / "bin", "podman", "apt-get", "apt", "docker", "dockerd", "sudo")
    result = subprocess.run(
        [ROOT / "scripts" / "1-setup" / "ensure-podman.sh"],
        env={**os.environ, "PATH": path, "DOCKER": "podman"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(
        "ensure-podman.sh: podman is not installed. Install Podman (Fedora, RHEL: dnf install podman;"
    )


@pytest.mark.unit
def test_make_up_with_a_podman_that_has_no_compose_says_so_before_building(tmp_path):
    podman = tmp_path / "podman"
    podman.write_text('#!/bin/sh\n[ "$1" = --version ] && echo "podman version 4.3.1" && exit 0\nexit 125\n')
    podman.chmod(0o755)
    result = make("up", docker_command=str(podman))
    assert result.returncode != 0
    assert "has no compose command (Podman 4.7 and later have one" in result.stderr, result.stderr
    assert "Building" not in result.stdout


@pytest.mark.unit
def test_podman_builds_in_dockers_format_and_runs_with_the_flags_the_tests_give_it_and_docker_neither():
    """The Makefile and the tests' podman_run_flags() tell Podman the same; Docker is told neither."""
    podman = make("-n", "run-secure", docker_command="podman").stdout
    assert re.search(r"podman build\s+--format docker ", podman), podman
    assert f" {' '.join(podman_run_flags())} " in podman, podman
    docker = make("-n", "run-secure", docker_command="docker").stdout
    assert "--format docker" not in docker and "--ulimit" not in docker and "--read-only-tmpfs" not in docker


@pytest.mark.unit
def test_the_created_label_is_the_commits_time_also_where_date_has_no_d(tmp_path, bsd_tools):
    makefile_alone(tmp_path, (ROOT / "project.env").read_text())
    arguments = ("-n", "build-production", "SOURCE_DATE_EPOCH=1700000000", f"PYTHON={sys.executable}")
    dry_run = make(*arguments, project=tmp_path, env={**os.environ, "PATH": bsd_tools})
    must(dry_run, "make -n build-production")
    assert "--label org.opencontainers.image.created=2023-11-14T22:13:20Z " in dry_run.stdout
    assert "illegal option" not in dry_run.stderr


@pytest.mark.unit
def test_project_env_names_the_images_the_container_and_the_compose_project(tmp_path):
    # A name of its own, in the sample and in any copy, the project's own name never a word of it.
    name = f"{PROJECT_NAME}-renamed"
    makefile_alone(tmp_path, f"# renamed\nPROJECT_NAME={name}\nWSGI_APP=app:app\n")
    run = make("-n", "run-secure", project=tmp_path)
    must(run, "make -n run-secure")
    assert f"--tag {name}:secure" in run.stdout
    assert f"--name {name} " in run.stdout and f"no-new-privileges {name}:secure " in run.stdout
    up = make("-n", "up", project=tmp_path)
    must(up, "make -n up")
    assert f"PROJECT_NAME={name} IMAGE={name} VARIANT=secure" in up.stdout
    assert not re.search(rf"(?<![\w-]){re.escape(PROJECT_NAME)}(?![\w-])", run.stdout + up.stdout)


@pytest.mark.unit
@pytest.mark.parametrize(
    "line",
    [
        "PROJECT_NAME=My_Service",
        "PROJECT_NAME=-service",
        "PROJECT_NAME=",
        'PROJECT_NAME="my-service"',
        "PROJECT_NAME=my-service # Compose drops this comment, Kustomize keeps it",
        "PROJECT_NAME=my-service ",
    ],
)
def test_make_refuses_a_project_env_that_docker_compose_or_kustomize_would_misread(tmp_path, line):
    makefile_alone(tmp_path, f"# renamed\n{line}\nWSGI_APP=app:app\n")
    result = make("help", project=tmp_path)
    assert result.returncode != 0
    assert "project.env needs one line PROJECT_NAME=name, with nothing else on it" in result.stderr


@pytest.mark.unit
@pytest.mark.parametrize("entry_point", ["app:app", "myservice.web:create_app()", "acme:create_app()"])
def test_project_env_names_the_entry_point_every_build_that_asks_for_one_is_given(tmp_path, entry_point):
    """Every Dockerfile that declares ARG WSGI_APP is given project.env's; naive, which names its app
    on flask's command line, is given none, which BuildKit would warn of as unused."""
    makefile_alone(tmp_path, f"PROJECT_NAME=my-service\nWSGI_APP={entry_point}\n")
    for variant in VARIANTS:
        build = make("-n", f"build-{variant}", project=tmp_path)
        assert build.returncode == 0, build.stderr
        asks = "\nARG WSGI_APP\n" in (ROOT / TABLE[variant]["dockerfile"]).read_text()
        assert (f"--build-arg 'WSGI_APP={entry_point}'" in build.stdout) == asks, build.stdout
    assert sum("ARG WSGI_APP" in (ROOT / row["dockerfile"]).read_text() for row in TABLE.values()) >= 2


@pytest.mark.unit
@pytest.mark.parametrize(
    "line",
    [
        "",
        "WSGI_APP=",
        "WSGI_APP=app",
        'WSGI_APP="app:app"',
        "WSGI_APP=app:app # Compose drops this comment, Kustomize keeps it",
        "WSGI_APP=app:app ",
        "WSGI_APP=acme:create_app('production')",
        "WSGI_APP=src/app.py:app",
    ],
)
def test_make_refuses_an_entry_point_that_compose_kustomize_or_gunicorn_would_misread(tmp_path, line):
    makefile_alone(tmp_path, f"PROJECT_NAME=my-service\n{line}\n")
    result = make("help", project=tmp_path)
    assert result.returncode != 0
    assert "project.env needs one line WSGI_APP=module:name, with nothing else on it" in result.stderr


@pytest.mark.unit
def test_make_refuses_a_bad_entry_point_given_on_its_command_line():
    result = make("help", "WSGI_APP=app app")
    assert result.returncode != 0
    assert 'WSGI_APP="app app" is not a WSGI entry point' in result.stderr


@pytest.mark.unit
def test_make_refuses_a_bad_project_name_given_on_its_command_line():
    result = make("help", "PROJECT_NAME=My_Service")
    assert result.returncode != 0
    assert 'PROJECT_NAME="My_Service" is not a name Docker and Kubernetes both accept' in result.stderr


@pytest.mark.unit
def test_make_says_what_to_do_without_project_env(tmp_path):
    makefile_alone(tmp_path)
    result = make("help", project=tmp_path)
    assert result.returncode != 0
    assert "project.env is missing" in result.stderr


@pytest.mark.integration
def test_a_docker_command_with_arguments_works_for_the_engine_and_a_build(docker_engine):
    two_words = f"{' '.join(DOCKER)} --log-level=error"
    image = f"{PROJECT_NAME}-two-words-{uuid.uuid4().hex[:8]}"
    try:
        engine = make("engine", docker_command=two_words)
        assert engine.returncode == 0, engine.stdout + engine.stderr
        build = make("build-production", f"IMAGE={image}", docker_command=two_words)
        assert build.returncode == 0, build.stdout[-3000:] + build.stderr
        assert f"WSGI_APP={WSGI_APP}" in inspect(f"{image}:production")["Config"]["Env"]
    finally:
        docker("image", "rm", "--force", f"{image}:production", check=False)


# The tests that hold port 8080 run on one worker of a parallel run, with those of test_images.py.
@contextlib.contextmanager
def holding_8080(image: str, *labels: str) -> Iterator[str]:
    """A container of image that holds 127.0.0.1:8080 and does nothing else; removed afterwards,
    also when it could not start."""
    name = f"{PROJECT_NAME}-port-{uuid.uuid4().hex[:8]}"
    flags = [argument for label in labels for argument in ("--label", label)]
    try:
        docker("run", "--detach", "--name", name, *flags, "--publish", "127.0.0.1:8080:8080", image, "sleep", "60")
        yield name
    finally:
        docker("rm", "--force", name, check=False)


@pytest.mark.integration
@pytest.mark.xdist_group("port-8080")
def test_the_tests_stop_a_container_make_run_left_on_8080(control):
    with holding_8080(control, f"make-run.project={ROOT}") as name:
        result = make("free-8080")
        assert result.returncode == 0, result.stderr
        assert f"stopping {name}, the container make run left on port 8080" in result.stdout
        assert docker("ps", "--all", "--quiet", "--filter", f"name=^/{name}$").stdout == ""


@pytest.mark.integration
@pytest.mark.xdist_group("port-8080")
def test_the_tests_refuse_to_start_while_something_else_holds_8080(control):
    with holding_8080(control) as name:
        result = make("free-8080")
        assert result.returncode != 0
        assert f"port 8080, which the tests serve on, is held by the container {name}" in result.stderr
        assert inspect(name)["State"]["Running"]


@pytest.mark.integration
@pytest.mark.xdist_group("port-8080")
def test_make_stop_leaves_a_container_it_did_not_start_alone(control):
    with holding_8080(control) as name:
        result = make("stop", f"CONTAINER={name}")
        assert result.returncode != 0
        assert f"a container named {name} exists that make run did not start" in result.stderr
        assert inspect(name)["State"]["Running"]
