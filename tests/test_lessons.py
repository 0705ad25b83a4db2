"""make lessons: each practice of the production Dockerfile undone alone, and what it reports."""

import lessons
import pytest
from containers import ROOT

DOCKERFILE = (ROOT / "Dockerfile").read_text()
MEASURED = [practice for practice in lessons.PRACTICES if not practice.unmeasured]


@pytest.mark.unit
@pytest.mark.parametrize("practice", MEASURED, ids=lambda practice: practice.name)
def test_each_practice_is_undone_by_an_edit_of_the_dockerfile_or_the_context(practice):
    undone = lessons.undo(practice, DOCKERFILE)
    assert (undone != DOCKERFILE) is bool(practice.edits)
    assert bool(practice.edits) != bool(practice.without)
    if practice.without:
        assert (ROOT / practice.without).is_file()


@pytest.mark.unit
def test_the_undone_dockerfiles_lose_what_each_practice_names():
    undone = {practice.name: lessons.undo(practice, DOCKERFILE) for practice in MEASURED}
    assert "\nUSER " not in undone["non-root"]
    assert "\nHEALTHCHECK " not in undone["healthcheck"]
    assert "ENTRYPOINT gunicorn " in undone["exec-form"]
    assert "-perm /6000" not in undone["no-setuid"]
    assert "PIP_NO_CACHE_DIR" not in undone["pip-no-cache"]
    assert "PYTHONDONTWRITEBYTECODE" not in undone["no-bytecode"]
    order = undone["layer-order"]
    assert order.index("COPY src/ ./") < order.index("source=requirements.txt") < order.index("pip --python")
    assert order.count("COPY src/ ./") == 1


@pytest.mark.unit
def test_undo_says_which_practice_no_longer_matches_the_dockerfile():
    """The control: a Dockerfile that changed makes the run stop, not measure the wrong thing."""
    practice = next(practice for practice in MEASURED if practice.name == "non-root")
    with pytest.raises(SystemExit, match="non-root undoes"):
        lessons.undo(practice, DOCKERFILE.replace("USER 10001:10001", "USER app"))


@pytest.mark.unit
def test_every_practice_is_measured_or_says_why_not():
    names = [practice.name for practice in lessons.PRACTICES]
    assert len(names) == len(set(names))
    for practice in lessons.PRACTICES:
        assert bool(practice.unmeasured) != bool(practice.edits or practice.without), practice.name


def facts(**changed) -> dict:
    timed = {"min": 0.5, "median": 0.6, "max": 0.7}
    row = {
        "size_bytes": 190_000_000,
        "compressed_bytes": 75_000_000,
        "layers": 10,
        "user": "10001",
        "exit_code": 0,
        "health": "healthy",
        "setuid_programs": 0,
        "written": 2,
        "context_bytes": 40_000,
        "hadolint": [],
        "rebuild_seconds": timed,
        "stop_seconds": timed,
        "healthy_seconds": {"min": 10.4, "median": 10.5, "max": 10.7},
    }
    return row | changed


@pytest.mark.unit
def test_a_row_names_what_changed_and_nothing_else():
    assert lessons.changes(facts(), facts()) == []
    slow = {"min": 9.5, "median": 10.1, "max": 10.4}
    said = lessons.changes(facts(), facts(user="0", stop_seconds=slow, exit_code=137, hadolint=["DL3002"]))
    assert said == [
        "docker stop 0.60 s → 10.10 s [9.50-10.40]",
        "server's UID 10001 → 0",
        "exit code on docker stop 0 → 137",
        "hadolint: DL3002",
    ]
    unchecked = lessons.changes(facts(), facts(health="none", healthy_seconds=None))
    assert unchecked == ["health healthy after 10.5 s [10.4-10.7] → none"]


@pytest.mark.integration
@pytest.mark.docker
def test_the_build_context_lessons_measures_is_the_checkout_as_it_is_venv_and_all(images):
    """make lessons counts what `docker build .` sends from this checkout, not from the files git
    lists: ignoring the .venv that make made, and nothing else, takes away its files' bytes. Within
    1%: a test run may write bytecode into the .venv between the two counts. BuildKit reads a
    Dockerfile's own ignore file; Podman's builder may not, hence the docker marker."""
    files = [path for path in (ROOT / ".venv").rglob("*") if path.is_file() and not path.is_symlink()]
    venv_bytes = sum(path.stat().st_size for path in files)
    everything = lessons.context_size("", images["production"])
    without_venv = lessons.context_size(".venv\n", images["production"])
    assert venv_bytes > 0
    assert abs((everything - without_venv) - venv_bytes) <= 0.01 * venv_bytes, (everything, without_venv, venv_bytes)
