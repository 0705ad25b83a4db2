"""Scan images with Trivy: what each one contains, and what is known to be wrong with it.

Usage: python3 scripts/3-ship/scan.py [--out DIR] [--strict] [--requirements FILE] [--report-only IMAGE]... IMAGE...

One Trivy scan of each image's `docker save` archive writes, under DIR:
- NAME.cdx.json, the SBOM: every Debian and Python package in the image, as CycloneDX JSON;
- NAME.json, Trivy's whole report, and NAME.sarif, the same findings for code scanning.
The scan looks for known vulnerabilities where Trivy's database can be fetched, for secrets in
the files of every layer, the environment and the build history (Trivy's rules and those of
trivy-secret.yaml beside this script), and for misconfigurations of the Dockerfile that
the history records. With --requirements, pip-audit checks those pins against PyPI's advisories.

It fails on a fixable HIGH or CRITICAL vulnerability, a secret, or a HIGH or CRITICAL
misconfiguration, in every image but those given with --report-only (the naive image, whose
findings are its lesson). Where the database or pip-audit's service cannot be reached, it says so
and goes on with what works offline; --strict makes that a failure too.
"""

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# docker_tools, the helper every script shares, sits in scripts/, one folder up.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from docker_tools import docker, exit_on_failure

GATING = {"HIGH", "CRITICAL"}
# Secret rules Trivy applies beside its own: credentials in a URL, and values given to variables
# named for credentials.
SECRET_RULES = Path(__file__).resolve().parent / "trivy-secret.yaml"


def last_line(output: str) -> str:
    """The last line a tool printed, without its list bullet or its logger's prefix."""
    lines = output.strip().splitlines()
    return re.sub(r"^(\* |ERROR:[\w.]+:)", "", lines[-1].strip()) if lines else ""


def trivy_command() -> str:
    """Trivy on PATH if there is one, else the one the test environment installs."""
    found = shutil.which("trivy") or shutil.which("trivy", path=str(Path(sys.executable).parent))
    if not found:
        sys.exit("scan: Trivy is not installed. Run `make scan`, which installs it, or install trivy.")
    return found


def database_error(trivy: str) -> str | None:
    """Fetch or refresh Trivy's vulnerability database; return why it failed, or None."""
    result = subprocess.run([trivy, "image", "--download-db-only", "--quiet"], capture_output=True, text=True)
    if result.returncode == 0:
        return None
    return last_line(result.stderr or result.stdout) or f"trivy exited with {result.returncode}"


def trivy_report(trivy: str, image: str, work: Path, vulnerabilities: bool) -> dict:
    """Scan one image's archive and return Trivy's JSON report, which lists every package."""
    archive = work / "image.tar"
    docker("save", "--output", str(archive), image)
    report = work / "report.json"
    scanners = "vuln,secret" if vulnerabilities else "secret"
    command = [trivy, "image", "--quiet", "--input", str(archive), "--scanners", scanners]
    command += ["--image-config-scanners", "misconfig,secret", "--secret-config", str(SECRET_RULES)]
    command += ["--list-all-pkgs", "--format", "json"]
    command += ["--skip-db-update", "--output", str(report)]
    result = subprocess.run(command, capture_output=True, text=True)
    archive.unlink()
    if result.returncode != 0:
        sys.exit(f"scan: Trivy failed on {image}:\n{result.stderr.strip()[-3000:]}")
    return json.loads(report.read_text())


def convert(trivy: str, report: Path, output_format: str, output: Path) -> None:
    """Turn a saved JSON report into another of Trivy's formats."""
    command = [trivy, "convert", "--quiet", "--format", output_format, "--output", str(output), str(report)]
    subprocess.run(command, check=True)


def summary(report: dict) -> dict:
    """The operating system, the packages and the findings of one report, and which of them gate."""
    results = report.get("Results") or []
    os_info = report.get("Metadata", {}).get("OS") or {}
    findings = []
    for result in results:
        for vulnerability in result.get("Vulnerabilities") or []:
            fixed = vulnerability.get("FixedVersion", "")
            findings.append(
                {
                    "kind": "vulnerability",
                    "id": vulnerability["VulnerabilityID"],
                    "severity": vulnerability["Severity"],
                    "what": f"{vulnerability['PkgName']} {vulnerability['InstalledVersion']}"
                    + (f", fixed in {fixed}" if fixed else ", no fix yet"),
                    "gates": vulnerability["Severity"] in GATING and bool(fixed),
                }
            )
        for secret in result.get("Secrets") or []:
            where = f"{result['Target']}:{secret.get('StartLine', '?')}"
            findings.append(
                {"kind": "secret", "id": secret["RuleID"], "severity": secret["Severity"], "what": where, "gates": True}
            )
        for misconfiguration in result.get("Misconfigurations") or []:
            if misconfiguration.get("Status") != "FAIL":
                continue
            findings.append(
                {
                    "kind": "misconfiguration",
                    "id": misconfiguration["ID"],
                    "severity": misconfiguration["Severity"],
                    "what": misconfiguration["Title"],
                    "gates": misconfiguration["Severity"] in GATING,
                }
            )
    packages = {result["Class"]: len(result.get("Packages") or []) for result in results if result.get("Packages")}
    return {
        "os": f"{os_info.get('Family', 'none')} {os_info.get('Name', '')}".strip(),
        "debian_packages": packages.get("os-pkgs", 0),
        "python_packages": packages.get("lang-pkgs", 0),
        "findings": findings,
    }


def scan_image(trivy: str, image: str, out: Path, vulnerabilities: bool) -> dict:
    """Write the SBOM, the report and the SARIF of one image; return its summary."""
    name = image.replace("/", "-").replace(":", "-")
    with tempfile.TemporaryDirectory(prefix="scan-") as work:
        report = trivy_report(trivy, image, Path(work), vulnerabilities)
    report_path = out / f"{name}.json"
    report_path.write_text(json.dumps(report, indent=1) + "\n")
    convert(trivy, report_path, "cyclonedx", out / f"{name}.cdx.json")
    convert(trivy, report_path, "sarif", out / f"{name}.sarif")
    return summary(report)


def run_pip_audit(requirements: Path) -> subprocess.CompletedProcess:
    """pip-audit on pinned requirements, against PyPI's advisories, its report as JSON on stdout.

    --strict makes pip-audit fail when it cannot audit a package, instead of passing it unchecked.
    """
    pip_audit = shutil.which("pip-audit", path=str(Path(sys.executable).parent)) or "pip-audit"
    command = [pip_audit, "--strict", "--require-hashes", "--disable-pip", "--progress-spinner", "off"]
    command += ["--format", "json", "--requirement", str(requirements)]
    return subprocess.run(command, capture_output=True, text=True)


def pip_audit(requirements: Path) -> tuple[list[str], str | None]:
    """The vulnerable pins among the requirements, and why pip-audit could not check them, if it could not."""
    result = run_pip_audit(requirements)
    try:
        dependencies = json.loads(result.stdout)["dependencies"]
    except (json.JSONDecodeError, KeyError):
        return [], last_line(result.stderr) or f"pip-audit exited with {result.returncode}"
    vulnerable = [
        f"{dependency['name']} {dependency['version']}: {', '.join(v['id'] for v in dependency['vulns'])}"
        for dependency in dependencies
        if dependency.get("vulns")
    ]
    return vulnerable, None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", metavar="IMAGE")
    parser.add_argument("--out", type=Path, default=Path("scans"), help="folder for the SBOMs and reports")
    parser.add_argument("--report-only", action="append", default=[], metavar="IMAGE", help="never fail on it")
    parser.add_argument("--requirements", type=Path, help="a pinned requirements file for pip-audit")
    parser.add_argument("--strict", action="store_true", help="fail when a part of the scan cannot run")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    trivy = trivy_command()

    skipped = []
    if reason := database_error(trivy):
        print(
            f"scan: Trivy's vulnerability database cannot be fetched ({reason}), so no image is checked for "
            "known vulnerabilities; the SBOMs, secret and misconfiguration scans still run."
        )
        skipped.append("the vulnerability scan")
    failed = []
    for image in args.images:
        result = scan_image(trivy, image, args.out, vulnerabilities=not skipped)
        gates = image not in args.report_only
        print(
            f"{image}: OS {result['os']}, {result['debian_packages']} Debian and "
            f"{result['python_packages']} Python packages, {len(result['findings'])} findings"
        )
        for finding in result["findings"]:
            mark = "FAIL" if finding["gates"] and gates else "    "
            print(f"  {mark} {finding['severity']:<8} {finding['kind']:<16} {finding['id']}: {finding['what']}")
        if gates and any(finding["gates"] for finding in result["findings"]):
            failed.append(image)
    if args.requirements:
        vulnerable, reason = pip_audit(args.requirements)
        if reason:
            print(
                f"scan: pip-audit could not check {args.requirements}: PyPI's advisories, which it reads"
                f" through PyPI's JSON API, are out of reach ({reason})."
            )
            skipped.append("pip-audit")
        else:
            print(f"pip-audit: {len(vulnerable)} vulnerable pins in {args.requirements}")
            for line in vulnerable:
                print(f"  FAIL {line}")
        if vulnerable:
            failed.append(str(args.requirements))
    print(f"SBOMs and reports are in {args.out}/.")

    if failed:
        print(f"scan: {', '.join(failed)} failed: fix the findings marked FAIL above.", file=sys.stderr)
        return 1
    if skipped and args.strict:
        print(f"scan: {' and '.join(skipped)} could not run, which --strict does not allow.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(exit_on_failure(main, "scan"))
