"""The Dockerfiles as text: what hadolint says of them, the base image they share, the CI matrix that builds them."""

import re
import sys
from pathlib import Path

import compare
import pytest
import yaml
from containers import HARDENED, ROOT, TABLE, write_control_dockerfile
from docker_tools import ARM64, ci_builds

pytestmark = pytest.mark.unit

HADOLINT = Path(sys.executable).parent / "hadolint"
# Every variant's Dockerfile, and those meant to be copied: all but naive's, whose mistakes are the
# lesson (a copy made with copier has no naive).
DOCKERFILES = tuple(row["dockerfile"] for row in TABLE.values())
TO_COPY = tuple(TABLE[variant]["dockerfile"] for variant in HARDENED)


def hadolint_findings(dockerfile: str) -> set[str]:
    """The rule codes hadolint reports for one Dockerfile, as `make compare` counts them."""
    return set(compare.hadolint_findings(str(HADOLINT), str(ROOT / dockerfile)))


@pytest.mark.parametrize("dockerfile", TO_COPY)
def test_hadolint_finds_nothing_in_the_dockerfiles_to_copy(dockerfile):
    assert hadolint_findings(dockerfile) == set()


def test_hadolint_flags_a_control_without_healthcheck_whose_pip_keeps_its_cache(tmp_path):
    """The control for the test above: naive where the project has it, else
    containers.CONTROL_DOCKERFILE. DL3057: no HEALTHCHECK. DL3042: pip keeps its cache in the layer."""
    assert hadolint_findings(write_control_dockerfile(tmp_path)) == {"DL3057", "DL3042"}


def test_every_dockerfile_pins_the_same_patch_release_of_python():
    """The Dockerfiles to copy name one base, pinned to a patch release, in every FROM that is not
    scratch or a stage; naive names the same minor release's moving tag, one of its mistakes."""
    pins = {
        name: set(re.findall(r"^FROM docker\.io/library/(python:\S+)(?: AS \w+)?$", (ROOT / name).read_text(), re.M))
        for name in TO_COPY
    }
    assert all(len(found) == 1 for found in pins.values()), pins
    tags = set().union(*pins.values())
    assert len(tags) == 1, pins
    pinned = re.fullmatch(r"python:(3\.\d+)\.\d+-slim-\w+", tags.pop())
    assert pinned, pins
    if "naive" in TABLE:
        naive = re.findall(r"^FROM (\S+)$", (ROOT / TABLE["naive"]["dockerfile"]).read_text(), re.M)
        assert naive == [f"python:{pinned.group(1)}-slim"], naive


def requirement_lines(path: Path) -> list[str]:
    """The requirements of a pip requirements file, each with its continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    lines = (line.split("#")[0].strip() for line in text.splitlines())
    return [line for line in lines if line]


def test_every_runtime_requirement_is_pinned_with_hashes():
    lines = requirement_lines(ROOT / "requirements.txt")
    assert lines
    for line in lines:
        assert re.match(r"^[A-Za-z0-9._-]+==[^\s;]+", line), f"not pinned with ==: {line}"
        assert re.search(r"--hash=sha256:[0-9a-f]{64}", line), f"no hash: {line}"


@pytest.mark.parametrize("dockerfile", TO_COPY)
def test_dependencies_are_installed_with_require_hashes(dockerfile):
    installs = [line for line in (ROOT / dockerfile).read_text().splitlines() if "pip " in line and " install" in line]
    assert installs
    assert all("--require-hashes -r /tmp/requirements.txt" in line for line in installs), installs


def instructions(dockerfile: str) -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / dockerfile).read_text())
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


@pytest.mark.parametrize("dockerfile", TO_COPY)
def test_every_image_a_dockerfile_to_copy_names_is_fully_qualified(dockerfile):
    """Podman resolves a short name through its search registries, or stops where none is set; a
    name with its registry means the same image to Docker and Podman. The others are a stage or
    scratch. Naive's short name is one of its mistakes; make gives its build the base by name."""
    stages = {"scratch"}
    for line in instructions(dockerfile):
        if line.upper().startswith("FROM "):
            image = line.split()[1]
            assert image in stages or re.match(r"[a-z0-9.-]+\.[a-z]+(:\d+)?/", image), line
            stages.update(line.split()[3:4])


# What a HEALTHCHECK may say: the options Docker Engine of every version and Podman's builder both
# read. --start-interval (Docker Engine 25) stops Podman's build, and older Docker's.
HEALTHCHECK_OPTIONS = {"--interval", "--timeout", "--start-period", "--retries"}


@pytest.mark.parametrize("dockerfile", TO_COPY)
def test_the_healthcheck_uses_only_options_both_engines_build(dockerfile):
    [healthcheck] = [line for line in instructions(dockerfile) if line.startswith("HEALTHCHECK ")]
    options = set(re.findall(r"(--[a-z-]+)=", healthcheck.partition(" CMD ")[0]))
    assert options and options <= HEALTHCHECK_OPTIONS, healthcheck


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_no_dockerfile_uses_add(dockerfile):
    """ADD also fetches URLs and unpacks archives; COPY only copies, so it does what it says."""
    assert not [line for line in instructions(dockerfile) if line.upper().startswith("ADD ")]


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_no_run_only_updates_package_lists(dockerfile):
    # A cached `apt-get update` layer goes stale while later installs reuse it (hadolint DL3009 and
    # Docker's best practices): update and install belong in one RUN.
    for line in instructions(dockerfile):
        if re.match(r"RUN\b.*\b(apt-get|apt|apk) update\b", line):
            assert re.search(r"\b(apt-get|apt|apk) (install|add)\b", line), line


def test_ci_builds_each_variant_of_the_makefiles_table_from_its_dockerfile():
    """CI's image job takes its matrix from the variants job, which prints docker_tools.ci_builds():
    every variant of the table for the runner's platform (PLATFORM left empty), and production and
    secure for linux/arm64 too."""
    jobs = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())["jobs"]
    assert jobs["image"]["strategy"]["matrix"] == "${{ fromJSON(needs.variants.outputs.matrix) }}"
    assert any("scripts/docker_tools.py ci-matrix" in step.get("run", "") for step in jobs["variants"]["steps"])
    builds = ci_builds()
    table = {name: row["dockerfile"] for name, row in TABLE.items()}
    assert {row["variant"]: row["dockerfile"] for row in builds if "platform" not in row} == table
    assert all(table[row["variant"]] == row["dockerfile"] for row in builds)
    assert [row["variant"] for row in builds if row.get("platform") == ARM64] == ["production", "secure"]
    assert all(row.get("arch") == "-arm64" for row in builds if "platform" in row)


def test_ci_builds_each_variant_with_the_makefiles_build_target():
    """One build command for make and CI: the same arguments, labels and build record, so that the
    provenance `make push` attests in CI describes the build that happened."""
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())
    job = workflow["jobs"]["image"]
    [build] = [step for step in job["steps"] if step.get("name") == "Build with the Makefile"]
    assert build["run"] == 'make "build-$VARIANT" PLATFORM="$PLATFORM"'
    assert build["env"] == {"VARIANT": "${{ matrix.variant }}", "PLATFORM": "${{ matrix.platform }}"}
    uses = [step.get("uses", "") for jobs in workflow["jobs"].values() for step in jobs.get("steps", [])]
    assert not [action for action in uses if action.startswith("docker/build-push-action")]
