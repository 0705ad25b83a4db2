"""Publish images to a registry, signed, with their SBOM and provenance attached; verify them.

Usage:
  publish.py registry start DIR PORT  a registry on 127.0.0.1:PORT (the CNCF Distribution
                                      registry, as a plain process), its storage in DIR
  publish.py registry stop DIR
  publish.py keys DIR                 a cosign key pair, DIR/cosign.key and DIR/cosign.pub
  publish.py keys-rotate DIR          a new key pair beside the others (DIR/cosign-2.key, -3, ...),
                                      which signs from now on
  publish.py keys-retire DIR          retire every key pair but the newest: its public key moves to
                                      DIR/retired/, its private key is deleted
  publish.py push --repository REGISTRY/NAME --version VERSION --published FILE [--keys DIR]
                  [--unsigned DIR] --records DIR --source URL VARIANT=IMAGE[,IMAGE...] ...
  publish.py promote --published FILE (--keys DIR | --key PUBLIC_KEY ... | --identity ID --issuer URL)
  publish.py verify --published FILE (--keys DIR | --key PUBLIC_KEY ... | --identity ID --issuer URL)
  publish.py deploy-files --published FILE --overlay DIR
                          (--keys DIR | --key PUBLIC_KEY ... | --identity ID --issuer URL)

push publishes each variant's local images, one a platform (the images `make build` made, never
built again), as one multi-platform tag REGISTRY/NAME:VARIANT, an OCI image index, and as
REGISTRY/NAME:VARIANT-VERSION. It signs the index and each platform's image with cosign, attaches
to each platform's image, and to the index, the image's CycloneDX SBOM (Trivy, as `make scan` writes
it) and its SLSA provenance (v1), both as signed attestations, and writes the digests to FILE, with
the commit, the source and the bases the builds recorded. It signs with the newest key of --keys;
without it, keyless, with the identity of the CI job it runs in.

With --unsigned DIR, push signs and attests nothing: it writes each predicate it would have
attested into DIR, named after the digest it is about and its type (HEX.cyclonedx.json,
HEX.slsaprovenance1.json), and leaves each variant's tag where it was. A job of its own, which holds
the signing identity and runs nothing but cosign, then attests and signs (CI's sign job), and
promote moves each variant's tag to its index once the index's signature verifies.

The provenance is made from the record each build wrote in DIR (scripts/2-build/build_record.py);
docs/reference/provenance.md defines its fields. So that it never describes a build that did not
happen, push refuses, before it pushes anything, an image built from uncommitted changes, from
another commit, with labels the commit does not give, without its record, or from a source that is
no URL.

verify checks, for the digests in FILE, in this order: that each tag still names the index that was
published; the index's signature; each platform image's signature; its SBOM attestation and its
provenance attestation, each signed and about that image's digest (cosign checks the subject), the
provenance held by cosign to the policy deploy/published/provenance.cue with the publication's
values (the commit and source that were published, this project's build type and builder, no
uncommitted changes, a recorded base); then the index's own attestations, the same way. It names
the first check that fails. Any public key of --keys (or any --key) may have signed: during a
rotation, the old key's images verify until it is retired.

deploy-files writes what the overlay deploy/published/ reads beside its kustomization.yaml:
published.env, the secure image's index by its digest (Compose reads it too); signer.yaml, the
ClusterImagePolicy's authorities: one for each signer it admits (each public key, or the keyless
identity), each requiring a provenance that meets provenance.cue with the publication's values; and
kyverno/signer.yaml, the same for Kyverno's ClusterPolicy, in Kyverno's terms.

COSIGN_PASSWORD is taken out of the environment when the script starts and given to cosign alone:
docker, skopeo, trivy and git, which it runs too, never see it.

A signature made with a key never goes to the public transparency log (Rekor): the log is public
and permanent, and a trial run of this project has no business in it. Keyless signatures do go to
the log, which is how a consumer checks them without a key.
"""

import argparse
import base64
import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

# docker_tools, the helper every script shares, sits in scripts/, one folder up; the build records
# are written by 2-build's build_record.py.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "2-build"))
import scan
from build_record import record_path as build_record_path
from docker_tools import (
    DOCKER,
    PROJECT_NAME,
    ROOT,
    CommandFailed,
    docker,
    exit_on_failure,
    request,
    run,
    run_command,
    tool,
)

# The two attestations, by cosign's --type (which gives the predicate types https://cyclonedx.org/bom
# and https://slsa.dev/provenance/v1): what verify calls each.
ATTESTATIONS = {"cyclonedx": "SBOM", "slsaprovenance1": "provenance"}
# The build type of the provenance: the page that defines it, in the source repository, and its
# version. A change to what the provenance's fields mean is a new version there and here.
BUILD_TYPE_PAGE = "docs/reference/provenance.md#v1"
# Where the CI job's keyless certificates come from.
GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
# The policy every provenance must meet, in CUE, which cosign's --policy and policy-controller read.
POLICY = ROOT / "deploy" / "published" / "provenance.cue"
PROVENANCE_TYPE = "https://slsa.dev/provenance/v1"
# What this process holds for cosign alone: COSIGN_PASSWORD, taken out of the environment by main().
SECRETS: dict[str, str] = {}
# The registry's configuration: 127.0.0.1 only, no authentication, deleting allowed (so a test
# can take an attestation away), and its log kept short.
REGISTRY_CONFIG = """\
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
"""


class Failed(Exception):
    """A check or a step failed; the message says which, in a sentence."""


def say(message: str) -> None:
    print(f"publish: {message}", flush=True)


# --- the local registry ---


def registry_answers(port: int) -> bool:
    try:
        return request(port, "/v2/", timeout=2).status == 200
    except (OSError, http.client.HTTPException):
        return False


def pid_of(folder: Path) -> int | None:
    """The registry process this folder's pid file names, if it still runs: a process of that number
    serving this folder's configuration, not another that took the number since."""
    try:
        pid = int((folder / "registry.pid").read_text())
    except (OSError, ValueError):
        return None
    # -ww: without a terminal, ps cuts the command line at 80 columns, and with it the folder's path.
    command = subprocess.run(["ps", "-ww", "-o", "command=", "-p", str(pid)], capture_output=True, text=True).stdout
    return pid if str(folder.resolve() / "config.yml") in command else None


def registry_start(folder: Path, port: int) -> None:
    folder = folder.resolve()
    if pid_of(folder) and registry_answers(port):
        say(f"the registry on 127.0.0.1:{port} is already running (storage {folder}).")
        return
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            raise Failed(f"port {port} on 127.0.0.1 is in use by another program; choose another: REGISTRY_PORT=5001.")
    registry = tool("docker-registry")
    (folder / "storage").mkdir(parents=True, exist_ok=True)
    config = folder / "config.yml"
    config.write_text(REGISTRY_CONFIG.format(storage=folder / "storage", port=port))
    with (folder / "registry.log").open("ab") as log:
        process = subprocess.Popen(
            [registry, "serve", str(config)], stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True
        )
    (folder / "registry.pid").write_text(f"{process.pid}\n")
    deadline = time.monotonic() + 15
    while not registry_answers(port):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            log_tail = (folder / "registry.log").read_text(errors="replace").strip().splitlines()[-5:]
            raise Failed(f"the registry did not start; the end of {folder}/registry.log:\n" + "\n".join(log_tail))
        time.sleep(0.2)
    say(f"a registry is serving on 127.0.0.1:{port}, its storage in {folder}/storage (stop it: make registry-stop).")


def registry_stop(folder: Path) -> None:
    pid = pid_of(folder)
    if pid is None:
        say(f"no registry of {folder} is running.")
        return
    os.kill(pid, signal.SIGTERM)
    for _ in range(50):
        if pid_of(folder) is None:
            break
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
    (folder / "registry.pid").unlink(missing_ok=True)
    say(f"the registry is stopped; its storage stays in {folder}/storage.")


# --- cosign and its keys ---


def take_password() -> None:
    """Move COSIGN_PASSWORD from the environment, which every program this script runs inherits,
    to SECRETS, which only cosign's commands get."""
    if "COSIGN_PASSWORD" in os.environ:
        SECRETS["COSIGN_PASSWORD"] = os.environ.pop("COSIGN_PASSWORD")


def cosign(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    """cosign, the one program given the key's password; with check, a failure raises CommandFailed."""
    command = [tool("cosign"), *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env={**os.environ, **SECRETS})
    if check and result.returncode != 0:
        raise CommandFailed(f"`{' '.join(command)}` failed:\n{(result.stderr or result.stdout).strip()[-3000:]}")
    return result


def ask_password(doing: str) -> None:
    if "COSIGN_PASSWORD" not in SECRETS:
        raise Failed(
            f"set COSIGN_PASSWORD to the password that protects the signing key, {doing} "
            "(read -rs COSIGN_PASSWORD && export COSIGN_PASSWORD keeps it out of the shell's history), "
            "or, for a local trial only, COSIGN_PASSWORD= for a key without one."
        )


def generation(private_key: Path) -> int:
    """cosign.key is the first key pair; each rotation adds the next: cosign-2.key, cosign-3.key."""
    return int(private_key.stem.removeprefix("cosign-")) if private_key.stem != "cosign" else 1


def key_pairs(folder: Path) -> list[Path]:
    """The private keys in folder that still sign or verify, oldest first."""
    return sorted(folder.glob("cosign*.key"), key=generation)


def signing_key(folder: Path) -> Path:
    pairs = key_pairs(folder)
    if not pairs:
        raise Failed(f"{folder} holds no key pair: make one with make keys.")
    return pairs[-1]


def public_keys(folder: Path) -> list[Path]:
    """The public keys that verify, newest first: those in folder, not retired. A consumer's folder
    holds the public keys alone."""
    found = sorted(folder.glob("cosign*.pub"), key=generation, reverse=True)
    if not found:
        raise Failed(f"{folder} holds no public key (cosign*.pub) to verify with: make keys makes the pair.")
    return found


def new_key_pair(prefix: Path) -> None:
    prefix.parent.mkdir(parents=True, exist_ok=True)
    prefix.parent.chmod(0o700)
    cosign("generate-key-pair", "--output-key-prefix", str(prefix))
    protection = "protected by COSIGN_PASSWORD" if SECRETS["COSIGN_PASSWORD"] else "WITHOUT a password"
    say(
        f"made the signing key {prefix}.key, {protection}, and its public key {prefix}.pub: give that one to consumers."
    )


def keys(folder: Path) -> None:
    if key_pairs(folder):
        key = signing_key(folder)
        say(f"the signing key is {key}, its public key {key.with_suffix('.pub')}.")
        return
    ask_password("to make the key")
    new_key_pair(folder / "cosign")


def keys_rotate(folder: Path) -> None:
    """A new key pair beside the others, which signs from now on; the others still verify."""
    old = signing_key(folder)
    ask_password("to make the new key")
    new = folder / f"cosign-{generation(old) + 1}"
    new_key_pair(new)
    say(
        f"{new}.key signs from now on; {', '.join(str(key) for key in public_keys(folder)[1:])} still verify, "
        "until make keys-retire. Publish again with make push, then retire the old keys."
    )


def keys_retire(folder: Path) -> None:
    """Retire every key pair but the newest: an image signed by none but them no longer verifies."""
    *old, newest = key_pairs(folder) or [None]
    if not old:
        say(f"nothing to retire: {newest or folder} is the only key.")
        return
    retired = folder / "retired"
    retired.mkdir(exist_ok=True)
    for private in old:
        private.with_suffix(".pub").rename(retired / private.with_suffix(".pub").name)
        private.unlink()
    say(
        f"retired {', '.join(private.stem for private in old)}: their private keys are deleted, their public keys "
        f"kept in {retired}; {newest.with_suffix('.pub')} alone verifies now. Run make push again to update "
        "the admission policies."
    )


# --- push ---


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def is_local(repository: str) -> bool:
    """A registry on this machine, which speaks plain HTTP."""
    host = repository.split("/", 1)[0]
    return host.split(":")[0] in ("127.0.0.1", "localhost")


def raw_manifest(reference: str, check: bool = True) -> str | None:
    """The manifest or index a reference names, as the registry holds it; None if none, unchecked."""
    result = run_command(*DOCKER, "buildx", "imagetools", "inspect", "--raw", reference, check=check, timeout=120)
    return result.stdout if result.returncode == 0 else None


def manifest_digest(reference: str) -> str:
    """The digest of what a tag names now, from the registry's own bytes."""
    return digest_of(raw_manifest(reference).encode())


def platform_of(image: str) -> str:
    return docker("image", "inspect", "--format", "{{.Os}}/{{.Architecture}}", image).strip()


def labels_of(image: str) -> dict[str, str]:
    return json.loads(docker("image", "inspect", "--format", "{{json .Config.Labels}}", image)) or {}


def push_image(image: str, target: str, work: Path) -> str:
    """Push one local image as an OCI image to target; return the digest the registry holds it under.

    skopeo reads `docker save`'s archive: the engine's own push would write Docker's manifest type,
    and an OCI index can hold only OCI manifests.
    """
    archive, digest_file = work / "image.tar", work / "digest"
    docker("save", "--output", str(archive), image)
    command = [tool("skopeo"), "copy", "--quiet", "--digestfile", str(digest_file)]
    if is_local(target):
        command.append("--dest-tls-verify=false")
    try:
        run(*command, *skopeo_source(archive), f"docker://{target}", timeout=900)
    finally:
        archive.unlink(missing_ok=True)
    return digest_file.read_text().strip()


def is_oci_archive(archive: Path) -> bool:
    """Docker Engine 25 and later save an OCI layout; Podman, and older engines, Docker's own format."""
    with tarfile.open(archive) as tar:
        return "oci-layout" in tar.getnames()


def skopeo_source(archive: Path) -> list[str]:
    """skopeo's source for a saved image, published as OCI. An OCI layout is copied as it is, its
    config byte for byte, so that Docker's fields OCI does not define stay: the HEALTHCHECK. Docker's
    own format is converted, and skopeo's conversion drops them."""
    return [f"oci-archive:{archive}"] if is_oci_archive(archive) else ["--format", "oci", f"docker-archive:{archive}"]


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_type(source: str) -> str:
    """The build type this project defines: its page in the source repository, and the version."""
    return f"{source}/blob/HEAD/{BUILD_TYPE_PAGE}"


def debian_package_uri(package: dict) -> str:
    """A Debian package at the version the build installed, as a package URL."""
    return f"pkg:deb/debian/{package['name']}@{package['version']}?arch={package['architecture']}"


def provenance(record: dict, variant: str, requirements_sha256: str) -> dict:
    """SLSA provenance v1 of one image, from the record its build wrote (build_record.py)."""
    labels = record["labels"]
    source, commit = labels["org.opencontainers.image.source"], labels["org.opencontainers.image.revision"]
    base = {
        "name": "base",
        "uri": f"docker-image://{record['base']['name']}",
        "digest": {"sha256": record["base"]["digest"].removeprefix("sha256:")},
    }
    if record["base"]["name"] != pinned_base():
        base["annotations"] = {
            "stand-in": f"built from Debian's packages by scripts/1-setup/base-image.sh in place of {pinned_base()}; "
            "the digest is its image ID, as it was never pushed to a registry"
        }
    packages = [{"name": package["name"], "uri": debian_package_uri(package)} for package in record["debianPackages"]]
    # What the build stage installed and the image does not ship (secure's binutils): a rebuild needs it too.
    packages += [
        {"name": package["name"], "uri": debian_package_uri(package), "annotations": {"shipped": False}}
        for package in record.get("buildStagePackages", [])
    ]
    run_details = {
        "builder": {"id": record["builder"], "version": {record["engine"]["name"]: record["engine"]["version"]}},
        "metadata": {"startedOn": record["startedOn"], "finishedOn": record["finishedOn"]},
    }
    if record["invocation"]:
        run_details["metadata"]["invocationId"] = record["invocation"]
    return {
        "buildDefinition": {
            "buildType": build_type(source),
            "externalParameters": {
                "source": {"uri": f"git+{source}", "digest": {"gitCommit": commit}},
                "variant": variant,
                "dockerfile": record["dockerfile"],
                "platform": record["platform"],
                "buildContexts": record["buildContexts"],
                "buildArgs": record["buildArgs"],
                "labels": labels,
            },
            "resolvedDependencies": [
                {"name": "source", "uri": f"git+{source}@{commit}", "digest": {"gitCommit": commit}},
                base,
                {
                    "name": "requirements.txt",
                    "uri": f"git+{source}@{commit}#requirements.txt",
                    "digest": {"sha256": requirements_sha256},
                },
                *packages,
            ],
        },
        "runDetails": run_details,
    }


def pinned_base() -> str:
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("FROM "):
            return line.split()[1]
    raise Failed("Dockerfile has no `FROM` line naming the base.")


def git(*args: str) -> str:
    return run("git", "-C", str(ROOT), *args).strip()


def committed_sha256(commit: str, path: str) -> str:
    """The digest of a file as the commit holds it, whatever the working tree holds now."""
    blob = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:{path}"], capture_output=True, check=True)
    return hashlib.sha256(blob.stdout).hexdigest()


def build_record(records: Path, variant: str, image: str, source: str) -> dict:
    """The record of the build that made the image, once the image and its labels are shown to be
    what the checkout's commit builds; refuse, with a sentence, what is not."""
    again = f"build it again (make build-{variant}, with the IMAGE and PLATFORM it was built with), then push"
    path = build_record_path(records, image)
    if not path.exists():
        raise Failed(
            f"{image} has no build record in {records}: it was not built by make build-{variant} here; {again}."
        )
    record = json.loads(path.read_text())
    if record["imageId"] != docker("image", "inspect", "--format", "{{.Id}}", image).strip():
        raise Failed(f"{image} is not the image its build record describes (another build took its tag); {again}.")
    labels = record["labels"]
    version, revision = (
        labels.get("org.opencontainers.image.version", ""),
        labels.get("org.opencontainers.image.revision"),
    )
    if version.endswith("-dirty"):
        raise Failed(
            f"{image} was built from a tree with uncommitted changes (version {version}): its provenance could name "
            f"no commit that builds it. Commit the changes, {again}."
        )
    head = git("rev-parse", "HEAD")
    if revision != head:
        raise Failed(f"{image} was built from commit {revision}, not the checkout's {head}; {again}.")
    expected = {
        "version": git("describe", "--tags", "--always"),
        "source": source,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(git("log", "-1", "--format=%ct")))),
    }
    for key, value in expected.items():
        if labels.get(f"org.opencontainers.image.{key}") != value:
            raise Failed(
                f"{image}'s label org.opencontainers.image.{key} is {labels.get(f'org.opencontainers.image.{key}')!r}, "
                f"and commit {head} gives {value!r}; {again}."
            )
    if not record["builder"]:
        raise Failed(
            f"{image}'s source is {source}, a folder, not a URL a consumer can fetch: give the repository a remote "
            "(git remote add origin URL) or SOURCE_URL=..., build again, then push."
        )
    return record


def cosign_sign_args(key: Path | None) -> list[str]:
    """Sign with the key and never upload to the public log; without a key, keyless and logged."""
    return ["--key", str(key), "--tlog-upload=false"] if key else []


def attest(args: argparse.Namespace, reference: str, predicate_type: str, predicate: Path, image: str) -> None:
    """Attest the predicate about image at reference, the image or its index; with --unsigned, leave
    it in that folder for the job that signs, named after the digest it is attached to (and, on an
    index, the image's digest too: the index carries one a platform)."""
    if args.unsigned:
        digest, image = reference.rsplit("@sha256:", 1)[1], image.rsplit("@sha256:", 1)[1]
        name = f"{digest}.{predicate_type}.json" if digest == image else f"{digest}.{image}.{predicate_type}.json"
        shutil.copyfile(predicate, args.unsigned / name)
        return
    signing = cosign_sign_args(args.key)
    cosign("attest", "--yes", *signing, "--type", predicate_type, "--predicate", str(predicate), reference)


def attest_image(args: argparse.Namespace, image: str, index: str, sbom: Path, provenance: Path) -> None:
    """Attach one image's SBOM and provenance to the image, and to the index that holds it, so that
    `cosign verify-attestation REPOSITORY:TAG`, which reads the index, finds them too."""
    for reference in (image, index):
        attest(args, reference, "cyclonedx", sbom, image)
        attest(args, reference, "slsaprovenance1", provenance, image)


def recorded_bases(records: dict[str, dict]) -> list[dict]:
    """The bases the builds recorded, by name and digest, as the policy's #bases admits them."""
    bases = {(record["base"]["name"], record["base"]["digest"].removeprefix("sha256:")) for record in records.values()}
    return [{"uri": f"docker-image://{name}", "sha256": digest} for name, digest in sorted(bases)]


def sign(args: argparse.Namespace, index: str) -> None:
    """Sign the index and each platform's image it lists; with --unsigned, that is the job that signs."""
    if not args.unsigned:
        cosign("sign", "--yes", "--recursive", *cosign_sign_args(args.key), index)


def move_tag(tag: str, index: str) -> None:
    """Point the tag at the index, which is signed, and check the registry holds it so."""
    imagetools_create(tag, index)
    if manifest_digest(tag) != index.rsplit("@", 1)[1]:
        raise Failed(f"{tag} names another index than {index}, which was signed.")
    say(f"{tag} names it now.")


def push(args: argparse.Namespace) -> None:
    if args.key:
        ask_password("to sign with it; nothing was pushed")
    plan = [(variant, images.split(",")) for variant, images in (entry.split("=", 1) for entry in args.images)]
    records = {
        image: build_record(args.records, variant, image, args.source) for variant, images in plan for image in images
    }
    commit = git("rev-parse", "HEAD")
    requirements = committed_sha256(commit, "requirements.txt")
    repository = args.repository
    if args.unsigned:
        args.unsigned.mkdir(parents=True, exist_ok=True)
    published = {
        "repository": repository,
        "source": args.source,
        "commit": commit,
        "bases": recorded_bases(records),
        "variants": {},
    }
    trivy = scan.trivy_command()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="publish-") as folder:
        work = Path(folder)
        for variant, images in plan:
            platforms = {}
            for image in images:
                platform = platform_of(image)
                digest = push_image(image, f"{repository}:{variant}-{platform.replace('/', '-')}", work)
                platforms[platform] = {"image": image, "digest": digest}
                say(f"pushed {image} ({platform}) as {repository}@{digest}")
            # The index is signed and attested under the version's tag before the variant's tag moves
            # to it: a push that fails on the way leaves that tag where it was.
            version_tag, variant_tag = f"{repository}:{variant}-{args.version}", f"{repository}:{variant}"
            sources = [f"{repository}@{entry['digest']}" for entry in platforms.values()]
            imagetools_create(version_tag, *sources)
            index = manifest_digest(version_tag)
            say(f"{version_tag}: index {repository}@{index} of {', '.join(platforms)}")
            for entry in platforms.values():
                report = scan.trivy_report(trivy, entry["image"], work, vulnerabilities=False)
                (work / "report.json").write_text(json.dumps(report))
                scan.convert(trivy, work / "report.json", "cyclonedx", work / "sbom.cdx.json")
                (work / "provenance.json").write_text(
                    json.dumps(provenance(records[entry["image"]], variant, requirements))
                )
                image = f"{repository}@{entry['digest']}"
                attest_image(args, image, f"{repository}@{index}", work / "sbom.cdx.json", work / "provenance.json")
            # Signed last, after every attestation: an index whose signing was stopped half-way has
            # no signature, and nothing that checks one takes it.
            sign(args, f"{repository}@{index}")
            if args.unsigned:
                say(f"wrote the predicates of {repository}@{index} into {args.unsigned}; {variant_tag} stays.")
            else:
                say(
                    f"signed {repository}@{index} and the image of each platform; attached their SBOMs and "
                    "provenance to each image and to the index."
                )
                move_tag(variant_tag, f"{repository}@{index}")
            published["variants"][variant] = {
                "tags": [variant_tag, version_tag],
                "index": index,
                "platforms": {platform: entry["digest"] for platform, entry in platforms.items()},
            }
    args.published.write_text(json.dumps(published, indent=2) + "\n")
    say(f"published in {time.monotonic() - started:.0f} s; the digests are in {args.published}.")
    if args.unsigned:
        return
    digests = [d for entry in published["variants"].values() for d in (entry["index"], *entry["platforms"].values())]
    say(f"the signatures and attestations take {supply_chain_bytes(repository, digests):,} bytes in the registry.")


def imagetools_create(tag: str, *sources: str) -> None:
    """An index of the sources under tag; of one index alone, that index to the byte."""
    run(*DOCKER, "buildx", "imagetools", "create", "--progress", "plain", "--tag", tag, *sources, timeout=300)


def supply_chain_bytes(repository: str, digests: list[str]) -> int:
    """The bytes of the signature and attestation manifests cosign attached to these digests, with
    their blobs: what signing adds to the registry beside the images."""
    total = 0
    for digest in digests:
        for suffix in ("sig", "att"):
            reference = f"{repository}:{digest.replace(':', '-')}.{suffix}"
            raw = raw_manifest(reference, check=False)
            if raw is None:
                continue
            manifest = json.loads(raw)
            total += len(raw.encode()) + manifest["config"]["size"]
            total += sum(layer["size"] for layer in manifest["layers"])
    return total


# --- verify ---


def signers(args: argparse.Namespace, published: dict) -> list[tuple[str, list[str]]]:
    """Who may have signed, each with cosign's arguments that check it: each public key, newest
    first; or the keyless identity, whose certificate must name the published commit, where one is
    given, as the one its workflow ran at."""
    if args.key:
        return [(f"the key {key}", ["--key", str(key), "--insecure-ignore-tlog=true"]) for key in args.key]
    identity = ["--certificate-identity", args.identity, "--certificate-oidc-issuer", args.issuer]
    if published.get("commit"):
        identity += ["--certificate-github-workflow-sha", published["commit"]]
    return [(f"{args.identity} ({args.issuer})", identity)]


def names(accepted: list[tuple[str, list[str]]]) -> str:
    return " or ".join(name for name, _ in accepted)


def verify_signature(accepted: list[tuple[str, list[str]]], what: str, reference: str) -> None:
    for _, arguments in accepted:
        result = cosign("verify", *arguments, reference, check=False)
        if result.returncode == 0:
            return
    raise Failed(f"{what} {reference} carries no valid signature by {names(accepted)}: {scan.last_line(result.stderr)}")


def policy_values(published: dict) -> str:
    """The publication's values for provenance.cue, in CUE: JSON strings and lists are CUE too."""
    return (
        "\n// The publication's values, written by make push.\n"
        f"#source: {json.dumps(published['source'])}\n"
        f"#commit: {json.dumps(published['commit'])}\n"
        f"#bases: {json.dumps(published['bases'])}\n"
    )


def policy_text(published: dict) -> str:
    """The provenance policy with the publication's values: what make verify and the admission
    policies check, the same text everywhere."""
    return POLICY.read_text() + policy_values(published)


def verify_attestation(
    accepted: list[tuple[str, list[str]]], what: str, reference: str, kind: str, policy: Path | None = None
) -> list[dict]:
    """Check the attestations of one kind and return their predicates. cosign keeps only those signed
    by the signer whose subject is this image's digest (one about another digest, even signed with
    the right key, does not count), and with a policy, fails unless each meets it."""
    rules = ["--policy", str(policy)] if policy else []
    for _, arguments in accepted:
        result = cosign("verify-attestation", *arguments, *rules, "--type", kind, reference, check=False)
        if result.returncode == 0:
            payloads = [json.loads(line)["payload"] for line in result.stdout.splitlines()]
            return [json.loads(base64.b64decode(payload))["predicate"] for payload in payloads]
        if "validation errors occurred" in result.stderr:
            broken = [line[2:] for line in result.stderr.splitlines() if line.startswith("- ")]
            raise Failed(
                f"the {ATTESTATIONS[kind]} of {what} {reference}, signed by {names(accepted)}, does not meet the "
                f"policy {POLICY.relative_to(ROOT)}: " + "; ".join(broken)
            )
    raise Failed(
        f"{what} {reference} has no valid {ATTESTATIONS[kind]} attestation, signed and about this digest: "
        f"{scan.last_line(result.stderr)}"
    )


def verify_attestations(accepted: list[tuple[str, list[str]]], what: str, reference: str, policy: Path) -> None:
    """The SBOMs list components; the provenance meets the policy."""
    for sbom in verify_attestation(accepted, what, reference, "cyclonedx"):
        if not sbom.get("components"):
            raise Failed(f"the SBOM attestation of {what} {reference} lists no components.")
    verify_attestation(accepted, what, reference, "slsaprovenance1", policy)


def verify(args: argparse.Namespace) -> None:
    """Each check in turn; the first that fails ends it, named in the message."""
    if not args.published.exists():
        raise Failed(f"{args.published} does not exist: run make push first, which writes it.")
    published = json.loads(args.published.read_text())
    repository, accepted = published["repository"], signers(args, published)
    with tempfile.TemporaryDirectory(prefix="verify-") as folder:
        policy = Path(folder) / "provenance.cue"
        policy.write_text(policy_text(published))
        for variant, entry in published["variants"].items():
            index = entry["index"]
            for tag in entry["tags"]:
                now = manifest_digest(tag)
                if now != index:
                    raise Failed(
                        f"{tag} now names {now}, not {index}, which was published and signed: "
                        "something was pushed over the tag."
                    )
            verify_signature(accepted, "the index", f"{repository}@{index}")
            for platform, digest in entry["platforms"].items():
                what, reference = f"the {platform} image", f"{repository}@{digest}"
                verify_signature(accepted, what, reference)
                verify_attestations(accepted, what, reference, policy)
                commit = published["commit"][:12]
                say(f"{variant} {platform}: {reference} signed, with its SBOM and provenance of {commit}")
            verify_attestations(accepted, "the index", f"{repository}@{index}", policy)
            tags = ", ".join(entry["tags"])
            say(f"{tags}: {repository}@{index} signed, with the SBOM and provenance of each platform")


def promote(args: argparse.Namespace) -> None:
    """After a push with --unsigned and the signing: each variant's tag moved to its index, once the
    index's signature verifies; make verify then checks the rest."""
    if not args.published.exists():
        raise Failed(f"{args.published} does not exist: run make push first, which writes it.")
    published = json.loads(args.published.read_text())
    repository, accepted = published["repository"], signers(args, published)
    for variant, entry in published["variants"].items():
        index = f"{repository}@{entry['index']}"
        verify_signature(accepted, "the index", index)
        move_tag(f"{repository}:{variant}", index)


# --- deploy ---

# The variant the Kubernetes manifests and deploy/published/ run.
DEPLOYED = "secure"


def deploy_files(args: argparse.Namespace) -> None:
    if not args.published.exists():
        raise Failed(f"{args.published} does not exist: run make push first, which writes it.")
    published = json.loads(args.published.read_text())
    if DEPLOYED not in published["variants"]:
        raise Failed(
            f"the manifests run the {DEPLOYED} image, and {args.published} holds no {DEPLOYED}: publish it too."
        )
    repository, index = published["repository"], published["variants"][DEPLOYED]["index"]
    for key in args.key or []:
        if not key.exists():
            raise Failed(f"{key} does not exist: sign with make push, or give the keyless signer's identity.")
    args.overlay.mkdir(parents=True, exist_ok=True)
    (args.overlay / "published.env").write_text(
        f"PROJECT_NAME={PROJECT_NAME}\nREPOSITORY={repository}\nPUBLISHED_IMAGE={repository}@{index}\n"
    )
    (args.overlay / "signer.yaml").write_text(json.dumps(policy_controller_patch(args, published), indent=2) + "\n")
    (args.overlay / "kyverno").mkdir(exist_ok=True)
    (args.overlay / "kyverno" / "signer.yaml").write_text(json.dumps(kyverno_patch(args, published), indent=2) + "\n")
    signer = f"{len(args.key)} key(s)" if args.key else "the same identity"
    say(f"{args.overlay} deploys {repository}@{index}, admitted signed by {signer}, its provenance as the policy says.")


def policy_controller_patch(args: argparse.Namespace, published: dict) -> list[dict]:
    """The ClusterImagePolicy's authorities: one a signer, any of which admits, each with the provenance
    policy, the very text make verify gives cosign."""
    attestations = [
        {
            "name": "provenance",
            "predicateType": PROVENANCE_TYPE,
            "policy": {"type": "cue", "data": policy_text(published)},
        }
    ]
    if args.key:
        authorities = [
            {"name": key.stem, "key": {"data": key.read_text()}, "attestations": attestations} for key in args.key
        ]
    else:
        identities = [{"issuer": args.issuer, "subject": args.identity}]
        authorities = [{"name": "keyless", "keyless": {"identities": identities}, "attestations": attestations}]
    return [{"op": "replace", "path": "/spec/authorities", "value": authorities}]


def kyverno_conditions(published: dict) -> list[dict]:
    """provenance.cue's checks in Kyverno's terms: JMESPath about the predicate, each of its lines."""
    source, commit = published["source"], published["commit"]
    labels = "buildDefinition.externalParameters.labels"
    checks = [
        ("buildDefinition.buildType", "Equals", build_type(source)),
        ("buildDefinition.externalParameters.source.uri", "Equals", f"git+{source}"),
        ("buildDefinition.externalParameters.source.digest.gitCommit", "Equals", commit),
        (f'{labels}."org.opencontainers.image.source"', "Equals", source),
        (f'{labels}."org.opencontainers.image.revision"', "Equals", commit),
        (f"ends_with({labels}.\"org.opencontainers.image.version\", '-dirty')", "Equals", False),
        ("buildDefinition.resolvedDependencies[0].uri", "Equals", f"git+{source}@{commit}"),
        ("buildDefinition.resolvedDependencies[0].digest.gitCommit", "Equals", commit),
        (
            "join('@', [buildDefinition.resolvedDependencies[1].name, buildDefinition.resolvedDependencies[1].uri, "
            "buildDefinition.resolvedDependencies[1].digest.sha256])",
            "AnyIn",
            [f"base@{base['uri']}@{base['sha256']}" for base in published["bases"]],
        ),
        ("runDetails.builder.id", "AnyIn", [f"git+{source}@{commit}#Makefile", f"{source}/actions/runs/*"]),
    ]
    conditions = [{"key": f"{{{{ {key} }}}}", "operator": operator, "value": value} for key, operator, value in checks]
    return [{"all": conditions}]


def kyverno_patch(args: argparse.Namespace, published: dict) -> list[dict]:
    """Kyverno's ClusterPolicy: the signers, any one of which admits (count 1), for the image's
    signature and for its provenance, and the provenance's conditions."""
    if args.key:
        # make push signs with a key without the public log, and a key has no certificate: Kyverno's
        # defaults would look for a log entry and for a certificate's timestamp (SCT), find neither,
        # and refuse every image. The signature itself is checked all the same.
        entries = [
            {"keys": {"publicKeys": key.read_text(), "rekor": {"ignoreTlog": True}, "ctlog": {"ignoreSCT": True}}}
            for key in args.key
        ]
    else:
        # Keyless, the certificate names the commit the signing workflow ran at: the published one.
        keyless = {
            "subject": args.identity,
            "issuer": args.issuer,
            "additionalExtensions": {"githubWorkflowSha": published["commit"]},
        }
        entries = [{"keyless": keyless}]
    attestors = [{"count": 1, "entries": entries}]
    rule = "/spec/rules/0/verifyImages/0"
    return [
        {"op": "replace", "path": f"{rule}/attestors", "value": attestors},
        {"op": "replace", "path": f"{rule}/attestations/0/attestors", "value": attestors},
        {"op": "replace", "path": f"{rule}/attestations/0/conditions", "value": kyverno_conditions(published)},
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    registry = commands.add_parser("registry", help="start or stop the local registry")
    registry.add_argument("action", choices=["start", "stop"])
    registry.add_argument("folder", type=Path)
    registry.add_argument("port", type=int, nargs="?", default=5000)
    for name, summary in (
        ("keys", "make a cosign key pair"),
        ("keys-rotate", "make a new key pair beside the others, which signs from now on"),
        ("keys-retire", "retire every key pair but the newest"),
    ):
        commands.add_parser(name, help=summary).add_argument("folder", type=Path)
    push_command = commands.add_parser("push", help="push, sign and attest")
    push_command.add_argument("--repository", required=True)
    push_command.add_argument("--version", required=True)
    push_command.add_argument("--published", type=Path, required=True)
    push_command.add_argument("--keys", type=Path, help="the key pairs' folder: its newest signs; keyless without")
    push_command.add_argument("--records", type=Path, required=True, help="the folder of the build records")
    push_command.add_argument("--source", required=True, help="the source repository's URL the labels must name")
    push_command.add_argument(
        "--unsigned", type=Path, help="sign nothing: write the predicates into this folder for the job that signs"
    )
    push_command.add_argument("images", nargs="+", metavar="VARIANT=IMAGE[,IMAGE...]")
    verify_command = commands.add_parser("verify", help="verify what push published")
    promote_command = commands.add_parser("promote", help="move each variant's tag to its index, once signed")
    deploy_command = commands.add_parser("deploy-files", help="write what deploy/published/ reads")
    deploy_command.add_argument("--overlay", type=Path, required=True)
    for command in (verify_command, promote_command, deploy_command):
        command.add_argument("--published", type=Path, required=True)
        command.add_argument("--keys", type=Path, help="the key pairs' folder: any of its public keys verifies")
        command.add_argument("--key", type=Path, action="append", help="a public key that verifies; repeatable")
        command.add_argument("--identity", help="the keyless signer's certificate identity")
        command.add_argument("--issuer", default=GITHUB_ISSUER, help="the keyless signer's OIDC issuer")
    args = parser.parse_args(argv)
    take_password()
    try:
        if args.command == "registry":
            registry_start(args.folder, args.port) if args.action == "start" else registry_stop(args.folder)
        elif args.command in ("keys", "keys-rotate", "keys-retire"):
            {"keys": keys, "keys-rotate": keys_rotate, "keys-retire": keys_retire}[args.command](args.folder)
        elif args.command == "push":
            args.key = signing_key(args.keys) if args.keys else None
            push(args)
        else:
            args.key = (args.key or []) + (public_keys(args.keys) if args.keys else [])
            if not args.key and not (args.identity and args.issuer):
                raise Failed("give the public keys (--keys or --key), or the signer's certificate identity and issuer.")
            {"verify": verify, "promote": promote, "deploy-files": deploy_files}[args.command](args)
    except Failed as error:
        print(f"publish: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(exit_on_failure(main, "publish"))
