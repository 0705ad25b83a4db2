"""What a vulnerability scanner sees in the images, and images that can be rebuilt bit for bit.

The SBOMs are the ones `make scan` writes: Trivy's, which needs no vulnerability database.
"""

import json
import os
import re
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import scan
from containers import PROJECT_NAME, ROOT, copy_from_image, docker, inspect, make, must
from docker_tools import walk_image
from factory_copy import make_factory_copy

# The one time every file of the secure image carries (Dockerfile.multistage says why).
FILE_TIME = 315532800


@pytest.fixture(scope="module")
def sboms(images, tmp_path_factory) -> dict[str, dict]:
    """The CycloneDX SBOM of production and of secure, as `make scan` writes them."""
    out = tmp_path_factory.mktemp("scans")
    trivy = scan.trivy_command()
    for variant in ("production", "secure"):
        scan.scan_image(trivy, images[variant], out, vulnerabilities=False)
    return {
        variant: json.loads((out / f"{images[variant].replace(':', '-')}.cdx.json").read_text())
        for variant in ("production", "secure")
    }


def components(sbom: dict, purl_type: str) -> dict[str, str]:
    """Name and version of the SBOM's packages of one purl type (deb, pypi)."""
    return {
        component["name"]: component["version"]
        for component in sbom.get("components", [])
        if component.get("purl", "").startswith(f"pkg:{purl_type}/")
    }


def operating_system(sbom: dict) -> tuple[str, str | None]:
    [found] = [c for c in sbom.get("components", []) if c["type"] == "operating-system"]
    return found["name"], found.get("version")


def dpkg_status_entries(image: str, destination: Path) -> dict[str, str]:
    """Package and version of every dpkg status entry in an image, read from its filesystem."""
    entries = {}
    for entry in copy_from_image(image, "/var/lib/dpkg/status.d", destination / "status.d").iterdir():
        fields = dict(re.findall(r"^(Package|Version): (.+)$", entry.read_text(), re.MULTILINE))
        entries[fields["Package"]] = fields["Version"]
    return entries


# What installs Python packages, which the secure image leaves out (scripts/2-build/assemble_rootfs.py).
INSTALLERS = {"pip", "setuptools", "wheel"}


@pytest.mark.integration
def test_scanner_finds_the_same_debian_release_in_secure_as_in_production(sboms):
    family, release = operating_system(sboms["secure"])
    assert family == "debian" and release, (family, release)
    assert operating_system(sboms["production"]) == (family, release)


@pytest.mark.integration
def test_scanner_sees_every_debian_package_of_secure_with_its_version(sboms, images, tmp_path):
    entries = dpkg_status_entries(images["secure"], tmp_path)
    assert "libc6" in entries
    assert components(sboms["secure"], "deb") == entries


@pytest.mark.integration
def test_scanner_sees_the_same_python_packages_in_secure_as_in_production_but_pip(sboms):
    """Production keeps the base image's pip beside the virtual environment; secure has no installer."""
    python_packages = components(sboms["secure"], "pypi")
    assert {"Flask", "gunicorn"} <= python_packages.keys()
    assert not INSTALLERS & python_packages.keys()
    production = components(sboms["production"], "pypi")
    assert python_packages == {name: version for name, version in production.items() if name not in INSTALLERS}


# Where nothing answers: Trivy's database repository and checks, and PyPI's advisories for pip-audit.
UNREACHABLE = "127.0.0.1:1"


@pytest.mark.integration
def test_scan_runs_offline_and_writes_the_sboms(images, tmp_path):
    """`make scan` on the images, with an empty cache and nothing to fetch from: it says the database
    cannot be fetched, writes every SBOM, and passes, unless SCAN_STRICT is set."""
    name = images["secure"].partition(":")[0]
    offline = {
        **os.environ,
        "TRIVY_CACHE_DIR": str(tmp_path / "trivy-cache"),
        "TRIVY_DB_REPOSITORY": f"{UNREACHABLE}/none",
        "TRIVY_CHECKS_BUNDLE_REPOSITORY": f"{UNREACHABLE}/none",
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "HTTPS_PROXY": f"http://{UNREACHABLE}",
        "https_proxy": f"http://{UNREACHABLE}",
    }

    def scan_offline(*args: str) -> subprocess.CompletedProcess:
        return make("scan", f"IMAGE={name}", f"SCAN_DIR={tmp_path}", *args, env=offline, timeout=600)

    result = scan_offline()
    output = result.stdout + result.stderr
    for variant in images:
        assert (tmp_path / f"{name}-{variant}.cdx.json").is_file(), output
        assert (tmp_path / f"{name}-{variant}.sarif").is_file(), output
    assert "Trivy's vulnerability database cannot be fetched" in result.stdout, output
    assert result.returncode == 0, output
    strict = scan_offline("SCAN_STRICT=1")
    assert strict.returncode != 0, strict.stdout + strict.stderr
    assert "the vulnerability scan and pip-audit could not run, which --strict does not allow" in strict.stderr


@pytest.mark.integration
@pytest.mark.docker
def test_secure_builds_to_the_same_image_id_twice_from_a_clean_cache(tmp_path, docker_engine):
    """On a copy with SQLAlchemy (tests/factory_copy.py): the sample's few dependencies once built
    the same twice while a typical service's bytecode did not. Podman 4.3 builds the same layers
    twice, but its history names each build stage's own image ID, which differs."""
    copy = make_factory_copy(tmp_path / "acme")
    must(make("lock", f"VENV={ROOT / '.venv'}", project=copy), "make lock")
    names = [f"{PROJECT_NAME}-repro-{uuid.uuid4().hex[:8]}" for _ in range(2)]

    def build_id(name: str, *make_args: str) -> str:
        must(make("build-secure", f"IMAGE={name}", *make_args, project=copy), "make build-secure")
        return inspect(f"{name}:secure")["Id"]

    try:
        ids = [build_id(name, "BUILD_FLAGS=--no-cache") for name in names]
        assert ids[0] == ids[1]
        # A rebuild with nothing changed names the same image: no dangling image is left behind.
        assert build_id(names[0]) == ids[0]
    finally:
        docker("image", "rm", "--force", *(f"{name}:secure" for name in names), check=False)


def layer_file_times(image: str) -> set[int]:
    """The modification time of every entry in every layer of an image, read from `docker save`."""
    return {member.mtime for member, _ in walk_image(image, layers=True)}


@pytest.mark.integration
@pytest.mark.docker
def test_secure_takes_its_times_from_the_last_commit_and_one_fixed_file_time(images):
    log = ["git", "log", "-1", "--format=%ct"]
    commit_time = int(subprocess.run(log, cwd=ROOT, capture_output=True, text=True, check=True).stdout)
    image = inspect(images["secure"])
    assert image["Config"]["Labels"]["org.opencontainers.image.created"] == time.strftime(
        "%Y-%m-%dT%H:%M:%SZ", time.gmtime(commit_time)
    )
    assert image["Created"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(commit_time))
    assert layer_file_times(images["secure"]) == {FILE_TIME}


@pytest.mark.unit
def test_scan_fails_on_fixable_high_vulnerabilities_secrets_and_high_misconfigurations_only():
    def vulnerability(severity, fixed):
        return {
            "VulnerabilityID": "CVE-1",
            "Severity": severity,
            "PkgName": "p",
            "InstalledVersion": "1",
            "FixedVersion": fixed,
        }

    report = {
        "Metadata": {"OS": {"Family": "debian", "Name": "13.8"}},
        "Results": [
            {
                "Target": "os",
                "Class": "os-pkgs",
                "Packages": [{}, {}],
                "Vulnerabilities": [
                    vulnerability("CRITICAL", "2"),
                    vulnerability("HIGH", ""),
                    vulnerability("MEDIUM", "2"),
                ],
            },
            {"Target": "Python", "Class": "lang-pkgs", "Packages": [{}]},
            {"Target": "app/settings.py", "Class": "secret", "Secrets": [{"RuleID": "aws-key", "Severity": "LOW"}]},
            {
                "Target": "Dockerfile",
                "Class": "config",
                "Misconfigurations": [
                    {"ID": "DS-0002", "Severity": "HIGH", "Title": "root", "Status": "FAIL"},
                    {"ID": "DS-0026", "Severity": "LOW", "Title": "no health check", "Status": "FAIL"},
                    {"ID": "DS-0001", "Severity": "HIGH", "Title": "latest tag", "Status": "PASS"},
                ],
            },
        ],
    }
    result = scan.summary(report)
    assert (result["os"], result["debian_packages"], result["python_packages"]) == ("debian 13.8", 2, 1)
    gates = [(finding["kind"], finding["severity"], finding["gates"]) for finding in result["findings"]]
    assert gates == [
        ("vulnerability", "CRITICAL", True),
        ("vulnerability", "HIGH", False),
        ("vulnerability", "MEDIUM", False),
        ("secret", "LOW", True),
        ("misconfiguration", "HIGH", True),
        ("misconfiguration", "LOW", False),
    ]


def finding(gates: bool) -> dict:
    """One finding as summary() reports it: a fixable CRITICAL vulnerability, or a MEDIUM one."""
    severity = "CRITICAL" if gates else "MEDIUM"
    return {"kind": "vulnerability", "id": "CVE-1", "severity": severity, "what": "p 1, fixed in 2", "gates": gates}


@pytest.fixture
def gate(monkeypatch, tmp_path, capsys):
    """scan.main on images whose findings, pins pip-audit calls vulnerable, and database the test
    gives, in place of Trivy and pip-audit; what it returns, and what it printed."""

    def run(findings: dict[str, list], *flags: str, vulnerable_pins: tuple[str, ...] = (), database: bool = True):
        monkeypatch.setattr(scan, "trivy_command", lambda: "trivy")
        monkeypatch.setattr(scan, "database_error", lambda trivy: None if database else "no network")
        monkeypatch.setattr(
            scan,
            "scan_image",
            lambda trivy, image, out, vulnerabilities: {
                "os": "debian 13",
                "debian_packages": 1,
                "python_packages": 1,
                "findings": findings[image],
            },
        )
        monkeypatch.setattr(scan, "pip_audit", lambda requirements: (list(vulnerable_pins), None))
        arguments = ["--out", str(tmp_path), "--requirements", "requirements.txt", *flags, *findings]
        code = scan.main(arguments)
        printed = capsys.readouterr()
        return code, printed.out + printed.err

    return run


@pytest.mark.unit
def test_make_scan_fails_on_a_gating_finding_of_any_image_but_a_report_only_one(gate):
    code, output = gate({"a:naive": [finding(True)], "a:secure": [finding(False)]}, "--report-only", "a:naive")
    assert code == 0, output
    code, output = gate({"a:naive": [], "a:secure": [finding(True)]}, "--report-only", "a:naive")
    assert code == 1, output
    assert "FAIL CRITICAL" in output and "scan: a:secure failed" in output


@pytest.mark.unit
def test_make_scan_fails_on_a_vulnerable_pin(gate):
    code, output = gate({"a:secure": []}, vulnerable_pins=("flask 0.12: PYSEC-2018-66",))
    assert code == 1, output
    assert "FAIL flask 0.12: PYSEC-2018-66" in output and "scan: requirements.txt failed" in output


@pytest.mark.unit
def test_make_scan_without_its_database_fails_only_when_strict(gate):
    assert gate({"a:secure": []}, database=False)[0] == 0
    code, output = gate({"a:secure": []}, "--strict", database=False)
    assert code == 1, output
    assert "the vulnerability scan could not run, which --strict does not allow" in output
