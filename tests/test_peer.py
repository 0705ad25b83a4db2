"""The peer `make bench` measures beside the images: the Dockerfile `docker init` writes, built as
bench builds it, serves the project's app with gunicorn's defaults, as the non-root user it makes."""

import re
import uuid
from pathlib import Path

import bench
import pytest
from containers import PROJECT_NAME, ROOT, docker
from docker_tools import remove_measured, request, run, wait_until_serving

pytestmark = pytest.mark.integration


def base_image() -> str:
    """The base the Makefile builds on: the one the Dockerfile pins, or where no registry answers,
    the stand-in scripts/1-setup/base-image.sh builds (as `make bench` asks it)."""
    pinned = re.search(r"^FROM (\S+)$", (ROOT / "Dockerfile").read_text(), re.MULTILINE).group(1)
    return run(str(ROOT / "scripts" / "1-setup" / "base-image.sh"), pinned).strip()


def ca_bundle() -> str | None:
    """The CA bundle the Makefile mounts for pip where this machine trusts extra CAs (a proxy's)."""
    extra = list(Path("/usr/local/share/ca-certificates").glob("*.crt"))
    return "/etc/ssl/certs/ca-certificates.crt" if extra else None


@pytest.fixture(scope="module")
def peer(docker_engine, tmp_path_factory):
    """The peer image, built by bench's own build step from a copy of the project; removed afterwards."""
    assert bench.PEER in bench.VARIANTS, f"bench measures no peer: {bench.PEER_DOCKERFILE} is missing"
    project = bench.copy_context(tmp_path_factory.mktemp("peer") / "project")
    tag = f"{PROJECT_NAME}-test-peer-{uuid.uuid4().hex[:8]}:peer"
    try:
        bench.timed_build(project, bench.VARIANTS[bench.PEER], tag, base_image(), ca_bundle(), cold=False)
        yield tag
    finally:
        remove_measured([tag])


@pytest.fixture
def serving_peer(peer):
    """The peer running as bench runs it, on a free port of 127.0.0.1; its container's name and port."""
    name = f"{PROJECT_NAME}-test-peer-{uuid.uuid4().hex[:8]}"
    try:
        port = bench.start(peer, bench.PEER, name, [])
        wait_until_serving(port, name, timeout=60)
        yield name, port
    finally:
        docker("rm", "--force", name, check=False)


def test_peer_serves_the_app_as_the_non_root_user_10001(serving_peer):
    name, port = serving_peer
    answer = request(port, "/")
    assert answer.status == 200
    assert answer.json() == {"message": "Hello, World!"}
    # Every process of the container, the shell its CMD starts gunicorn with included, as the host sees it.
    top = docker("top", name, "-eo", "pid,uid,args").stdout.splitlines()[1:]
    processes = [line.split(None, 2)[1:] for line in top]
    assert processes, f"{name} runs no process"
    assert {uid for uid, _ in processes} == {"10001"}, processes
    assert any("gunicorn" in args for _, args in processes), processes


def test_peer_keeps_gunicorn_defaults_one_sync_worker(serving_peer):
    """Not the project's gunicorn.conf.py (gevent): bench leaves it out of the peer's context."""
    name, _ = serving_peer
    log = docker("logs", name).stderr
    assert "Using worker: sync" in log, log
    assert log.count("Booting worker") == 1, log
