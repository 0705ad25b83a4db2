"""make kube-play: the Kubernetes manifests, rendered by kustomize, run with `podman kube play` in a
Podman store of the test's own, against the secure image built with DOCKER's engine."""

import copy
import subprocess
import uuid

import kube_play
import pytest
from containers import PROJECT_NAME, build, docker, make, must

pytestmark = pytest.mark.kubernetes

# What make kube-play proves of the running pod, each a line of its own that says ok.
CLAIMS = (
    "serves on port 8080, the Service's targetPort 'http'",
    "the readinessProbe's GET /healthz on port 8080 answers 200",
    "the livenessProbe's GET /healthz on port 8080 answers 200",
    "runs as UID 10001 and GID 10001",
    "does not run as root",
    "holds no capability, nor can gain one",
    "may not gain privileges (no_new_privs)",
    "runs under a seccomp filter (RuntimeDefault)",
    "its root filesystem is read-only",
    "its /tmp volume is writable",
    "podman kube down leaves no pod, container, volume or port",
)


def leaves(value, path=()) -> dict[tuple, object]:
    """Every scalar of a manifest, by its path of keys and list positions."""
    if isinstance(value, dict):
        return {found: leaf for key, item in value.items() for found, leaf in leaves(item, (*path, key)).items()}
    if isinstance(value, list):
        return {found: leaf for index, item in enumerate(value) for found, leaf in leaves(item, (*path, index)).items()}
    return {path: value}


def test_the_play_differs_from_the_rendered_manifests_only_in_replicas_image_and_host_ports():
    """Podman publishes every container port on the host, so the play gives one replica its ports
    on 127.0.0.1; everything Kubernetes would enforce is played as rendered."""
    rendered = kube_play.render()
    played = kube_play.play_rendering(rendered, "localhost/played:secure", {8080: 18123})
    before, after = leaves(rendered), leaves(played)
    changed = {path: (before.get(path), after.get(path)) for path in before.keys() | after.keys()}
    deployment = next(index for index, resource in enumerate(rendered) if resource["kind"] == "Deployment")
    container = (deployment, "spec", "template", "spec", "containers", 0)
    assert {path: values for path, values in changed.items() if values[0] != values[1]} == {
        (deployment, "spec", "replicas"): (2, 1),
        (*container, "image"): (f"{PROJECT_NAME}:secure", "localhost/played:secure"),
        (*container, "ports", 0, "hostIP"): (None, "127.0.0.1"),
        (*container, "ports", 0, "hostPort"): (None, 18123),
    }


@pytest.fixture(scope="module")
def secure_image() -> str:
    """The secure image, built with make under a name of its own; removed at the end."""
    name = f"{PROJECT_NAME}-test-{uuid.uuid4().hex[:8]}"
    build("secure", name)
    yield name
    docker("image", "rm", "--force", f"{name}:secure", check=False)


def store(podman: list[str], *what: str) -> list[str]:
    """The IDs of what the test's Podman store holds: `ps`, `pod ps` or `volume ls`."""
    return subprocess.run([*podman, *what, "--quiet"], capture_output=True, text=True, check=True).stdout.split()


def test_make_kube_play_runs_the_pod_spec_as_the_manifests_ask_and_leaves_nothing(secure_image, podman):
    result = make("kube-play", f"IMAGE={secure_image}", f"PODMAN={' '.join(podman)}")
    said = [line for line in result.stdout.splitlines() if line.startswith("kube-play: ")]
    assert [claim for claim in CLAIMS if f"kube-play: ok: {claim}" not in said] == [], "\n".join(said)
    must(result, "`make kube-play`")
    assert (store(podman, "ps", "--all"), store(podman, "pod", "ps"), store(podman, "volume", "ls")) == ([], [], [])
    # The copy of the image the play ran is gone too; Podman's own pause image stays, as it would.
    images = subprocess.run([*podman, "images", "--format", "{{.Repository}}"], capture_output=True, text=True)
    assert images.stdout.split() == ["localhost/podman-pause"], images.stdout


def without_read_only_root(container: dict, pod: dict) -> None:
    del container["securityContext"]["readOnlyRootFilesystem"]


def as_root(container: dict, pod: dict) -> None:
    pod["securityContext"].update(runAsUser=0, runAsGroup=0, runAsNonRoot=False)


def with_a_wrong_probe_path(container: dict, pod: dict) -> None:
    container["readinessProbe"]["httpGet"]["path"] = "/nowhere"


# Pod specs the play must refuse, each with the one claim that fails on it.
BROKEN = {
    "without readOnlyRootFilesystem": (without_read_only_root, "its root filesystem is read-only"),
    "running as root": (as_root, "does not run as root"),
    "with a wrong probe path": (with_a_wrong_probe_path, "the readinessProbe's GET /nowhere on port 8080 answers 200"),
}


@pytest.mark.parametrize(("breaking", "claim"), BROKEN.values(), ids=BROKEN)
def test_kube_play_fails_a_pod_spec_that_breaks_one_claim_on_that_claim_alone(
    breaking, claim, secure_image, podman, monkeypatch, capsys, tmp_path
):
    """The controls for the test above: the same play, of the rendered manifests with one field
    changed, says FAILED on the claim that field breaks, ok on every other, and fails."""
    resources = copy.deepcopy(kube_play.render())
    pod = kube_play.by_kind(resources, "Deployment")["spec"]["template"]["spec"]
    breaking(pod["containers"][0], pod)
    monkeypatch.setattr(kube_play, "PODMAN", podman)
    # The play points Podman at a containers.conf of its own through this process's environment,
    # which monkeypatch puts back afterwards.
    (tmp_path / "containers.conf").write_text(kube_play.CONTAINERS_CONF)
    monkeypatch.setenv("CONTAINERS_CONF", str(tmp_path / "containers.conf"))
    code = kube_play.play(f"{secure_image}:secure", resources)
    said = [line for line in capsys.readouterr().out.splitlines() if line.startswith("kube-play: ")]
    failed = [line for line in said if "FAILED" in line]
    assert len(failed) == 1 and failed[0].startswith(f"kube-play: FAILED: {claim} ("), "\n".join(said)
    assert code == 1, "\n".join(said)
