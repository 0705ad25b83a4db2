"""Shared set-up: the app as the images serve it, through a test client or on a local port, a Docker
engine, the images built once, the control built to hold them against, and what the root tests need.

`make test` runs the tests in parallel with pytest-xdist: the hooks here hand its workers a folder
they share, and group the tests that must run on one worker; the images and the control are built
once per run all the same (parallel.py says how).
"""

import glob
import os
import re
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import parallel
import pytest
from containers import (
    DOCKER,
    ROOT,
    SECURITY_HEADERS,
    VARIANTS,
    build_control,
    build_images,
    control_image,
    images_under_test,
    prebuilt_images,
    probe_folder,
    remove_unnamed_images_made_since,
    unnamed_images_make_built,
)
from docker_tools import WSGI_APP, CommandFailed, emulated_platform, engine, engine_platform, tool
from gunicorn.util import import_app
from werkzeug.serving import make_server


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:
    """pytest-xdist's controller hands each worker it starts the folder the run's workers share."""
    node.workerinput["run_folder"] = str(parallel.run_folder(node.config))


# First, with the test IDs as pytest-xdist's controller knows them.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items) -> None:
    """A worker of a parallel run writes down each test's group for the controller."""
    if workerinput := getattr(config, "workerinput", None):
        parallel.write_groups(Path(workerinput["run_folder"]), workerinput["workerid"], items)


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config, log):
    """make test's --dist loadgroup, with the groups the workers wrote down."""
    return parallel.GroupScheduling(config, log) if config.getvalue("dist") == "loadgroup" else None


def pytest_sessionfinish(session) -> None:
    """Once every worker of a parallel run is done, the controller removes what they built for the
    whole run and the images without a name they left (see docker_engine)."""
    if folder := session.config.stash.get(parallel.RUN_FOLDER, None):
        parallel.remove_run(folder)


@pytest.fixture(scope="session")
def run_folder(request) -> Path | None:
    """The folder the pytest-xdist workers of this run share; None when the tests run in one process."""
    workerinput = getattr(request.config, "workerinput", None)
    return Path(workerinput["run_folder"]) if workerinput else None


@pytest.fixture(scope="session")
def app():
    """The app the images serve: project.env's WSGI_APP, imported (or made, for a factory) as gunicorn does."""
    return import_app(WSGI_APP)


@pytest.fixture
def client(app):
    """A test client of the app the images serve."""
    return app.test_client()


@pytest.fixture(scope="session")
def security_headers(app) -> dict[str, str]:
    """The headers every response carries, with the Content-Security-Policy the app sets."""
    return {**SECURITY_HEADERS, "Content-Security-Policy": app.config["CONTENT_SECURITY_POLICY"]}


@pytest.fixture(scope="session")
def probe() -> Path:
    """The folder of probe.py, which serves an image's app with one route the tests add (see probed)."""
    with probe_folder() as folder:
        yield folder


@pytest.fixture
def local_server(app):
    """The app on an ephemeral port of 127.0.0.1, served by Werkzeug in threads; its port."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_port
    server.shutdown()
    thread.join()


@pytest.fixture(scope="session")
def docker_engine(run_folder):
    """A Docker engine that answers; the tests fail, not skip, when there is none."""
    version = "{{.Version.Version}}" if engine() == "podman" else "{{.ServerVersion}}"
    try:
        result = subprocess.run([*DOCKER, "info", "--format", version], capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        pytest.fail(
            f"the docker command ({' '.join(DOCKER)}) is not installed. Install Docker, or run `make engine` on Debian."
        )
    if result.returncode != 0:
        pytest.fail(
            f"no Docker engine answers ({result.stderr.strip()}). Start Docker, or run `make engine`, "
            "which installs and starts one on Debian; then run the tests again."
        )
    # A test that builds a tag again leaves the image before it without a name where the two builds
    # differ: under Podman they always do, as its history names each stage's image. Those the run
    # left are removed at its end: by this session, or in a parallel run by the controller, once no
    # worker is building (the first worker to get here records those there before).
    if run_folder is not None:
        with parallel.run_record(run_folder, "engine") as record:
            record.setdefault("unnamed_images", sorted(unnamed_images_make_built()))
        yield result.stdout.strip()
        return
    before = unnamed_images_make_built()
    yield result.stdout.strip()
    remove_unnamed_images_made_since(before)


@pytest.fixture(scope="session")
def emulated(docker_engine) -> str:
    """The platform the engine runs under emulation, from the one it reports as its own."""
    try:
        return emulated_platform(engine_platform())
    except CommandFailed as error:
        pytest.fail(str(error))


@pytest.fixture(scope="session")
def images(docker_engine, run_folder):
    """The images of the Makefile's table, NAME:VARIANT, built once per run or given by FLASK_APP_TEST_IMAGE=NAME
    (see images_under_test)."""
    if run_folder is None:
        with images_under_test(VARIANTS) as tags:
            yield tags
        return
    if prebuilt := prebuilt_images(VARIANTS):
        yield prebuilt
    else:
        yield parallel.built_for_run(run_folder, "images", "test", lambda name: build_images(name, VARIANTS))


@pytest.fixture(scope="session")
def control(docker_engine, run_folder, tmp_path_factory):
    """The control the tests hold the images against (naive, or in a copy
    containers.CONTROL_DOCKERFILE): a root image running Flask's development server, without a
    health check, built once per run."""
    folder = tmp_path_factory.mktemp("control")
    if run_folder is None:
        with control_image(folder) as tag:
            yield tag
        return
    yield parallel.built_for_run(run_folder, "control", "control", lambda name: build_control(name, folder))


@pytest.fixture(scope="session")
def source_built_python() -> Path:
    """A CPython built from source with a shared libpython, the layout of the official python images
    (a prefix of its own, libpython3.X.so): pyenv's of the patch release the Dockerfiles pin, else the one
    running the tests if it is such a build (as actions/setup-python's are), else /usr/local's.
    """
    dockerfile = (ROOT / "Dockerfile").read_text()
    pinned = re.search(r"^FROM docker\.io/library/python:(\d+\.\d+\.\d+)-", dockerfile, re.MULTILINE).group(1)
    pyenv_root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    candidates = [Path(pyenv_root) / "versions" / pinned, Path(sys.base_prefix), Path("/usr/local")]
    for prefix in candidates:
        if (
            prefix != Path("/usr")
            and (prefix / "bin" / "python3").exists()
            and glob.glob(str(prefix / "lib" / "libpython3.*.so*"))
        ):
            return prefix
    pytest.fail(
        "no CPython built with --enable-shared was found (looked at pyenv's "
        f"{pinned}, the running Python and /usr/local). Install one, for example `pyenv install {pinned}` with "
        "PYTHON_CONFIGURE_OPTS=--enable-shared, or run these tests with actions/setup-python's Python."
    )


@pytest.fixture(scope="session")
def root_user() -> None:
    """Root, for the tests marked root; they fail with this reason elsewhere."""
    if os.geteuid() != 0:
        pytest.fail(
            "this test needs root (it runs ldconfig -r, chroot and chown, or nsenter and strace): "
            "run it as root, or run `make test-unit`."
        )


@pytest.fixture
def podman() -> list[str]:
    """Podman with a store of its own in a temporary folder (whose path Podman wants short), removed
    at the end with all it holds."""
    with tempfile.TemporaryDirectory(prefix="podman-") as folder:
        store = ["--root", f"{folder}/root", "--runroot", f"{folder}/run", "--storage-driver", "vfs"]
        command = [tool("podman"), *store]
        yield command
        subprocess.run([*command, "pod", "rm", "--all", "--force", "--time", "0"], capture_output=True)
        subprocess.run([*command, "rm", "--all", "--force", "--time", "0"], capture_output=True)
        subprocess.run([*command, "rmi", "--all", "--force"], capture_output=True)
        subprocess.run([*command, "volume", "rm", "--all", "--force"], capture_output=True)
