"""The repository as a template: a copy with a user's own changes, built and run as the README says.

Each test copies the project to a folder of its own, changes it the way the README's "Using it as
a template" tells a user to, and builds and runs it with the copy's own Makefile.
"""

import re
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from bench import copy_context
from containers import LOCKDOWN, PROJECT_NAME, ROOT, docker, inspect, make, must, rename_project, request, running
from docker_tools import WSGI_APP
from factory_copy import HTML_CONTENT_SECURITY_POLICY, STATIC, make_factory_copy

pytestmark = pytest.mark.integration

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


@pytest.fixture
def unused_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now."""
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return probe.getsockname()[1]


def entry_point_module(copy: Path) -> Path:
    """The file of the module project.env's WSGI_APP names: a module's, or a package's __init__.py."""
    module = Path("src", *WSGI_APP.partition(":")[0].split("."))
    return (
        copy / module.with_suffix(".py")
        if (copy / module.with_suffix(".py")).exists()
        else copy / module / "__init__.py"
    )


def change_entry_point(copy: Path, entry_point: str) -> None:
    """Name another entry point in the copy's project.env, its one place."""
    env = copy / "project.env"
    env.write_text(re.sub(r"^WSGI_APP=.*$", f"WSGI_APP={entry_point}", env.read_text(), flags=re.MULTILINE))


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


def test_make_run_reports_at_once_a_container_that_exits_as_it_starts(project, unused_port):
    copy, name = project
    app = entry_point_module(copy)
    app.write_text("import myservice  # a package that was never added to src/\n" + app.read_text())
    must(make_in(copy, "build-production", f"IMAGE={name}"), "make build-production")
    container = f"{name}-run"
    started = time.monotonic()
    try:
        result = make_in(copy, "run-production", f"IMAGE={name}", f"CONTAINER={container}", f"PORT={unused_port}")
        elapsed = time.monotonic() - started
    finally:
        docker("rm", "--force", container, check=False)
    assert result.returncode != 0
    assert f"{container} exited with" in result.stderr
    assert "ModuleNotFoundError: No module named 'myservice'" in result.stderr
    # The build is cached by then; without the check, make would wait out its whole 30 s.
    assert elapsed < 15, f"make run took {elapsed:.1f} s to report it"


def test_a_copy_renamed_in_project_env_runs_and_composes_under_its_new_name(project, unused_port):
    """make run, make stop, make up and make down, after a change to project.env alone."""
    copy, name = project
    rename_project(copy, name)
    try:
        must(make_in(copy, "run-secure", f"PORT={unused_port}"), "make run-secure")
        (container,) = docker("ps", "--quiet", "--filter", f"name=^/{name}$").stdout.split()
        assert inspect(container)["Config"]["Image"] == f"{name}:secure"
        must(make_in(copy, "stop"), "make stop")
        assert not docker("ps", "--all", "--quiet", "--filter", f"name=^/{name}$").stdout.strip()

        must(make_in(copy, "up", f"PORT={unused_port}"), "make up")
        (service,) = docker("ps", "--quiet", "--filter", f"label=com.docker.compose.project={name}").stdout.split()
        assert inspect(service)["Config"]["Image"] == f"{name}:secure"
        assert request(unused_port, "/").status == 200
    finally:
        make_in(copy, "down")
        make_in(copy, "stop")
    assert not docker("ps", "--all", "--quiet", "--filter", f"label=com.docker.compose.project={name}").stdout.strip()
    assert not docker("network", "ls", "--quiet", "--filter", f"name={name}").stdout.strip()


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
