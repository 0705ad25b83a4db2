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


# Trivy's JSON report of the secure image, recorded offline, with vulnerabilities written in Trivy's
# schema (the database that finds them cannot be fetched offline): fixable and unfixable, CRITICAL,
# HIGH and lower, in Debian and in Python packages. And pip-audit's JSON report on flask 0.12, pinned
# with its dependencies, as pip-audit's own formatter writes it.
RECORDED = ROOT / "tests" / "recorded"
TRIVY_REPORT = json.loads((RECORDED / "trivy-secure.json").read_text())
PIP_AUDIT_REPORT = (RECORDED / "pip-audit-flask-0.12.json").read_text()
# What pip-audit prints for pins with no known vulnerability.
NO_VULNERABLE_PIN = json.dumps({"dependencies": [{"name": "flask", "version": "3.1.3", "vulns": []}], "fixes": []})


def report_with(*vulnerabilities: str) -> dict:
    """The recorded Trivy report with only the vulnerabilities named (all, if none is named)."""
    report = json.loads(json.dumps(TRIVY_REPORT))
    for result in report["Results"]:
        found = result.get("Vulnerabilities") or []
        result["Vulnerabilities"] = [v for v in found if not vulnerabilities or v["VulnerabilityID"] in vulnerabilities]
    return report


@pytest.fixture
def gate(monkeypatch, tmp_path, capsys):
    """scan.main on images whose Trivy reports, and on requirements whose pip-audit report, the test
    gives in place of running the two tools; the rest (Trivy's conversions to SBOM and SARIF, reading
    both reports, the gate) runs as `make scan` runs it. What main returns, and what it printed."""

    def run(reports: dict[str, dict], *flags: str, pip_audit_output: str = NO_VULNERABLE_PIN, database: bool = True):
        monkeypatch.setattr(scan, "database_error", lambda trivy: None if database else "no network")
        monkeypatch.setattr(scan, "trivy_report", lambda trivy, image, work, vulnerabilities: reports[image])
        audited = subprocess.CompletedProcess(["pip-audit"], returncode=1, stdout=pip_audit_output, stderr="")
        monkeypatch.setattr(scan, "run_pip_audit", lambda requirements: audited)
        arguments = ["--out", str(tmp_path), "--requirements", "requirements.txt", *flags, *reports]
        code = scan.main(arguments)
        printed = capsys.readouterr()
        return code, printed.out + printed.err

    return run


def failures(output: str) -> list[str]:
    """The lines main marked FAIL, without their severity's padding."""
    return [" ".join(line.split()) for line in output.splitlines() if line.strip().startswith("FAIL ")]


@pytest.mark.unit
def test_make_scan_fails_on_exactly_the_fixable_high_and_critical_findings_and_the_vulnerable_pins(gate):
    code, output = gate(
        {"a:naive": report_with(), "a:secure": report_with()},
        "--report-only",
        "a:naive",
        pip_audit_output=PIP_AUDIT_REPORT,
    )
    assert code == 1, output
    assert failures(output) == [
        "FAIL CRITICAL vulnerability CVE-0000-0001: libssl3t64 3.5.10, fixed in 3.5.11-1~deb13u1",
        "FAIL HIGH vulnerability CVE-0000-0003: zlib1g 1.3.dfsg+really1.3.1, fixed in 1:1.3.dfsg+really1.3.1-1+deb13u1",
        "FAIL HIGH vulnerability CVE-0000-0006: gunicorn 27.0.1, fixed in 27.0.2",
        "FAIL flask 0.12: PYSEC-2018-66, PYSEC-2019-179",
    ], output
    assert "scan: a:secure, requirements.txt failed" in output


@pytest.mark.unit
def test_make_scan_passes_unfixable_and_lower_findings_and_a_report_only_image(gate):
    """The control for the test above: the same reports, less the findings that gate."""
    passing = report_with("CVE-0000-0002", "CVE-0000-0004", "CVE-0000-0005", "CVE-0000-0007")
    code, output = gate({"a:naive": report_with(), "a:secure": passing}, "--report-only", "a:naive")
    assert code == 0, output
    assert failures(output) == [], output
    assert "CVE-0000-0002: libc6 2.41, no fix yet" in output and "pip-audit: 0 vulnerable pins" in output


@pytest.mark.unit
def test_make_scan_fails_on_each_gating_finding_alone(gate):
    for gating in ("CVE-0000-0001", "CVE-0000-0003", "CVE-0000-0006"):
        code, output = gate({"a:secure": report_with(gating)})
        assert code == 1, output
        [failed] = failures(output)
        assert gating in failed, output
    code, output = gate({"a:secure": report_with("CVE-0000-0002")}, pip_audit_output=PIP_AUDIT_REPORT)
    assert code == 1, output
    assert failures(output) == ["FAIL flask 0.12: PYSEC-2018-66, PYSEC-2019-179"], output


@pytest.mark.unit
def test_make_scan_writes_the_sbom_and_sarif_of_a_report_with_findings(gate, tmp_path):
    gate({"a:secure": report_with()})
    sarif = json.loads((tmp_path / "a-secure.sarif").read_text())
    assert {result["ruleId"] for result in sarif["runs"][0]["results"]} == {f"CVE-0000-000{n}" for n in range(1, 8)}
    assert (tmp_path / "a-secure.cdx.json").is_file()


@pytest.mark.unit
def test_make_scan_without_its_database_fails_only_when_strict(gate):
    assert gate({"a:secure": report_with("CVE-0000-0002")}, database=False)[0] == 0
    code, output = gate({"a:secure": report_with("CVE-0000-0002")}, "--strict", database=False)
    assert code == 1, output
    assert "the vulnerability scan could not run, which --strict does not allow" in output
