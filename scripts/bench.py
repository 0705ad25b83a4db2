"""Measure the three images side by side, in one run on one machine: build, start-up, memory, load.

Usage: python3 scripts/bench.py --base IMAGE [--ca-bundle FILE] [--out DIR] [--readme FILE]
`make bench` passes the base image the Makefile builds on, and the proxy CA bundle if there is one.

For each variant it measures the cold build (base image present, no build cache) and the warm
rebuild after a one-line change to src/app.py, the time from `docker run` to the first 200 on /healthz
and the idle memory (medians of five runs), and throughput and latency under wrk at 1, 16 and 64
connections. It writes DIR/bench.json and DIR/bench.md, puts the tables between the bench markers
of the README, and removes every image and container it made, also when it fails.
"""

import argparse
import http.client
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from compare import DOCKER, MB, docker, replace_between_markers, run

VARIANTS = {"naive": "Dockerfile.naive", "production": "Dockerfile", "secure": "Dockerfile.multistage"}
# How `make run-VARIANT` runs each image.
LOCKDOWN = ["--cap-drop", "ALL", "--security-opt", "no-new-privileges"]
RUN_FLAGS = {"naive": [], "production": LOCKDOWN, "secure": [*LOCKDOWN, "--read-only", "--tmpfs", "/tmp"]}
STARTED = time.monotonic()


def progress(message: str) -> None:
    print(f"[bench {time.monotonic() - STARTED:5.0f} s] {message}", file=sys.stderr, flush=True)


def timed_build(context: Path, dockerfile: str, tag: str, base: str, ca_bundle: str | None, cold: bool) -> float:
    """Seconds `docker build` takes, with or without the build cache."""
    command = ["build", "--file", str(context / dockerfile), "--tag", tag, "--build-arg", f"BASE_IMAGE={base}"]
    if ca_bundle:
        command += ["--secret", f"id=ca-bundle,src={ca_bundle}"]
    if cold:
        command.append("--no-cache")
    started = time.monotonic()
    docker(*command, str(context))
    return time.monotonic() - started


def copy_context(destination: Path) -> None:
    """Copy the files git knows of (tracked, or new and not ignored), as a clone would have them."""
    listed = run("git", "ls-files", "--cached", "--others", "--exclude-standard", "-z").split("\0")
    for name in filter(None, listed):
        if Path(name).is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(name, destination / name)


def change_one_line(app: Path, round_number: int) -> None:
    """Edit the greeting, as a developer changing code would."""
    text = app.read_text()
    changed = re.sub(r'message="[^"]*"', f'message="Hello from flask-app! (edit {round_number})"', text, count=1)
    assert changed != text, "the greeting line of src/app.py was not found"
    app.write_text(changed)


def first_200(port: int, deadline: float) -> bool:
    while time.monotonic() < deadline:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        try:
            connection.request("GET", "/healthz")
            if connection.getresponse().status == 200:
                return True
        except (OSError, http.client.HTTPException):
            pass
        finally:
            connection.close()
        time.sleep(0.01)
    return False


def memory_bytes(container: str) -> int:
    usage = docker("stats", "--no-stream", "--format", "{{.MemUsage}}", container).split("/")[0].strip()
    number, unit = re.fullmatch(r"([\d.]+)\s*([KMG]i?B|B)", usage).groups()
    scale = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "kB": 1000, "KB": 1000, "MB": MB, "GB": 1000 * MB}
    return round(float(number) * scale[unit])


def start(tag: str, variant: str, name: str) -> int:
    """Run the image detached on a free port of 127.0.0.1; return that port."""
    docker("run", "--detach", "--name", name, "--publish", "127.0.0.1::8080", *RUN_FLAGS[variant], tag)
    return int(docker("port", name, "8080/tcp").split()[0].rsplit(":", 1)[1])


def startup_and_memory(tag: str, variant: str, runs: int) -> tuple[list[float], list[int]]:
    """Seconds from `docker run` to the first 200 on /healthz, and memory once idle, per run."""
    seconds, memory = [], []
    for _ in range(runs):
        name = f"flask-app-bench-{uuid.uuid4().hex[:8]}"
        try:
            started = time.monotonic()
            port = start(tag, variant, name)
            if not first_200(port, started + 30):
                raise SystemExit(f"bench: {tag} did not answer /healthz within 30 s")
            seconds.append(time.monotonic() - started)
            time.sleep(3)  # idle: workers booted, no requests
            memory.append(memory_bytes(name))
        finally:
            subprocess.run([*DOCKER, "rm", "--force", name], capture_output=True)
    return seconds, memory


def to_ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value).groups()
    return float(number) * {"us": 0.001, "ms": 1, "s": 1000, "m": 60000}[unit]


def parse_wrk(output: str) -> dict:
    """Throughput, latency percentiles and errors from `wrk --latency` output."""
    percentiles = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", output, re.MULTILINE))
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", output))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return {
        "requests_per_second": float(re.search(r"^Requests/sec:\s+([\d.]+)", output, re.MULTILINE).group(1)),
        "p50_ms": to_ms(percentiles["50"]),
        "p99_ms": to_ms(percentiles["99"]),
        "requests": int(re.search(r"(\d+) requests in", output).group(1)),
        "errors": errors + (int(non_2xx.group(1)) if non_2xx else 0),
    }


def load(tag: str, variant: str, connections: list[int], duration: int, repeats: int) -> dict:
    """wrk against GET / at each number of connections, after a short warm-up; the median run of each."""
    name = f"flask-app-bench-{uuid.uuid4().hex[:8]}"
    results = {}
    try:
        port = start(tag, variant, name)
        if not first_200(port, time.monotonic() + 30):
            raise SystemExit(f"bench: {tag} did not answer /healthz within 30 s")
        url = f"http://127.0.0.1:{port}/"
        run("wrk", "-t1", "-c4", "-d2s", url, timeout=30)
        for count in connections:
            progress(f"{variant}: wrk with {count} connection(s), {repeats} runs of {duration} s")
            wrk = [
                "wrk",
                "-t",
                str(min(2, count)),
                "-c",
                str(count),
                "-d",
                f"{duration}s",
                "--latency",
                "--timeout",
                "5s",
            ]
            runs = [parse_wrk(run(*wrk, url, timeout=duration + 60)) for _ in range(repeats)]
            results[str(count)] = {
                **{key: statistics.median(step[key] for step in runs) for key in runs[0] if key != "errors"},
                "errors": sum(step["errors"] for step in runs),
                "runs": runs,
            }
    finally:
        subprocess.run([*DOCKER, "rm", "--force", name], capture_output=True)
    return results


def goals(variants: dict) -> list[dict]:
    """The project's published goals, each with what was measured and whether it was met."""
    naive64, found = variants["naive"]["load"]["64"], []

    def goal(text: str, measured: float, target: float, unit: str, at_most: bool = True) -> None:
        met = measured <= target if at_most else measured >= target
        gap = "" if met else f"missed by {abs(measured - target):.2f} {unit}"
        found.append({"goal": text, "measured": round(measured, 3), "target": target, "unit": unit})
        found[-1].update(met=met, gap=gap)

    goal("secure image size", variants["secure"]["size_bytes"] / MB, 35, "MB")
    for name in ("production", "secure"):
        goal(f"{name}: warm rebuild after a code change", variants[name]["build"]["warm_seconds"], 2, "s")
    goal("secure: docker run to first 200 on /healthz", variants["secure"]["startup"]["median_seconds"], 1, "s")
    for name in ("production", "secure"):
        at64 = variants[name]["load"]["64"]
        ratio = at64["requests_per_second"] / naive64["requests_per_second"]
        goal(f"{name}: throughput at 64 connections, times naive's", ratio, 2, "x", at_most=False)
        share = at64["p99_ms"] / naive64["p99_ms"]
        goal(f"{name}: p99 latency at 64 connections, as a share of naive's", share, 1 / 3, "x")
    goal("secure idle memory", variants["secure"]["idle_memory"]["median_bytes"] / MB, 50, "MB")
    return found


def markdown(report: dict) -> str:
    """The report as two Markdown tables: measurements side by side, then the goals."""
    machine, variants = report["machine"], report["variants"]
    names = list(variants)

    def row(label: str, value) -> str:
        return f"| {label} | " + " | ".join(value(variants[name]) for name in names) + " |"

    def throughput(count: str):
        naive = variants["naive"]["load"][count]["requests_per_second"]

        def cell(variant: dict) -> str:
            rps = variant["load"][count]["requests_per_second"]
            return f"{rps:,.0f}" + ("" if variant is variants["naive"] else f" ({rps / naive:.1f}x)")

        return cell

    def latency(count: str):
        return lambda variant: f"{variant['load'][count]['p50_ms']:.2f} / {variant['load'][count]['p99_ms']:.2f} ms"

    lines = [
        f"Measured on {report['date']}: {machine['cpus']} CPUs ({machine['processor']}), "
        f"Docker {machine['docker']}, base image `{report['base_image']}`. Start-up and memory: medians of "
        f"{report['runs']} runs; load: medians of {report['load_runs']} wrk runs of {report['load_seconds']} s "
        "each; ratios are against naive.",
        "",
        "| | " + " | ".join(f"`{name}`" for name in names) + " |",
        "|---|" + "---|" * len(names),
        row("size", lambda v: f"{v['size_bytes'] / MB:.1f} MB"),
        row("cold build", lambda v: f"{v['build']['cold_seconds']:.1f} s"),
        row("warm rebuild after a code change", lambda v: f"{v['build']['warm_seconds']:.2f} s"),
        row("`docker run` to first 200", lambda v: f"{v['startup']['median_seconds']:.2f} s"),
        row("idle memory", lambda v: f"{v['idle_memory']['median_bytes'] / MB:.1f} MB"),
    ]
    for count in map(str, report["connections"]):
        lines.append(row(f"requests/s at {count}", throughput(count)))
        lines.append(row(f"p50 / p99 at {count}", latency(count)))
    lines.append(row("errors under load", lambda v: str(sum(step["errors"] for step in v["load"].values()))))
    lines += ["", "| goal | target | measured | met |", "|---|---|---|---|"]
    for goal in report["goals"]:
        met = "yes" if goal["met"] else f"no, {goal['gap']}"
        target, measured, unit = goal["target"], goal["measured"], goal["unit"]
        lines.append(f"| {goal['goal']} | {target:.2f} {unit} | {measured:.2f} {unit} | {met} |")
    return "\n".join(lines) + "\n"


def machine() -> dict:
    return {
        "cpus": os.cpu_count(),
        "processor": platform.machine(),
        "kernel": platform.release(),
        "docker": docker("version", "--format", "{{.Server.Version}}").strip(),
        # wrk prints its version and exits 1.
        "wrk": subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.splitlines()[0],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the base image to build on (present locally)")
    parser.add_argument("--ca-bundle", help="a CA bundle pip must trust during builds (a TLS-inspecting proxy)")
    parser.add_argument("--out", type=Path, default=Path("docs"), help="folder for bench.json and bench.md")
    parser.add_argument("--readme", type=Path, help="README whose bench markers get the tables")
    parser.add_argument("--runs", type=int, default=5, help="runs of each repeated step (start-up, memory)")
    parser.add_argument("--seconds", type=int, default=10, help="seconds of each wrk run")
    parser.add_argument("--load-runs", type=int, default=3, help="wrk runs at each number of connections")
    args = parser.parse_args(argv)
    if not shutil.which("wrk"):
        raise SystemExit("bench: wrk is not installed (Debian: apt-get install wrk; `make bench` installs it)")
    connections = [1, 16, 64]
    prefix = f"flask-app-bench-{uuid.uuid4().hex[:8]}"
    variants: dict = {}
    with tempfile.TemporaryDirectory(prefix="flask-app-bench-") as scratch:
        context = Path(scratch)
        copy_context(context)
        try:
            for variant, dockerfile in VARIANTS.items():
                tag = f"{prefix}:{variant}"
                progress(f"{variant}: cold build (no cache)")
                cold = timed_build(context, dockerfile, tag, args.base, args.ca_bundle, cold=True)
                warm = []
                for round_number in range(3):
                    change_one_line(context / "src" / "app.py", round_number)
                    progress(f"{variant}: warm rebuild {round_number + 1} of 3 after a one-line change")
                    warm.append(timed_build(context, dockerfile, tag, args.base, args.ca_bundle, cold=False))
                progress(f"{variant}: {args.runs} starts, each to the first 200 on /healthz, then idle memory")
                seconds, memory = startup_and_memory(tag, variant, args.runs)
                variants[variant] = {
                    "size_bytes": json.loads(docker("image", "inspect", tag))[0]["Size"],
                    "build": {"cold_seconds": cold, "warm_seconds": statistics.median(warm), "warm_runs": warm},
                    "startup": {"median_seconds": statistics.median(seconds), "runs": seconds},
                    "idle_memory": {"median_bytes": statistics.median(memory), "runs": memory},
                    "load": load(tag, variant, connections, args.seconds, args.load_runs),
                }
        finally:
            subprocess.run(
                [*DOCKER, "image", "rm", "--force", *(f"{prefix}:{v}" for v in VARIANTS)], capture_output=True
            )
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        "base_image": args.base,
        "runs": args.runs,
        "load_seconds": args.seconds,
        "load_runs": args.load_runs,
        "connections": connections,
        "variants": variants,
    }
    report["goals"] = goals(variants)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "bench.md").write_text(markdown(report))
    if args.readme:
        args.readme.write_text(replace_between_markers(args.readme.read_text(), "bench", markdown(report)))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
