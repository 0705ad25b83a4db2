"""The repository as a template: a copy with a user's own changes, built and run as the README says.

Each integration test copies the project's folder, changes it the way the README's "Using it as a
template" tells a user to, and builds and runs it with the copy's own Makefile. The unit tests make
copies with copier instead, then bring a later commit of the template into one with `copier update`.
"""

import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml
from bench import app_module, copy_context
from containers import (
    CONTROL_DOCKERFILE,
    LOCKDOWN,
    PROJECT_NAME,
    ROOT,
    docker,
    flask_app,
    inspect,
    make,
    must,
    rename_project,
    request,
    running,
)
from docker_tools import WSGI_APP, free_port
from factory_copy import HTML_CONTENT_SECURITY_POLICY, STATIC, add_requirements, left_out, make_factory_copy

# A package of the user's: routes that need a wheel with bundled native libraries, time zones, the
# public CA certificates and the C.UTF-8 locale.
USER_PACKAGE = '''"""Routes of my service that need more than the sample does."""

import datetime
import locale
import ssl
import zoneinfo

import zmq
from flask import Blueprint, jsonify

routes = Blueprint("myservice", __name__)


def create_app():
    """The project's own app, whatever its entry point was, with these routes."""
    from gunicorn.util import import_app

    app = import_app("ENTRY_POINT")
    app.register_blueprint(routes)
    return app


@routes.get("/hello")
def hello():
    return jsonify(message="Hello from my-service!")


@routes.get("/native")
def native():
    return jsonify(zmq=zmq.zmq_version())


@routes.get("/paris")
def paris():
    summer = datetime.datetime(2026, 7, 1, 12, tzinfo=zoneinfo.ZoneInfo("Europe/Paris"))
    return jsonify(offset=str(summer.utcoffset()))


@routes.get("/tls")
def tls():
    return jsonify(certificates=ssl.create_default_context().cert_store_stats()["x509_ca"])


@routes.get("/locale")
def current_locale():
    return jsonify(locale=locale.setlocale(locale.LC_ALL, ""))
'''


def make_in(copy: Path, *args: str) -> subprocess.CompletedProcess:
    """The copy's own Makefile; the lock uses the test environment, so nothing is installed twice."""
    return make(*args, f"VENV={ROOT / '.venv'}", project=copy)


@pytest.fixture
def project(tmp_path, docker_engine):
    """A copy of the project and an image name of its own; the image is removed afterwards."""
    name = f"{PROJECT_NAME}-trial-{uuid.uuid4().hex[:8]}"
    try:
        yield copy_context(tmp_path / "my-service"), name
    finally:
        for variant in ("secure", "production"):
            docker("image", "rm", "--force", f"{name}:{variant}", check=False)


def change_entry_point(copy: Path, entry_point: str) -> None:
    """Name another entry point in the copy's project.env, its one place."""
    env = copy / "project.env"
    env.write_text(re.sub(r"^WSGI_APP=.*$", f"WSGI_APP={entry_point}", env.read_text(), flags=re.MULTILINE))


@pytest.mark.integration
def test_a_copy_with_a_package_a_native_dependency_and_its_own_greeting_serves_locked_down(project):
    copy, name = project
    (copy / "src" / "myservice").mkdir()
    (copy / "src" / "myservice" / "__init__.py").write_text(USER_PACKAGE.replace("ENTRY_POINT", WSGI_APP))
    change_entry_point(copy, "myservice:create_app()")
    with (copy / "requirements.in").open("a") as requirements:
        requirements.write("pyzmq==26.4.0\n")
    must(make_in(copy, "lock"), "make lock")
    assert re.search(r"^pyzmq==26\.4\.0 \\\n    --hash=sha256:", (copy / "requirements.txt").read_text(), re.MULTILINE)
    must(make_in(copy, "build-secure", f"IMAGE={name}"), "make build-secure")

    with running(f"{name}:secure", *LOCKDOWN, "--user", "12345:0") as container:
        answers = {path: container.get(path) for path in ("/hello", "/native", "/paris", "/tls", "/locale")}
    assert {path: answer.status for path, answer in answers.items()} == dict.fromkeys(answers, 200)
    assert answers["/hello"].json() == {"message": "Hello from my-service!"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", answers["/native"].json()["zmq"])
    assert answers["/paris"].json() == {"offset": "2:00:00"}
    assert answers["/tls"].json()["certificates"] > 100
    assert answers["/locale"].json() == {"locale": "C.UTF-8"}


@pytest.mark.integration
def test_make_run_reports_at_once_a_container_that_exits_as_it_starts(project):
    copy, name = project
    app = app_module(copy)
    app.write_text("import myservice  # a package that was never added to src/\n" + app.read_text())
    must(make_in(copy, "build-production", f"IMAGE={name}"), "make build-production")
    container = f"{name}-run"
    run = ("-o", "build-production", "run-production", f"IMAGE={name}", f"CONTAINER={container}", f"PORT={free_port()}")
    started = time.monotonic()
    try:
        # -o: run the image just built, so that the time is make run's alone, with no build or pull in it.
        result = make_in(copy, *run)
        elapsed = time.monotonic() - started
    finally:
        docker("rm", "--force", container, check=False)
    assert result.returncode != 0
    assert f"{container} exited with" in result.stderr
    assert "ModuleNotFoundError: No module named 'myservice'" in result.stderr
    # Without the check, make would wait out its whole 30 s.
    assert elapsed < 15, f"make run took {elapsed:.1f} s to report it"


@pytest.mark.integration
@pytest.mark.docker
def test_a_copy_renamed_in_project_env_runs_and_composes_under_its_new_name(project):
    """make run, make stop, make up and make down, after a change to project.env alone."""
    copy, name = project
    port = free_port()
    rename_project(copy, name)
    try:
        must(make_in(copy, "run-secure", f"PORT={port}"), "make run-secure")
        (container,) = docker("ps", "--quiet", "--filter", f"name=^/{name}$").stdout.split()
        assert inspect(container)["Config"]["Image"] == f"{name}:secure"
        must(make_in(copy, "stop"), "make stop")
        assert not docker("ps", "--all", "--quiet", "--filter", f"name=^/{name}$").stdout.strip()

        must(make_in(copy, "up", f"PORT={port}"), "make up")
        (service,) = docker("ps", "--quiet", "--filter", f"label=com.docker.compose.project={name}").stdout.split()
        assert inspect(service)["Config"]["Image"] == f"{name}:secure"
        assert request(port, "/").status == 200
    finally:
        make_in(copy, "down")
        make_in(copy, "stop")
    assert not docker("ps", "--all", "--quiet", "--filter", f"label=com.docker.compose.project={name}").stdout.strip()
    assert not docker("network", "ls", "--quiet", "--filter", f"name={name}").stdout.strip()


# The files the README calls the copy's own, which `copier update` must leave alone; written out
# here, not read from copier.yml, so that a name dropped there fails the test.
COPYS_OWN = ("project.env", "src/app.py", "tests/test_sample_app.py", "requirements.in", "requirements.txt")
# Commits in the tests need an author, which a CI runner's git has not; copier commits in its own
# scratch repositories too.
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "Template Test",
    "GIT_AUTHOR_EMAIL": "template-test@example.invalid",
    "GIT_COMMITTER_NAME": "Template Test",
    "GIT_COMMITTER_EMAIL": "template-test@example.invalid",
}


def git(*args: str, cwd: Path) -> str:
    """One git command in a repository of the test's; its output, or the test fails with its error."""
    result = subprocess.run(
        ["git", "-c", "commit.gpgsign=false", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **GIT_IDENTITY},
    )
    must(result, f"git {' '.join(args)}")
    return result.stdout


def copier(*args: str, cwd: Path) -> None:
    """copier, from the test environment, as a user runs it; the test fails with its output if it does."""
    command = [sys.executable, "-m", "copier", *args]
    env = {**os.environ, **GIT_IDENTITY}
    must(subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300, env=env), f"copier {args[0]}")


def copier_copy(template: Path, copy: Path) -> Path:
    """A copy named my-service, without questions, as `copier copy` makes it."""
    copier("copy", "--defaults", "--data", "project_name=my-service", str(template), str(copy), cwd=copy.parent)
    return copy


def commit_all(repository: Path, message: str) -> None:
    """Commit every change in a repository of the test's."""
    git("add", "--all", cwd=repository)
    git("commit", "--quiet", "--message", message, cwd=repository)


def files_in(folder: Path) -> set[str]:
    """Every file under folder but a git repository's own, as paths relative to it."""
    return {
        path.relative_to(folder).as_posix()
        for path in folder.rglob("*")
        if path.is_file() and ".git" not in path.relative_to(folder).parts
    }


def edit(path: Path, old: str, new: str) -> None:
    """Replace a line's text in a file, failing if the text is not there."""
    text = path.read_text()
    assert old in text, f"{path.name} has no {old!r}"
    path.write_text(text.replace(old, new, 1))


def described(template: Path) -> str:
    """The name copier records for the template's last commit: its tag, or its short hash."""
    return git("describe", "--tags", "--always", cwd=template).strip()


def template_clone(destination: Path) -> Path:
    """A clone of the repository whose last commit holds its files as they are now, so that
    uncommitted changes are tested too; the repository itself is never committed to."""
    git("clone", "--quiet", str(ROOT), str(destination), cwd=ROOT)
    for name in git("ls-files", "-z", cwd=destination).split("\0"):
        if name:
            (destination / name).unlink()
    copy_context(destination)
    if git("status", "--porcelain", cwd=destination).strip():
        commit_all(destination, "The working tree as it is now")
    return destination


@pytest.fixture
def copied(tmp_path) -> tuple[Path, Path]:
    """A throwaway clone of the template, and my-service, a copy copier made of it, committed to git."""
    template = template_clone(tmp_path / "template")
    copy = copier_copy(template, tmp_path / "my-service")
    git("init", "--quiet", cwd=copy)
    commit_all(copy, "my-service, from the template")
    return template, copy


@pytest.mark.unit
def test_project_env_jinja_is_project_env_with_the_name_left_to_copier():
    """The repository's own project.env is what `copier copy` writes for the name flask-app."""
    rendered = (ROOT / "project.env.jinja").read_text().replace("{{ project_name }}", PROJECT_NAME)
    assert rendered == (ROOT / "project.env").read_text()


@pytest.mark.unit
def test_copier_copy_writes_the_name_records_its_source_and_copies_every_other_file_verbatim(copied):
    template, copy = copied
    assert "PROJECT_NAME=my-service" in (copy / "project.env").read_text().splitlines()
    answers = yaml.safe_load((copy / ".copier-answers.yml").read_text())
    # YAML, which quotes a short hash of digits alone.
    assert answers["_src_path"] == str(template)
    assert str(answers["_commit"]) == described(template)
    assert answers["project_name"] == "my-service"

    tracked = set(filter(None, git("ls-files", "-z", cwd=template).split("\0")))
    assert files_in(copy) == {name for name in tracked if not left_out(name)} | {"README.md", ".copier-answers.yml"}
    # The Makefile's $$ and {{.Name}}, and every other file but project.env and the README, are not rendered.
    unchanged = {name for name in tracked if not left_out(name)} - {"project.env", "README.md"}
    assert [name for name in sorted(unchanged) if (copy / name).read_bytes() != (template / name).read_bytes()] == []


@pytest.mark.unit
def test_a_copy_names_the_template_only_where_it_says_where_it_came_from(copied):
    """A copy is its own project: its README opens with its name, and outside the README's line and
    the answers file that say which template it came from, no file names the template's project."""
    _, copy = copied
    assert (copy / "README.md").read_text().startswith("# my-service\n")
    naming = [
        f"{name}:{number}: {line.strip()}"
        for name in sorted(files_in(copy) - {".copier-answers.yml"})
        for number, line in enumerate((copy / name).read_text(errors="replace").splitlines(), start=1)
        if PROJECT_NAME in line and not line.startswith("Made from the template ")
    ]
    assert naming == []


@pytest.mark.unit
def test_the_factory_copy_adds_only_the_dependencies_a_project_does_not_pin_already(tmp_path):
    requirements_in = tmp_path / "requirements.in"
    requirements_in.write_text("flask==3.1.2\nsqlalchemy==2.0.58  # the project's own\n")
    add_requirements(requirements_in)
    assert (
        requirements_in.read_text()
        == "flask==3.1.2\nsqlalchemy==2.0.58  # the project's own\nFlask-SQLAlchemy==3.1.1\n"
    )
    add_requirements(requirements_in)
    assert requirements_in.read_text().count("Flask-SQLAlchemy") == 1


@pytest.mark.unit
def test_a_copy_of_a_plain_folder_leaves_out_what_running_the_template_made(tmp_path):
    """Given a folder rather than a git repository, copier copies what is there: the virtual
    environment, the scans and the caches must not come along."""
    folder = copy_context(tmp_path / "template")
    made = [
        ".venv/bin/python",
        "scans/sbom.json",
        ".pytest_cache/README.md",
        ".ruff_cache/TAG",
        "src/__pycache__/app.pyc",
    ]
    for name in made:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("made by a run\n")
    copy = copier_copy(folder, tmp_path / "my-service")
    assert (copy / "Makefile").exists()
    assert [name for name in made if (copy / name).exists()] == []


@pytest.mark.unit
def test_copier_update_merges_a_template_commit_into_a_copy_that_edited_its_app_readme_requirements_and_dockerfile(
    copied,
):
    template, copy = copied
    # The copy makes the sample its own: a greeting, its test, a dependency, a section of its README,
    # a label in its Dockerfile, and a line of its own at the end of a template file.
    edit(copy / "src" / "app.py", "Hello, World!", "Hello from my-service!")
    edit(copy / "tests" / "test_sample_app.py", "Hello, World!", "Hello from my-service!")
    with (copy / "requirements.in").open("a") as requirements:
        requirements.write("pyzmq==26.4.0\n")
    with (copy / ".dockerignore").open("a") as ignore:
        ignore.write("notes/\n")
    with (copy / "README.md").open("a") as readme:
        readme.write("\n## On call\n\nThe orders team.\n")
    edit(copy / "Dockerfile", "USER 10001:10001\n", 'LABEL org.opencontainers.image.vendor="Acme"\nUSER 10001:10001\n')
    commit_all(copy, "my-service's greeting, its test, a dependency, its README and a label")
    own = {name: (copy / name).read_bytes() for name in COPYS_OWN}

    # Later, the template changes files of its own, among them the copy's README's template and the
    # top of the Dockerfile, and the sample's app, test and dependencies, which the copy must not take.
    makefile_line = "# One Flask app, an image for each of its Dockerfiles, kept current with copier update."
    edit(
        template / "Makefile",
        "# One Flask app, an image for each of its Dockerfiles. `make` lists the targets.",
        makefile_line,
    )
    dockerignore = (template / ".dockerignore").read_text().splitlines()[0]
    edit(template / ".dockerignore", dockerignore, dockerignore + " (the template's)")
    edit(template / "README.md.jinja", "## Quick start\n", "## Quick start, in three commands\n")
    dockerfile = (template / "Dockerfile").read_text().splitlines()[0]
    edit(template / "Dockerfile", dockerfile, dockerfile + " (the template's)")
    edit(template / "src" / "app.py", "Hello, World!", "Hello from the sample!")
    edit(template / "tests" / "test_sample_app.py", "Hello, World!", "Hello from the sample!")
    with (template / "requirements.in").open("a") as requirements:
        requirements.write("itsdangerous==2.2.0\n")
    commit_all(template, "A change the copies should get, and one to the sample's own files")

    copier("update", "--defaults", cwd=copy)

    assert (copy / "Makefile").read_text().splitlines()[0] == makefile_line
    assert (copy / ".dockerignore").read_text().splitlines()[0] == dockerignore + " (the template's)"
    assert (copy / ".dockerignore").read_text().endswith("\nnotes/\n")
    readme = (copy / "README.md").read_text()
    assert readme.startswith("# my-service\n") and "\n## Quick start, in three commands\n" in readme
    assert readme.endswith("\n## On call\n\nThe orders team.\n")
    merged = (copy / "Dockerfile").read_text()
    assert merged.splitlines()[0] == dockerfile + " (the template's)"
    assert 'LABEL org.opencontainers.image.vendor="Acme"\nUSER 10001:10001\n' in merged
    assert [name for name in COPYS_OWN if (copy / name).read_bytes() != own[name]] == [], "update replaced them"
    assert git("ls-files", "--unmerged", cwd=copy) == ""
    assert str(yaml.safe_load((copy / ".copier-answers.yml").read_text())["_commit"]) == described(template)
    # The copy's Makefile with the environment running these tests, which it must not re-make.
    test_unit = make("test-unit", f"VENV={sys.prefix}", f"--assume-old={sys.prefix}/bin/pytest", project=copy)
    must(test_unit, "the copy's make test-unit")


@pytest.mark.unit
def test_copier_update_never_brings_the_lesson_into_a_copy(copied):
    """A change to the template's lesson (naive, slim, a page of docs/, the measuring script, the
    sample's README) reaches no copy, and neither does a new page of it."""
    template, copy = copied
    before = files_in(copy)
    lesson = ["Dockerfile.naive", "Dockerfile.slim", "scripts/4-measure/lessons.py", "README.md", "docs/conf.py"]
    for name in lesson:
        with (template / name).open("a") as file:
            file.write("\n# A later lesson.\n")
    (template / "docs" / "later-lesson.md").write_text("# A later lesson\n")
    commit_all(template, "A later lesson")

    copier("update", "--defaults", cwd=copy)

    assert files_in(copy) == before
    assert "A later lesson" not in (copy / "README.md").read_text()
    assert git("status", "--porcelain", cwd=copy).split() == ["M", ".copier-answers.yml"]


@pytest.mark.unit
def test_copier_update_marks_a_conflict_where_the_copy_and_the_template_changed_the_same_line(copied):
    template, copy = copied
    edit(copy / "README.md", "## Quick start\n", "## Run it\n")
    commit_all(copy, "my-service's heading")
    edit(template / "README.md.jinja", "## Quick start\n", "## Quick start, in three commands\n")
    commit_all(template, "The template's new heading")

    copier("update", "--defaults", cwd=copy)

    readme = (copy / "README.md").read_text()
    assert (
        "<<<<<<< before updating\n## Run it\n=======\n## Quick start, in three commands\n>>>>>>> after updating\n"
        in readme
    )
    assert git("ls-files", "--unmerged", "README.md", cwd=copy).strip()


@pytest.mark.integration
def test_a_factory_shaped_copy_serves_its_pages_static_files_and_database_locked_down(project, tmp_path):
    """Flask's tutorial shape: create_app(), a blueprint with templates and static files, SQLite in
    /tmp, the sample removed and the entry point changed in project.env alone (tests/factory_copy.py)."""
    _, name = project
    copy = make_factory_copy(tmp_path / "acme")
    must(make_in(copy, "lock"), "make lock")
    assert re.search(
        r"^flask-sqlalchemy==3\.1\.1 \\\n    --hash=sha256:", (copy / "requirements.txt").read_text(), re.M
    )
    must(make_in(copy, "build-secure", f"IMAGE={name}"), "make build-secure")

    with running(f"{name}:secure", *LOCKDOWN, "--user", "12345:0") as container:
        static = {file: container.get(f"/assets/{file}") for file in STATIC}
        note = {"Content-Type": "application/json"}
        added = [request(container.port, "/notes", "POST", b'{"text": "kept in /tmp"}', note) for _ in range(2)]
        home = container.get("/")
        sample = request(container.port, "/echo", "POST", b"x")
    assert {file: answer.body for file, answer in static.items()} == STATIC
    types = {file: answer.headers["Content-Type"].split(";")[0] for file, answer in static.items()}
    assert types == {
        "style.css": "text/css",
        "app.js": "text/javascript",
        "logo.png": "image/png",
        "inter.woff2": "font/woff2",
        "icon.svg": "image/svg+xml",
    }
    assert [(answer.status, answer.json()) for answer in added] == [(201, {"notes": 1}), (201, {"notes": 2})]
    assert home.status == 200 and home.body.count(b"<li>kept in /tmp</li>") == 2
    assert b'href="/assets/style.css"' in home.body
    assert home.headers["Content-Security-Policy"] == HTML_CONTENT_SECURITY_POLICY
    assert (sample.status, sample.json()) == (404, {"error": "Not Found", "status": 404})


@pytest.mark.unit
def test_what_publishing_keeps_in_the_project_never_goes_into_a_copy_of_the_template(tmp_path):
    """copier copies a template given as a folder with whatever lies in it: given one holding the
    signing key, the registry's storage, the digests and the overlay's inputs where the Makefile keeps
    them, the copy has none of them."""
    makefile = (ROOT / "Makefile").read_text()
    registry, keys, published, overlay, records = (
        re.search(rf"^{name} \?= (\S+)$", makefile, re.M).group(1)
        for name in ("REGISTRY_DIR", "KEYS_DIR", "PUBLISHED", "OVERLAY", "BUILD_RECORDS")
    )
    kept = [
        f"{records}/{PROJECT_NAME}-secure.json",
        f"{keys}/cosign.key",
        f"{keys}/cosign.pub",
        f"{registry}/docker/registry/v2/blobs/sha256/00/data",
        published,
        f"{overlay}/published.env",
        f"{overlay}/signer.yaml",
        f"{overlay}/kyverno/signer.yaml",
    ]
    folder = copy_context(tmp_path / "template")
    for name in kept:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("kept by make push\n")
    copy = copier_copy(folder, tmp_path / "my-service")
    assert (copy / "Makefile").exists()
    assert [name for name in kept if (copy / name).exists()] == []


@pytest.mark.unit
def test_the_control_a_copy_builds_is_the_lessons_naive_without_its_comments():
    """A copy has no Dockerfile.naive, and its tests build containers.CONTROL_DOCKERFILE instead:
    the same instructions, so that the controls prove in a copy what they prove of naive here."""

    def instructions(text: str) -> list[str]:
        return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]

    naive = (ROOT / "Dockerfile.naive").read_text()
    base = re.search(r"^FROM (\S+)$", naive, re.MULTILINE).group(1)
    control = CONTROL_DOCKERFILE.format(base=base, app=flask_app(WSGI_APP))
    assert instructions(control) == instructions(naive)
