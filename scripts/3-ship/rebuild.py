"""Rebuild a published image from the commit its provenance names, and compare the two.

Usage:
  rebuild.py --ref REPOSITORY@sha256:DIGEST --source URL (--key PUBLIC_KEY | --identity ID [--issuer URL])

For a consumer who holds a clone of the source repository (URL, its `origin`) and what verifies the
publisher's signatures (the public key, or the keyless signer's identity), never the private key.
REF is an image index, whose every platform is rebuilt, or one platform's image. In order, each
step ending the run with a sentence when it fails:

1. make verify's checks (publish.py), on REF's digests: every signature, the SBOM and provenance
   attestations, and a provenance that names this source, its build type and builder;
2. the commit the provenance names, checked out in a throwaway clone of this one (fetched from
   URL when this clone lacks it): the checkout you run it from is only read;
3. for each platform, the base the build resolved, by its digest;
4. `make build-VARIANT` of that commit's Makefile, with every parameter the provenance records (the
   platform, the base given under FROM's name, WSGI_APP where the Dockerfile takes it,
   SOURCE_DATE_EPOCH and the labels) and --no-cache, so that nothing comes from an earlier build on
   this machine;
5. what it built against what was published: the image's config by its digest, which holds the
   digest of every layer's content (its diff ID), and the first layer that differs, by the
   Dockerfile instruction that made it.

A rebuild needs what can vanish after the publishing: the commit (a force-push), the base by its
digest (a registry drops it; a stand-in base, built here and never pushed, exists only on the
machine that built it), and the Debian and Python packages at the versions the build installed.
Each missing one is named.

Only images the project builds reproducibly compare equal: secure, by the digests of its config
and layers. Naive, production and slim keep the times their RUN steps wrote files at
(docs/reference/reproducible.md), and the run says so instead of comparing them.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

# docker_tools, the helper every script shares, sits in scripts/, one folder up.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import publish
from docker_tools import PROJECT_NAME, ROOT, docker, docker_result, engine_platform, exit_on_failure, run_command, tool
from scan import last_line

# The variants whose images one commit builds to the byte (docs/reference/reproducible.md).
REPRODUCIBLE = ("secure",)
# What a failed build prints when a pinned package is gone: apt's and pip's words.
APT_MISSING = re.compile(r"Version '([^']+)' for '([^']+)' was not found")
PIP_MISSING = re.compile(r"No matching distribution found for (\S+)")

Failed = publish.Failed


def say(message: str) -> None:
    print(f"rebuild: {message}", flush=True)


def platforms_of(reference: str) -> tuple[str, str, dict[str, str]]:
    """The repository, the digest REF names, and the digest of each platform's image in it."""
    repository, _, digest = reference.rpartition("@")
    if not repository or not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
        raise Failed(f"{reference!r} is no image by digest: give REF=REPOSITORY@sha256:..., as make push prints it.")
    raw = publish.raw_manifest(reference, check=False)
    if raw is None:
        raise Failed(f"the registry has no {reference}: check the repository and digest, or log in to it.")
    manifest = json.loads(raw)
    if "manifests" not in manifest:
        return repository, digest, {published_config(reference)["platform"]: digest}
    platforms = {
        f"{entry['platform']['os']}/{entry['platform']['architecture']}": entry["digest"]
        for entry in manifest["manifests"]
        if entry.get("platform", {}).get("os") not in (None, "unknown")
    }
    return repository, digest, platforms


def published_config(reference: str) -> dict:
    """The config of one platform's image as the registry holds it, with its platform."""
    skopeo = [tool("skopeo"), "inspect", "--config", "--raw"]
    if publish.is_local(reference):
        skopeo.append("--tls-verify=false")
    config = json.loads(run_command(*skopeo, f"docker://{reference}", timeout=120).stdout)
    return config | {"platform": f"{config['os']}/{config['architecture']}"}


def verified(args: argparse.Namespace, repository: str, digest: str, platforms: dict[str, str]) -> dict:
    """make verify's checks on what REF names; the provenance of each platform, once they pass."""
    signer = argparse.Namespace(key=args.key, identity=args.identity, issuer=args.issuer)
    # The signer alone, the commit not known yet: make verify's check below holds a keyless
    # signature to the commit the provenance names as well.
    accepted = publish.signers(signer, {})
    # The signature first, so that another signer's image is named as such before its provenance is read.
    publish.verify_signature(
        accepted, "the image" if digest in platforms.values() else "the index", f"{repository}@{digest}"
    )
    predicates = {
        platform: publish.verify_attestation(
            accepted, f"the {platform} image", f"{repository}@{image}", "slsaprovenance1"
        )[0]
        for platform, image in platforms.items()
    }
    parameters = [predicate["buildDefinition"]["externalParameters"] for predicate in predicates.values()]
    commits = {p["source"]["digest"].get("gitCommit") for p in parameters}
    variants = {p["variant"] for p in parameters}
    if len(commits) != 1 or len(variants) != 1:
        raise Failed(
            f"the provenances of {repository}@{digest} name more than one commit or variant: {commits} {variants}."
        )
    bases = {
        (base["uri"], base["digest"]["sha256"])
        for base in (p["buildDefinition"]["resolvedDependencies"][1] for p in predicates.values())
    }
    published = {
        "repository": repository,
        "source": args.source,
        "commit": commits.pop(),
        "variants": {variants.pop(): {"tags": [f"{repository}@{digest}"], "index": digest, "platforms": platforms}},
        # The policy's bases are those the provenances name: the rebuild below checks each by its digest.
        "bases": [{"uri": uri, "sha256": sha} for uri, sha in sorted(bases)],
    }
    with tempfile.TemporaryDirectory(prefix="rebuild-") as folder:
        path = Path(folder) / "published.json"
        path.write_text(json.dumps(published))
        publish.verify(argparse.Namespace(published=path, **vars(signer)))
    return predicates


def checkout(commit: str, source: str, folder: Path) -> Path:
    """The commit, checked out in a clone of this repository made in folder."""
    clone = folder / "source"
    run_command("git", "clone", "--quiet", "--no-checkout", "--shared", str(ROOT), str(clone))
    if run_command("git", "-C", str(clone), "cat-file", "-e", f"{commit}^{{commit}}", check=False).returncode != 0:
        say(f"commit {commit[:12]} is not in this clone; fetching it from {source}.")
        fetched = run_command("git", "-C", str(clone), "fetch", "--quiet", source, commit, check=False, timeout=300)
        if fetched.returncode != 0:
            raise Failed(
                f"commit {commit}, which the provenance names, is neither in this clone nor fetchable from {source} "
                f"({last_line(fetched.stderr)}): a history rewritten since, or a source that moved. "
                "Without the commit there is nothing to rebuild."
            )
    run_command("git", "-C", str(clone), "checkout", "--quiet", "--detach", commit)
    return clone


def dependency(predicate: dict, name: str) -> dict:
    for entry in predicate["buildDefinition"]["resolvedDependencies"]:
        if entry.get("name") == name:
            return entry
    raise Failed(f"the provenance lists no {name} among its resolved dependencies.")


def base_present(predicate: dict, platform: str) -> None:
    """The base the build resolved, by its digest, on this machine: a stand-in by its image ID, as
    it was never pushed; a registry's image pulled by digest, and its tag made to name it."""
    base = dependency(predicate, "base")
    name = base["uri"].removeprefix("docker-image://")
    digest = "sha256:" + base["digest"]["sha256"]
    if "stand-in" in base.get("annotations", {}):
        found = docker_result("image", "inspect", "--format", "{{.Id}}", name, check=False).stdout.strip()
        if found != digest:
            have = f"it has {found}" if found else "it has none"
            raise Failed(
                f"the image was built on the stand-in base {name}, image {digest}, and this machine has no such image "
                f"({have}). A stand-in is built from Debian's packages of the day and never pushed, so only the "
                "machine that built it can rebuild on it; publish from a base a registry serves to make the image "
                "rebuildable anywhere."
            )
        return
    repository = name.rpartition(":")[0] if ":" in name.rpartition("/")[2] else name
    inspect = "{{range .RepoDigests}}{{println .}}{{end}}"
    held = docker_result("image", "inspect", "--format", inspect, name, check=False)
    if held.returncode == 0 and any(line.endswith(f"@{digest}") for line in held.stdout.split()):
        return
    pulled = docker_result(
        "pull", "--quiet", "--platform", platform, f"{repository}@{digest}", check=False, timeout=600
    )
    if pulled.returncode != 0:
        raise Failed(
            f"the base {name} at {digest}, which the build resolved, cannot be pulled any more "
            f"({last_line(pulled.stderr)}): registries drop digests no tag names. Without it, "
            "no rebuild can give the same image."
        )
    if held.returncode == 0:
        raise Failed(
            f"the tag {name} here names another image than {digest}, which the build used, and the rebuild builds "
            f"on the tag. Point it there (docker tag {repository}@{digest} {name}) and run again; "
            f"docker pull {name} moves it back."
        )
    docker("tag", f"{repository}@{digest}", name)


def rebuild(clone: Path, predicate: dict, image: str, folder: Path) -> str:
    """make build-VARIANT of the commit with the recorded parameters; the tag it built."""
    parameters = predicate["buildDefinition"]["externalParameters"]
    arguments, labels = parameters["buildArgs"], parameters["labels"]
    variant, platform = parameters["variant"], parameters["platform"]
    native = platform == engine_platform()
    settings = {
        "IMAGE": image,
        "PLATFORM": "" if native else platform,
        # The base the build was given under FROM's name: make gives it the same way.
        "BASE_IMAGE": next(iter(parameters["buildContexts"].values())).removeprefix("docker-image://"),
        "SOURCE_DATE_EPOCH": arguments["SOURCE_DATE_EPOCH"],
        "SOURCE_URL": labels["org.opencontainers.image.source"],
        "VERSION": labels["org.opencontainers.image.version"],
        "REVISION": labels["org.opencontainers.image.revision"],
        "BUILD_FLAGS": "--no-cache",
        "BUILD_RECORDS": str(folder / "records"),
    }
    if "WSGI_APP" in arguments:
        settings["WSGI_APP"] = arguments["WSGI_APP"]
    # This make's own variables (REF, KEYS_DIR) are not the rebuild's.
    environment = {
        name: value for name, value in os.environ.items() if name not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")
    }
    command = ["make", "--no-print-directory", "-C", str(clone), f"build-{variant}"]
    command += [f"{name}={value}" for name, value in settings.items()]
    say(
        f"rebuilding {variant} for {platform} from {parameters['dockerfile']}" + ("" if native else ", under emulation")
    )
    built = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=3600)
    output = built.stdout + built.stderr
    if built.returncode != 0:
        raise Failed(build_failure(output, variant, platform))
    return f"{image}:{variant}" + ("" if native else "-" + platform.removeprefix("linux/").replace("/", "-"))


def build_failure(output: str, variant: str, platform: str) -> str:
    """Why the rebuild failed, in a sentence: a package version gone first, as that is what vanishes."""
    if match := APT_MISSING.search(output):
        version, package = match.groups()
        return (
            f"Debian's archive no longer holds {package} {version}, which the build of {variant} for {platform} "
            "installs: the archive keeps only a release's current versions. snapshot.debian.org keeps every "
            "version; a rebuild that must give the same image can take the package from there."
        )
    if match := PIP_MISSING.search(output):
        return (
            f"PyPI no longer serves {match.group(1)}, which requirements.txt pins (a release yanked or deleted): "
            f"the build of {variant} for {platform} cannot install it."
        )
    tail = "\n".join(output.strip().splitlines()[-15:])
    return f"the rebuild of {variant} for {platform} failed; the end of its output:\n{tail}"


def converted(tag: str, folder: Path) -> tuple[str, dict]:
    """The rebuilt image as make push publishes it, saved by the engine and copied by skopeo as
    make push copies it (publish.skopeo_source): its config's digest, and the config."""
    archive, layout = folder / "rebuilt.tar", folder / "rebuilt"
    docker("save", "--output", str(archive), tag)
    try:
        source = publish.skopeo_source(archive)
        run_command(tool("skopeo"), "copy", "--quiet", *source, f"oci:{layout}:rebuilt", timeout=900)

        def blob(digest: str) -> dict:
            return json.loads((layout / "blobs" / digest.replace(":", "/")).read_text())

        manifest = blob(json.loads((layout / "index.json").read_text())["manifests"][0]["digest"])
        config = manifest["config"]["digest"]
        return config, blob(config)
    finally:
        archive.unlink(missing_ok=True)
        shutil.rmtree(layout, ignore_errors=True)


def difference(published: dict, rebuilt: dict) -> str:
    """Where the rebuilt image's config differs from the published one: the first layer, by the
    instruction that made it, or else the fields of the config."""
    theirs, ours = published["rootfs"]["diff_ids"], rebuilt["rootfs"]["diff_ids"]
    made_by = [step.get("created_by", "") for step in published.get("history", []) if not step.get("empty_layer")]
    for number, (its, mine) in enumerate(zip(theirs, ours, strict=False), start=1):
        if its != mine:
            step = made_by[number - 1] if number <= len(made_by) else "a step the history does not name"
            return f"layer {number} of {len(theirs)}, made by `{step}`, is {its} as published and {mine} rebuilt"
    if len(theirs) != len(ours):
        return f"it has {len(theirs)} layers as published and {len(ours)} rebuilt"
    fields = [key for key in sorted(published.keys() | rebuilt.keys()) if published.get(key) != rebuilt.get(key)]
    inner = published.get("config", {}), rebuilt.get("config", {})
    fields += [
        f"config.{key}" for key in sorted(inner[0].keys() | inner[1].keys()) if inner[0].get(key) != inner[1].get(key)
    ]
    return f"every layer is the same, and the config differs in {', '.join(f for f in fields if f != 'config')}"


def compare(reference: str, tag: str, folder: Path) -> int:
    """The rebuilt image against the published one, by the digest of its config, which holds the
    digest of each layer's content; the number of layers. A layer's compressed bytes are left to
    the engine that pulls it: it checks them against the config's digest of their content."""
    expected = json.loads(publish.raw_manifest(reference))["config"]["digest"]
    digest, config = converted(tag, folder)
    if digest != expected:
        raise Failed(
            f"{reference} is not what its commit builds: its config is {expected}, the rebuild's {digest}; "
            + difference(published_config(reference), config)
            + "."
        )
    return len(config["rootfs"]["diff_ids"])


def verify_rebuild(args: argparse.Namespace) -> None:
    started = time.monotonic()
    repository, digest, platforms = platforms_of(args.ref)
    predicates = verified(args, repository, digest, platforms)
    some = next(iter(predicates.values()))["buildDefinition"]["externalParameters"]
    variant, commit = some["variant"], some["source"]["digest"]["gitCommit"]
    say(f"{args.ref}: signed, with provenance of {variant} at {commit[:12]}, for {', '.join(platforms)}.")
    if variant not in REPRODUCIBLE:
        raise Failed(
            f"{variant} is not built reproducibly: its RUN steps keep the times they wrote files at, so a rebuild "
            "differs in every layer but the base's (docs/reference/reproducible.md). Only "
            f"{', '.join(REPRODUCIBLE)} can be checked this way."
        )
    image = f"{PROJECT_NAME}-rebuild-{uuid.uuid4().hex[:8]}"
    built = []
    try:
        with tempfile.TemporaryDirectory(prefix="rebuild-") as folder:
            clone = checkout(commit, args.source, Path(folder))
            for platform, predicate in predicates.items():
                base_present(predicate, platform)
                step = time.monotonic()
                built.append(rebuild(clone, predicate, image, Path(folder)))
                layers = compare(f"{repository}@{platforms[platform]}", built[-1], Path(folder))
                say(
                    f"{platform}: the rebuild is {repository}@{platforms[platform]} to the byte: the same config, "
                    f"the same {layers} layers ({time.monotonic() - step:.0f} s)."
                )
    finally:
        if built:
            docker_result("image", "rm", "--force", *built, check=False)
    say(f"{args.ref} is what commit {commit[:12]} builds, on every platform ({time.monotonic() - started:.0f} s).")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", required=True, help="the published index or image, REPOSITORY@sha256:...")
    parser.add_argument("--source", required=True, help="the source repository's URL the provenance must name")
    parser.add_argument("--keys", type=Path, help="a folder of the publisher's public keys (cosign*.pub)")
    parser.add_argument("--key", type=Path, action="append", help="a public key of the publisher's; repeatable")
    parser.add_argument("--identity", help="the keyless signer's certificate identity")
    parser.add_argument("--issuer", default=publish.GITHUB_ISSUER, help="the keyless signer's OIDC issuer")
    args = parser.parse_args(argv)
    try:
        args.key = (args.key or []) + (publish.public_keys(args.keys) if args.keys else [])
        if not args.key and not args.identity:
            raise Failed("give the publisher's public keys (--keys or --key), or the signer's certificate identity.")
        verify_rebuild(args)
    except Failed as error:
        print(f"rebuild: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(exit_on_failure(main, "rebuild"))
