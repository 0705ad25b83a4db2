"""Publish images to a registry, signed, with their SBOM and provenance attached; verify them.

Usage:
  publish.py registry start DIR PORT  a registry on 127.0.0.1:PORT (the CNCF Distribution
                                      registry, as a plain process), its storage in DIR
  publish.py registry stop DIR
  publish.py keys DIR                 a cosign key pair, DIR/cosign.key and DIR/cosign.pub
  publish.py push --repository REGISTRY/NAME --version VERSION --published FILE [--key KEY]
                  --records DIR --source URL VARIANT=IMAGE[,IMAGE...] ...
  publish.py verify --published FILE (--key PUBLIC_KEY | --identity ID --issuer URL)
  publish.py deploy-files --published FILE --overlay DIR (--key PUBLIC_KEY | --identity ID --issuer URL)

push publishes each variant's local images, one a platform (the images `make build` made, never
built again), as one multi-platform tag REGISTRY/NAME:VARIANT, an OCI image index, and as
REGISTRY/NAME:VARIANT-VERSION. It signs the index and each platform's image with cosign, attaches
to each platform's image its CycloneDX SBOM (Trivy, as `make scan` writes it) and its SLSA
provenance (v1), both as signed attestations, and writes the digests to FILE, with the commit and
the source. Without --key it signs keyless, with the identity of the CI job it runs in.

The provenance is made from the record each build wrote in DIR (scripts/2-build/build_record.py);
docs/reference/provenance.md defines its fields. So that it never describes a build that did not
happen, push refuses, before it pushes anything, an image built from uncommitted changes, from
another commit, with labels the commit does not give, without its record, or from a source that is
no URL.

verify checks, for the digests in FILE, in this order: that each tag still names the index that was
published; the index's signature; each platform image's signature; its SBOM attestation and its
provenance attestation, each signed and about that image's digest (cosign checks the subject); and
that the provenance names the commit and source that were published, this project's build type,
and its builder. It names the first check that fails.

deploy-files writes what the overlay deploy/published/ reads beside its kustomization.yaml:
published.env, the secure image's index by its digest (Compose reads it too), and signer.yaml, who
signed it (the public key, or the keyless identity), for the admission policy.

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
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# docker_tools, the helper every script shares, sits in scripts/, one folder up; the build records
# are written by 2-build's build_record.py.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "2-build"))
import scan
from build_record import record_path as build_record_path
from docker_tools import DOCKER, PROJECT_NAME, ROOT, docker, exit_on_failure, request, run, run_command, tool

# The two attestations, by cosign's --type (which gives the predicate types https://cyclonedx.org/bom
# and https://slsa.dev/provenance/v1): what verify calls each.
ATTESTATIONS = {"cyclonedx": "SBOM", "slsaprovenance1": "provenance"}
# The build type of the provenance: the page that defines it, in the source repository, and its
# version. A change to what the provenance's fields mean is a new version there and here.
BUILD_TYPE_PAGE = "docs/reference/provenance.md#v1"
# Where the CI job's keyless certificates come from.
GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
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


# --- keys ---


def keys(folder: Path) -> None:
    private, public = folder / "cosign.key", folder / "cosign.pub"
    if private.exists() and public.exists():
        say(f"the signing key is {private}, its public key {public}.")
        return
    if "COSIGN_PASSWORD" not in os.environ:
        raise Failed(
            "set COSIGN_PASSWORD to the password that protects the signing key (export COSIGN_PASSWORD=...), "
            "or, for a local trial only, make keys COSIGN_PASSWORD= for a key without one."
        )
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    run(tool("cosign"), "generate-key-pair", "--output-key-prefix", str(folder / "cosign"))
    protection = "protected by COSIGN_PASSWORD" if os.environ["COSIGN_PASSWORD"] else "WITHOUT a password"
    say(f"made the signing key {private}, {protection}, and its public key {public}: give that one to consumers.")


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
    command = [tool("skopeo"), "copy", "--quiet", "--format", "oci", "--digestfile", str(digest_file)]
    if is_local(target):
        command.append("--dest-tls-verify=false")
    try:
        run(*command, f"docker-archive:{archive}", f"docker://{target}", timeout=900)
    finally:
        archive.unlink(missing_ok=True)
    return digest_file.read_text().strip()


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_type(source: str) -> str:
    """The build type this project defines: its page in the source repository, and the version."""
    return f"{source}/blob/HEAD/{BUILD_TYPE_PAGE}"


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
    packages = [
        {
            "name": package["name"],
            "uri": f"pkg:deb/debian/{package['name']}@{package['version']}?arch={package['architecture']}",
        }
        for package in record["debianPackages"]
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


def attest(key: Path | None, reference: str, predicate_type: str, predicate: Path) -> None:
    signing = cosign_sign_args(key)
    run(tool("cosign"), "attest", "--yes", *signing, "--type", predicate_type, "--predicate", str(predicate), reference)


def push(args: argparse.Namespace) -> None:
    if args.key and "COSIGN_PASSWORD" not in os.environ:
        raise Failed(
            "set COSIGN_PASSWORD to the signing key's password (empty for a key made without one); nothing was pushed."
        )
    plan = [(variant, images.split(",")) for variant, images in (entry.split("=", 1) for entry in args.images)]
    records = {
        image: build_record(args.records, variant, image, args.source) for variant, images in plan for image in images
    }
    commit = git("rev-parse", "HEAD")
    requirements = committed_sha256(commit, "requirements.txt")
    repository = args.repository
    published = {"repository": repository, "source": args.source, "commit": commit, "variants": {}}
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
            run(tool("cosign"), "sign", "--yes", "--recursive", *cosign_sign_args(args.key), f"{repository}@{index}")
            for entry in platforms.values():
                reference = f"{repository}@{entry['digest']}"
                report = scan.trivy_report(trivy, entry["image"], work, vulnerabilities=False)
                (work / "report.json").write_text(json.dumps(report))
                scan.convert(trivy, work / "report.json", "cyclonedx", work / "sbom.cdx.json")
                attest(args.key, reference, "cyclonedx", work / "sbom.cdx.json")
                (work / "provenance.json").write_text(
                    json.dumps(provenance(records[entry["image"]], variant, requirements))
                )
                attest(args.key, reference, "slsaprovenance1", work / "provenance.json")
            say(f"signed {repository}@{index} and the image of each platform; attached their SBOMs and provenance.")
            imagetools_create(variant_tag, f"{repository}@{index}")
            if manifest_digest(variant_tag) != index:
                raise Failed(f"{variant_tag} names another index than {index}, which was signed.")
            say(f"{variant_tag} names it now.")
            published["variants"][variant] = {
                "tags": [variant_tag, version_tag],
                "index": index,
                "platforms": {platform: entry["digest"] for platform, entry in platforms.items()},
            }
    args.published.write_text(json.dumps(published, indent=2) + "\n")
    say(f"published in {time.monotonic() - started:.0f} s; the digests are in {args.published}.")
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


def cosign_verify_args(args: argparse.Namespace) -> list[str]:
    if args.key:
        return ["--key", str(args.key), "--insecure-ignore-tlog=true"]
    return ["--certificate-identity", args.identity, "--certificate-oidc-issuer", args.issuer]


def verify_signature(args: argparse.Namespace, what: str, reference: str) -> None:
    result = run_command(tool("cosign"), "verify", *cosign_verify_args(args), reference, check=False)
    if result.returncode != 0:
        signer = f"the key {args.key}" if args.key else f"{args.identity} ({args.issuer})"
        raise Failed(f"{what} {reference} carries no valid signature by {signer}: {scan.last_line(result.stderr)}")


def verify_attestation(args: argparse.Namespace, what: str, reference: str, kind: str) -> dict:
    """Check one attestation and return its predicate. cosign keeps only the attestations of that type
    signed by the signer whose subject is this image's digest: one about another digest, even signed
    with the right key, does not count."""
    command = [tool("cosign"), "verify-attestation", *cosign_verify_args(args), "--type", kind, reference]
    result = run_command(*command, check=False)
    if result.returncode != 0:
        raise Failed(
            f"{what} {reference} has no valid {ATTESTATIONS[kind]} attestation, signed and about this digest: "
            f"{scan.last_line(result.stderr)}"
        )
    statement = json.loads(base64.b64decode(json.loads(result.stdout.splitlines()[0])["payload"]))
    return statement["predicate"]


def verify_provenance(predicate: dict, published: dict, what: str) -> None:
    """The provenance names the commit and the source that were published, and this project's
    builder and build type: a provenance signed with the right key that claims another build fails."""
    source, commit = published["source"], published["commit"]
    definition, builder = predicate["buildDefinition"], predicate["runDetails"]["builder"]["id"]
    claims = {
        "the commit": (definition["externalParameters"]["source"]["digest"].get("gitCommit"), commit),
        "the source": (definition["externalParameters"]["source"]["uri"], f"git+{source}"),
        "the build type": (definition["buildType"], build_type(source)),
    }
    for claim, (found, expected) in claims.items():
        if found != expected:
            raise Failed(f"the provenance of {what} names {claim} {found}, not {expected}, which was published.")
    builders = (f"git+{source}@{commit}#Makefile", f"{source}/actions/runs/")
    if not (builder == builders[0] or builder.startswith(builders[1])):
        raise Failed(
            f"the provenance of {what} names the builder {builder}, neither this repository's Makefile at {commit} "
            f"nor a workflow run of {source}."
        )


def verify(args: argparse.Namespace) -> None:
    """Each check in turn; the first that fails ends it, named in the message."""
    if not args.published.exists():
        raise Failed(f"{args.published} does not exist: run make push first, which writes it.")
    published = json.loads(args.published.read_text())
    repository = published["repository"]
    for variant, entry in published["variants"].items():
        index = entry["index"]
        for tag in entry["tags"]:
            now = manifest_digest(tag)
            if now != index:
                raise Failed(
                    f"{tag} now names {now}, not {index}, which was published and signed: "
                    "something was pushed over the tag."
                )
        verify_signature(args, "the index", f"{repository}@{index}")
        for platform, digest in entry["platforms"].items():
            what, reference = f"the {platform} image", f"{repository}@{digest}"
            verify_signature(args, what, reference)
            sbom = verify_attestation(args, what, reference, "cyclonedx")
            if not sbom.get("components"):
                raise Failed(f"the SBOM attestation of {what} {reference} lists no components.")
            provenance = verify_attestation(args, what, reference, "slsaprovenance1")
            verify_provenance(provenance, published, f"{what} {reference}")
            say(f"{variant} {platform}: {reference} signed, with its SBOM and provenance of {published['commit'][:12]}")
        say(f"{', '.join(entry['tags'])}: {repository}@{index} signed")


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
    if args.key:
        if not args.key.exists():
            raise Failed(f"{args.key} does not exist: sign with make push, or give the keyless signer's identity.")
        signer = {"key": {"data": args.key.read_text()}}
    else:
        signer = {"keyless": {"identities": [{"issuer": args.issuer, "subject": args.identity}]}}
    args.overlay.mkdir(parents=True, exist_ok=True)
    (args.overlay / "published.env").write_text(
        f"PROJECT_NAME={PROJECT_NAME}\nREPOSITORY={repository}\nPUBLISHED_IMAGE={repository}@{index}\n"
    )
    patch = [{"op": "add", "path": f"/spec/authorities/0/{kind}", "value": value} for kind, value in signer.items()]
    (args.overlay / "signer.yaml").write_text(json.dumps(patch, indent=2) + "\n")
    say(f"{args.overlay} deploys {repository}@{index}, admitted when signed by the same {next(iter(signer))}.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    registry = commands.add_parser("registry", help="start or stop the local registry")
    registry.add_argument("action", choices=["start", "stop"])
    registry.add_argument("folder", type=Path)
    registry.add_argument("port", type=int, nargs="?", default=5000)
    keys_command = commands.add_parser("keys", help="make a cosign key pair")
    keys_command.add_argument("folder", type=Path)
    push_command = commands.add_parser("push", help="push, sign and attest")
    push_command.add_argument("--repository", required=True)
    push_command.add_argument("--version", required=True)
    push_command.add_argument("--published", type=Path, required=True)
    push_command.add_argument("--key", type=Path, help="cosign's private key; keyless without")
    push_command.add_argument("--records", type=Path, required=True, help="the folder of the build records")
    push_command.add_argument("--source", required=True, help="the source repository's URL the labels must name")
    push_command.add_argument("images", nargs="+", metavar="VARIANT=IMAGE[,IMAGE...]")
    verify_command = commands.add_parser("verify", help="verify what push published")
    deploy_command = commands.add_parser("deploy-files", help="write what deploy/published/ reads")
    deploy_command.add_argument("--overlay", type=Path, required=True)
    for command in (verify_command, deploy_command):
        command.add_argument("--published", type=Path, required=True)
        command.add_argument("--key", type=Path, help="cosign's public key")
        command.add_argument("--identity", help="the keyless signer's certificate identity")
        command.add_argument("--issuer", default=GITHUB_ISSUER, help="the keyless signer's OIDC issuer")
    args = parser.parse_args(argv)
    try:
        if args.command == "registry":
            registry_start(args.folder, args.port) if args.action == "start" else registry_stop(args.folder)
        elif args.command == "keys":
            keys(args.folder)
        elif args.command == "push":
            push(args)
        elif not args.key and not (args.identity and args.issuer):
            raise Failed("give the public key (--key), or the signer's certificate identity and issuer.")
        elif args.command == "verify":
            verify(args)
        else:
            deploy_files(args)
    except Failed as error:
        print(f"publish: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(exit_on_failure(main, "publish"))
