"""compose.yaml and deploy/kubernetes/: valid, as hardened as the secure image, and in step with it.

The Kubernetes manifests are validated offline against the API schemas that kubernetes-validate
ships. The compose test runs `docker compose up --wait` for real and tears everything down.
"""

import os
import subprocess
import uuid

import kubernetes_validate
import pytest
import yaml
from containers import DOCKER, ROOT, docker, inspect, request, running

import app as app_module
import settings

KUBERNETES = ROOT / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.37"
MANIFESTS = sorted(path.name for path in KUBERNETES.glob("*.yaml") if path.name != "kustomization.yaml")


def manifest(name: str) -> dict:
    return yaml.safe_load((KUBERNETES / name).read_text())


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
def test_kustomization_lists_every_manifest_and_sets_the_secure_image():
    kustomization = manifest("kustomization.yaml")
    assert sorted(kustomization["resources"]) == MANIFESTS
    assert kustomization["images"] == [{"name": "flask-app", "newTag": "secure"}]


@pytest.mark.unit
def test_pod_meets_the_restricted_pod_security_standard(pod, web):
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert not {"hostNetwork", "hostPID", "hostIPC"} & pod.keys()
    assert all(set(volume) <= {"name", "emptyDir"} for volume in pod["volumes"])
    context = web["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert not context.get("privileged")


@pytest.mark.unit
def test_read_only_root_has_a_writable_tmp(pod, web):
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    tmp = [mount for mount in web["volumeMounts"] if mount["mountPath"] == "/tmp"]
    assert tmp and "emptyDir" in volumes[tmp[0]["name"]]


@pytest.mark.unit
def test_probes_ask_the_apps_health_route_on_the_container_port(web):
    ports = {port["name"]: port["containerPort"] for port in web["ports"]}
    assert ports == {"http": settings.PORT}
    client = app_module.app.test_client()
    for probe in (web["readinessProbe"], web["livenessProbe"]):
        assert probe["httpGet"]["port"] in ports
        assert client.get(probe["httpGet"]["path"]).status_code == 200


@pytest.mark.unit
def test_pods_get_longer_to_stop_than_gunicorn_gives_requests_in_flight(pod):
    assert pod["terminationGracePeriodSeconds"] > settings.GRACEFUL_TIMEOUT


@pytest.mark.unit
def test_requests_and_limits_are_set(web):
    assert {"cpu", "memory"} <= web["resources"]["requests"].keys()
    assert "memory" in web["resources"]["limits"]


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
    """compose.yaml brought up with `docker compose up --wait` on port 8080, and always down again."""
    project = f"flask-app-test-{uuid.uuid4().hex[:8]}"
    name, _ = images["secure"].split(":")
    environment = {"IMAGE": name, "VARIANT": "secure", "PORT": "8080"}
    command = [*DOCKER, "compose", "--project-name", project, "--file", str(ROOT / "compose.yaml")]
    env = {**os.environ, **environment}
    try:
        up = subprocess.run([*command, "up", "--detach", "--wait"], env=env, capture_output=True, text=True)
        assert up.returncode == 0, f"docker compose up failed:\n{up.stderr}"
        yield project
    finally:
        subprocess.run([*command, "down", "--volumes", "--remove-orphans"], env=env, capture_output=True)
        assert not docker("network", "ls", "--quiet", "--filter", f"name={project}").stdout.strip()


@pytest.mark.integration
def test_compose_serves_the_secure_image_on_localhost_8080(compose_project):
    assert request(8080, "/").status == 200
    assert request(8080, "/healthz").json() == {"status": "ok"}


@pytest.mark.integration
def test_compose_runs_it_hardened(compose_project):
    project_label = f"label=com.docker.compose.project={compose_project}"
    container = docker("ps", "--quiet", "--filter", project_label).stdout.split()
    assert len(container) == 1
    details = inspect(container[0])
    host = details["HostConfig"]
    assert host["ReadonlyRootfs"] is True
    assert "/tmp" in host["Tmpfs"]
    assert host["CapDrop"] == ["ALL"]
    assert "no-new-privileges:true" in host["SecurityOpt"]
    assert host["Memory"] > 0 and host["NanoCpus"] > 0 and host["PidsLimit"] > 0
    assert host["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 5}
    assert host["PortBindings"] == {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}]}
    assert details["State"]["Health"]["Status"] == "healthy"
    assert details["Config"]["User"] == inspect(details["Image"])["Config"]["User"]
