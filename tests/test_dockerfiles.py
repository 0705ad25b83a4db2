"""The Dockerfiles as text: what hadolint says of them, and the base image they share."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
HADOLINT = Path(sys.executable).parent / "hadolint"


def hadolint_findings(dockerfile: str) -> set[str]:
    """The rule codes hadolint reports for one Dockerfile, with the project's .hadolint.yaml."""
    result = subprocess.run(
        [HADOLINT, "--config", ROOT / ".hadolint.yaml", "--format", "json", ROOT / dockerfile],
        capture_output=True,
        text=True,
    )
    return {finding["code"] for finding in json.loads(result.stdout)}


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.multistage"])
def test_hadolint_finds_nothing_in_the_dockerfiles_to_copy(dockerfile):
    assert hadolint_findings(dockerfile) == set()


def test_hadolint_flags_exactly_the_lessons_of_the_naive_dockerfile():
    # DL3057: no HEALTHCHECK. DL3042: pip keeps its cache in the layer.
    assert hadolint_findings("Dockerfile.naive") == {"DL3057", "DL3042"}


def test_the_three_dockerfiles_pin_the_same_patch_release_of_python():
    pins = {
        name: re.findall(r"^FROM (python:\S+) AS python-base$", (ROOT / name).read_text(), re.MULTILINE)
        for name in ("Dockerfile", "Dockerfile.multistage", "Dockerfile.naive")
    }
    assert all(len(found) == 1 for found in pins.values()), pins
    tags = {found[0] for found in pins.values()}
    assert len(tags) == 1, pins
    assert re.fullmatch(r"python:3\.\d+\.\d+-slim-\w+", tags.pop())
