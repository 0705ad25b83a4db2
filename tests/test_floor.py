"""floor.py, which `make bench` runs on the secure image: the files its server opens while it serves,
traced from this machine with strace and nsenter, which need root."""

import floor
import pytest
from containers import images_under_test
from docker_tools import variants

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def secure(docker_engine):
    """The secure image, built with the Makefile under a name of its own, and removed afterwards."""
    with images_under_test(("secure",)) as tags:
        yield tags["secure"]


def test_the_secure_servers_opened_files_are_its_app_interpreter_and_loader_and_fewer_than_it_holds(secure, root_user):
    limits = ["--memory", "256m", "--cpus", "1", "--pids-limit", "128"]
    report = floor.serve_and_trace(secure, limits, variants()["secure"]["hardening"])
    # The sample answers GET / and POST /echo with 200; a copy's app may have neither route, and
    # answers them as any app does, without a server error.
    answers = report["answers"]
    assert (answers["GET /healthz"], answers["GET /missing"], answers["health check"]) == (200, 404, 0), answers
    assert answers["GET /"] < 500 and answers["POST /echo"] < 500, answers
    opened = report["opened_files"]
    # The app's bytecode, the interpreter nsenter executed, and the dynamic loader the kernel opened for it.
    assert any(path.startswith("/app/") and path.endswith(".pyc") for path in opened), opened
    assert any("/python3" in path for path in opened), opened
    assert any("/ld-linux" in path for path in opened), opened
    # Nothing of the machine that traced it: what nsenter and env opened there is no file of the image.
    assert not [path for path in opened if path.startswith(("/usr/bin/nsenter", "/usr/bin/env"))]
    assert 0 < report["opened"]["bytes"] < report["held"]["bytes"]
    assert report["opened"]["files"] < report["held"]["files"]
