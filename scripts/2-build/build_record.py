"""Write the record of one build, as it happened, for the provenance `make push` attests.

Usage:
  build_record.py --records DIR --image TAG --dockerfile FILE --base NAME --base-digest DIGEST
                  --started TIME [--build-stage IMAGE] [--context NAME=VALUE ...] [--arg NAME=VALUE ...]

The Makefile runs it after each `docker build`, with the time the build started and the base it
built on, and it writes DIR/TAG.json (the tag's / and : as -):

- the image's ID and platform, the Dockerfile, the build contexts (the base given in place of the
  image a FROM names), the build arguments and the OCI labels, all that a rebuild of the same image
  needs;
- the base, by name and by the digest it had during the build: the script looks again, and a base
  that changed while the image was building fails it;
- the Debian packages the build put in the image, with their versions, from the image's dpkg
  records (/var/lib/dpkg/status, or status.d in the secure image, which has no dpkg): of an image
  on the base's layers, those the base does not hold at the same version; of one FROM scratch, all;
- the Debian packages its build stage installed and the image does not ship (secure's binutils),
  which a rebuild needs too: with --build-stage, the image of the Dockerfile's `build` stage, read
  the same way;
- what built it, and the engine's version: in GitHub Actions, the workflow run's URL; elsewhere,
  the Makefile of the source repository at the commit, when the source label is a URL;
- when the build started and finished.

`make push` refuses an image without a record, or whose ID is not the record's.
"""

import argparse
import datetime
import io
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

# docker_tools, the helper every script shares, sits in scripts/, one folder up.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from docker_tools import DOCKER, docker, docker_result, engine, exit_on_failure

# The digest of a base as the Makefile records it: the repository's (name@sha256:...) of a pulled
# image, or a stand-in's ID.
BASE_DIGEST = "{{if .RepoDigests}}{{index .RepoDigests 0}}{{else}}{{.Id}}{{end}}"
SOURCE = "org.opencontainers.image.source"
REVISION = "org.opencontainers.image.revision"


class Failed(Exception):
    """The record cannot be written truthfully; the message says why."""


def record_path(records: Path, tag: str) -> Path:
    """Where the record of the image tagged tag is kept."""
    return records / (re.sub(r"[/:]", "-", tag) + ".json")


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def is_url(source: str) -> bool:
    return re.match(r"^[a-z][a-z0-9+.-]*://", source or "") is not None and not source.startswith("file:")


def builder(labels: dict[str, str]) -> tuple[str | None, str | None]:
    """What built the image, and the invocation: in GitHub Actions the workflow run and its attempt;
    elsewhere the repository's Makefile at the commit, and no invocation anyone else can look up.
    No builder when the source is no URL (a checkout without a remote): a local path names nothing
    a consumer can look at."""
    if os.environ.get("GITHUB_ACTIONS") == "true":
        server, repository, run = (
            os.environ[name] for name in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID")
        )
        run_url = f"{server}/{repository}/actions/runs/{run}"
        return run_url, f"{run_url}/attempts/{os.environ.get('GITHUB_RUN_ATTEMPT', '1')}"
    source = labels.get(SOURCE, "")
    return (f"git+{source}@{labels.get(REVISION)}#Makefile" if is_url(source) else None), None


def engine_version() -> dict[str, str]:
    template = "{{.Client.Version}}" if engine() == "podman" else "{{.Server.Version}}"
    return {"name": engine(), "version": docker("version", "--format", template).strip()}


def dpkg_packages(image: str) -> dict[str, dict[str, str]]:
    """The Debian packages an image's dpkg records list, by name: version and architecture."""
    # Created, never started: the command only satisfies an image that names none.
    container = docker("create", image, "true").strip()
    texts = []
    try:
        for path in ("/var/lib/dpkg/status", "/var/lib/dpkg/status.d"):
            # A tar stream, read as bytes; an image without this path has nothing to give.
            copied = subprocess.run([*DOCKER, "cp", f"{container}:{path}", "-"], capture_output=True, timeout=300)
            if copied.returncode != 0:
                continue
            with tarfile.open(fileobj=io.BytesIO(copied.stdout)) as archive:
                texts += [archive.extractfile(m).read().decode() for m in archive.getmembers() if m.isfile()]
    finally:
        docker_result("rm", container, check=False)
    packages = {}
    for paragraph in "\n\n".join(texts).split("\n\n"):
        fields = dict(re.findall(r"^([A-Za-z-]+): (.*)$", paragraph, re.MULTILINE))
        if "Package" in fields and "Version" in fields and "not-installed" not in fields.get("Status", ""):
            packages[fields["Package"]] = {"version": fields["Version"], "architecture": fields.get("Architecture", "")}
    return packages


def layers(image: str) -> list[str]:
    return json.loads(docker("image", "inspect", "--format", "{{json .RootFS.Layers}}", image))


def installed_by_build(image: str, base: str) -> list[dict[str, str]]:
    """The packages the build put in the image. An image on the base's layers (production, slim)
    holds the base's packages: those it holds at another version, or the base not at all, are the
    build's. An image FROM scratch (secure) holds only what the build copied in: all of them."""
    base_layers = layers(base)
    in_base = dpkg_packages(base) if layers(image)[: len(base_layers)] == base_layers else {}
    return [
        {"name": name, **entry}
        for name, entry in sorted(dpkg_packages(image).items())
        if in_base.get(name, {}).get("version") != entry["version"]
    ]


def build_stage_only(stage: str | None, base: str, shipped: list[dict[str, str]]) -> list[dict[str, str]]:
    """The packages the build stage installed that the image does not ship at the same version."""
    if stage is None:
        return []
    in_image = {(package["name"], package["version"]) for package in shipped}
    return [
        package for package in installed_by_build(stage, base) if (package["name"], package["version"]) not in in_image
    ]


def record(args: argparse.Namespace) -> dict:
    digest = docker("image", "inspect", "--format", BASE_DIGEST, args.base).strip()
    if digest != args.base_digest:
        raise Failed(
            f"the base {args.base} changed while the image was building (it was {args.base_digest}, it is {digest} "
            "now); build again."
        )
    image = json.loads(docker("image", "inspect", args.image))[0]
    labels = image["Config"].get("Labels") or {}
    builder_id, invocation = builder(labels)
    packages = installed_by_build(args.image, args.base)
    return {
        "image": args.image,
        "imageId": image["Id"],
        "dockerfile": args.dockerfile,
        "platform": f"{image['Os']}/{image['Architecture']}",
        "buildContexts": dict(context.split("=", 1) for context in args.context),
        "buildArgs": dict(argument.split("=", 1) for argument in args.arg),
        "labels": {name: value for name, value in labels.items() if name.startswith("org.opencontainers.image.")},
        "base": {"name": args.base, "digest": digest.rpartition("@")[2]},
        "debianPackages": packages,
        "buildStagePackages": build_stage_only(args.build_stage, args.base, packages),
        "builder": builder_id,
        "invocation": invocation,
        "engine": engine_version(),
        "startedOn": args.started,
        "finishedOn": now(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=Path, required=True)
    parser.add_argument("--image", required=True)
    parser.add_argument("--dockerfile", required=True)
    parser.add_argument("--base", required=True)
    parser.add_argument("--base-digest", required=True)
    parser.add_argument("--started", required=True)
    parser.add_argument("--build-stage", help="the image of the Dockerfile's build stage, if it has one")
    parser.add_argument("--context", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--arg", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args(argv)
    try:
        written = record(args)
    except Failed as error:
        print(f"build_record: {error}", file=sys.stderr)
        return 1
    path = record_path(args.records, args.image)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(written, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(exit_on_failure(main, "build_record"))
