"""The build cache, as the build reports it: after a one-line change to the app's module (the one
WSGI_APP names in project.env, src/app.py in the sample), which steps
the builder reuses and which it runs again. BuildKit marks a reused step CACHED in `docker build
--progress plain`; Podman's builder, Buildah, says `Using cache` after it.

Each test builds a copy of the project with `make`, as a user would, once as it is and once after
the change. The change carries a new random string every run, so no earlier run's cache can hold
its result.
"""

import re
import uuid

import pytest
from bench import change_one_line, copy_context
from containers import PROJECT_NAME, docker, make, must, write_control_dockerfile
from docker_tools import measured_build, remove_measured

pytestmark = pytest.mark.integration

# A step of BuildKit's plain progress: `#12 [4/6] RUN ...`, or `#12 [build 4/6] RUN ...` in a named stage.
STEP = re.compile(r"^#(\d+) \[(?:[\w.-]+ )?\d+/\d+\] (.*)$")
# A step of Podman's builder, Buildah: `[2/2] STEP 4/19: COPY ...`, then `--> Using cache ID` if it reused one.
BUILDAH_STEP = re.compile(r"^(?:\[\d+/\d+\] )?STEP \d+/\d+: (.*)$")


def build_steps(output: str) -> list[tuple[str, bool]]:
    """The steps of a build in the order it lists them, each with whether it was reused from the cache
    (CACHED in BuildKit's `--progress plain`, `Using cache` in Buildah's) rather than run; FROM, which
    names an image and runs nothing, left out."""
    steps: dict[str, str] = {}
    cached = set()
    for line in output.splitlines():
        if match := STEP.match(line):
            steps.setdefault(match.group(1), match.group(2))
        elif match := re.match(r"^#(\d+) CACHED$", line):
            cached.add(match.group(1))
        elif match := BUILDAH_STEP.match(line):
            steps[f"step {len(steps)}"] = match.group(1)
        elif line.startswith("--> Using cache ") and steps:
            cached.add(list(steps)[-1])
    return [(step, number in cached) for number, step in steps.items() if not step.startswith("FROM ")]


@pytest.fixture
def rebuilt(docker_engine, tmp_path):
    """A function that builds one variant from a copy of the project, then again after a one-line
    change to the app's module, and returns the second build's steps; both images are removed afterwards."""
    project = copy_context(tmp_path / "project")
    name = f"{PROJECT_NAME}-test-{uuid.uuid4().hex[:8]}"
    tags = []

    def rebuild(variant: str, *make_args: str) -> list[tuple[str, bool]]:
        before = make(f"build-{variant}", f"IMAGE={name}-before", *make_args, project=project)
        tags.append(f"{name}-before:{variant}")
        must(before, f"`make build-{variant}` of the copy")
        change_one_line(project, uuid.uuid4().hex)
        after = make(
            f"build-{variant}", f"IMAGE={name}-after", "BUILD_FLAGS=--progress=plain", *make_args, project=project
        )
        tags.append(f"{name}-after:{variant}")
        must(after, f"`make build-{variant}` of the copy after a one-line change")
        return build_steps(after.stdout + after.stderr)

    yield rebuild
    docker("image", "rm", "--force", *tags, check=False)


def test_a_code_change_reuses_productions_dependency_layer_and_runs_only_the_copy_of_the_code_and_after(rebuilt):
    steps = rebuilt("production")
    instructions = [instruction for instruction, _ in steps]
    code = instructions.index("COPY src/ ./")
    assert all(reused for _, reused in steps[:code]), steps
    assert not any(reused for _, reused in steps[code:]), steps
    assert [reused for instruction, reused in steps if " install --require-hashes " in instruction] == [True], steps


def test_a_code_change_makes_a_control_that_copies_everything_first_reinstall_every_dependency(rebuilt, tmp_path):
    """The control for the test above: a Dockerfile that copies the whole context before it installs
    (naive, or in a copy containers.CONTROL_DOCKERFILE), built by the same target in production's place."""
    dockerfile = write_control_dockerfile(tmp_path)
    steps = rebuilt("production", f"DOCKERFILE_production={dockerfile}")
    installs = [reused for instruction, reused in steps if "pip install -r requirements.txt" in instruction]
    assert ("COPY . .", False) in steps, steps
    assert installs == [False], steps


def test_a_measuring_run_leaves_no_image_behind_also_after_rebuilding_a_tag(docker_engine, tmp_path):
    """`make bench` and `make lessons` rebuild each image under its tag after every code change; the
    image each rebuild replaces loses its name, and remove_measured() removes it too."""
    (tmp_path / "Dockerfile").write_text("FROM scratch\nCOPY stamp /\n")
    repository = f"{PROJECT_NAME}-test-{uuid.uuid4().hex[:8]}"
    built = []
    try:
        for round_number in range(2):
            (tmp_path / "stamp").write_text(f"{repository} {round_number}\n")
            docker("build", "--quiet", *measured_build(f"{repository}:measured"), str(tmp_path))
            built.append(docker("image", "inspect", "--format", "{{.Id}}", f"{repository}:measured").stdout.strip())
        assert len(set(built)) == 2, built
        remove_measured([f"{repository}:measured"])
        left = [image for image in built if docker("image", "inspect", image, check=False).returncode == 0]
        assert left == [], f"remove_measured() left {left}"
    finally:
        docker("image", "rm", "--force", *built, check=False)
