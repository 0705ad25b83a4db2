"""Measure the images side by side, in one run on one machine: build, start-up, memory, load.

Usage: python3 scripts/4-measure/bench.py --base IMAGE --memory M --cpus N --pids-limit N [--ca-bundle FILE]
       [--out DIR] [--page FILE] [--runs N] [--seconds N] [--load-runs N] [--slow-seconds N]
`make bench` passes the base image the Makefile builds on, the limits `make run` sets, and the
proxy CA bundle if there is one. The last four set how long it runs; a short run
(`--runs 1 --seconds 2 --load-runs 1 --slow-seconds 4`) takes every step of the full one.

Beside the project's variants it measures the peer, where scripts/4-measure/peer/Dockerfile is:
the image `docker init` writes for a Python app served by gunicorn, serving the same app with
gunicorn's defaults, as a user of `docker init` gets it.

For each image it measures the cold build (base image present, no build cache) and the warm
rebuild after a one-line change to the app's module; then, with the containers running within the
limits, the time from `docker run` to the first 200 on /healthz and the idle memory, throughput
and latency under wrk at 1, 16 and 64 connections, latency at a fixed rate (open loop, see
clients.py), /healthz under 256 slow-header clients, and 1,000 keep-alive connections at once.
wrk runs twice: through the published port, as a client on this machine reaches a container, and
inside the container's network namespace (wrk, this machine's own, started there with nsenter,
which needs root), where neither Docker's port forwarding nor its proxy stands between them. Each
throughput is also given as a share of the limit: the app's own WSGI call, made in a loop inside
the production image under the same CPU limit, with no socket and no server (see IN_PROCESS).
Then it measures where production's time goes: at 16 connections in its namespace, with one thing
changed at a time (COSTS), and gunicorn's HTTP parser alone, in-process.
Last, it records which files of the secure image its server opens (floor.py), beside those it holds.
Repeated measurements take the variants in turn, run by run, so that a change in the machine's
load falls on all alike; each is reported as its median with its range [min-max].
It writes DIR/bench.json and DIR/bench.md (DIR is docs/reference/ unless --out says), puts the
tables between the bench markers of the page --page names (`make bench`: docs/reference/measured.md),
and removes every image and container it made, also when it fails.
"""

import argparse
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

# docker_tools, the helper every script shares, sits in scripts/, one folder up.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import clients
import floor
from compare import replace_between_markers
from docker_tools import (
    MB,
    PROJECT_NAME,
    ROOT,
    build_inputs,
    docker,
    docker_result,
    exit_on_failure,
    measured_build,
    remove_measured,
    run,
    variants,
    wait_until_serving,
)

# Each variant's Dockerfile, and how `make run-VARIANT` hardens it besides the limits: the Makefile's table.
TABLE = variants()
VARIANTS = {name: row["dockerfile"] for name, row in TABLE.items()}
HARDENING = {name: row["hardening"] for name, row in TABLE.items()}
# The peer, where its Dockerfile is (a copy made with copier has none): run as `docker init`'s
# compose.yaml runs it, with no hardening, on the port its Dockerfile exposes.
PEER = "peer"
PEER_DOCKERFILE = Path(__file__).resolve().parent / "peer" / "Dockerfile"
if PEER_DOCKERFILE.exists():
    VARIANTS[PEER] = str(PEER_DOCKERFILE.relative_to(ROOT))
    HARDENING[PEER] = []
CONTAINER_PORT = {PEER: 8000}
CONNECTIONS = [1, 16, 64]
# The slow-client run also measures production as it was served before gevent, for comparison:
# gunicorn's threaded worker, two processes of four threads.
THREADED = ["--env", "GUNICORN_CMD_ARGS=--worker-class gthread --workers 2 --threads 4"]
# Requests a second of the fixed-rate runs: well below what naive serves, so it measures service
# time and not a queue.
FIXED_RATE = 100
# The loop that times a snippet's call(), inside an image (python -c): for the seconds given as its
# argument, after a warm-up. It prints the calls made and the seconds they took, as JSON.
TIMED = """
for _ in range(1000):
    call()
calls, started, deadline = 0, time.perf_counter(), time.perf_counter() + float(sys.argv[1])
while time.perf_counter() < deadline:
    for _ in range(100):
        call()
    calls += 100
print(json.dumps({"calls": calls, "seconds": time.perf_counter() - started}))
"""
# The limit: the app's own WSGI call for GET /, the WSGI_APP the image names, timed in a loop.
IN_PROCESS = (
    """
import importlib, io, json, os, sys, time
module, _, name = os.environ["WSGI_APP"].partition(":")
app = getattr(importlib.import_module(module), name.removesuffix("()"))
app = app() if name.endswith("()") else app
environ = {
    "REQUEST_METHOD": "GET", "PATH_INFO": "/", "QUERY_STRING": "", "SCRIPT_NAME": "",
    "SERVER_NAME": "localhost", "SERVER_PORT": "8080", "SERVER_PROTOCOL": "HTTP/1.1",
    "HTTP_HOST": "localhost", "REMOTE_ADDR": "127.0.0.1", "wsgi.version": (1, 0),
    "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr, "wsgi.multithread": False,
    "wsgi.multiprocess": False, "wsgi.run_once": False,
}
def start_response(status, headers, exc_info=None):
    assert status.startswith("200"), status
def call():
    body = app.wsgi_app({**environ, "wsgi.input": io.BytesIO()}, start_response)
    b"".join(body)
    getattr(body, "close", lambda: None)()
"""
    + TIMED
)
# The image the limit is measured in: the one a copy always has, with the interpreter at hand.
LIMIT_IMAGE = "production"
# HTTP parsing alone: gunicorn's parser reading the request wrk sends, timed in a loop inside the
# same image under the same limits.
PARSER = (
    """
import json, sys, time
from gunicorn.config import Config
from gunicorn.http.parser import RequestParser
REQUEST = b"GET / HTTP/1.1\\r\\nHost: 127.0.0.1:8080\\r\\n\\r\\n"
class Socket:
    def __init__(self):
        self.data = REQUEST
    def recv(self, size):
        data, self.data = self.data, b""
        return data
config = Config()
def call():
    request = next(RequestParser(config, Socket(), ("127.0.0.1", 40000)))
    assert request.path == "/", request.path
"""
    + TIMED
)
# Where production's time goes: each row serves as shipped but for one thing, at 16 connections
# with wrk in the container's network namespace, unless the row says otherwise. A row is
# (what differs, gunicorn's arguments, a configuration file read after the shipped one, wrk's
# headers, through the published port). gunicorn reads the last --config it is given, so that
# file runs the shipped one first and then changes one setting.
SHIPPED_CONFIG = 'exec(compile(open("/app/gunicorn.conf.py").read(), "/app/gunicorn.conf.py", "exec"))\n'
COSTS = {
    "as shipped": ("", "", (), False),
    "through the published port (Docker's proxy)": ("", "", (), True),
    "a new connection for each request (no keep-alive)": ("", "", ("Connection: close",), False),
    "gunicorn's own access logger": ("--logger-class gunicorn.glogging.Logger", "", (), False),
    "no access log": ("", "accesslog = None\n", (), False),
    "no turn-taking after each response (post_request)": ("", 'globals().pop("post_request", None)\n', (), False),
    "gunicorn's sync worker, as the peer (no slow-client defence)": ("--worker-class sync", "", (), False),
    "gunicorn's gthread worker, 4 threads (no slow-client defence)": (
        "--worker-class gthread --threads 4",
        "",
        (),
        False,
    ),
    "a bare WSGI app in the app's place: the server alone": (
        "",
        'wsgi_app = "bare:app"\npythonpath = "/bench"\n',
        (),
        False,
    ),
}
# The bare app of the last row: the same answer to every request, with no framework.
BARE_APP = """def app(environ, start_response):
    body = b'{"message":"Hello, World!"}\\n'
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
"""
STARTED = time.monotonic()


def progress(message: str) -> None:
    print(f"[bench {time.monotonic() - STARTED:5.0f} s] {message}", file=sys.stderr, flush=True)


def timed_build(context: Path, dockerfile: str, tag: str, base: str, ca_bundle: str | None, cold: bool) -> float:
    """Seconds `docker build` takes, with or without the build cache. The peer is built on a context
    of its own, made from the project's afresh each time (peer_context)."""
    file = context / dockerfile
    if dockerfile == VARIANTS.get(PEER):
        context = peer_context(context, context.parent / PEER)
    command = ["build", "--file", str(file), *measured_build(tag), *build_inputs(file, base, ca_bundle)]
    if cold:
        command.append("--no-cache")
    started = time.monotonic()
    docker(*command, str(context))
    return time.monotonic() - started


def copy_context(destination: Path) -> Path:
    """Copy the project's files git knows of (tracked, or new and not ignored), as a clone has them."""
    listed = run("git", "-C", str(ROOT), "ls-files", "--cached", "--others", "--exclude-standard", "-z")
    for name in filter(None, listed.split("\0")):
        if (ROOT / name).is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, destination / name)
    return destination


def peer_context(project: Path, destination: Path) -> Path:
    """The peer's build context, from a copy of the project: what a `docker init` user's folder
    holds, the app's modules and requirements.txt side by side. gunicorn.conf.py stays out:
    gunicorn reads ./gunicorn.conf.py by itself, and the peer serves with gunicorn's defaults."""
    shutil.rmtree(destination, ignore_errors=True)
    shutil.copytree(project / "src", destination, ignore=shutil.ignore_patterns("gunicorn.conf.py", "__pycache__"))
    shutil.copy2(project / "requirements.txt", destination / "requirements.txt")
    return destination


def app_module(project: Path) -> Path:
    """The file of the module project.env's WSGI_APP names, in a copy of the project: src/MODULE.py,
    or src/PACKAGE/__init__.py for a package."""
    entry_point = re.search(r"^WSGI_APP=(\S+)$", (project / "project.env").read_text(), re.MULTILINE).group(1)
    module = project.joinpath("src", *entry_point.partition(":")[0].split("."))
    return module.with_suffix(".py") if module.with_suffix(".py").exists() else module / "__init__.py"


def change_one_line(project: Path, edit: str) -> None:
    """Change one line of the app's code, as a developer would: the last line of the module WSGI_APP
    names, whatever the app, becomes a comment naming the edit. The edit names the run as well as the
    round, so that no earlier run left its result in the build cache."""
    app = app_module(project)
    lines = app.read_text().splitlines()
    if lines and lines[-1].startswith("# edit "):
        lines.pop()
    app.write_text("\n".join([*lines, f"# edit {edit}"]) + "\n")


def memory_bytes(container: str) -> int:
    usage = docker("stats", "--no-stream", "--format", "{{.MemUsage}}", container).split("/")[0].strip()
    number, unit = re.fullmatch(r"([\d.]+)\s*([KMG]i?B|B)", usage).groups()
    scale = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "kB": 1000, "KB": 1000, "MB": MB, "GB": 1000 * MB}
    return round(float(number) * scale[unit])


def start(
    tag: str, variant: str, name: str, limits: list[str], extra: tuple[str, ...] = (), arguments: tuple[str, ...] = ()
) -> int:
    """Run the image detached on a free port of 127.0.0.1, within the limits, with docker run's
    extra options and the arguments after the image; return that port."""
    flags = [*limits, *HARDENING[variant], *extra]
    inside = CONTAINER_PORT.get(variant, 8080)
    docker("run", "--detach", "--name", name, "--publish", f"127.0.0.1::{inside}", *flags, tag, *arguments)
    return int(docker("port", name, f"{inside}/tcp").split()[0].rsplit(":", 1)[1])


def remove(*names: str) -> None:
    docker_result("rm", "--force", *names, check=False)


def startup_and_memory(tag: str, variant: str, limits: list[str]) -> tuple[float, int]:
    """Seconds from `docker run` to the first 200 on /healthz, and memory once idle."""
    name = f"{PROJECT_NAME}-bench-{uuid.uuid4().hex[:8]}"
    try:
        started = time.monotonic()
        port = start(tag, variant, name, limits)
        wait_until_serving(port, name, timeout=30, poll=0.01)
        seconds = time.monotonic() - started
        time.sleep(3)  # idle: workers booted, no requests
        return seconds, memory_bytes(name)
    finally:
        remove(name)


def to_ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value).groups()
    return float(number) * {"us": 0.001, "ms": 1, "s": 1000, "m": 60000}[unit]


def parse_wrk(output: str) -> dict:
    """Throughput, latency percentiles and errors from `wrk --latency` output."""
    percentiles = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", output, re.MULTILINE))
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", output))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return {
        "requests_per_second": float(re.search(r"^Requests/sec:\s+([\d.]+)", output, re.MULTILINE).group(1)),
        "p50_ms": to_ms(percentiles["50"]),
        "p99_ms": to_ms(percentiles["99"]),
        "requests": int(re.search(r"(\d+) requests in", output).group(1)),
        "errors": errors + (int(non_2xx.group(1)) if non_2xx else 0),
    }


def spread(values: list[float]) -> dict:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def wrk(
    port: int, connections: int, seconds: int, namespace_of: str | None = None, headers: tuple[str, ...] = ()
) -> dict:
    """wrk on GET / at 127.0.0.1:port; with namespace_of, a container's name, inside that
    container's network namespace (nsenter), where port is the one the server listens on."""
    command = ["wrk", "-t", str(min(2, connections)), "-c", str(connections), "-d", f"{seconds}s"]
    command += [flag for header in headers for flag in ("--header", header)]
    if namespace_of:
        pid = docker("inspect", "--format", "{{.State.Pid}}", namespace_of).strip()
        command = ["nsenter", "--target", pid, "--net", *command]
    return parse_wrk(run(*command, "--latency", "--timeout", "5s", f"http://127.0.0.1:{port}/", timeout=seconds + 60))


def in_process_limit(tag: str, limits: list[str], seconds: int, code: str = IN_PROCESS) -> dict:
    """The app's own WSGI calls a second inside an image under the limits: no socket, no server.
    With code, another loop that prints as IN_PROCESS does (PARSER)."""
    output = docker("run", "--rm", *limits, "--entrypoint", "python3", tag, "-c", code, str(seconds))
    return parse_in_process(output)


def parse_in_process(output: str) -> dict:
    """Calls, seconds and calls a second from IN_PROCESS's last line of output."""
    measured = json.loads(output.strip().splitlines()[-1])
    return {**measured, "calls_per_second": measured["calls"] / measured["seconds"]}


def summarize_load(runs: list[dict]) -> dict:
    """wrk's runs at one connection count: each figure's median, the errors summed, and the ranges."""
    return {
        **{key: statistics.median(step[key] for step in runs) for key in runs[0] if key != "errors"},
        "errors": sum(step["errors"] for step in runs),
        "spread": {key: spread([step[key] for step in runs]) for key in ("requests_per_second", "p50_ms", "p99_ms")},
        "runs": runs,
    }


def serving(tags: dict, limits: list[str], seconds: int, repeats: int, slow_seconds: int) -> dict:
    """Load, fixed-rate latency, slow clients and many connections, the variants taken in turn; and
    the in-process limit, measured alone before each round.

    Each measurement gets a fresh container of each variant, started together and warmed up, so
    that what one run leaves behind (connections, a worker recycled) does not reach the next.
    """
    results = {
        variant: {where: {str(c): [] for c in CONNECTIONS} for where in ("load", "load_namespace")} | {"fixed_rate": []}
        for variant in tags
    }
    limit_runs = []

    def containers(label: str, measure) -> None:
        names = {variant: f"{PROJECT_NAME}-bench-{uuid.uuid4().hex[:8]}" for variant in tags}
        try:
            ports = {variant: start(tag, variant, names[variant], limits) for variant, tag in tags.items()}
            for variant, port in ports.items():
                wait_until_serving(port, names[variant], timeout=30)
                run("wrk", "-t1", "-c4", "-d2s", f"http://127.0.0.1:{port}/", timeout=30)
            for variant, port in ports.items():
                progress(f"{label}: {variant}")
                measure(variant, port, names[variant])
        finally:
            remove(*names.values())

    for repeat in range(repeats):
        progress(f"run {repeat + 1} of {repeats}: the app's own WSGI call in-process, in {LIMIT_IMAGE}")
        limit_runs.append(in_process_limit(tags[LIMIT_IMAGE], limits, seconds))

        def load_and_rate(variant: str, port: int, name: str) -> None:
            inside = CONTAINER_PORT.get(variant, 8080)
            for count in CONNECTIONS:
                results[variant]["load"][str(count)].append(wrk(port, count, seconds))
                results[variant]["load_namespace"][str(count)].append(wrk(inside, count, seconds, namespace_of=name))
            results[variant]["fixed_rate"].append(clients.fixed_rate(port, FIXED_RATE, seconds))

        containers(f"run {repeat + 1} of {repeats}: wrk at {CONNECTIONS} connections, {FIXED_RATE}/s", load_and_rate)

    def slow(variant: str, port: int, _name: str) -> None:
        results[variant]["slow_clients"] = clients.slow_header_attack(port, clients=256, seconds=slow_seconds)

    containers(f"256 slow-header clients for {slow_seconds} s", slow)
    name = f"{PROJECT_NAME}-bench-{uuid.uuid4().hex[:8]}"
    try:
        progress(f"256 slow-header clients for {slow_seconds} s: production with the gthread worker")
        port = start(tags["production"], "production", name, limits, tuple(THREADED))
        wait_until_serving(port, name, timeout=30)
        gthread = clients.slow_header_attack(port, clients=256, seconds=slow_seconds)
        results["production"]["slow_clients_gthread"] = gthread
    finally:
        remove(name)

    def crowd(variant: str, port: int, name: str) -> None:
        result = clients.keepalive_crowd(port, connections=1000, timeout=10)
        results[variant]["keepalive"] = {**result, "memory_after_bytes": memory_bytes(name)}

    containers("1,000 keep-alive connections", crowd)
    for variant in tags:
        for where in ("load", "load_namespace"):
            results[variant][where] = {count: summarize_load(runs) for count, runs in results[variant][where].items()}
        runs = results[variant]["fixed_rate"]
        results[variant]["fixed_rate"] = {
            "rate": FIXED_RATE,
            "p50_ms": spread([step["p50_ms"] for step in runs]),
            "p99_ms": spread([step["p99_ms"] for step in runs]),
            "failures": sum(step["failures"] for step in runs),
            "sent_late": sum(step["sent_late"] for step in runs),
            "runs": runs,
        }
    rates = [run["calls_per_second"] for run in limit_runs]
    limit = {"image": LIMIT_IMAGE, "calls_per_second": statistics.median(rates), "spread": spread(rates)}
    return {"variants": results, "limit": {**limit, "runs": limit_runs}}


def costs(tag: str, limits: list[str], seconds: int, repeats: int) -> dict:
    """Production's requests a second with one thing changed at a time (COSTS), the rows taken in
    turn, run by run, each in a fresh container; and gunicorn's HTTP parser alone, in-process."""
    runs: dict = {row: [] for row in COSTS}
    parser_runs = []
    with tempfile.TemporaryDirectory(prefix=f"{PROJECT_NAME}-bench-configs-") as folder:
        configs = {}
        for number, (row, (_, config, _, _)) in enumerate(COSTS.items()):
            if config:
                configs[row] = f"/bench/{number}.py"
                Path(folder, f"{number}.py").write_text(SHIPPED_CONFIG + config)
        Path(folder, "bare.py").write_text(BARE_APP)
        Path(folder).chmod(0o755)
        for repeat in range(repeats):
            progress(f"run {repeat + 1} of {repeats}: where production's time goes, {len(COSTS)} ways, and the parser")
            parser_runs.append(in_process_limit(tag, limits, seconds, PARSER))
            for row, (arguments, config, headers, published) in COSTS.items():
                name = f"{PROJECT_NAME}-bench-{uuid.uuid4().hex[:8]}"
                extra = ("--env", f"GUNICORN_CMD_ARGS={arguments}") if arguments else ()
                extra += ("--volume", f"{folder}:/bench:ro") if config else ()
                try:
                    port = start(tag, "production", name, limits, extra, ("--config", configs[row]) if config else ())
                    wait_until_serving(port, name, timeout=30)
                    run("wrk", "-t1", "-c4", "-d2s", f"http://127.0.0.1:{port}/", timeout=30)
                    if published:
                        runs[row].append(wrk(port, 16, seconds, headers=headers))
                    else:
                        runs[row].append(wrk(8080, 16, seconds, namespace_of=name, headers=headers))
                finally:
                    remove(name)
    rates = [parsed["calls_per_second"] for parsed in parser_runs]
    return {
        "connections": 16,
        "rows": {row: summarize_load(row_runs) for row, row_runs in runs.items()},
        "parser": {"calls_per_second": statistics.median(rates), "spread": spread(rates), "runs": parser_runs},
    }


# The size goal of the secure image, as a multiple of the bytes its server opens while it serves
# (floor.py). What it opens is the floor no smaller image with this server can go below. A quarter
# more leaves room for what a service needs and this run does not open (the CA bundle, the time
# zones) and for the modules a larger app imports; what is held beyond that is never read.
SIZE_OVER_FLOOR = 1.25
# The share of the in-process limit production and secure serve at 16 connections, with the load
# generator inside the container's network namespace: what the server itself costs.
LIMIT_SHARE = 0.30


def goals(variants: dict, limit: dict | None = None, opened: dict | None = None) -> list[dict]:
    """The project's published goals, each with what was measured and whether it was met; the
    in-process limit and the files secure's server opens add theirs where they were measured."""
    # The goals hold for the hardened images, every one measured but naive, the unhardened control,
    # and the peer, the image a user would otherwise build.
    found, hardened_names = [], [name for name in variants if name not in ("naive", PEER)]

    def goal(text: str, measured: float, target: float, unit: str, at_most: bool = True, decimals: int = 2) -> None:
        met = measured <= target if at_most else measured >= target
        gap = "" if met else f"missed by {abs(measured - target):.{decimals}f} {unit}".rstrip()
        found.append({"goal": text, "measured": round(measured, 3), "target": target, "unit": unit})
        found[-1].update(met=met, gap=gap, decimals=decimals)

    if opened:
        target = round(SIZE_OVER_FLOOR * opened["opened"]["bytes"] / MB, 2)
        text = f"secure image size, at most {SIZE_OVER_FLOOR} times the bytes its server opens"
        goal(text, variants["secure"]["size_bytes"] / MB, target, "MB")
    for name in hardened_names:
        goal(f"{name}: warm rebuild after a code change", variants[name]["build"]["warm_seconds"], 2, "s")
    goal("secure: docker run to first 200 on /healthz", variants["secure"]["startup"]["median_seconds"], 1, "s")
    # Against naive, where the project has it: a copy made with copier has not.
    for name in hardened_names if "naive" in variants else ():
        naive64, at64 = variants["naive"]["load"]["64"], variants[name]["load"]["64"]
        ratio = at64["requests_per_second"] / naive64["requests_per_second"]
        goal(f"{name}: throughput at 64 connections, times naive's", ratio, 2, "x", at_most=False)
        share = at64["p99_ms"] / naive64["p99_ms"]
        goal(f"{name}: p99 latency at 64 connections, as a share of naive's", share, 1 / 3, "x")
    goal("secure idle memory", variants["secure"]["idle_memory"]["median_bytes"] / MB, 50, "MB")
    for name in hardened_names:
        healthz = variants[name]["slow_clients"]["healthz"]
        goal(f"{name}: /healthz failures under 256 slow-header clients", healthz["failures"], 0, "", decimals=0)
        p99 = healthz["p99_ms"] if healthz["p99_ms"] is not None else float("inf")
        goal(f"{name}: /healthz p99 under 256 slow-header clients", p99, 250, "ms", decimals=1)
        crowd = variants[name]["keepalive"]
        goal(f"{name}: failures among 1,000 keep-alive connections", crowd["failures"], 0, "", decimals=0)
    for name in [name for name in ("production", "secure") if name in variants] if limit else ():
        share = variants[name]["load_namespace"]["16"]["requests_per_second"] / limit["calls_per_second"]
        text = f"{name}: requests/s at 16 connections in its network namespace, as a share of the limit"
        goal(text, 100 * share, 100 * LIMIT_SHARE, "%", at_most=False, decimals=0)
    return found


def ranged(stat: dict, fmt) -> str:
    """A median with its range: `12.3 [11.0-14.1]`."""
    return f"{fmt(stat['median'])} [{fmt(stat['min'])}-{fmt(stat['max'])}]"


def markdown(report: dict) -> str:
    """The report as two Markdown tables: measurements side by side, then the goals."""
    machine, variants = report["machine"], report["variants"]
    names = list(variants)

    def row(label: str, value) -> str:
        return f"| {label} | " + " | ".join(value(variants[name]) for name in names) + " |"

    def throughput(count: str):
        naive = variants["naive"]["load"][count]["requests_per_second"] if "naive" in variants else None

        def cell(variant: dict) -> str:
            load = variant["load"][count]
            against = naive is not None and variant is not variants["naive"]
            ratio = f" ({load['requests_per_second'] / naive:.1f}x)" if against else ""
            return ranged(load["spread"]["requests_per_second"], lambda n: f"{n:,.0f}") + ratio

        return cell

    def latency(count: str, key: str):
        return lambda variant: ranged(variant["load"][count]["spread"][key], lambda ms: f"{ms:.1f}") + " ms"

    limit = report.get("limit")

    def in_namespace(count: str):
        return lambda v: ranged(v["load_namespace"][count]["spread"]["requests_per_second"], lambda n: f"{n:,.0f}")

    def shares(count: str):
        def cell(variant: dict) -> str:
            published, inside = (variant[where][count]["requests_per_second"] for where in ("load", "load_namespace"))
            return f"{published / limit['calls_per_second']:.0%} / {inside / limit['calls_per_second']:.0%}"

        return cell

    def only(name: str, text: str):
        return lambda variant: text if variant is variants.get(name) else ""

    def slow(variant: dict) -> str:
        healthz = variant["slow_clients"]["healthz"]
        failed = f"{healthz['failures']} of {healthz['requests']} failed"
        return failed if healthz["p99_ms"] is None else f"{failed}, p99 {healthz['p99_ms']:.1f} ms"

    def slow_held(variant: dict) -> str:
        slow = variant["slow_clients"]["slow_connections"]
        held = slow["median_seconds_held"]
        return f"{slow['closed_by_server']:,}" + ("" if held is None else f", after {held:.1f} s")

    def crowd(variant: dict) -> str:
        result = variant["keepalive"]
        return f"{result['answered']:,} / {result['failures']:,}, {result['memory_after_bytes'] / MB:.1f} MB after"

    def errors(variant: dict) -> str:
        return str(sum(step["errors"] for step in variant["load"].values()) + variant["fixed_rate"]["failures"])

    rate, limits = report["fixed_rate"], report["limits"]
    lines = [
        f"Measured on {report['date']}: {machine['cpus']} CPUs ({machine['processor']}), "
        f"Docker {machine['docker']}, base image `{report['base_image']}`, each container limited to "
        f"{limits['memory']} of memory, {limits['cpus']} CPU and {limits['pids']} processes. "
        f"Repeated figures are the median of {report['runs']} runs (start-up, memory) or "
        f"{report['load_runs']} runs of {report['load_seconds']} s (load), with the range [min-max]; "
        "the variants took turns, run by run." + (" Ratios are against naive." if "naive" in variants else ""),
        "",
        "| | " + " | ".join(f"`{name}`" for name in names) + " |",
        "|---|" + "---|" * len(names),
        row("size", lambda v: f"{v['size_bytes'] / MB:.1f} MB"),
        row("cold build", lambda v: f"{v['build']['cold_seconds']:.1f} s"),
        row("warm rebuild after a code change", lambda v: ranged(v["build"]["warm"], lambda t: f"{t:.2f}") + " s"),
        row("`docker run` to first 200", lambda v: ranged(v["startup"]["spread"], lambda t: f"{t:.2f}") + " s"),
        row("idle memory", lambda v: ranged(v["idle_memory"]["spread"], lambda b: f"{b / MB:.1f}") + " MB"),
    ]
    if limit:
        calls = ranged(limit["spread"], lambda n: f"{n:,.0f}")
        lines.append(row("the app's own WSGI call in-process, calls/s: the limit", only(limit["image"], calls)))
    for count in map(str, report["connections"]):
        lines.append(row(f"requests/s at {count} (wrk)", throughput(count)))
        lines.append(row(f"p50 at {count}", latency(count, "p50_ms")))
        lines.append(row(f"p99 at {count}", latency(count, "p99_ms")))
        if limit:
            lines.append(row(f"requests/s at {count}, wrk in the container's network namespace", in_namespace(count)))
            lines.append(row(f"share of the limit at {count}: published port / namespace", shares(count)))
    lines += [
        row(f"p50 at {rate}/s, open loop", lambda v: ranged(v["fixed_rate"]["p50_ms"], lambda ms: f"{ms:.1f}") + " ms"),
        row(f"p99 at {rate}/s, open loop", lambda v: ranged(v["fixed_rate"]["p99_ms"], lambda ms: f"{ms:.1f}") + " ms"),
        row("errors under load", errors),
        row(f"/healthz under 256 slow-header clients ({report.get('slow_seconds', 20)} s)", slow),
        row(
            "the same, gunicorn's gthread worker (2 x 4 threads)",
            lambda v: slow({"slow_clients": v["slow_clients_gthread"]}) if "slow_clients_gthread" in v else "",
        ),
        row("slow connections the server closed, median time held", slow_held),
        row("1,000 keep-alive connections: answers / failures", crowd),
    ]
    opened = report.get("floor")
    if opened:
        files = f"{opened['opened']['files']:,} of {opened['held']['files']:,} files"
        size = f"{opened['opened']['bytes'] / MB:.1f} of {opened['held']['bytes'] / MB:.1f} MB"
        lines.append(row("files its server opens, of those it holds", only("secure", f"{files}, {size}")))
    lines += costs_table(report)
    if opened:
        lines += ["", "| held by secure, never opened while it serves | MB |", "|---|---|"]
        lines += [f"| `{folder}` | {size / MB:.2f} |" for folder, size in opened["unopened_by_folder"].items()]
    lines += ["", "| goal | target | measured | met |", "|---|---|---|---|"]
    for goal in report["goals"]:
        met = "yes" if goal["met"] else f"no, {goal['gap']}"
        decimals, unit = goal.get("decimals", 2), goal["unit"]
        target, measured = f"{goal['target']:.{decimals}f} {unit}".rstrip(), f"{goal['measured']:.{decimals}f} {unit}"
        lines.append(f"| {goal['goal']} | {target} | {measured.rstrip()} | {met} |")
    return "\n".join(lines) + "\n"


def costs_table(report: dict) -> list[str]:
    """Where production's time goes (costs()): each way's requests a second, the microseconds a
    request takes, and how many more or fewer than as shipped; then the parser and the limit."""
    spent, limit = report.get("costs"), report.get("limit")
    if not spent:
        return []
    shipped = 1e6 / spent["rows"]["as shipped"]["requests_per_second"]
    lines = [
        "",
        f"| {LIMIT_IMAGE}, at {spent['connections']} connections, wrk in its network namespace unless the row says"
        " | requests/s | µs a request | against as shipped |",
        "|---|---|---|---|",
    ]
    for row, measured in spent["rows"].items():
        each = 1e6 / measured["requests_per_second"]
        against = "" if row == "as shipped" else f"{each - shipped:+.0f} µs"
        requests = ranged(measured["spread"]["requests_per_second"], lambda n: f"{n:,.0f}")
        lines.append(f"| {row} | {requests} | {each:,.0f} | {against} |")
    parser = spent["parser"]
    named = [("gunicorn's HTTP parser alone, in-process, calls/s", parser)]
    named += [("the app's own WSGI call, in-process, calls/s: the limit", limit)] if limit else []
    for row, calls in named:
        lines.append(
            f"| {row} | {ranged(calls['spread'], lambda n: f'{n:,.0f}')} | {1e6 / calls['calls_per_second']:.0f} | |"
        )
    return lines


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
    parser.add_argument("--memory", required=True, help="memory limit of each container (docker run --memory)")
    parser.add_argument("--cpus", required=True, help="CPU limit of each container (docker run --cpus)")
    parser.add_argument("--pids-limit", required=True, help="process limit of each container")
    parser.add_argument("--ca-bundle", help="a CA bundle pip must trust during builds (a TLS-inspecting proxy)")
    parser.add_argument("--out", type=Path, default=Path("docs/reference"), help="folder for bench.json and bench.md")
    parser.add_argument("--page", type=Path, help="the documentation page whose bench markers get the tables")
    parser.add_argument("--runs", type=int, default=5, help="runs of each repeated step (start-up, memory)")
    parser.add_argument("--seconds", type=int, default=10, help="seconds of each wrk and fixed-rate run")
    parser.add_argument("--load-runs", type=int, default=3, help="runs of each load measurement")
    parser.add_argument("--slow-seconds", type=int, default=20, help="seconds of each slow-client run")
    args = parser.parse_args(argv)
    if not shutil.which("wrk"):
        raise SystemExit("bench: wrk is not installed (Debian: apt-get install wrk; `make bench` installs it)")
    # wrk inside a container's network namespace, and the server under strace inside its others.
    if os.geteuid() != 0 or not shutil.which("nsenter") or not shutil.which("strace"):
        raise SystemExit(
            "bench: it enters the containers' namespaces with nsenter and traces a server with strace, "
            "which need Linux, root, and both tools (Debian: apt-get install util-linux strace)"
        )
    limits = ["--memory", args.memory, "--cpus", args.cpus, "--pids-limit", args.pids_limit]
    prefix = f"{PROJECT_NAME}-bench-{uuid.uuid4().hex[:8]}"
    tags = {variant: f"{prefix}:{variant}" for variant in VARIANTS}
    variants: dict = {}
    with tempfile.TemporaryDirectory(prefix=f"{PROJECT_NAME}-bench-") as scratch:
        # The project's copy in a folder of its own: the peer's context is made beside it.
        context = copy_context(Path(scratch) / "project")
        try:
            for variant, dockerfile in VARIANTS.items():
                progress(f"{variant}: cold build (no cache)")
                cold = timed_build(context, dockerfile, tags[variant], args.base, args.ca_bundle, cold=True)
                variants[variant] = {
                    "size_bytes": json.loads(docker("image", "inspect", tags[variant]))[0]["Size"],
                    "build": {"cold_seconds": cold, "warm_runs": []},
                    "startup": {"runs": []},
                    "idle_memory": {"runs": []},
                }
            for round_number in range(3):
                change_one_line(context, f"{prefix} {round_number}")
                for variant, dockerfile in VARIANTS.items():
                    progress(f"{variant}: warm rebuild {round_number + 1} of 3 after a one-line change")
                    warm = timed_build(context, dockerfile, tags[variant], args.base, args.ca_bundle, cold=False)
                    variants[variant]["build"]["warm_runs"].append(warm)
            for round_number in range(args.runs):
                progress(f"start {round_number + 1} of {args.runs}: to the first 200 on /healthz, then idle memory")
                for variant in VARIANTS:
                    seconds, memory = startup_and_memory(tags[variant], variant, limits)
                    variants[variant]["startup"]["runs"].append(seconds)
                    variants[variant]["idle_memory"]["runs"].append(memory)
            served = serving(tags, limits, args.seconds, args.load_runs, args.slow_seconds)
            for variant, measured in served["variants"].items():
                variants[variant].update(measured)
            spent = costs(tags[LIMIT_IMAGE], limits, args.seconds, args.load_runs)
            progress("secure: the files its server opens, from start-up to its health check")
            opened = floor.serve_and_trace(tags["secure"], limits, HARDENING["secure"])
        finally:
            remove_measured(list(tags.values()))
    for measured in variants.values():
        build, startup, memory = measured["build"], measured["startup"], measured["idle_memory"]
        build.update(warm_seconds=statistics.median(build["warm_runs"]), warm=spread(build["warm_runs"]))
        startup.update(median_seconds=statistics.median(startup["runs"]), spread=spread(startup["runs"]))
        memory.update(median_bytes=statistics.median(memory["runs"]), spread=spread(memory["runs"]))
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        "base_image": args.base,
        "limits": {"memory": args.memory, "cpus": args.cpus, "pids": args.pids_limit},
        "runs": args.runs,
        "load_seconds": args.seconds,
        "load_runs": args.load_runs,
        "connections": CONNECTIONS,
        "fixed_rate": FIXED_RATE,
        "slow_seconds": args.slow_seconds,
        "limit": served["limit"],
        "costs": spent,
        "floor": opened,
        "variants": variants,
    }
    report["goals"] = goals(variants, served["limit"], opened)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "bench.md").write_text(markdown(report))
    if args.page:
        args.page.write_text(replace_between_markers(args.page.read_text(), "bench", markdown(report)))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(exit_on_failure(main, "bench"))
