"""The publishing jobs of the CI workflow, read from .github/workflows/ci.yml: the shape SLSA Build
level 3 asks of them, and the tools each job that publishes or tests publishing installs.

publish pushes and makes the predicates, sign alone holds the signing identity and runs only
cosign, release moves the tags to what was signed. GitHub Actions does not run here, so these tests
hold the workflow's text to that shape: who may ask for an OIDC token, what the signing job runs,
where it takes its digests and predicates from, and that nothing cancels it half-way.
"""

import re
import shlex

import pytest
import yaml
from containers import ROOT
from docker_tools import DEBIAN_PACKAGES, TWO_PLATFORMS, ci_builds

pytestmark = pytest.mark.unit

WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"
MAIN = "github.event_name == 'push' && github.ref == 'refs/heads/main'"
# The signing job's actions: cosign itself, and the artifact of the predicates.
SIGNING_ACTIONS = {"sigstore/cosign-installer", "actions/download-artifact"}
# What a run step of the signing job may call besides cosign: the shell's own builtins and keywords.
SHELL_BUILTINS = {"for", "do", "done", "if", "then", "else", "fi", "[", "echo", "exit", "shopt", "{", "}"}
# What a command line of the workflow runs, by the tools it needs on the runner.
TOOLS = {
    "make test-integration": {"cosign", "skopeo", "docker-registry", "qemu"},
    "make push": {"skopeo"},
    "make promote": {"cosign"},
    "make verify": {"cosign"},
    "make test-kubernetes": {"catatonit"},
    "make kube-play": {"catatonit"},
}


@pytest.fixture(scope="module")
def jobs() -> dict:
    """The workflow's jobs, by name."""
    return yaml.safe_load(WORKFLOW.read_text())["jobs"]


def actions_of(job: dict) -> list[str]:
    """The actions a job's steps use, without their pins."""
    return [step["uses"].split("@")[0] for step in job.get("steps", []) if "uses" in step]


def steps_using(job: dict, action: str) -> list[dict]:
    return [step for step in job.get("steps", []) if step.get("uses", "").startswith(f"{action}@")]


def scripts_of(job: dict) -> list[str]:
    return [step["run"] for step in job.get("steps", []) if "run" in step]


def commands_of(script: str) -> list[list[str]]:
    """Each simple command of a shell script, as its words: the first word of a line and every word
    after ;, |, ||, &&, do, then, else and {; variables set before a command left out."""
    commands = []
    for line in script.replace("\\\n", " ").splitlines():
        if line.strip().startswith("#"):
            continue
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.commenters = ""
        lexer.whitespace_split = True
        current: list[str] = []
        for word in lexer:
            if word in {";", "|", "||", "&&", "&"}:
                commands.append(current)
                current = []
            elif not current and re.fullmatch(r"[A-Za-z_]\w*=.*", word):
                continue
            else:
                current.append(word)
                if len(current) == 1 and word in {"do", "then", "else", "{"}:
                    commands.append(current)
                    current = []
        commands.append(current)
    return [command for command in commands if command]


def signing_jobs(jobs: dict) -> list[str]:
    """The jobs that may ask GitHub for an OIDC token, which keyless signing signs with."""
    return [name for name, job in jobs.items() if job.get("permissions", {}).get("id-token") == "write"]


def test_the_workflow_grants_nothing_by_default():
    assert yaml.safe_load(WORKFLOW.read_text())["permissions"] == {}


def test_only_the_sign_job_holds_the_signing_identity_and_pages_the_one_to_deploy(jobs):
    """deploy-pages proves itself to GitHub Pages with an OIDC token too; that job runs GitHub's two
    Pages actions and nothing else, so it can sign nothing."""
    assert signing_jobs(jobs) == ["sign", "pages"]
    assert actions_of(jobs["pages"]) == ["actions/configure-pages", "actions/deploy-pages"]
    assert scripts_of(jobs["pages"]) == []
    cosign_signing = [
        name
        for name, job in jobs.items()
        for script in scripts_of(job)
        for command in commands_of(script)
        if command[:2] in (["cosign", "sign"], ["cosign", "attest"])
    ]
    assert set(cosign_signing) == {"sign"}


def test_the_sign_job_runs_only_pinned_cosign_and_the_artifact_download(jobs):
    """No checkout, no toolchain, no scanner, no pip: the pinned actions it needs, and run steps that
    call cosign and nothing but the shell's builtins."""
    sign = jobs["sign"]
    assert set(actions_of(sign)) <= SIGNING_ACTIONS
    called = {command[0] for script in scripts_of(sign) for command in commands_of(script)}
    assert called - SHELL_BUILTINS == {"cosign"}, f"the sign job runs {called - SHELL_BUILTINS - {'cosign'}}"
    assert sign["permissions"] == {"packages": "write", "id-token": "write"}


def test_every_job_installs_the_cosign_release_debian_pins(jobs):
    """The cosign of CI is the one make push installs on Debian: a release pinned, not the latest."""
    release = "v" + DEBIAN_PACKAGES["cosign"][1].split("-")[0]
    installers = [step for job in jobs.values() for step in steps_using(job, "sigstore/cosign-installer")]
    assert installers
    assert [step.get("with", {}).get("cosign-release") for step in installers] == [release] * len(installers)


def test_the_sign_job_takes_its_predicates_by_exact_name_from_the_job_it_needs(jobs):
    """One artifact, by its name, uploaded by one job only: the publish job that sign needs."""
    downloads = [step["with"] for step in steps_using(jobs["sign"], "actions/download-artifact")]
    assert [set(download) for download in downloads] == [{"name", "path"}]
    name = downloads[0]["name"]
    assert not set(name) & set("*?[]{}!")
    uploaders = [
        job_name
        for job_name, job in jobs.items()
        for step in steps_using(job, "actions/upload-artifact")
        if step["with"]["name"] == name
    ]
    assert uploaders == ["publish"]
    assert jobs["sign"]["needs"] == "publish"


def test_the_sign_job_takes_its_digests_from_the_publish_jobs_outputs(jobs):
    """Not from an artifact, and not from a matrix job, whose outputs are the last variant's alone."""
    publish, sign = jobs["publish"], jobs["sign"]
    assert "strategy" not in publish
    step_ids = {step.get("id") for step in publish["steps"]}
    for output in ("images", "indexes"):
        match = re.fullmatch(r"\$\{\{ steps\.(\w+)\.outputs\.(\w+) \}\}", publish["outputs"][output])
        assert match and match[1] in step_ids and match[2] == output, publish["outputs"][output]
    environment = {key: value for step in sign["steps"] for key, value in step.get("env", {}).items()}
    assert environment["IMAGES"] == "${{ needs.publish.outputs.images }}"
    assert environment["INDEXES"] == "${{ needs.publish.outputs.indexes }}"


def test_the_publish_job_takes_the_images_make_push_publishes_by_exact_name(jobs):
    """PUBLISH's variants for the runner's platform and for linux/arm64, as the image job names them."""
    publish = re.search(r"^PUBLISH \?= (.+)$", (ROOT / "Makefile").read_text(), re.MULTILINE)[1].split()
    downloads = [step["with"] for step in steps_using(jobs["publish"], "actions/download-artifact")]
    assert all("pattern" not in download for download in downloads)
    expected = {f"image-{variant}{arch}" for variant in publish for arch in ("", "-arm64") if variant in TWO_PLATFORMS}
    assert {download["name"] for download in downloads} == expected
    built = {f"image-{row['variant']}{row.get('arch', '')}" for row in ci_builds()}
    assert expected <= built
    [upload] = steps_using(jobs["image"], "actions/upload-artifact")
    assert upload["with"]["name"] == "image-${{ matrix.variant }}${{ matrix.arch }}"


def test_the_sign_job_attests_every_image_before_it_signs_any_and_signs_the_indexes_last(jobs):
    """Stopped half-way, it leaves attestations on unsigned images, never a signed image without
    them, nor a signed index whose images are unsigned."""
    commands = [command for script in scripts_of(jobs["sign"]) for command in commands_of(script)]
    cosign = [command[1] for command in commands if command[0] == "cosign" and command[1] in ("attest", "sign")]
    assert "attest" in cosign and "sign" in cosign
    assert cosign.index("sign") > len(cosign) - 1 - cosign[::-1].index("attest")
    loops = [command for command in commands if command[0] == "for"]
    assert loops[-1] == ["for", "reference", "in", "$IMAGES", "$INDEXES"]


def test_nothing_cancels_a_run_on_main_and_the_tags_move_only_after_signing(jobs):
    """Superseded runs of a pull request are cancelled; a run on main, which may be signing, never is."""
    concurrency = yaml.safe_load(WORKFLOW.read_text())["concurrency"]
    assert concurrency["cancel-in-progress"] == "${{ github.event_name == 'pull_request' }}"
    for name in ("publish", "sign", "release"):
        assert jobs[name]["if"] == MAIN
        assert jobs[name].get("concurrency", {}).get("cancel-in-progress", False) is False
    assert set(jobs["release"]["needs"]) == {"publish", "sign"}
    runs = scripts_of(jobs["release"])
    promoting = [index for index, script in enumerate(runs) if script.startswith("make promote")]
    verifying = [index for index, script in enumerate(runs) if script.startswith("make verify")]
    assert promoting and verifying and promoting[0] < verifying[0]
    assert not any("make promote" in script for job in ("publish", "sign") for script in scripts_of(jobs[job]))


def installed(job: dict) -> set[str]:
    """The tools a job's steps install: cosign and QEMU by their actions, the rest by apt-get."""
    tools = set()
    if "sigstore/cosign-installer" in actions_of(job):
        tools.add("cosign")
    if "docker/setup-qemu-action" in actions_of(job):
        tools.add("qemu")
    for script in scripts_of(job):
        for command in commands_of(script):
            words = [word for word in command if not word.startswith("-")]
            if words[:3] in (["sudo", "apt-get", "install"], ["apt-get", "install"]):
                tools |= set(words[words.index("install") + 1 :])
    return tools


def needed(job: dict) -> set[str]:
    """The tools the make targets a job runs call: the publishing tests among the integration tests
    (left out under Podman), make push (cosign too unless it leaves the signing to another job),
    make promote and make verify, and the pods of make kube-play."""
    tools = set()
    for script in scripts_of(job):
        for line in script.replace("\\\n", " ").splitlines():
            for command, needs in TOOLS.items():
                if command not in line or (command == "make test-integration" and "DOCKER=podman" in line):
                    continue
                tools |= needs | ({"cosign"} if command == "make push" and "UNSIGNED=" not in line else set())
    return tools


def test_every_job_installs_the_tools_its_make_targets_call(jobs):
    """On GitHub's runner, not root, make cannot install them itself as it does on Debian."""
    missing = {name: needed(job) - installed(job) for name, job in jobs.items()}
    assert {name: tools for name, tools in missing.items() if tools} == {}
    assert needed(jobs["integration"]) == TOOLS["make test-integration"]
    assert needed(jobs["release"]) == {"cosign"}
    assert needed(jobs["podman"]) == {"catatonit"}


def test_a_run_step_is_read_as_the_shell_reads_it():
    """The control for commands_of: the reading the tests above rely on."""
    script = 'for x in $A; do\n  [ -f "${x#*@}" ] || { echo "no" >&2; exit 1; }\n  Y=1 cosign attest "$x"\ndone'
    assert commands_of(script) == [
        ["for", "x", "in", "$A"],
        ["do"],
        ["[", "-f", "${x#*@}", "]"],
        ["{"],
        ["echo", "no", ">&", "2"],
        ["exit", "1"],
        ["}"],
        ["cosign", "attest", "$x"],
        ["done"],
    ]
