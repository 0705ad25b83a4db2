"""Publishing: `make registry`, `make push` and `make verify` against a registry on this machine.

The module starts a registry of its own on a free port, its storage in a temporary folder, and
publishes the secure image under test for both platforms, signed with a key made for the module.
Each way a published image can be tampered with is then made real in a repository of its own, and
`make verify` must fail on it, saying which check failed.
"""

import base64
import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import publish
import pytest
import yaml
from containers import LOCKDOWN, PROJECT_NAME, ROOT, docker, inspect, make, must, platform_tag, request
from docker_tools import free_port, podman_run_flags, tool

PASSWORD = "a password for this test"


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


def push(images: dict, repository: str, keys: Path, published: Path, *settings: str) -> dict:
    """`make push` of the secure image under test to REGISTRY, with the overlay's inputs written
    into the folder `overlay` beside the digests; what it published."""
    name = images["secure"].split(":")[0]
    arguments = make_env(
        IMAGE=name,
        REGISTRY=repository,
        KEYS_DIR=str(keys),
        PUBLISHED=str(published),
        OVERLAY=str(published.parent / "overlay"),
        COSIGN_PASSWORD=PASSWORD,
    )
    must(make("push", "PUBLISH=secure", *arguments, *settings), "`make push`")
    return json.loads(published.read_text())


def verify(published: Path, keys: Path) -> subprocess.CompletedProcess:
    return make("verify", f"PUBLISHED={published}", f"KEYS_DIR={keys}")


@pytest.fixture(scope="module")
def published(images, emulated, registry, keys, tmp_path_factory) -> dict:
    """The secure image published for both platforms; the emulated platform's build `make push`
    makes is removed."""
    path = tmp_path_factory.mktemp("published") / "published.json"
    try:
        yield push(images, registry, keys, path) | {"file": path}
    finally:
        docker("image", "rm", "--force", images["secure"] + platform_tag(emulated), check=False)


@pytest.fixture
def single(images, registry, keys, tmp_path) -> dict:
    """The secure image published for this machine's platform alone, in a repository of its own,
    for a test to tamper with."""
    repository = f"{registry}/{tmp_path.name.lower()}"
    return push(images, repository, keys, tmp_path / "published.json", "PUBLISH_PLATFORM=") | {
        "file": tmp_path / "published.json"
    }


def delete_tag(repository: str, tag: str) -> None:
    """Delete the manifest a tag names, as someone with write access to the registry can."""
    address, name = repository.split("/", 1)
    host, port = address.split(":")
    accept = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
    found = request(int(port), f"/v2/{name}/manifests/{tag}", "HEAD", headers=accept, host=host, timeout=30)
    assert found.status == 200, f"{repository}:{tag}: {found.status}"
    digest = found.headers["Docker-Content-Digest"]
    deleted = request(int(port), f"/v2/{name}/manifests/{digest}", "DELETE", host=host, timeout=30)
    assert deleted.status == 202, f"{repository}@{digest}: {deleted.status} {deleted.body!r}"


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
def test_the_index_and_each_platforms_image_verify_on_their_own_with_the_public_key(published, keys):
    """The plain cosign commands the README gives consumers, outside the Makefile."""
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
    assert patch["path"] == "/spec/authorities/0/key"
    assert patch["value"]["data"] == (keys / "cosign.pub").read_text()
    public_key = tmp_path / "admitted.pub"
    public_key.write_text(patch["value"]["data"])
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


@pytest.mark.integration
@pytest.mark.docker
def test_the_provenance_names_the_commit_the_base_and_the_requirements(published, keys, images):
    repository = published["repository"]
    native = inspect(images["secure"])
    labels = native["Config"]["Labels"]
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    for platform, digest in published["variants"]["secure"]["platforms"].items():
        statement = attestation(keys, f"{repository}@{digest}", "slsaprovenance1")
        assert statement["predicateType"] == "https://slsa.dev/provenance/v1"
        definition = statement["predicate"]["buildDefinition"]
        dependencies = {d["uri"]: d for d in definition["resolvedDependencies"]}
        assert dependencies[labels["org.opencontainers.image.source"]]["digest"] == {"gitCommit": commit.strip()}
        requirements = publish.sha256_file(ROOT / "requirements.txt")
        assert dependencies["requirements.txt"]["digest"] == {"sha256": requirements}
        assert definition["externalParameters"]["request"]["platform"] == platform
        base = [uri for uri in dependencies if uri.startswith("docker-image://")]
        assert len(base) == 1 and dependencies[base[0]]["digest"]["sha256"]
        # The engine's own image is built on the base the label names; the emulated one on its platform's.
        if platform == f"{native['Os']}/{native['Architecture']}":
            assert base == [f"docker-image://{labels['org.opencontainers.image.base.name']}"]


@pytest.mark.integration
@pytest.mark.docker
def test_an_image_pulled_by_digest_into_a_store_that_never_saw_it_serves_locked_down(published, podman):
    """Podman pulls the index by digest into its empty store and runs this machine's image under
    the README's lockdown, without a network: the image's own Python asks it for /healthz."""
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
def test_verify_fails_when_another_image_is_pushed_over_the_tag(single, keys, images):
    tag = single["variants"]["secure"]["tags"][0]
    archive = Path(single["file"]).parent / "production.tar"
    docker("save", "--output", str(archive), images["production"])
    skopeo = tool("skopeo")
    subprocess.run([skopeo, "copy", "--quiet", "--format", "oci", "--dest-tls-verify=false",
                    f"docker-archive:{archive}", f"docker://{tag}"], check=True)  # fmt: skip
    result = verify(single["file"], keys)
    assert result.returncode != 0
    assert f"{tag} now names" in result.stderr and "something was pushed over the tag" in result.stderr


@pytest.mark.integration
@pytest.mark.docker
def test_a_push_that_cannot_sign_leaves_the_variants_tag_where_it_was(single, keys, images, tmp_path):
    """Another image pushed with the wrong password for the key: nothing signs it, so `:secure`
    must still name the index that was signed before."""
    entry = single["variants"]["secure"]
    command = [
        sys.executable,
        str(ROOT / "scripts" / "3-ship" / "publish.py"),
        "push",
        "--repository",
        single["repository"],
    ]
    command += ["--version", "another", "--published", str(tmp_path / "failed.json"), "--key", str(keys / "cosign.key")]
    environment = {**os.environ, "COSIGN_PASSWORD": "not the password"}
    result = subprocess.run(
        [*command, f"secure={images['production']}"], capture_output=True, text=True, env=environment
    )
    assert result.returncode != 0
    assert "cosign" in result.stderr and "sign" in result.stderr
    assert publish.manifest_digest(entry["tags"][0]) == entry["index"]
    assert not (tmp_path / "failed.json").exists()


@pytest.mark.integration
@pytest.mark.docker
def test_verify_fails_for_an_unsigned_image(single, keys):
    repository, index = single["repository"], single["variants"]["secure"]["index"]
    delete_tag(repository, index.replace(":", "-") + ".sig")
    result = verify(single["file"], keys)
    assert result.returncode != 0
    assert f"{repository}@{index} carries no valid signature by the key" in result.stderr


@pytest.mark.integration
@pytest.mark.docker
def test_verify_fails_for_an_image_signed_with_another_key(single, tmp_path):
    other = tmp_path / "other-keys"
    must(make("keys", f"KEYS_DIR={other}", "COSIGN_PASSWORD="), "`make keys` of another pair")
    result = verify(single["file"], other)
    assert result.returncode != 0
    assert "carries no valid signature by the key" in result.stderr


@pytest.mark.integration
@pytest.mark.docker
def test_verify_fails_when_an_attestation_is_deleted(single, keys):
    repository = single["repository"]
    [digest] = single["variants"]["secure"]["platforms"].values()
    delete_tag(repository, digest.replace(":", "-") + ".att")
    result = verify(single["file"], keys)
    assert result.returncode != 0
    assert f"{repository}@{digest} has no valid cyclonedx attestation" in result.stderr


@pytest.mark.integration
@pytest.mark.docker
def test_verify_fails_when_an_attestation_is_replaced_by_one_of_another_key(single, keys, tmp_path):
    repository = single["repository"]
    [digest] = single["variants"]["secure"]["platforms"].values()
    delete_tag(repository, digest.replace(":", "-") + ".att")
    other = tmp_path / "other-keys"
    must(make("keys", f"KEYS_DIR={other}", "COSIGN_PASSWORD="), "`make keys` of another pair")
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps({"bomFormat": "CycloneDX", "specVersion": "1.6", "components": [{"name": "x"}]}))
    made = cosign("attest", "--yes", "--key", str(other / "cosign.key"), "--tlog-upload=false",
                  "--type", "cyclonedx", "--predicate", str(forged), f"{repository}@{digest}")  # fmt: skip
    assert made.returncode == 0, made.stderr
    result = verify(single["file"], keys)
    assert result.returncode != 0
    assert f"{repository}@{digest} has no valid cyclonedx attestation" in result.stderr


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
