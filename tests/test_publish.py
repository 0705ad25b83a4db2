"""Publishing: `make registry`, `make push` and `make verify` against a registry on this machine.

`make push` publishes only what a commit builds, so the module publishes a snapshot: the working
tree as it is, uncommitted changes too, committed in a throwaway clone, never the checkout itself.
It starts a registry of its own on a free port, its storage in a temporary folder, builds the secure
image in the clone and publishes it for both platforms, signed with a key made for the module. Each
way a published image can be tampered with is then made real in a repository of its own, and
`make verify` must fail on it, naming the check that failed.
"""

import base64
import fnmatch
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import build_record
import jmespath
import jsonschema
import publish
import pytest
import scan
import yaml
from bench import app_module
from containers import LOCKDOWN, PROJECT_NAME, ROOT, docker, inspect, make, must, platform_tag, request
from docker_tools import WSGI_APP, Response, engine_platform, free_port, podman_run_flags, tool

PASSWORD = "a password for this test"
# The snapshot's remote: a published source must be a URL. Nothing is fetched from it.
SOURCE = f"https://git.example.org/{PROJECT_NAME}"
PROVENANCE_SCHEMA = ROOT / "tests" / "schemas" / "slsa-provenance-v1.schema.json"
# The predicate types of the two attestations.
SBOM, PROVENANCE = "https://cyclonedx.org/bom", "https://slsa.dev/provenance/v1"


def make_env(**variables: str) -> list[str]:
    return [f"{name}={value}" for name, value in variables.items()]


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> str:
    """A registry on a free port of 127.0.0.1, started with `make registry`; stopped at the end."""
    folder = tmp_path_factory.mktemp("registry")
    port = free_port()
    settings = make_env(REGISTRY_PORT=str(port), REGISTRY_DIR=str(folder))
    must(make("registry", *settings), "`make registry`")
    yield f"127.0.0.1:{port}"
    must(make("registry-stop", *settings), "`make registry-stop`")
    assert not publish.registry_answers(port), "`make registry-stop` left the registry running"


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> Path:
    """The signing key pair, made by `make keys` and protected by a password."""
    folder = tmp_path_factory.mktemp("keys") / "keys"
    must(make("keys", f"KEYS_DIR={folder}", f"COSIGN_PASSWORD={PASSWORD}"), "`make keys`")
    return folder


def git(folder: Path, *args: str) -> str:
    command = ["git", "-C", str(folder), "-c", "user.name=test", "-c", "user.email=test@localhost", *args]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()


def snapshot_of(checkout: Path, clone: Path) -> None:
    """Clone checkout into clone and commit there the checkout's working tree as it is: changed,
    new and deleted files alike, what .gitignore ignores left out. The checkout is only read."""
    subprocess.run(["git", "clone", "--quiet", "--shared", str(checkout), str(clone)], check=True)
    listed = git(checkout, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    for name in sorted(set(filter(None, listed.split("\0")))):
        source, target = checkout / name, clone / name
        if target.is_symlink() or target.exists():
            target.unlink()
        if source.is_symlink() or source.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target, follow_symlinks=False)
    git(clone, "add", "--all")
    git(clone, "commit", "--quiet", "--allow-empty", "--message", "The working tree as the tests found it")
    git(clone, "remote", "set-url", "origin", SOURCE)
    # Older than the checkout's test environment, which the clone's make uses: make sees it up to date.
    for requirements in clone.glob("requirements*.txt"):
        os.utime(requirements, (0, 0))


@dataclass
class Snapshot:
    folder: Path
    image: str


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory) -> Snapshot:
    """A throwaway clone holding the working tree as one scratch commit, which the module builds
    and publishes under an image name of its own; the images built there are removed at the end."""
    clone = tmp_path_factory.mktemp("snapshot") / PROJECT_NAME
    snapshot_of(ROOT, clone)
    name = f"{PROJECT_NAME}-test-{uuid.uuid4().hex[:8]}"
    yield Snapshot(clone, name)
    tags = docker("images", "--format", "{{.Repository}}:{{.Tag}}", name).stdout.split()
    if tags:
        docker("image", "rm", "--force", *tags, check=False)


def in_snapshot(snapshot: Snapshot, *args: str, **variables: str) -> subprocess.CompletedProcess:
    """A make target run in the snapshot, on its image name, with the checkout's test environment."""
    settings = make_env(**{"IMAGE": snapshot.image, "VENV": str(ROOT / ".venv"), **variables})
    return make(*args, *settings, project=snapshot.folder)


def push(snapshot: Snapshot, repository: str, keys: Path, published: Path, *settings: str, **variables: str) -> dict:
    """`make push` of the snapshot's secure image to REGISTRY, with the overlay's inputs written
    into the folder `overlay` beside the digests; what it published."""
    result = in_snapshot(
        snapshot,
        "push",
        "PUBLISH=secure",
        *settings,
        REGISTRY=repository,
        KEYS_DIR=str(keys),
        PUBLISHED=str(published),
        OVERLAY=str(published.parent / "overlay"),
        COSIGN_PASSWORD=PASSWORD,
        **variables,
    )
    must(result, "`make push`")
    return json.loads(published.read_text())


def verify(published: Path, keys: Path) -> subprocess.CompletedProcess:
    return make("verify", f"PUBLISHED={published}", f"KEYS_DIR={keys}")


def verify_fails(single: dict, keys: Path, message: str) -> None:
    """`make verify` fails, and its message says this."""
    result = verify(single["file"], keys)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


@pytest.fixture(scope="module")
def published(snapshot, registry, keys, tmp_path_factory) -> dict:
    """The snapshot's secure image published for both platforms."""
    path = tmp_path_factory.mktemp("published") / "published.json"
    return push(snapshot, registry, keys, path) | {"file": path}


@pytest.fixture
def single(snapshot, registry, keys, tmp_path) -> dict:
    """The snapshot's secure image published for this machine's platform alone, in a repository of
    its own, for a test to tamper with."""
    repository = f"{registry}/{tmp_path.name.lower()}"
    return push(snapshot, repository, keys, tmp_path / "published.json", "PUBLISH_PLATFORM=") | {
        "file": tmp_path / "published.json"
    }


def delete_tag(repository: str, tag: str) -> None:
    """Delete the manifest a tag names, as someone with write access to the registry can."""
    accept = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
    found = registry_request(repository, f"manifests/{tag}", "HEAD", headers=accept)
    assert found.status == 200, f"{repository}:{tag}: {found.status}"
    digest = found.headers["Docker-Content-Digest"]
    deleted = registry_request(repository, f"manifests/{digest}", "DELETE")
    assert deleted.status == 202, f"{repository}@{digest}: {deleted.status} {deleted.body!r}"


def registry_request(repository: str, path: str, method: str = "GET", **options) -> Response:
    """One request to the registry's API about the repository."""
    address, name = repository.split("/", 1)
    host, port = address.split(":")
    return request(int(port), f"/v2/{name}/{path}", method, host=host, timeout=30, **options)


def cosign(*args: str, password: str = "") -> subprocess.CompletedProcess:
    """cosign, with the password of the private key it may read (the other keys here have none)."""
    environment = {**os.environ, "COSIGN_PASSWORD": password}
    return subprocess.run([tool("cosign"), *args], capture_output=True, text=True, timeout=120, env=environment)


def attestation(keys: Path, reference: str, kind: str) -> dict:
    """The statement of an attestation, checked by cosign itself, as a consumer reads it."""
    public_key = ["--key", str(keys / "cosign.pub"), "--insecure-ignore-tlog"]
    result = cosign("verify-attestation", *public_key, "--type", kind, reference)
    assert result.returncode == 0, result.stderr
    return json.loads(base64.b64decode(json.loads(result.stdout.splitlines()[0])["payload"]))


@pytest.mark.integration
@pytest.mark.docker
def test_push_publishes_one_two_platform_oci_index_under_the_variant_and_the_version_tags(published):
    entry = published["variants"]["secure"]
    index = json.loads(publish.raw_manifest(entry["tags"][0]))
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    platforms = {f"{m['platform']['os']}/{m['platform']['architecture']}": m["digest"] for m in index["manifests"]}
    assert platforms == entry["platforms"]
    assert set(platforms) == {"linux/amd64", "linux/arm64"}
    assert re.fullmatch(r".+:secure-[0-9a-f]{7,}(-dirty)?", entry["tags"][1])
    for tag in entry["tags"]:
        assert publish.manifest_digest(tag) == entry["index"]


@pytest.mark.integration
@pytest.mark.docker
def test_each_platforms_published_image_keeps_the_health_check_it_was_built_with(published, snapshot):
    """skopeo copies the OCI layout `docker save` writes as it is: the config keeps Docker's own
    fields, which OCI does not define and a conversion drops, the HEALTHCHECK among them."""
    built = docker("image", "inspect", "--format", "{{json .Config.Healthcheck}}", f"{snapshot.image}:secure").stdout
    assert json.loads(built)["Test"][0] == "CMD", built
    repository, entry = published["repository"], published["variants"]["secure"]
    for platform, digest in entry["platforms"].items():
        command = [tool("skopeo"), "inspect", "--config", "--raw", "--tls-verify=false"]
        config = json.loads(subprocess.run([*command, f"docker://{repository}@{digest}"], capture_output=True,
                                           text=True, check=True, timeout=60).stdout)  # fmt: skip
        assert config["config"].get("Healthcheck") == json.loads(built), f"{platform}: {config['config']}"


@pytest.mark.integration
@pytest.mark.docker
def test_the_index_and_each_platforms_image_verify_on_their_own_with_the_public_key(published, keys):
    """The plain cosign commands the docs give consumers, outside the Makefile."""
    repository, entry = published["repository"], published["variants"]["secure"]
    for digest in (entry["index"], *entry["platforms"].values()):
        result = cosign("verify", "--key", str(keys / "cosign.pub"), "--insecure-ignore-tlog", f"{repository}@{digest}")
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)[0]["critical"]["image"]["docker-manifest-digest"] == digest


@pytest.mark.integration
@pytest.mark.docker
def test_make_verify_passes_on_what_make_push_published(published, keys):
    result = verify(published["file"], keys)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("signed, with its SBOM and provenance") == 2


@pytest.mark.integration
@pytest.mark.docker
def test_cosign_verify_attestation_on_the_tag_finds_each_platforms_provenance_meeting_the_policy(
    published, keys, tmp_path
):
    """What a consumer runs on the tag, which names the index: the provenance of both platforms,
    signed, about the index, meeting the policy with the publication's values."""
    policy = tmp_path / "provenance.cue"
    policy.write_text(publish.policy_text(json.loads(published["file"].read_text())))
    tag = published["variants"]["secure"]["tags"][0]
    result = cosign("verify-attestation", "--key", str(keys / "cosign.pub"), "--insecure-ignore-tlog",
                    "--type", "slsaprovenance1", "--policy", str(policy), tag)  # fmt: skip
    assert result.returncode == 0, result.stderr
    statements = [json.loads(base64.b64decode(json.loads(line)["payload"])) for line in result.stdout.splitlines()]
    index = published["variants"]["secure"]["index"].removeprefix("sha256:")
    assert {s["predicate"]["buildDefinition"]["externalParameters"]["platform"] for s in statements} == set(
        published["variants"]["secure"]["platforms"]
    )
    assert all(s["subject"][0]["digest"]["sha256"] == index for s in statements)


def overlay_inputs(published: dict) -> tuple[dict[str, str], list[dict]]:
    """What `make push` wrote for deploy/published/: published.env's values and signer.yaml's patch."""
    overlay = Path(published["file"]).parent / "overlay"
    values = dict(line.split("=", 1) for line in (overlay / "published.env").read_text().splitlines())
    return values, yaml.safe_load((overlay / "signer.yaml").read_text())


@pytest.mark.integration
@pytest.mark.docker
def test_push_writes_for_the_overlay_the_index_by_digest_and_a_signer_that_verifies_it(published, keys, tmp_path):
    """What the overlay deploys is what was pushed, and the key its policy admits verifies it."""
    values, signer = overlay_inputs(published)
    repository, index = published["repository"], published["variants"]["secure"]["index"]
    assert values == {
        "PROJECT_NAME": PROJECT_NAME,
        "REPOSITORY": repository,
        "PUBLISHED_IMAGE": f"{repository}@{index}",
    }
    (patch,) = signer
    assert patch["path"] == "/spec/authorities"
    (authority,) = patch["value"]
    assert authority["key"]["data"] == (keys / "cosign.pub").read_text()
    public_key = tmp_path / "admitted.pub"
    public_key.write_text(authority["key"]["data"])
    result = cosign("verify", "--key", str(public_key), "--insecure-ignore-tlog", values["PUBLISHED_IMAGE"])
    assert result.returncode == 0, result.stderr


def up_published(published: dict, keys: Path, project: str, *settings: str) -> subprocess.CompletedProcess:
    """`make up-published` (or another Compose target) under a Compose project of the test's own."""
    arguments = make_env(
        PUBLISHED=str(published["file"]), OVERLAY=str(Path(published["file"]).parent / "overlay"), KEYS_DIR=str(keys)
    )
    return make(*arguments, *settings, env={**os.environ, "COMPOSE_PROJECT_NAME": project}, timeout=600)


@pytest.fixture
def compose_project() -> str:
    """A Compose project name for one test; whatever it started is taken down at the end."""
    project = f"{PROJECT_NAME}-test-{uuid.uuid4().hex[:8]}"
    yield project
    make("down", env={**os.environ, "COMPOSE_PROJECT_NAME": project})


@pytest.mark.integration
@pytest.mark.docker
def test_make_up_published_runs_the_digest_it_verified(published, keys, compose_project):
    reference = overlay_inputs(published)[0]["PUBLISHED_IMAGE"]
    port = free_port()
    try:
        result = up_published(published, keys, compose_project, "up-published", f"PORT={port}")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "signed, with its SBOM and provenance" in result.stdout
        label = f"label=com.docker.compose.project={compose_project}"
        (container,) = docker("ps", "--quiet", "--filter", label).stdout.split()
        assert docker("inspect", "--format", "{{.Config.Image}}", container).stdout.strip() == reference
        assert request(port, "/healthz").json() == {"status": "ok"}
        down = up_published(published, keys, compose_project, "down")
        assert down.returncode == 0, down.stderr
        assert not docker("ps", "--all", "--quiet", "--filter", label).stdout.strip()
    finally:
        docker("image", "rm", "--force", reference, check=False)


@pytest.mark.integration
@pytest.mark.docker
def test_make_up_published_starts_nothing_when_the_signature_does_not_verify(published, compose_project, tmp_path):
    other = tmp_path / "other-keys"
    must(make("keys", f"KEYS_DIR={other}", "COSIGN_PASSWORD="), "`make keys` of another pair")
    result = up_published(published, other, compose_project, "up-published", f"PORT={free_port()}")
    assert result.returncode != 0
    assert "carries no valid signature by the key" in result.stderr
    assert not docker(
        "ps", "--all", "--quiet", "--filter", f"label=com.docker.compose.project={compose_project}"
    ).stdout.strip()


def pinned(package: str) -> str:
    return re.search(rf"^{package}==(\S+)", (ROOT / "requirements.txt").read_text(), re.MULTILINE).group(1)


@pytest.mark.integration
@pytest.mark.docker
def test_the_sbom_attestation_lists_flask_and_gunicorn_at_the_pinned_versions(published, keys):
    repository = published["repository"]
    for digest in published["variants"]["secure"]["platforms"].values():
        statement = attestation(keys, f"{repository}@{digest}", "cyclonedx")
        assert statement["subject"][0]["digest"]["sha256"] == digest.removeprefix("sha256:")
        components = {(c["name"].lower(), c.get("version")) for c in statement["predicate"]["components"]}
        assert {("flask", pinned("flask")), ("gunicorn", pinned("gunicorn"))} <= components


def provenance_schema_errors(predicate: dict) -> list[str]:
    """What makes a predicate invalid against SLSA provenance v1's schema, one message each."""
    validator = jsonschema.Draft202012Validator(json.loads(PROVENANCE_SCHEMA.read_text()))
    return [f"{'/'.join(map(str, error.absolute_path))}: {error.message}" for error in validator.iter_errors(predicate)]


@pytest.mark.integration
@pytest.mark.docker
def test_the_provenance_names_the_build_that_happened(published, keys, snapshot):
    """Commit, source, builder, build type, every build argument and label, the base by the digest
    it had, the Debian packages the image took, requirements.txt by digest, and the build's times."""
    repository = published["repository"]
    commit = git(snapshot.folder, "rev-parse", "HEAD")
    requirements = hashlib.sha256((snapshot.folder / "requirements.txt").read_bytes()).hexdigest()
    for platform, digest in published["variants"]["secure"]["platforms"].items():
        statement = attestation(keys, f"{repository}@{digest}", "slsaprovenance1")
        assert statement["predicateType"] == "https://slsa.dev/provenance/v1"
        predicate = statement["predicate"]
        assert provenance_schema_errors(predicate) == []
        definition, run = predicate["buildDefinition"], predicate["runDetails"]
        assert definition["buildType"] == f"{SOURCE}/blob/HEAD/docs/reference/provenance.md#v1"
        assert run["builder"]["id"] == f"git+{SOURCE}@{commit}#Makefile"
        parameters = definition["externalParameters"]
        assert parameters["source"] == {"uri": f"git+{SOURCE}", "digest": {"gitCommit": commit}}
        assert (parameters["dockerfile"], parameters["platform"]) == ("Dockerfile.multistage", platform)
        built_here = platform == engine_platform()
        image = inspect(f"{snapshot.image}:secure" + ("" if built_here else platform_tag(platform)))
        labels = image["Config"]["Labels"]
        assert parameters["labels"] == {k: v for k, v in labels.items() if k.startswith("org.opencontainers.image.")}
        pinned = re.search(r"^FROM (\S+)$", (ROOT / "Dockerfile").read_text(), re.MULTILINE).group(1)
        assert parameters["buildContexts"] == {pinned: f"docker-image://{labels['org.opencontainers.image.base.name']}"}
        assert parameters["buildArgs"] == {
            "WSGI_APP": WSGI_APP,
            "SOURCE_DATE_EPOCH": git(snapshot.folder, "log", "-1", "--format=%ct"),
        }
        dependencies = {d["name"]: d for d in definition["resolvedDependencies"]}
        assert dependencies["source"] == {
            "name": "source",
            "uri": f"git+{SOURCE}@{commit}",
            "digest": {"gitCommit": commit},
        }
        assert dependencies["requirements.txt"]["uri"] == f"git+{SOURCE}@{commit}#requirements.txt"
        assert dependencies["requirements.txt"]["digest"] == {"sha256": requirements}
        base = dependencies["base"]
        assert base["uri"] == f"docker-image://{labels['org.opencontainers.image.base.name']}"
        assert "sha256:" + base["digest"]["sha256"] == labels["org.opencontainers.image.base.digest"]
        # The secure image ships media-types' /etc/mime.types, which its build stage installs.
        media_types = dependencies["media-types"]["uri"]
        assert re.fullmatch(r"pkg:deb/debian/media-types@[^?]+\?arch=all", media_types), media_types
        # Its build stage installs binutils, which it does not ship: a rebuild needs it, at this version.
        pinned_binutils = re.search(r"binutils=(\S+)", (snapshot.folder / "Dockerfile.multistage").read_text()).group(1)
        assert dependencies["binutils"] == {
            "name": "binutils",
            "uri": f"pkg:deb/debian/binutils@{pinned_binutils}?arch={platform.rpartition('/')[2]}",
            "annotations": {"shipped": False},
        }
        assert "binutils" not in {d["name"] for d in definition["resolvedDependencies"] if "annotations" not in d}
        started, finished = (run["metadata"][key] for key in ("startedOn", "finishedOn"))
        assert labels["org.opencontainers.image.created"] <= started <= finished


@pytest.mark.integration
@pytest.mark.docker
def test_an_image_pulled_by_digest_into_a_store_that_never_saw_it_serves_locked_down(published, podman):
    """Podman pulls the index by digest into its empty store and runs this machine's image under
    the lesson's lockdown, without a network: the image's own Python asks it for /healthz."""
    reference = f"{published['repository']}@{published['variants']['secure']['index']}"
    # Podman's default open-files and process limits exceed what some machines allow a container.
    limits = podman_run_flags()
    name = f"{PROJECT_NAME}-test-{uuid.uuid4().hex[:8]}"
    code = (
        "import time, urllib.request\n"
        "for _ in range(100):\n"
        "    try: print(urllib.request.urlopen('http://127.0.0.1:8080/healthz').read().decode()); break\n"
        "    except OSError: time.sleep(0.1)\n"
    )
    assert subprocess.run([*podman, "image", "exists", reference]).returncode == 1
    pulled = subprocess.run([*podman, "pull", "--tls-verify=false", reference], capture_output=True, text=True)
    assert pulled.returncode == 0, pulled.stderr
    run = [*podman, "run", "--detach", "--name", name, "--network", "none", *limits, *LOCKDOWN, "--user", "12345:0"]
    started = subprocess.run([*run, reference], capture_output=True, text=True)
    assert started.returncode == 0, started.stderr
    asked = subprocess.run(
        [*podman, "exec", name, "/opt/venv/bin/python", "-c", code], capture_output=True, text=True, timeout=60
    )
    assert (asked.returncode, asked.stdout.strip()) == (0, '{"status":"ok"}'), asked.stderr


@pytest.mark.integration
@pytest.mark.docker
def test_a_push_that_cannot_sign_leaves_the_variants_tag_where_it_was(single, published, keys, snapshot, emulated):
    """Another image (the emulated platform's alone) pushed with the wrong password for the key:
    nothing signs it, so `:secure` must still name the index that was signed before."""
    entry = single["variants"]["secure"]
    command = [sys.executable, str(snapshot.folder / "scripts" / "3-ship" / "publish.py"), "push"]
    failed = Path(single["file"]).parent / "failed.json"
    command += ["--repository", single["repository"], "--version", "another", "--published", str(failed)]
    command += ["--key", str(keys / "cosign.key"), "--records", str(snapshot.folder / ".builds"), "--source", SOURCE]
    environment = {**os.environ, "COSIGN_PASSWORD": "not the password"}
    other = f"secure={snapshot.image}:secure{platform_tag(emulated)}"
    result = subprocess.run([*command, other], capture_output=True, text=True, env=environment)
    assert result.returncode != 0
    assert "cosign" in result.stderr and "sign" in result.stderr
    assert publish.manifest_digest(entry["tags"][0]) == entry["index"]
    assert not failed.exists()


def built_elsewhere(snapshot: Snapshot, name: str, **variables: str) -> None:
    """The snapshot's secure image built as NAME:secure, with make's variables changed."""
    must(in_snapshot(snapshot, "build-secure", IMAGE=name, **variables), "`make build-secure`")


def push_refused(snapshot: Snapshot, name: str, registry: str, keys: Path, folder: Path, **variables: str) -> str:
    """`make push` of NAME:secure, which must refuse it and publish nothing; what it said. The image
    is removed."""
    repository = f"{registry}/{folder.name.lower()}"
    try:
        result = in_snapshot(snapshot, "push", "PUBLISH=secure", "PUBLISH_PLATFORM=", IMAGE=name,
                             REGISTRY=repository, KEYS_DIR=str(keys), PUBLISHED=str(folder / "published.json"),
                             OVERLAY=str(folder / "overlay"), COSIGN_PASSWORD=PASSWORD, **variables)  # fmt: skip
    finally:
        docker("image", "rm", "--force", f"{name}:secure", check=False)
    assert result.returncode != 0
    assert not (folder / "published.json").exists()
    assert publish.raw_manifest(f"{repository}/{name}:secure", check=False) is None
    return result.stderr


@pytest.mark.integration
@pytest.mark.docker
def test_push_refuses_an_image_built_from_uncommitted_changes(snapshot, registry, keys, tmp_path):
    changed = app_module(snapshot.folder)
    original = changed.read_text()
    name = f"{snapshot.image}-dirty"
    try:
        changed.write_text(original + "\n# An uncommitted change.\n")
        built_elsewhere(snapshot, name)
    finally:
        changed.write_text(original)
    said = push_refused(snapshot, name, registry, keys, tmp_path)
    assert "was built from a tree with uncommitted changes" in said
    assert "Commit the changes, build it again" in said


@pytest.mark.integration
@pytest.mark.docker
def test_push_refuses_an_image_whose_labels_do_not_match_the_commit(snapshot, registry, keys, tmp_path):
    name = f"{snapshot.image}-relabelled"
    built_elsewhere(snapshot, name, VERSION="v9.9.9")
    said = push_refused(snapshot, name, registry, keys, tmp_path)
    assert "label org.opencontainers.image.version is 'v9.9.9'" in said


@pytest.mark.integration
@pytest.mark.docker
def test_push_refuses_an_image_whose_source_is_a_folder(snapshot, registry, keys, tmp_path):
    """A checkout without a remote labels its images with its own path: no builder a consumer can
    look up, and no source to rebuild from."""
    name = f"{snapshot.image}-local"
    folder = str(snapshot.folder)
    built_elsewhere(snapshot, name, SOURCE_URL=folder)
    said = push_refused(snapshot, name, registry, keys, tmp_path, SOURCE_URL=folder)
    assert f"source is {folder}, a folder, not a URL a consumer can fetch" in said


# make verify's checks, in its order, and one test for each that takes away or alters only what
# that check guards: the tag, the index's signature, the platform image's signature, the SBOM
# attestation, the provenance attestation (whose subject cosign checks), and what the provenance says.


@pytest.mark.integration
@pytest.mark.docker
def test_verify_fails_when_another_image_is_pushed_over_the_tag(single, keys, images):
    tag = single["variants"]["secure"]["tags"][0]
    archive = Path(single["file"]).parent / "production.tar"
    docker("save", "--output", str(archive), images["production"])
    skopeo = tool("skopeo")
    subprocess.run([skopeo, "copy", "--quiet", "--format", "oci", "--dest-tls-verify=false",
                    f"docker-archive:{archive}", f"docker://{tag}"], check=True)  # fmt: skip
    now, index = publish.manifest_digest(tag), single["variants"]["secure"]["index"]
    verify_fails(single, keys, f"{tag} now names {now}, not {index}, which was published and signed: something was")


@pytest.mark.integration
@pytest.mark.docker
def test_verify_fails_when_the_index_is_unsigned(single, keys):
    repository, index = single["repository"], single["variants"]["secure"]["index"]
    delete_tag(repository, index.replace(":", "-") + ".sig")
    verify_fails(single, keys, f"the index {repository}@{index} carries no valid signature by the key")


@pytest.mark.integration
@pytest.mark.docker
def test_verify_fails_when_a_platforms_image_is_unsigned(single, keys):
    """The index stays signed; only the image's own signature goes."""
    repository = single["repository"]
    [(platform, digest)] = single["variants"]["secure"]["platforms"].items()
    delete_tag(repository, digest.replace(":", "-") + ".sig")
    verify_fails(single, keys, f"the {platform} image {repository}@{digest} carries no valid signature by the key")


@pytest.mark.integration
@pytest.mark.docker
def test_verify_fails_for_an_image_signed_with_another_key(single, tmp_path):
    other = tmp_path / "other-keys"
    must(make("keys", f"KEYS_DIR={other}", "COSIGN_PASSWORD="), "`make keys` of another pair")
    result = verify(single["file"], other)
    assert result.returncode != 0
    assert "carries no valid signature by the key" in result.stderr


def attestation_layers(repository: str, digest: str) -> tuple[str, dict]:
    """The tag cosign keeps an image's attestations under, and its manifest: one layer each."""
    tag = digest.replace(":", "-") + ".att"
    return tag, json.loads(publish.raw_manifest(f"{repository}:{tag}"))


def put_attestations(repository: str, tag: str, manifest: dict, layers: list[dict]) -> None:
    """Make the attestations' tag hold these layers: a new manifest, and a new config whose diff IDs
    are the layers' (cosign's layers are not compressed), as cosign reads the two together."""
    config = json.loads(registry_request(repository, f"blobs/{manifest['config']['digest']}").body)
    config["rootfs"]["diff_ids"] = [layer["digest"] for layer in layers]
    body = json.dumps(config).encode()
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    started = registry_request(repository, "blobs/uploads/", "POST")
    assert started.status == 202, started.status
    location = started.headers["Location"].split(f"/v2/{repository.split('/', 1)[1]}/", 1)[1]
    joiner = "&" if "?" in location else "?"
    put = registry_request(repository, f"{location}{joiner}digest={digest}", "PUT", body=body)
    assert put.status == 201, f"{put.status} {put.body!r}"
    descriptor = manifest["config"] | {"digest": digest, "size": len(body)}
    changed = json.dumps(manifest | {"config": descriptor, "layers": layers}).encode()
    headers = {"Content-Type": manifest["mediaType"]}
    put = registry_request(repository, f"manifests/{tag}", "PUT", body=changed, headers=headers)
    assert put.status == 201, f"{repository}:{tag}: {put.status} {put.body!r}"


def keep_layers(single: dict, keep, digest: str | None = None) -> tuple[str, str]:
    """Keep in the attestations of the image (or of digest, the index's) only the layers keep(layer)
    accepts; the repository and digest."""
    repository = single["repository"]
    [digest] = [digest] if digest else single["variants"]["secure"]["platforms"].values()
    tag, manifest = attestation_layers(repository, digest)
    kept = [layer for layer in manifest["layers"] if keep(layer)]
    assert 0 < len(kept) < len(manifest["layers"]), "nothing or everything would go"
    put_attestations(repository, tag, manifest, kept)
    return repository, digest


def predicate_type(layer: dict) -> str:
    return layer["annotations"]["predicateType"]


def take_away(single: dict, kind: str, digest: str | None = None) -> tuple[str, str]:
    """Take the attestation of one predicate type out of the image's (or digest's); the repository
    and digest."""
    return keep_layers(single, lambda layer: predicate_type(layer) != kind, digest)


@pytest.mark.integration
@pytest.mark.docker
def test_verify_fails_when_the_sbom_attestation_is_taken_away(single, keys):
    repository, digest = take_away(single, SBOM)
    verify_fails(single, keys, f"{repository}@{digest} has no valid SBOM attestation, signed and about this digest")


@pytest.mark.integration
@pytest.mark.docker
def test_verify_fails_when_the_sbom_attestation_is_replaced_by_one_of_another_key(single, keys, tmp_path):
    repository, digest = take_away(single, SBOM)
    other = tmp_path / "other-keys"
    must(make("keys", f"KEYS_DIR={other}", "COSIGN_PASSWORD="), "`make keys` of another pair")
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps({"bomFormat": "CycloneDX", "specVersion": "1.6", "components": [{"name": "x"}]}))
    made = cosign("attest", "--yes", "--key", str(other / "cosign.key"), "--tlog-upload=false",
                  "--type", "cyclonedx", "--predicate", str(forged), f"{repository}@{digest}")  # fmt: skip
    assert made.returncode == 0, made.stderr
    verify_fails(single, keys, f"{repository}@{digest} has no valid SBOM attestation, signed and about this digest")


@pytest.mark.integration
@pytest.mark.docker
def test_verify_fails_when_the_provenance_attestation_is_taken_away(single, keys):
    """The SBOM's layer stays, signed: only the provenance's goes."""
    repository, digest = take_away(single, PROVENANCE)
    verify_fails(
        single, keys, f"{repository}@{digest} has no valid provenance attestation, signed and about this digest"
    )


def attest_provenance(keys: Path, reference: str, predicate: dict, folder: Path) -> None:
    """Attest a provenance with the publisher's own key, as one who holds it can."""
    path = folder / "provenance.json"
    path.write_text(json.dumps(predicate))
    made = cosign("attest", "--yes", "--key", str(keys / "cosign.key"), "--tlog-upload=false",
                  "--type", "slsaprovenance1", "--predicate", str(path), reference, password=PASSWORD)  # fmt: skip
    assert made.returncode == 0, made.stderr


@pytest.mark.integration
@pytest.mark.docker
def test_verify_fails_when_the_provenance_attestation_is_about_another_digest(single, keys):
    """The image's own provenance, as make push attached it to the index too, signed with the right
    key and about the index, put in the image's place: cosign takes only attestations whose subject
    is the digest it verifies."""
    repository, index = single["repository"], single["variants"]["secure"]["index"]
    [digest] = single["variants"]["secure"]["platforms"].values()
    real = attestation(keys, f"{repository}@{digest}", "slsaprovenance1")["predicate"]
    assert attestation(keys, f"{repository}@{index}", "slsaprovenance1")["predicate"] == real
    layers = attestation_layers(repository, index)[1]["layers"]
    [about_index] = [layer for layer in layers if predicate_type(layer) == PROVENANCE]
    tag, manifest = attestation_layers(repository, digest)
    layers = [about_index if predicate_type(layer) == PROVENANCE else layer for layer in manifest["layers"]]
    put_attestations(repository, tag, manifest, layers)
    verify_fails(
        single, keys, f"{repository}@{digest} has no valid provenance attestation, signed and about this digest"
    )


def provenance_replaced(single: dict, keys: Path, folder: Path, change) -> str:
    """Put in place of the image's provenance one changed by change(predicate), signed with the
    publisher's own key; the start of the message make verify must give."""
    repository = single["repository"]
    [(platform, digest)] = single["variants"]["secure"]["platforms"].items()
    predicate = attestation(keys, f"{repository}@{digest}", "slsaprovenance1")["predicate"]
    take_away(single, PROVENANCE)
    change(predicate)
    attest_provenance(keys, f"{repository}@{digest}", predicate, folder)
    return (
        f"the provenance of the {platform} image {repository}@{digest}, signed by the key {keys / 'cosign.pub'}, "
        "does not meet the policy deploy/published/provenance.cue: "
    )


@pytest.mark.integration
@pytest.mark.docker
def test_verify_fails_when_a_provenance_signed_with_the_right_key_names_another_commit(single, keys, tmp_path):
    another = "0123456789abcdef0123456789abcdef01234567"

    def change(predicate):
        predicate["buildDefinition"]["externalParameters"]["source"]["digest"]["gitCommit"] = another

    said = provenance_replaced(single, keys, tmp_path, change)
    where = "predicate.buildDefinition.externalParameters.source.digest.gitCommit"
    verify_fails(single, keys, f"{said}{where}: conflicting")


@pytest.mark.integration
@pytest.mark.docker
def test_verify_fails_when_a_provenance_signed_with_the_right_key_names_another_builder(single, keys, tmp_path):
    def change(predicate):
        predicate["runDetails"]["builder"]["id"] = "https://ci.example.org/acme/runs/7"

    said = provenance_replaced(single, keys, tmp_path, change)
    verify_fails(single, keys, said + "predicate.runDetails.builder.id: ")


@pytest.mark.integration
@pytest.mark.docker
def test_verify_fails_when_a_provenance_signed_with_the_right_key_names_another_source(single, keys, tmp_path):
    other = "git+https://git.example.org/someone-else/app"

    def change(predicate):
        predicate["buildDefinition"]["externalParameters"]["source"]["uri"] = other

    said = provenance_replaced(single, keys, tmp_path, change)
    verify_fails(single, keys, said + "predicate.buildDefinition.externalParameters.source.uri: conflicting")


def rotate_keys(folder: Path, action: str) -> None:
    must(make(action, f"KEYS_DIR={folder}", env={**os.environ, "COSIGN_PASSWORD": PASSWORD}), f"`make {action}`")


@pytest.mark.integration
@pytest.mark.docker
def test_a_rotated_key_verifies_through_the_overlap_and_fails_once_retired(snapshot, registry, tmp_path):
    """make keys-rotate: the old key's image still verifies, and the new key signs the next push;
    make keys-retire: the old key's image fails, the new key's passes."""
    keys = tmp_path / "keys"
    rotate_keys(keys, "keys")
    old = tmp_path / "old" / "published.json"
    old.parent.mkdir()
    push(snapshot, f"{registry}/{tmp_path.name.lower()}-old", keys, old, "PUBLISH_PLATFORM=")
    rotate_keys(keys, "keys-rotate")
    assert sorted(path.name for path in keys.iterdir()) == ["cosign-2.key", "cosign-2.pub", "cosign.key", "cosign.pub"]
    during = verify(old, keys)
    assert during.returncode == 0, during.stderr
    new = tmp_path / "new" / "published.json"
    new.parent.mkdir()
    push(snapshot, f"{registry}/{tmp_path.name.lower()}-new", keys, new, "PUBLISH_PLATFORM=")
    [digest] = json.loads(new.read_text())["variants"]["secure"]["platforms"].values()
    reference = f"{json.loads(new.read_text())['repository']}@{digest}"
    by_old = cosign("verify", "--key", str(keys / "cosign.pub"), "--insecure-ignore-tlog", reference)
    assert by_old.returncode != 0, "the new push was signed with the old key"
    _, signer = overlay_inputs({"file": new})
    assert [authority["name"] for authority in signer[0]["value"]] == ["cosign-2", "cosign"]
    rotate_keys(keys, "keys-retire")
    assert sorted(path.name for path in keys.iterdir()) == ["cosign-2.key", "cosign-2.pub", "retired"]
    after = verify(old, keys)
    assert after.returncode != 0
    assert f"carries no valid signature by the key {keys / 'cosign-2.pub'}" in after.stderr, after.stderr
    still = verify(new, keys)
    assert still.returncode == 0, still.stderr


def logging_shims(folder: Path, log: Path, names: list[str]) -> dict[str, str]:
    """Commands named like these tools that note whether COSIGN_PASSWORD is in their environment,
    then run the tool itself; the folder to put first on PATH, and DOCKER."""
    folder.mkdir()
    found = {"trivy": scan.trivy_command()}
    for name in names:
        real = found.get(name) or shutil.which(name)
        assert real, f"{name} is not installed"
        shim = folder / name
        shim.write_text(f'#!/bin/sh\necho "{name} ${{COSIGN_PASSWORD+with-password}}" >>{log}\nexec {real} "$@"\n')
        shim.chmod(0o755)
    return {"PATH": f"{folder}:{os.environ['PATH']}", "DOCKER": str(folder / "docker")}


@pytest.mark.integration
@pytest.mark.docker
def test_push_gives_the_password_to_cosign_alone(single, snapshot, registry, keys, tmp_path):
    """publish.py push runs docker, skopeo, trivy, git and cosign; each notes its environment."""
    log = tmp_path / "environments.log"
    tools = ["docker", "skopeo", "trivy", "git", "cosign"]
    shims = logging_shims(tmp_path / "shims", log, tools)
    version = git(snapshot.folder, "describe", "--tags", "--always")
    repository = f"{registry}/{tmp_path.name.lower()}"
    command = [sys.executable, "scripts/3-ship/publish.py", "push", "--repository", repository, "--version", version,
               "--published", str(tmp_path / "published.json"), "--keys", str(keys), "--records", ".builds",
               "--source", SOURCE, f"secure={snapshot.image}:secure"]  # fmt: skip
    environment = {**os.environ, **shims, "COSIGN_PASSWORD": PASSWORD}
    result = subprocess.run(command, cwd=snapshot.folder, capture_output=True, text=True, env=environment, timeout=900)
    assert result.returncode == 0, result.stderr
    seen = set(log.read_text().splitlines())
    assert {line.split()[0] for line in seen} == set(tools), seen
    assert "cosign with-password" in seen, "the control: cosign, which needs it, got it"
    assert {line for line in seen if line.endswith("with-password")} == {"cosign with-password"}, seen


@pytest.mark.unit
def test_make_keys_asks_for_a_password_or_an_explicit_empty_one(tmp_path):
    environment = {name: value for name, value in os.environ.items() if name != "COSIGN_PASSWORD"}
    result = make("keys", f"KEYS_DIR={tmp_path / 'keys'}", env=environment, timeout=60)
    assert result.returncode != 0
    assert "set COSIGN_PASSWORD to the password that protects the signing key" in result.stderr
    assert not (tmp_path / "keys").exists()


@pytest.mark.unit
def test_registry_stop_leaves_alone_a_process_that_took_the_registrys_number(tmp_path):
    """A pid file left from a registry long gone may name a process of someone else's by now."""
    other = subprocess.Popen(["sleep", "60"])
    try:
        (tmp_path / "registry.pid").write_text(f"{other.pid}\n")
        publish.registry_stop(tmp_path)
        assert other.poll() is None, "the process was stopped"
    finally:
        other.kill()
        other.wait()


@pytest.mark.unit
def test_deploy_files_refuses_a_publication_without_the_image_the_manifests_run(tmp_path, capsys):
    """The overlay runs the secure image: a push of production alone leaves it nothing to deploy."""
    published = tmp_path / "published.json"
    published.write_text(json.dumps({"repository": "127.0.0.1:5000/app", "variants": {"production": {}}}))
    command = ["deploy-files", "--published", str(published), "--overlay", str(tmp_path / "overlay")]
    assert publish.main([*command, "--identity", "someone"]) == 1
    assert "holds no secure: publish it too" in capsys.readouterr().err
    assert not (tmp_path / "overlay").exists()


def a_build_record(**changes) -> dict:
    """A record as build_record.py writes it, of a build on the stand-in base."""
    commit = "5c993dad4f5099ba152024092f4b52d1794f268f"
    labels = {
        "org.opencontainers.image.source": SOURCE,
        "org.opencontainers.image.revision": commit,
        "org.opencontainers.image.version": "5c993da",
        "org.opencontainers.image.created": "2026-12-06T10:00:00Z",
        "org.opencontainers.image.base.name": "localhost/python-stand-in:debian13",
        "org.opencontainers.image.base.digest": "sha256:" + "ab" * 32,
    }
    return {
        "image": "app:secure",
        "imageId": "sha256:" + "cd" * 32,
        "dockerfile": "Dockerfile.multistage",
        "platform": "linux/amd64",
        "buildContexts": {
            "docker.io/library/python:3.13.17-slim-trixie": "docker-image://"
            + labels["org.opencontainers.image.base.name"]
        },
        "buildArgs": {"WSGI_APP": "app:app"},
        "labels": labels,
        "base": {"name": labels["org.opencontainers.image.base.name"], "digest": "sha256:" + "ab" * 32},
        "debianPackages": [{"name": "media-types", "version": "13.0.0", "architecture": "all"}],
        "buildStagePackages": [{"name": "binutils", "version": "2.44-3", "architecture": "amd64"}],
        "builder": f"git+{SOURCE}@{commit}#Makefile",
        "invocation": None,
        "engine": {"name": "docker", "version": "26.1.5"},
        "startedOn": "2026-12-06T10:01:00Z",
        "finishedOn": "2026-12-06T10:02:30Z",
    } | changes


def kyverno_refuses(predicate: dict, published: dict) -> list[str]:
    """The conditions of Kyverno's policy a predicate fails, by their expression: each JMESPath
    expression evaluated on the predicate, as Kyverno evaluates an attestation's conditions, and its
    operator applied (AnyIn's values may hold wildcards)."""
    refused = []
    for condition in publish.kyverno_conditions(published)[0]["all"]:
        expression = condition["key"].removeprefix("{{").removesuffix("}}").strip()
        found = jmespath.search(expression, predicate)
        if condition["operator"] == "Equals":
            met = found == condition["value"]
        else:
            assert condition["operator"] == "AnyIn", condition
            met = any(fnmatch.fnmatchcase(str(found), pattern) for pattern in condition["value"])
        if not met:
            refused.append(expression)
    return refused


@pytest.mark.unit
def test_kyvernos_conditions_admit_the_provenance_and_refuse_another_commit_builder_or_source():
    """What Kyverno's policy checks, as provenance.cue does: the provenance make push made passes,
    and one that names another commit, builder or source, or a dirty tree, fails."""
    record = a_build_record()
    predicate = publish.provenance(record, "secure", "ef" * 32)
    published = {
        "source": SOURCE,
        "commit": record["labels"]["org.opencontainers.image.revision"],
        "bases": publish.recorded_bases({"app:secure": record}),
    }
    assert kyverno_refuses(predicate, published) == []
    external = "buildDefinition.externalParameters"
    changes = {
        f"{external}.source.digest.gitCommit": ("0123456789abcdef0123456789abcdef01234567",),
        "runDetails.builder.id": ("https://ci.example.org/acme/runs/7",),
        f"{external}.source.uri": ("git+https://git.example.org/someone-else",),
        f'{external}.labels."org.opencontainers.image.version"': ("5c993da-dirty",),
        "buildDefinition.resolvedDependencies[1].digest.sha256": ("00" * 32,),
    }
    for where, (value,) in changes.items():
        changed = json.loads(json.dumps(predicate))
        *path, last = [part.strip('"') for part in re.findall(r'"[^"]+"|[^.]+', where)]
        holder = changed
        for part in path:
            name, _, index = part.partition("[")
            holder = holder[name][int(index[:-1])] if index else holder[name]
        holder[last] = value
        assert kyverno_refuses(changed, published) != [], f"Kyverno's conditions admit {where} = {value}"


@pytest.mark.unit
def test_the_provenance_is_valid_slsa_provenance_v1():
    predicate = publish.provenance(a_build_record(), "secure", "ef" * 32)
    assert provenance_schema_errors(predicate) == []
    # A package the build stage installs and the image does not ship is listed, and marked so.
    assert predicate["buildDefinition"]["resolvedDependencies"][-1] == {
        "name": "binutils",
        "uri": "pkg:deb/debian/binutils@2.44-3?arch=amd64",
        "annotations": {"shipped": False},
    }
    in_ci = a_build_record(
        builder="https://github.com/acme/app/actions/runs/7",
        invocation="https://github.com/acme/app/actions/runs/7/attempts/1",
    )
    assert provenance_schema_errors(publish.provenance(in_ci, "secure", "ef" * 32)) == []


@pytest.mark.unit
@pytest.mark.parametrize(
    ("mistake", "where"),
    [
        (lambda p: p["runDetails"]["builder"].pop("id"), "runDetails/builder"),
        (lambda p: p["runDetails"]["metadata"].update(startedOn="2026-12-06 10:01"), "runDetails/metadata/startedOn"),
        (lambda p: p["buildDefinition"].update(buildType="provenance.md"), "buildDefinition/buildType"),
        (lambda p: p["buildDefinition"]["resolvedDependencies"].append({"name": "nothing"}), "resolvedDependencies/5"),
        (lambda p: p["buildDefinition"].update(resolvedDependency=[]), "buildDefinition"),
    ],
)
def test_the_provenance_schema_refuses_what_slsa_v1_does_not_allow(mistake, where):
    """Controls: a predicate without a builder's id, with a time that is not RFC 3339 UTC, a build
    type that is no URI, a dependency with neither URI nor digest, a misspelt field."""
    predicate = publish.provenance(a_build_record(), "secure", "ef" * 32)
    mistake(predicate)
    errors = provenance_schema_errors(predicate)
    assert errors and all(where in error for error in errors), errors


@pytest.mark.unit
def test_the_builder_is_the_workflow_run_in_ci_and_the_makefile_at_the_commit_elsewhere(monkeypatch):
    labels = {"org.opencontainers.image.source": SOURCE, "org.opencontainers.image.revision": "abc"}
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    assert build_record.builder(labels) == (f"git+{SOURCE}@abc#Makefile", None)
    assert build_record.builder(labels | {"org.opencontainers.image.source": "/home/someone/app"}) == (None, None)
    ci = {"GITHUB_ACTIONS": "true", "GITHUB_SERVER_URL": "https://github.com", "GITHUB_REPOSITORY": "acme/app",
          "GITHUB_RUN_ID": "42", "GITHUB_RUN_ATTEMPT": "2"}  # fmt: skip
    for name, value in ci.items():
        monkeypatch.setenv(name, value)
    run = "https://github.com/acme/app/actions/runs/42"
    assert build_record.builder(labels) == (run, f"{run}/attempts/2")


# make verify-rebuild: what make push published is what its commit builds, and an image that is not
# fails, however well it is signed.


def verify_rebuild(snapshot: Snapshot, reference: str, keys: Path) -> subprocess.CompletedProcess:
    """`make verify-rebuild` run in the snapshot, as a consumer runs it in a clone, with the public key."""
    public = keys.parent / "public"
    public.mkdir(exist_ok=True)
    shutil.copy(keys / "cosign.pub", public / "cosign.pub")
    return in_snapshot(snapshot, "verify-rebuild", REF=reference, KEYS_DIR=str(public))


def ci_sign_script() -> str:
    """The script of CI's sign job, as the workflow holds it."""
    jobs = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())["jobs"]
    [script] = [step["run"] for step in jobs["sign"]["steps"] if step.get("env", {}).get("PREDICATES")]
    return script


@pytest.mark.integration
@pytest.mark.docker
@pytest.mark.parametrize("named", ["index", "platform's image"])
def test_verify_rebuild_passes_on_what_make_push_published(single, keys, snapshot, named):
    """REF may name the index, whose every platform is rebuilt, or one platform's image."""
    [(platform, digest)] = single["variants"]["secure"]["platforms"].items()
    reference = f"{single['repository']}@{single['variants']['secure']['index'] if named == 'index' else digest}"
    result = verify_rebuild(snapshot, reference, keys)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{platform}: the rebuild is {single['repository']}@{digest} to the byte" in result.stdout
    assert f"is what commit {single['commit'][:12]} builds" in result.stdout


@pytest.mark.integration
@pytest.mark.docker
def test_verify_rebuild_builds_nothing_for_an_image_another_key_signed(single, snapshot, tmp_path):
    other = tmp_path / "other-keys"
    must(make("keys", f"KEYS_DIR={other}", "COSIGN_PASSWORD="), "`make keys` of another pair")
    reference = f"{single['repository']}@{single['variants']['secure']['index']}"
    result = verify_rebuild(snapshot, reference, other)
    assert result.returncode != 0
    assert f"the index {reference} carries no valid signature by the key" in result.stderr
    assert "rebuilding" not in result.stdout


@pytest.mark.integration
@pytest.mark.docker
def test_verify_rebuild_fails_on_a_signed_image_its_commit_does_not_build(snapshot, registry, keys, tmp_path):
    """An image built from a changed app module and labelled as the clean commit: make push
    publishes it, signed, with a provenance of the commit, and make verify passes it. The rebuild
    of the commit differs in the layer of /app, and says so."""
    changed = app_module(snapshot.folder)
    original = changed.read_text()
    name = f"{snapshot.image}-tampered"
    clean = git(snapshot.folder, "describe", "--tags", "--always")
    try:
        changed.write_text(original + "\nTAMPERED = True\n")
        built_elsewhere(snapshot, name, VERSION=clean)
    finally:
        changed.write_text(original)
    try:
        repository = f"{registry}/{tmp_path.name.lower()}"
        published = push(snapshot, repository, keys, tmp_path / "published.json", "PUBLISH_PLATFORM=", IMAGE=name)
    finally:
        docker("image", "rm", "--force", f"{name}:secure", check=False)
    checked = verify(tmp_path / "published.json", keys)
    assert checked.returncode == 0, checked.stderr
    reference = f"{published['repository']}@{published['variants']['secure']['index']}"
    result = verify_rebuild(snapshot, reference, keys)
    assert result.returncode != 0
    [digest] = published["variants"]["secure"]["platforms"].values()
    assert f"{published['repository']}@{digest} is not what its commit builds" in result.stderr
    assert "layer 2 of 3, made by `COPY /app/ /app/ # buildkit`" in result.stderr, result.stderr


@pytest.mark.integration
@pytest.mark.docker
def test_verify_rebuild_says_which_debian_package_version_is_gone(single, keys, snapshot, tmp_path):
    """A commit whose build stage installs a binutils version Debian's archive does not hold, as a
    version the archive dropped after the publishing: the image's provenance, signed with the right
    key, names that commit, and the rebuild fails with a sentence naming the package and version."""
    gone = "2.44-0+gone"
    dockerfile = (snapshot.folder / "Dockerfile.multistage").read_text()
    assert "binutils=2.44-3" in dockerfile
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", "--shared", str(snapshot.folder), str(clone)], check=True)
    (clone / "Dockerfile.multistage").write_text(dockerfile.replace("binutils=2.44-3", f"binutils={gone}"))
    git(clone, "commit", "--quiet", "--all", "--message", "A pin the archive no longer holds")
    commit = git(clone, "rev-parse", "HEAD")
    git(snapshot.folder, "fetch", "--quiet", str(clone), commit)
    repository = single["repository"]
    [digest] = single["variants"]["secure"]["platforms"].values()
    predicate = attestation(keys, f"{repository}@{digest}", "slsaprovenance1")["predicate"]
    take_away(single, PROVENANCE)
    parameters = predicate["buildDefinition"]["externalParameters"]
    parameters["source"]["digest"]["gitCommit"] = parameters["labels"]["org.opencontainers.image.revision"] = commit
    source = predicate["buildDefinition"]["resolvedDependencies"][0]
    source["uri"], source["digest"]["gitCommit"] = f"git+{SOURCE}@{commit}", commit
    predicate["runDetails"]["builder"]["id"] = f"git+{SOURCE}@{commit}#Makefile"
    index = single["variants"]["secure"]["index"]
    take_away(single, PROVENANCE, index)
    for image in (digest, index):
        attest_provenance(keys, f"{repository}@{image}", predicate, tmp_path)
    result = verify_rebuild(snapshot, f"{repository}@{index}", keys)
    assert result.returncode != 0
    assert f"Debian's archive no longer holds binutils {gone}, which the build of secure" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.integration
@pytest.mark.docker
def test_cis_three_publishing_jobs_publish_what_make_verify_passes(snapshot, registry, keys, tmp_path):
    """CI's publish, sign and release jobs, run here in turn: make push UNSIGNED=..., which must sign
    nothing and leave the tag; the sign job's own script, its cosign given the module's key in place
    of the workflow's OIDC identity, which this machine has not; then make promote and make verify."""
    predicates = tmp_path / "predicates"
    file = predicates / "published.json"
    published = push(
        snapshot, f"{registry}/{tmp_path.name.lower()}", keys, file, "PUBLISH_PLATFORM=", UNSIGNED=predicates
    )
    repository, entry = published["repository"], published["variants"]["secure"]
    images = [f"{repository}@{digest}" for digest in entry["platforms"].values()]
    index = f"{repository}@{entry['index']}"
    assert publish.raw_manifest(entry["tags"][0], check=False) is None, "make push UNSIGNED moved the tag"
    public_key = ["--key", str(keys / "cosign.pub"), "--insecure-ignore-tlog"]
    assert [
        reference for reference in (index, *images) if cosign("verify", *public_key, reference).returncode == 0
    ] == []

    shim = tmp_path / "bin" / "cosign"
    shim.parent.mkdir()
    signing_key = f"--key {keys}/cosign.key --tlog-upload=false"
    shim.write_text(f'#!/bin/sh\ncommand=$1; shift\nexec {tool("cosign")} "$command" {signing_key} "$@"\n')
    shim.chmod(0o755)
    # The sign job's environment: publish's outputs, and where the predicates artifact was put.
    environment = os.environ | {
        "PATH": f"{shim.parent}:{os.environ['PATH']}",
        "COSIGN_PASSWORD": PASSWORD,
        "IMAGES": " ".join(images),
        "INDEXES": index,
        "PREDICATES": str(predicates),
    }
    signing = subprocess.run(["bash", "-e", "-c", ci_sign_script()], capture_output=True, text=True, env=environment)
    assert signing.returncode == 0, signing.stderr

    must(make("promote", f"PUBLISHED={file}", f"KEYS_DIR={keys}"), "`make promote`")
    assert publish.manifest_digest(entry["tags"][0]) == entry["index"]
    must(verify(file, keys), "`make verify`")
