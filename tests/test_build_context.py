"""What stays out of the build context, checked by building: a checkout that holds the signing key,
the registry's storage, what make push writes, a .env and a .venv, built with every Dockerfile by
make, and every layer of every image searched for them.

A Dockerfile that copies its whole build context (naive's COPY . ., or a user's) takes whatever the
ignore file the builder reads lets in: .dockerignore, or the Dockerfile's own (Dockerfile.naive.dockerignore),
which BuildKit reads in its place when it is there.
"""

import re
import uuid
from pathlib import Path

import pytest
from bench import copy_context
from containers import PROJECT_NAME, ROOT, VARIANTS, docker, image_files, make, must

pytestmark = pytest.mark.integration


def kept_out(marker: str) -> dict[str, str]:
    """The files a checkout may hold that no image may: each path and what it holds. The key, the
    registry, the publication and the build records lie where the Makefile keeps them (KEYS_DIR,
    REGISTRY_DIR, PUBLISHED, BUILD_RECORDS)."""
    makefile = (ROOT / "Makefile").read_text()
    keys, registry, published, records = (
        re.search(rf"^{name} \?= (\S+)$", makefile, re.MULTILINE).group(1)
        for name in ("KEYS_DIR", "REGISTRY_DIR", "PUBLISHED", "BUILD_RECORDS")
    )
    return {
        f"{records}/{PROJECT_NAME}-secure.json": f'{{"builder": "{marker}"}}\n',
        f"{keys}/cosign.key": f"-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n{marker}\n",
        f"{registry}/docker/registry/v2/blobs/sha256/00/data": marker,
        published: f'{{"repository": "{marker}"}}\n',
        ".env": f"DB_PASSWORD={marker}\n",
        ".venv/pyvenv.cfg": f"home = /{marker}\n",
    }


def checkout(folder: Path, marker: str) -> Path:
    """A copy of the project as a clone has it, holding every file kept_out() names."""
    copy_context(folder)
    for path, content in kept_out(marker).items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_text(content)
    return folder


def leaked(image: str, marker: str) -> set[str]:
    """The files of any layer of the image that hold the marker, or whose path names a file or
    folder kept_out() names."""
    top_names = {path.split("/")[0] for path in kept_out(marker)}
    paths, found = image_files(image, needles=(marker.encode(),), layers=True)
    named = {path for path in paths if top_names & set(path.split("/"))}
    return found | named


def build_in(project: Path, variant: str) -> str:
    """Build one variant of the project with make under a name of its own; its tag."""
    name = f"{PROJECT_NAME}-context-{uuid.uuid4().hex[:8]}"
    must(make(f"build-{variant}", f"IMAGE={name}", project=project), f"`make build-{variant}` in {project}")
    return f"{name}:{variant}"


def test_what_the_checkout_keeps_out_of_the_build_context_is_in_no_layer_of_any_image(tmp_path, docker_engine):
    marker = f"kept-out-{uuid.uuid4().hex}"
    project = checkout(tmp_path / "project", marker)
    for variant in VARIANTS:
        tag = build_in(project, variant)
        try:
            assert leaked(tag, marker) == set(), f"{variant} holds what the build context should leave out"
        finally:
            docker("image", "rm", "--force", tag, check=False)


# A Dockerfile that copies the whole build context, as naive's does, and nothing else.
WHOLE_CONTEXT = "FROM scratch\nCOPY . /app/\n"
# Ignore files that let in what the project's own keeps out: an exception line after its lines, and
# a Dockerfile's own ignore file, which BuildKit (Docker's builder) reads instead of .dockerignore.
LETTING_IN = [
    pytest.param(".dockerignore", "append", id="an exception after .dockerignore's lines"),
    pytest.param(
        "Dockerfile.context.dockerignore", "write", id="a Dockerfile's own ignore file", marks=pytest.mark.docker
    ),
]


@pytest.mark.parametrize(("ignore_file", "how"), LETTING_IN)
def test_the_build_context_check_finds_what_an_ignore_file_lets_in(tmp_path, docker_engine, ignore_file, how):
    """The controls for the test above: a Dockerfile that copies the whole context, built from a
    checkout whose ignore file lets the kept-out files in, holds each of them, and the check finds them."""
    marker = f"kept-out-{uuid.uuid4().hex}"
    project = checkout(tmp_path / "project", marker)
    (project / "Dockerfile.context").write_text(WHOLE_CONTEXT)
    top_names = sorted({path.split("/")[0] for path in kept_out(marker)})
    if how == "append":
        with (project / ignore_file).open("a") as ignore:
            ignore.writelines(f"!{name}\n" for name in top_names)
    else:
        (project / ignore_file).write_text("tests\n")
    tag = f"{PROJECT_NAME}-context-{uuid.uuid4().hex[:8]}:whole"
    try:
        docker("build", "--quiet", "--file", str(project / "Dockerfile.context"), "--tag", tag, str(project))
        found = leaked(tag, marker)
    finally:
        docker("image", "rm", "--force", tag, check=False)
    assert {f"app/{path}" for path in kept_out(marker)} <= found, found
