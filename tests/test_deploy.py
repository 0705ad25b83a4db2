"""make run, compose.yaml and deploy/: valid, hardened and limited, and in step with the image.

The Kubernetes manifests are validated offline against the API schemas that kubernetes-validate
ships, and the admission policy against its CustomResourceDefinition; the tests marked kubernetes
render them with kubectl's kustomize and check them with checkov (make test-kubernetes). The
compose test runs `docker compose up --wait` for real and tears everything down.
"""

import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import jsonschema
import kubernetes_validate
import publish
import pytest
import yaml
from containers import (
    DOCKER,
    LIMITS,
    POD_MEMORY,
    PROJECT_NAME,
    ROOT,
    TABLE,
    VARIANTS,
    Container,
    docker,
    inspect,
    make,
    rename_project,
    request,
    running,
    wait_until_serving,
)
from docker_tools import engine, free_port

import settings

KUBERNETES = ROOT / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.37"
MANIFESTS = sorted(path.name for path in KUBERNETES.glob("*.yaml") if path.name != "kustomization.yaml")
PUBLISHED_OVERLAY = ROOT / "deploy" / "published"
# sigstore policy-controller's CustomResourceDefinition of ClusterImagePolicy, the file
# config/300-clusterimagepolicy.yaml of its release below, unchanged: the schema the admission
# policy is checked against. Bump it by downloading that file of a newer release over this one
# (https://raw.githubusercontent.com/sigstore/policy-controller/RELEASE/config/300-clusterimagepolicy.yaml)
# and putting its release and sha256 here.
POLICY_CRD = ROOT / "tests" / "schemas" / "policy-controller-clusterimagepolicy.yaml"
POLICY_CRD_RELEASE = "v0.15.1"
POLICY_CRD_SHA256 = "e23467593124763d9937b1180d48cefe89dc72cf04e9bcf84cbf29822d51b20c"
POLICY_VERSION = "v1beta1"
# Kyverno's CustomResourceDefinition of ClusterPolicy, the file
# config/crds/kyverno/kyverno.io_clusterpolicies.yaml of its release below, compressed with
# `gzip -n -9` (it is 1.4 MB) and otherwise unchanged: the schema the Kyverno policy is checked
# against. Bump it by downloading that file of a newer release
# (https://raw.githubusercontent.com/kyverno/kyverno/RELEASE/config/crds/kyverno/kyverno.io_clusterpolicies.yaml),
# compressing it over this one, and putting its release and the sha256 of the file as downloaded here.
KYVERNO_CRD = ROOT / "tests" / "schemas" / "kyverno-clusterpolicy.yaml.gz"
KYVERNO_CRD_RELEASE = "v1.19.0"
KYVERNO_CRD_SHA256 = "fb041ee35f8e89b5bca566bb6e00cd67fccc30be8859998757333f2a40d79655"
KYVERNO_VERSION = "v1"
KYVERNO_POLICY = PUBLISHED_OVERLAY / "kyverno" / "clusterpolicy.yaml"
# What the manifests hold in the place of the project's name, which kustomization.yaml puts there.
PLACEHOLDER = "PROJECT_NAME"


def manifest(name: str) -> dict:
    return yaml.safe_load((KUBERNETES / name).read_text())


def kustomization() -> dict:
    return yaml.safe_load((ROOT / "kustomization.yaml").read_text())


@pytest.fixture(scope="module")
def pod() -> dict:
    """The pod template of the Deployment."""
    return manifest("deployment.yaml")["spec"]["template"]["spec"]


@pytest.fixture(scope="module")
def web(pod) -> dict:
    """The one container of the pod."""
    (container,) = pod["containers"]
    return container


# Kubernetes, offline


@pytest.mark.unit
@pytest.mark.parametrize("name", MANIFESTS)
def test_manifest_is_valid_against_the_kubernetes_schema(name):
    kubernetes_validate.validate(manifest(name), KUBERNETES_VERSION, strict=True)


@pytest.mark.unit
def test_the_validation_rejects_a_field_kubernetes_does_not_know():
    """The control for the test above: strict validation does catch a mistake."""
    broken = manifest("deployment.yaml")
    broken["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFileSystem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


@pytest.mark.unit
def test_kustomization_lists_every_manifest_and_the_pod_runs_the_secure_image():
    assert kustomization()["resources"] == ["deploy/kubernetes"]
    assert sorted(manifest("kustomization.yaml")["resources"]) == MANIFESTS
    (container,) = manifest("deployment.yaml")["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"{PLACEHOLDER}:secure"


@pytest.mark.unit
def test_only_project_env_spells_the_projects_name():
    """The Makefile, compose.yaml, the manifests and the workflow take it from there."""
    name = PROJECT_NAME
    readers = ["Makefile", "compose.yaml", "kustomization.yaml", ".github/workflows/ci.yml"]
    for path in [ROOT / reader for reader in readers] + sorted(KUBERNETES.glob("*.yaml")):
        assert not re.search(rf"(?<!\w){re.escape(name)}(?!\w)", path.read_text()), f"{path} spells {name}"
    assert (KUBERNETES / "namespace.yaml").read_text().count(PLACEHOLDER) == 2, "in a comment, and as the name"


@pytest.mark.unit
def test_pod_meets_the_restricted_pod_security_standard(pod, web):
    pod_context = pod["securityContext"]
    assert pod_context["runAsNonRoot"] is True and pod_context.get("runAsUser") != 0
    assert pod_context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert not {"hostNetwork", "hostPID", "hostIPC"} & pod.keys()
    assert all(set(volume) <= {"name", "emptyDir"} for volume in pod["volumes"])
    assert pod["containers"] == [web] and not pod.get("initContainers") and not pod.get("ephemeralContainers")
    context = web["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert not context.get("privileged")
    # A container's own settings override the pod's: none of them may undo what the pod sets.
    assert context.get("runAsNonRoot", True) is True and context.get("runAsUser") != 0, context
    assert context.get("seccompProfile", {"type": "RuntimeDefault"})["type"] in ("RuntimeDefault", "Localhost")
    assert not [port for port in web["ports"] if port.get("hostPort")], web["ports"]


@pytest.mark.unit
def test_read_only_root_has_a_writable_tmp(pod, web):
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    tmp = [mount for mount in web["volumeMounts"] if mount["mountPath"] == "/tmp"]
    assert tmp and "emptyDir" in volumes[tmp[0]["name"]]


@pytest.mark.unit
def test_probes_ask_the_apps_health_route_on_the_container_port(client, web):
    ports = {port["name"]: port["containerPort"] for port in web["ports"]}
    assert ports == {"http": settings.PORT}
    for probe in (web["readinessProbe"], web["livenessProbe"]):
        assert probe["httpGet"]["port"] in ports
        assert client.get(probe["httpGet"]["path"]).status_code == 200


@pytest.mark.unit
def test_pods_get_longer_to_stop_than_gunicorn_gives_requests_in_flight(pod):
    assert pod["terminationGracePeriodSeconds"] > settings.GRACEFUL_TIMEOUT


@pytest.mark.unit
def test_requests_and_limits_are_set(web):
    assert {"cpu", "memory"} <= web["resources"]["requests"].keys()
    # The runtime tests hold the images to this limit; Docker's m and Kubernetes' Mi are both 2**20 bytes.
    assert web["resources"]["limits"]["memory"] == POD_MEMORY.removesuffix("m") + "Mi"


@pytest.mark.unit
def test_rollouts_and_disruptions_keep_pods_serving():
    deployment = manifest("deployment.yaml")
    assert deployment["spec"]["replicas"] >= 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pdb, hpa, service = map(manifest, ["poddisruptionbudget.yaml", "horizontalpodautoscaler.yaml", "service.yaml"])
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pdb["kind"] == "PodDisruptionBudget" and pdb["spec"]["minAvailable"] >= 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert hpa["kind"] == "HorizontalPodAutoscaler" and hpa["spec"]["minReplicas"] >= 2
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert service["kind"] == "Service" and service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"


@pytest.mark.unit
def test_everything_goes_into_a_namespace_that_enforces_the_restricted_profile():
    namespace = manifest("namespace.yaml")
    assert namespace["kind"] == "Namespace"
    assert namespace["metadata"]["name"] == PLACEHOLDER
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.unit
def test_network_policy_admits_only_the_http_port_and_denies_all_egress(web):
    policy = manifest("networkpolicy.yaml")
    labels = manifest("deployment.yaml")["spec"]["template"]["metadata"]["labels"]
    assert policy["kind"] == "NetworkPolicy"
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    assert sorted(policy["spec"]["policyTypes"]) == ["Egress", "Ingress"]
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": "http"}]
    assert {port["name"]: port["containerPort"] for port in web["ports"]}["http"] == settings.PORT
    assert not policy["spec"].get("egress")


# The admission policy, offline


def strict(schema: dict) -> dict:
    """A CustomResourceDefinition's OpenAPI schema as a JSON Schema that refuses fields it does not
    name, as kubectl's strict field validation refuses them."""
    result = dict(schema)
    if "properties" in schema:
        result["properties"] = {name: strict(field) for name, field in schema["properties"].items()}
        if not schema.get("x-kubernetes-preserve-unknown-fields"):
            result.setdefault("additionalProperties", False)
    if "items" in schema:
        result["items"] = strict(schema["items"])
    return result


def crd_schema(crd: dict, version_name: str) -> dict:
    """A cluster-wide resource's schema from its CRD, with what every cluster-wide object has:
    apiVersion, kind and a metadata of a name and labels, without a namespace."""
    (version,) = [version for version in crd["spec"]["versions"] if version["name"] == version_name]
    schema = strict(version["schema"]["openAPIV3Schema"])
    labels = {"type": "object", "additionalProperties": {"type": "string"}}
    metadata = {"name": {"type": "string"}, "labels": labels, "annotations": labels}
    schema["properties"] |= {
        "apiVersion": {"const": f"{crd['spec']['group']}/{version_name}"},
        "kind": {"const": crd["spec"]["names"]["kind"]},
        "metadata": {"type": "object", "properties": metadata, "additionalProperties": False, "required": ["name"]},
    }
    schema["required"] = ["apiVersion", "kind", "metadata", "spec"]
    return schema


def policy_schema() -> dict:
    """ClusterImagePolicy's schema."""
    return crd_schema(yaml.safe_load(POLICY_CRD.read_text()), POLICY_VERSION)


def validate_policy(policy: dict) -> None:
    jsonschema.Draft7Validator(policy_schema()).validate(policy)


def kyverno_crd() -> bytes:
    return gzip.decompress(KYVERNO_CRD.read_bytes())


def validate_kyverno_policy(policy: dict) -> None:
    schema = crd_schema(yaml.safe_load(kyverno_crd()), KYVERNO_VERSION)
    jsonschema.Draft7Validator(schema).validate(policy)


def glob_matches(glob: str, reference: str) -> bool:
    """policy-controller's image globs (pkg/apis/glob): ** matches any characters, * any but a
    slash, and the glob must match the whole reference."""
    parts = [re.escape(part).replace(r"\*", "[^/]*") for part in glob.split("**")]
    return re.fullmatch(".*".join(parts), reference) is not None


@pytest.mark.unit
def test_the_policy_schema_is_the_pinned_release_of_policy_controllers():
    assert publish.sha256_file(POLICY_CRD) == POLICY_CRD_SHA256, (
        f"not the file of policy-controller {POLICY_CRD_RELEASE}"
    )


@pytest.mark.unit
def test_the_admission_policy_is_valid_against_its_schema():
    validate_policy(yaml.safe_load((PUBLISHED_OVERLAY / "clusterimagepolicy.yaml").read_text()))


@pytest.mark.unit
def test_the_kyverno_schema_is_the_pinned_release_of_kyvernos():
    found = hashlib.sha256(kyverno_crd()).hexdigest()
    assert found == KYVERNO_CRD_SHA256, f"not the file of Kyverno {KYVERNO_CRD_RELEASE}"


@pytest.mark.unit
def test_the_kyverno_policy_is_valid_against_its_schema():
    validate_kyverno_policy(yaml.safe_load(KYVERNO_POLICY.read_text()))


@pytest.mark.unit
@pytest.mark.parametrize(
    "mistake",
    [
        lambda policy: policy["spec"]["rules"][0]["verifyImages"][0].update(imageReference=["x"]),
        lambda policy: policy["spec"]["rules"][0]["verifyImages"][0]["attestations"][0].update(conditions={}),
        lambda policy: policy["spec"]["rules"][0]["verifyImages"][0].update(failureAction="Refuse"),
    ],
    ids=["unknown-field", "conditions-not-a-list", "unknown-failure-action"],
)
def test_the_kyverno_validation_rejects_what_kubernetes_would(mistake):
    """The control for the test above."""
    policy = yaml.safe_load(KYVERNO_POLICY.read_text())
    mistake(policy)
    with pytest.raises(jsonschema.ValidationError):
        validate_kyverno_policy(policy)


@pytest.mark.unit
@pytest.mark.parametrize(
    "mistake",
    [
        {"spec": {"mode": "enforce", "imagez": []}},
        {"metadata": {"name": "x", "namespace": "y"}},
        {"kind": "ImagePolicy"},
    ],
    ids=["unknown-field", "namespace-on-a-cluster-object", "other-kind"],
)
def test_the_policy_validation_rejects_what_kubernetes_would(mistake):
    """The control for the test above: the schema check does catch a mistake."""
    policy = yaml.safe_load((PUBLISHED_OVERLAY / "clusterimagepolicy.yaml").read_text()) | mistake
    with pytest.raises(jsonschema.ValidationError):
        validate_policy(policy)


@pytest.mark.unit
@pytest.mark.parametrize(
    ("glob", "reference", "matches"),
    [
        ("registry.example.com/app@*", "registry.example.com/app@sha256:ab12", True),
        ("registry.example.com/app:*", "registry.example.com/app:1.0", True),
        ("registry.example.com/app:*", "registry.example.com/app-evil:1.0", False),
        ("registry.example.com/app@*", "registry.example.com/app/sub@sha256:ab12", False),
        ("registry.example.com/**", "registry.example.com/app/sub@sha256:ab12", True),
    ],
)
def test_globs_match_as_policy_controller_matches_them(glob, reference, matches):
    assert glob_matches(glob, reference) is matches


# Kubernetes, rendered with kubectl's kustomize (make test-kubernetes)


def kustomize(folder: Path) -> list[dict]:
    """The resources `kubectl apply -k FOLDER` would apply."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail(
            "kubectl renders the kustomization and is not installed: see https://kubernetes.io/docs/tasks/tools/"
        )
    result = subprocess.run([kubectl, "kustomize", folder], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return list(yaml.safe_load_all(result.stdout))


def renamed_copy(folder: Path, name: str) -> Path:
    """What kustomize reads of the project, in folder/checkout, with project.env naming it name."""
    copy = folder / "checkout"
    shutil.copytree(ROOT / "deploy", copy / "deploy", ignore=shutil.ignore_patterns("published.env", "signer.yaml"))
    shutil.copy2(ROOT / "kustomization.yaml", copy)
    shutil.copy2(ROOT / "project.env", copy)
    rename_project(copy, name)
    return copy


def assert_named(resources: list[dict], name: str, image: str = "") -> None:
    """Everything is in the namespace name, labelled with it, and the pods run image (name:secure)."""
    assert sorted(resource["kind"] for resource in resources) == sorted(manifest(m)["kind"] for m in MANIFESTS)
    for resource in resources:
        kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)
        metadata = resource["metadata"]
        assert metadata["labels"]["app.kubernetes.io/name"] == name
        if resource["kind"] == "Namespace":
            assert metadata["name"] == name
        else:
            assert metadata["namespace"] == name
        if resource["kind"] == "Deployment":
            pod = resource["spec"]["template"]
            assert pod["metadata"]["labels"]["app.kubernetes.io/name"] == name
            assert [container["image"] for container in pod["spec"]["containers"]] == [image or f"{name}:secure"]
    assert PLACEHOLDER not in yaml.safe_dump_all(resources)


@pytest.mark.kubernetes
def test_kustomize_names_everything_after_project_env():
    assert_named(kustomize(ROOT), PROJECT_NAME)


@pytest.mark.kubernetes
def test_a_new_name_in_project_env_renames_the_namespace_labels_and_image(tmp_path):
    resources = kustomize(renamed_copy(tmp_path, "my-service"))
    assert_named(resources, "my-service")
    assert PROJECT_NAME not in yaml.safe_dump_all(resources)


REPOSITORY = "registry.example.com/my-service"
INDEX = "sha256:" + "ab" * 32
PUBLIC_KEY = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----\n"


PUBLISHED = {
    "repository": REPOSITORY,
    "source": "https://git.example.org/my-service",
    "commit": "5c993dad4f5099ba152024092f4b52d1794f268f",
    "bases": [{"uri": "docker-image://localhost/python-stand-in:debian13", "sha256": "cd" * 32}],
    "variants": {"secure": {"index": INDEX}},
}


def published_overlay(folder: Path, *signer: str, kyverno: bool = False) -> list[dict]:
    """deploy/published/ rendered in a copy, after `make push` published the secure index INDEX to
    REPOSITORY and wrote the overlay's inputs with this signer; with kyverno, for a cluster that
    runs Kyverno, as the overlay's comment says to change it."""
    copy = renamed_copy(folder, PROJECT_NAME)
    (folder / "published.json").write_text(json.dumps(PUBLISHED))
    overlay = copy / "deploy" / "published"
    if kyverno:
        kustomization = yaml.safe_load((overlay / "kustomization.yaml").read_text())
        kustomization["components"].insert(0, "kyverno")
        (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    command = ["deploy-files", "--published", str(folder / "published.json"), "--overlay", str(overlay), *signer]
    environment = {**os.environ, "PYTHONPATH": str(ROOT / "scripts" / "3-ship")}
    written = subprocess.run(
        [sys.executable, "-c", f"import publish, sys; sys.exit(publish.main({command!r}))"],
        cwd=copy,
        capture_output=True,
        text=True,
        env=environment,
    )
    assert written.returncode == 0, written.stderr
    return kustomize(overlay)


def by_kind(resources: list[dict]) -> dict[str, dict]:
    return {resource["kind"]: resource for resource in resources}


@pytest.mark.kubernetes
def test_the_published_overlay_runs_the_published_index_by_digest(tmp_path):
    public_key = tmp_path / "cosign.pub"
    public_key.write_text(PUBLIC_KEY)
    resources = published_overlay(tmp_path, "--key", str(public_key))
    (container,) = by_kind(resources)["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"{REPOSITORY}@{INDEX}"
    others = [resource for resource in resources if resource["kind"] != "ClusterImagePolicy"]
    assert_named(others, PROJECT_NAME, image=f"{REPOSITORY}@{INDEX}")


@pytest.mark.kubernetes
def test_the_admission_policy_admits_the_published_repository_signed_by_the_key_alone(tmp_path):
    public_key = tmp_path / "cosign.pub"
    public_key.write_text(PUBLIC_KEY)
    resources = by_kind(published_overlay(tmp_path, "--key", str(public_key)))
    policy = resources["ClusterImagePolicy"]
    validate_policy(policy)
    assert policy["metadata"]["name"] == PROJECT_NAME
    assert policy["spec"]["mode"] == "enforce"
    assert resources["Namespace"]["metadata"]["labels"]["policy.sigstore.dev/include"] == "true"
    globs = [image["glob"] for image in policy["spec"]["images"]]
    (container,) = resources["Deployment"]["spec"]["template"]["spec"]["containers"]
    for reference in (container["image"], f"{REPOSITORY}:secure"):
        assert any(glob_matches(glob, reference) for glob in globs), reference
    for reference in (f"{REPOSITORY}-other@{INDEX}", f"registry.example.com/other@{INDEX}", f"{REPOSITORY}/x:1"):
        assert not any(glob_matches(glob, reference) for glob in globs), reference
    (authority,) = policy["spec"]["authorities"]
    assert {"key", "keyless", "static"} & authority.keys() == {"key"}
    assert authority["key"] == {"data": PUBLIC_KEY}
    assert_requires_the_provenance_policy(authority)


def assert_requires_the_provenance_policy(authority: dict) -> None:
    """The authority admits only with a provenance that meets provenance.cue, the text make verify checks."""
    (attestation,) = authority["attestations"]
    assert attestation["predicateType"] == "https://slsa.dev/provenance/v1"
    assert attestation["policy"] == {"type": "cue", "data": publish.policy_text(PUBLISHED)}


@pytest.mark.kubernetes
def test_both_admission_policies_admit_either_key_during_a_rotation(tmp_path):
    """Two public keys: policy-controller's authorities and Kyverno's attestors each admit one
    signed by either (an authority each, an entry each of a count of one)."""
    keys = [tmp_path / "cosign.pub", tmp_path / "cosign-2.pub"]
    for key, data in zip(keys, (PUBLIC_KEY, PUBLIC_KEY.replace("MFkw", "MFkx")), strict=True):
        key.write_text(data)
    signers = [argument for key in keys for argument in ("--key", str(key))]
    policy = by_kind(published_overlay(tmp_path / "policy-controller", *signers))["ClusterImagePolicy"]
    validate_policy(policy)
    assert [authority["key"]["data"] for authority in policy["spec"]["authorities"]] == [k.read_text() for k in keys]
    for authority in policy["spec"]["authorities"]:
        assert_requires_the_provenance_policy(authority)
    kyverno = by_kind(published_overlay(tmp_path / "kyverno", *signers, kyverno=True))["ClusterPolicy"]
    validate_kyverno_policy(kyverno)
    (rule,) = kyverno["spec"]["rules"][0]["verifyImages"]
    for attestors in (rule["attestors"], rule["attestations"][0]["attestors"]):
        (attestor,) = attestors
        assert attestor["count"] == 1
        assert [entry["keys"]["publicKeys"] for entry in attestor["entries"]] == [k.read_text() for k in keys]


@pytest.mark.kubernetes
def test_the_kyverno_overlay_admits_the_published_repository_with_the_provenance_policy(tmp_path):
    public_key = tmp_path / "cosign.pub"
    public_key.write_text(PUBLIC_KEY)
    resources = by_kind(published_overlay(tmp_path, "--key", str(public_key), kyverno=True))
    assert "ClusterImagePolicy" not in resources, "a cluster that runs Kyverno has no policy-controller's resource"
    policy = resources["ClusterPolicy"]
    validate_kyverno_policy(policy)
    assert policy["metadata"] == {"name": PROJECT_NAME, "labels": {"app.kubernetes.io/name": PROJECT_NAME}}
    (rule,) = policy["spec"]["rules"][0]["verifyImages"]
    assert rule["imageReferences"] == [f"{REPOSITORY}@*", f"{REPOSITORY}:*"]
    assert rule["failureAction"] == "Enforce"
    (entry,) = rule["attestors"][0]["entries"]
    # Signed with a key, with no transparency log entry and no certificate: both checks off.
    assert entry["keys"] == {"publicKeys": PUBLIC_KEY, "rekor": {"ignoreTlog": True}, "ctlog": {"ignoreSCT": True}}
    (attestation,) = rule["attestations"]
    assert attestation["type"] == "https://slsa.dev/provenance/v1"
    assert attestation["conditions"] == publish.kyverno_conditions(PUBLISHED)


@pytest.mark.kubernetes
def test_the_admission_policy_admits_a_keyless_signers_identity_alone(tmp_path):
    identity = "https://github.com/acme/my-service/.github/workflows/ci.yml@refs/heads/main"
    policy = by_kind(published_overlay(tmp_path, "--identity", identity))["ClusterImagePolicy"]
    validate_policy(policy)
    (authority,) = policy["spec"]["authorities"]
    assert {"key", "keyless", "static"} & authority.keys() == {"keyless"}
    assert authority["keyless"]["identities"] == [{"issuer": publish.GITHUB_ISSUER, "subject": identity}]


def checkov(resources: list[dict], folder: Path) -> dict[str, set[str]]:
    """The IDs of checkov's Kubernetes checks that passed and failed on rendered resources."""
    binary = ROOT / os.environ.get("CHECKOV", ".venv/checkov/bin/checkov")
    if not binary.exists():
        pytest.fail(f"checkov is not at {binary}: make test-kubernetes installs it there.")
    rendered = folder / "rendered.yaml"
    rendered.write_text(yaml.safe_dump_all(resources))
    command = [binary, "--file", rendered, "--framework", "kubernetes", "--skip-download", "--output", "json"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    results = json.loads(result.stdout)["results"]
    return {outcome: {check["check_id"] for check in results[f"{outcome}_checks"]} for outcome in ("passed", "failed")}


@pytest.mark.kubernetes
def test_checkov_finds_nothing_in_the_published_overlay_and_its_image_pinned_by_digest(tmp_path):
    public_key = tmp_path / "cosign.pub"
    public_key.write_text(PUBLIC_KEY)
    checks = checkov(published_overlay(tmp_path, "--key", str(public_key)), tmp_path)
    assert checks["failed"] == set()
    assert "CKV_K8S_43" in checks["passed"]


@pytest.mark.kubernetes
def test_checkov_sees_that_the_tagged_image_of_the_plain_kustomization_is_not_pinned(tmp_path):
    """The control for the test above: the same check fails on a tag."""
    assert "CKV_K8S_43" in checkov(kustomize(ROOT), tmp_path)["failed"]


# Kubernetes against the built image


@pytest.mark.integration
def test_manifest_and_image_agree_on_user_and_port(images, web, pod):
    config = inspect(images["secure"])["Config"]
    assert config["User"] == f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}"
    assert config["ExposedPorts"] == {f"{web['ports'][0]['containerPort']}/tcp": {}}


@pytest.mark.integration
def test_image_serves_the_probes_as_the_pod_would_run_it(images, web, pod):
    """Read-only root, the pod's volumes as tmpfs, its user, no capabilities: the probes answer 200."""
    mounts = [arg for mount in web["volumeMounts"] for arg in ("--tmpfs", mount["mountPath"])]
    user = f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}"
    flags = ("--read-only", *mounts, "--cap-drop", "ALL", "--security-opt", "no-new-privileges", "--user", user)
    with running(images["secure"], *flags) as container:
        for probe in (web["readinessProbe"], web["livenessProbe"]):
            assert container.get(probe["httpGet"]["path"]).status == 200


# Docker Compose


@pytest.fixture
def compose_project(images):
    """compose.yaml brought up with `docker compose up --wait` on a free port, and always down again;
    the project's name and the port."""
    project, port = f"{PROJECT_NAME}-test-{uuid.uuid4().hex[:8]}", free_port()
    name, _ = images["secure"].split(":")
    environment = {"PROJECT_NAME": PROJECT_NAME, "IMAGE": name, "VARIANT": "secure", "PORT": str(port)}
    command = [*DOCKER, "compose", "--project-name", project, "--file", str(ROOT / "compose.yaml")]
    env = {**os.environ, **environment}
    try:
        up = subprocess.run([*command, "up", "--detach", "--wait"], env=env, capture_output=True, text=True)
        assert up.returncode == 0, f"docker compose up failed:\n{up.stderr}"
        yield project, port
    finally:
        subprocess.run([*command, "down", "--volumes", "--remove-orphans"], env=env, capture_output=True)
        assert not docker("network", "ls", "--quiet", "--filter", f"name={project}").stdout.strip()


@pytest.mark.unit
def test_compose_publishes_port_8080_on_localhost_unless_port_says_otherwise():
    service = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]["web"]
    assert service["ports"] == ["127.0.0.1:${PORT:-8080}:8080"]


@pytest.mark.integration
@pytest.mark.docker
def test_compose_serves_the_secure_image_on_localhost(compose_project):
    _, port = compose_project
    assert request(port, "/healthz").json() == {"status": "ok"}


@pytest.mark.integration
@pytest.mark.docker
def test_compose_runs_it_hardened(compose_project):
    project, port = compose_project
    project_label = f"label=com.docker.compose.project={project}"
    container = docker("ps", "--quiet", "--filter", project_label).stdout.split()
    assert len(container) == 1
    details = inspect(container[0])
    host = details["HostConfig"]
    assert host["ReadonlyRootfs"] is True
    assert "/tmp" in host["Tmpfs"]
    assert host["CapDrop"] == ["ALL"]
    assert "no-new-privileges:true" in host["SecurityOpt"]
    assert (host["Memory"], host["NanoCpus"], host["PidsLimit"]) == (256 * 1024 * 1024, 1_000_000_000, 128)
    assert host["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 5}
    assert host["PortBindings"] == {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}
    assert details["State"]["Health"]["Status"] == "healthy"
    assert details["Config"]["User"] == inspect(details["Image"])["Config"]["User"]


# make run


def makefile_default(name: str) -> str:
    return re.search(rf"^{name} \?= (\S+)$", (ROOT / "Makefile").read_text(), re.MULTILINE).group(1)


@pytest.mark.unit
def test_make_run_compose_and_the_tests_set_the_same_limits():
    service = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]["web"]
    limits = {"memory": makefile_default("MEMORY"), "cpus": makefile_default("CPUS"), "pids": makefile_default("PIDS")}
    assert limits["memory"] == service["mem_limit"]
    assert float(limits["cpus"]) == float(service["cpus"])
    assert int(limits["pids"]) == service["pids_limit"]
    assert ("--memory", limits["memory"], "--cpus", limits["cpus"], "--pids-limit", limits["pids"]) == LIMITS


def hardening_flags(container: str) -> list[str]:
    """The hardening a container runs under, from its HostConfig, written as `docker run` takes it.
    Podman lists each capability it drops, and drops some by default: there, --cap-drop ALL is what
    leaves no process a capability it could ever gain, an empty bounding set, as its top reads it."""
    host = inspect(container)["HostConfig"]
    flags = ["--read-only"] if host["ReadonlyRootfs"] else []
    flags += [flag for path in host.get("Tmpfs") or {} for flag in ("--tmpfs", path)]
    if engine() == "podman":
        bounding = {line.strip() for line in docker("top", container, "capbnd").stdout.splitlines()[1:]}
        flags += ["--cap-drop", "ALL"] if bounding == {"none"} else []
    else:
        flags += [flag for capability in host.get("CapDrop") or [] for flag in ("--cap-drop", capability)]
    flags += [flag for option in host.get("SecurityOpt") or [] for flag in ("--security-opt", option)]
    return flags


@pytest.mark.unit
def test_the_makefile_table_hardens_secure_as_the_readme_says():
    """make run's hardening comes from the table; secure's entry is the lesson's lockdown line."""
    assert TABLE["secure"]["hardening"] == [
        *("--read-only", "--tmpfs", "/tmp"),
        *("--cap-drop", "ALL", "--security-opt", "no-new-privileges"),
    ]
    assert TABLE["production"]["hardening"] == ["--cap-drop", "ALL", "--security-opt", "no-new-privileges"]


@pytest.mark.integration
@pytest.mark.parametrize("variant", VARIANTS)
def test_make_run_limits_and_hardens_each_variant_on_127_0_0_1_only(images, variant):
    name, _ = images[variant].split(":")
    container, port = f"{PROJECT_NAME}-test-{uuid.uuid4().hex[:8]}", free_port()
    arguments = (f"IMAGE={name}", f"CONTAINER={container}", f"PORT={port}")
    try:
        # -o: take the image as built; the test runs exactly the image under test.
        result = make(*arguments, "-o", f"build-{variant}", f"run-{variant}")
        assert result.returncode == 0, result.stdout + result.stderr
        wait_until_serving(Container(id=container, port=port))
        host = inspect(container)["HostConfig"]
        hardening = hardening_flags(container)
    finally:
        make(*arguments, "stop")
    assert host["Memory"] == 256 * 1024 * 1024
    assert host["NanoCpus"] == 1_000_000_000
    assert host["PidsLimit"] == 128
    assert hardening == TABLE[variant]["hardening"]
    assert host["PortBindings"] == {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}
    assert not docker("ps", "--all", "--quiet", "--filter", f"name={container}").stdout.strip()
