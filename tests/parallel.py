"""What the workers of a parallel run share: `make test` runs the tests with pytest-xdist, whose
workers are each a session of their own, in which every session-scoped fixture runs again.

The controller, which runs no test, makes a folder the workers share. In it the workers write down
which tests run together (the groups GroupScheduling sends each to one worker), and the records of
what is built once for the whole run: the first worker that needs the images builds them under a
lock while the others wait, and they find them built. Once every worker is done, the controller
removes what the records name.
"""

import contextlib
import fcntl
import json
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from containers import DOCKER, image_name, remove_unnamed_images_made_since
from xdist.scheduler import LoadGroupScheduling

# The folder of the run, in the controller's configuration.
RUN_FOLDER = pytest.StashKey[Path]()
T = TypeVar("T")


def run_folder(config: pytest.Config) -> Path:
    """The folder the workers of the controller's run share, made the first time it is asked for."""
    if RUN_FOLDER not in config.stash:
        config.stash[RUN_FOLDER] = Path(tempfile.mkdtemp(prefix="pytest-run-"))
    return config.stash[RUN_FOLDER]


def group(item: pytest.Item) -> str | None:
    """The group of tests that one worker runs together: the test's xdist_group mark's; else its
    module's, where it shares a module-scoped fixture, so that what that makes (a registry, a
    published image, an emulated build) is made once. None for a test of no group."""
    if mark := item.get_closest_marker("xdist_group"):
        return mark.args[0]
    definitions = item._fixtureinfo.name2fixturedefs.values()
    if any(definition.scope == "module" for chain in definitions for definition in chain):
        return item.module.__name__
    return None


def write_groups(folder: Path, worker: str, items: list[pytest.Item]) -> None:
    """Write down each test's group for the controller. Every worker collects the same tests, and
    each writes its own file."""
    groups = {item.nodeid: name for item in items if (name := group(item))}
    (folder / f"groups-{worker}.json").write_text(json.dumps(groups))


class GroupScheduling(LoadGroupScheduling):
    """pytest-xdist's --dist loadgroup, which sends each group of tests to one worker, with the groups
    the workers wrote down. pytest-xdist 3.8 passes them on by adding @group to each test's ID,
    which pytest 9.2's IDs no longer take (pytest-dev/pytest-xdist#1386)."""

    groups: dict[str, str] | None = None

    def _split_scope(self, nodeid: str) -> str:
        if self.groups is None:
            written = next(run_folder(self.config).glob("groups-*.json"))
            self.groups = json.loads(written.read_text())
        return self.groups.get(nodeid) or super()._split_scope(nodeid)


@contextlib.contextmanager
def run_record(folder: Path, name: str) -> Iterator[dict]:
    """The record `name` the workers share, a JSON object in folder: held by one worker at a time,
    the others waiting at its lock until it is written back."""
    path = folder / f"{name}.json"
    with (folder / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        record = json.loads(path.read_text()) if path.exists() else {}
        yield record
        path.write_text(json.dumps(record))


def built_for_run(folder: Path, name: str, kind: str, build: Callable[[str], T]) -> T:
    """What build(image_name) returns, built once for the run: the first worker names the images and
    builds them while the others wait, and they find them built (build skips what is there)."""
    with run_record(folder, name) as record:
        record.setdefault("image_name", image_name(kind))
        return build(record["image_name"])


def remove_run(folder: Path) -> None:
    """Remove every image the records name, whatever its tag; then the images without a name the
    run left, of those make builds (see the docker_engine fixture); and the folder."""
    records = [json.loads(path.read_text()) for path in folder.glob("*.json") if not path.name.startswith("groups-")]
    for name in (record["image_name"] for record in records if "image_name" in record):
        listed = subprocess.run(
            [*DOCKER, "images", "--format", "{{.Repository}}:{{.Tag}}", name], capture_output=True, text=True
        )
        if tags := listed.stdout.split():
            subprocess.run([*DOCKER, "image", "rm", "--force", *tags], capture_output=True, timeout=300)
    for record in records:
        if "unnamed_images" in record:
            remove_unnamed_images_made_since(set(record["unnamed_images"]))
    shutil.rmtree(folder)
