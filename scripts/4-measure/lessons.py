"""What each practice of the production Dockerfile buys, measured: `make lessons`.

Usage: python3 scripts/4-measure/lessons.py --base IMAGE [--ca-bundle FILE] [--hadolint PATH] [--rounds N] [--out DIR]

For each practice it writes the production Dockerfile with that one practice undone, builds it
beside the Dockerfile as it is, and measures what undoing it changes: size, compressed size,
layers, the warm rebuild after a one-line code change, the user the server runs as, how long
`docker stop` takes and the exit code, the health status, the setuid programs, the files the
running server writes, the build context sent, and hadolint's findings. Timed measurements are
repeated, the images taking turns in each round, and reported as medians with their range. It
writes DIR/lessons.json and DIR/lessons.md (DIR is docs/reference/ unless --out says), and removes
every image and container it made, also when it fails. A practice that cannot be measured here is
a row too, with the reason.
"""

import argparse
import json
import re
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

# docker_tools, the helper every script shares, sits in scripts/, one folder up.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import change_one_line, copy_context, remove, spread
from compare import compressed_size, hadolint_findings
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
    variants,
    wait_until_serving,
    walk_image,
)

STARTED = time.monotonic()
DOCKERFILE = "Dockerfile"
# How `make run-production` hardens the container besides the limits: the Makefile's table.
HARDENING = variants()["production"]["hardening"]


@dataclass(frozen=True)
class Practice:
    """One practice of the notes, and the edits of the production Dockerfile that undo it."""

    name: str
    practice: str
    undone: str
    # (old, new) replacements, applied in turn; each old text must occur exactly once.
    edits: tuple[tuple[str, str], ...] = ()
    # The build context without this file, for a practice that lives outside the Dockerfile.
    without: str = ""
    # Why it cannot be measured here, for a practice this run cannot undo.
    unmeasured: str = ""
    # What a reader should know to read the figures of this machine.
    note: str = ""


PRACTICES = [
    Practice(
        "layer-order",
        "Copy what changes least first: requirements, then the code",
        "the code copied before the requirements are installed",
        (
            ("WORKDIR /app\nCOPY src/ ./\n", ""),
            (
                "RUN --mount=type=bind,source=requirements.txt,",
                "WORKDIR /app\nCOPY src/ ./\nRUN --mount=type=bind,source=requirements.txt,",
            ),
        ),
    ),
    Practice(
        "pip-no-cache",
        "No package manager cache in the image",
        "PIP_NO_CACHE_DIR removed, so pip keeps its cache in the layer",
        (("    PIP_NO_CACHE_DIR=1 \\\n", ""),),
        note="pip caches a download only if the server lets it (Cache-Control): this machine's TLS-inspecting "
        "proxy strips that header from PyPI's answers, so pip cached nothing either way here; elsewhere the "
        "cache keeps every wheel pip downloaded in the layer",
    ),
    Practice(
        "non-root",
        "Run as a non-root user (USER)",
        "no USER: the server runs as root",
        (("USER 10001:10001\n", ""),),
    ),
    Practice(
        "healthcheck",
        "Declare a HEALTHCHECK",
        "no HEALTHCHECK",
        (
            (
                "HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \\\n"
                '    CMD ["python3", "/app/healthcheck.py"]\n',
                "",
            ),
        ),
    ),
    Practice(
        "exec-form",
        "Exec form for ENTRYPOINT and CMD",
        "shell form: /bin/sh -c runs gunicorn, and is PID 1",
        (
            (
                'ENTRYPOINT ["gunicorn", "--config", "/app/gunicorn.conf.py"]',
                "ENTRYPOINT gunicorn --config /app/gunicorn.conf.py",
            ),
        ),
    ),
    Practice(
        "no-setuid",
        "No setuid or setgid programs (CIS Docker Benchmark 4.8)",
        "the base image's setuid and setgid programs kept",
        ((" \\\n    && find / -xdev -type f -perm /6000 -delete", ""),),
    ),
    Practice(
        "no-bytecode",
        "No bytecode files written (PYTHONDONTWRITEBYTECODE)",
        "PYTHONDONTWRITEBYTECODE removed",
        (("ENV PYTHONDONTWRITEBYTECODE=1 \\\n    PYTHONUNBUFFERED=1", "ENV PYTHONUNBUFFERED=1"),),
    ),
    Practice(
        "dockerignore",
        "A .dockerignore: send the engine only what the build needs",
        "the build context without .dockerignore",
        without=".dockerignore",
    ),
    Practice(
        "pinned-base",
        "Pin the base image to a patch release",
        "",
        unmeasured="a moving tag changes what a later rebuild gets; one run on one day cannot show it, and "
        "the base here is a stand-in built from Debian's packages (scripts/1-setup/base-image.sh)",
    ),
    Practice(
        "slim-base",
        "A small base image (slim, not the full one)",
        "",
        unmeasured="python:3.13-trixie, the full image to compare with, cannot be pulled on this machine",
    ),
    Practice(
        "vulnerabilities",
        "Scan the image for known vulnerabilities",
        "",
        unmeasured="Trivy's vulnerability database cannot be downloaded here; `make scan` lists the packages "
        "it would check",
    ),
]


def progress(message: str) -> None:
    print(f"[lessons {time.monotonic() - STARTED:5.0f} s] {message}", file=sys.stderr, flush=True)


def undo(practice: Practice, dockerfile: str) -> str:
    """The Dockerfile with the practice undone; fails if the Dockerfile no longer reads as expected."""
    for old, new in practice.edits:
        if dockerfile.count(old) != 1:
            raise SystemExit(f"lessons: {DOCKERFILE} no longer has, once, the text {practice.name} undoes: {old!r}")
        dockerfile = dockerfile.replace(old, new)
    return dockerfile


def build(context: Path, dockerfile: Path, tag: str, base: str, ca_bundle: str | None) -> float:
    """Seconds a cached `docker build` takes."""
    command = ["build", "--file", str(dockerfile), *measured_build(tag), *build_inputs(dockerfile, base, ca_bundle)]
    started = time.monotonic()
    docker(*command, str(context))
    return time.monotonic() - started


def context_size(ignore: str, base: str) -> int:
    """Bytes of the files `docker build .` sends the engine from this checkout as it is, with its .git,
    the .venv make made and whatever else it holds, under the ignore rules given: counted inside the
    build, by a step that mounts the context it received. The rules go in a Dockerfile-specific
    ignore file beside that step's Dockerfile, which BuildKit reads instead of the checkout's own."""
    with tempfile.TemporaryDirectory(prefix="context-") as folder:
        dockerfile = Path(folder) / "Dockerfile"
        count = "find /context -type f -printf '%s\\n' | awk '{s += $1} END {print \"bytes\", s}'"
        dockerfile.write_text(f"FROM {base}\nRUN --mount=type=bind,target=/context {count}\n")
        (Path(folder) / "Dockerfile.dockerignore").write_text(ignore)
        log = docker_result(
            "build", "--no-cache", "--progress=plain", "--output=type=cacheonly", "--file", str(dockerfile), str(ROOT)
        ).stderr
    return int(re.search(r" bytes (\d+)$", log, re.MULTILINE).group(1))


def setuid_programs(image: str) -> int:
    return sum(1 for member, _ in walk_image(image) if member.isfile() and member.mode & 0o6000)


def running(tag: str) -> dict:
    """Start the image as `make run-production` does, ask it once, then stop it: the facts of that run."""
    name = f"{PROJECT_NAME}-lessons-{uuid.uuid4().hex[:8]}"
    try:
        launched = time.monotonic()
        docker("run", "--detach", "--name", name, "--publish", "127.0.0.1::8080", *HARDENING, tag)
        port = int(docker("port", name, "8080/tcp").split()[0].rsplit(":", 1)[1])
        wait_until_serving(port, name, timeout=30, poll=0.05)
        user = docker("exec", name, "id", "-u").strip()
        health, healthy_seconds = "none", None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            state = json.loads(docker("inspect", "--format", "{{json .State.Health}}", name))
            health = state["Status"] if state else "none"
            if health != "starting":
                healthy_seconds = time.monotonic() - launched if health == "healthy" else None
                break
            time.sleep(0.1)
        written = len(docker("diff", name).splitlines())
        started = time.monotonic()
        docker("stop", name)
        stop_seconds = time.monotonic() - started
        exit_code = int(docker("inspect", "--format", "{{.State.ExitCode}}", name))
        return {
            "user": user,
            "health": health,
            "healthy_seconds": healthy_seconds,
            "written": written,
            "stop_seconds": stop_seconds,
            "exit_code": exit_code,
        }
    finally:
        remove(name)


def measure(images: dict, contexts: dict, args: argparse.Namespace, run_id: str) -> dict:
    """Every image's facts, the timed ones over rounds taken in turn."""
    facts = {}
    sizes = {}
    for context in contexts.values():
        if context not in sizes:
            ignore = context / ".dockerignore"
            sizes[context] = context_size(ignore.read_text() if ignore.exists() else "", args.base)
    for name, (tag, dockerfile) in images.items():
        info = json.loads(docker("image", "inspect", tag))[0]
        facts[name] = {
            "context_bytes": sizes[contexts[name]],
            "size_bytes": info["Size"],
            "compressed_bytes": compressed_size(tag),
            "layers": len(info["RootFS"]["Layers"]),
            "setuid_programs": setuid_programs(tag),
            "hadolint": hadolint_findings(args.hadolint, str(dockerfile)),
            "rebuild_seconds": [],
            "stop_seconds": [],
            "healthy_seconds": [],
        }
    for round_number in range(1, args.rounds + 1):
        for context in set(contexts.values()):
            change_one_line(context, f"{run_id} {round_number}")
        for name, (tag, dockerfile) in images.items():
            seconds = build(contexts[name], dockerfile, tag, args.base, args.ca_bundle)
            run = running(tag)
            facts[name]["rebuild_seconds"].append(seconds)
            facts[name]["stop_seconds"].append(run.pop("stop_seconds"))
            if (healthy := run.pop("healthy_seconds")) is not None:
                facts[name]["healthy_seconds"].append(healthy)
            facts[name] |= run
            progress(f"round {round_number}: {name} rebuilt in {seconds:.2f} s, stopped with {run['exit_code']}")
    for row in facts.values():
        row["rebuild_seconds"] = spread(row["rebuild_seconds"])
        row["stop_seconds"] = spread(row["stop_seconds"])
        row["healthy_seconds"] = spread(row["healthy_seconds"]) if row["healthy_seconds"] else None
    return facts


def changes(baseline: dict, undone: dict) -> list[str]:
    """What undoing a practice changed, as a reader would say it, with the figures."""
    said = []

    def timed(key: str, what: str) -> None:
        before, after = baseline[key]["median"], undone[key]["median"]
        if after > 2 * before and after - before > 0.5:
            said.append(f"{what} {before:.2f} s → {after:.2f} s [{undone[key]['min']:.2f}-{undone[key]['max']:.2f}]")

    timed("rebuild_seconds", "warm rebuild after a code change")
    timed("stop_seconds", "docker stop")
    for key, what, unit in (("size_bytes", "size", MB), ("compressed_bytes", "compressed", MB)):
        if abs(undone[key] - baseline[key]) > 0.1 * MB:
            said.append(f"{what} {baseline[key] / unit:.1f} → {undone[key] / unit:.1f} MB")
    for key, what in (
        ("layers", "layers"),
        ("user", "server's UID"),
        ("exit_code", "exit code on docker stop"),
        ("setuid_programs", "setuid/setgid programs"),
        ("written", "files the server wrote"),
    ):
        if undone[key] != baseline[key]:
            said.append(f"{what} {baseline[key]} → {undone[key]}")
    if undone["health"] != baseline["health"]:
        said.append(f"health {baseline['health']}{healthy_after(baseline)} → {undone['health']}{healthy_after(undone)}")
    if undone["context_bytes"] != baseline["context_bytes"]:
        said.append(f"build context {baseline['context_bytes'] / 1000:,.0f} → {undone['context_bytes'] / 1000:,.0f} kB")
    added = sorted(set(undone["hadolint"]) - set(baseline["hadolint"]))
    if added:
        said.append("hadolint: " + ", ".join(added))
    return said


def report(facts: dict) -> dict:
    rows = []
    for practice in PRACTICES:
        row = {"name": practice.name, "practice": practice.practice, "undone": practice.undone}
        if practice.unmeasured:
            row["not_measured"] = practice.unmeasured
        else:
            row["changes"] = changes(facts["production"], facts[practice.name]) + (
                [practice.note] if practice.note else []
            )
        rows.append(row)
    return {"baseline": facts["production"], "images": facts, "practices": rows}


def healthy_after(facts: dict) -> str:
    """How long the image took to become healthy after `docker run`, as words; empty if it never did."""
    seconds = facts["healthy_seconds"]
    return f" after {seconds['median']:.1f} s [{seconds['min']:.1f}-{seconds['max']:.1f}]" if seconds else ""


def markdown(result: dict, rounds: int) -> str:
    baseline = result["baseline"]
    lines = [
        "# What each practice buys, measured",
        "",
        "Written by `make lessons`: the production Dockerfile as it is, and once for each practice with that",
        f"practice alone undone, built and run in one run on one machine; timed figures are medians of {rounds}",
        f"rounds, with their range, the images taking turns; the run took {result['seconds'] / 60:.1f} minutes. "
        "The production image itself: "
        f"{baseline['size_bytes'] / MB:.1f} MB, warm rebuild {baseline['rebuild_seconds']['median']:.2f} s, "
        f"`docker stop` {baseline['stop_seconds']['median']:.2f} s (exit {baseline['exit_code']}), health "
        f"{baseline['health']}{healthy_after(baseline)}, UID {baseline['user']}.",
        "",
        "| Practice | Undone | What undoing it changes |",
        "|---|---|---|",
    ]
    for row in result["practices"]:
        effect = row.get("not_measured") and f"not measured: {row['not_measured']}"
        effect = effect or "; ".join(row["changes"]) or "nothing this run measures"
        lines.append(f"| {row['practice']} | {row['undone'] or '-'} | {effect} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the base image the Makefile builds on")
    parser.add_argument("--ca-bundle", help="a proxy CA bundle for pip, as the Makefile passes it")
    parser.add_argument("--hadolint", default="hadolint", help="the hadolint program")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("docs/reference"))
    args = parser.parse_args(argv)
    run_id = uuid.uuid4().hex[:8]
    tags = []
    with tempfile.TemporaryDirectory(prefix="lessons-") as folder:
        work = Path(folder)
        context = copy_context(work / "context")
        bare = copy_context(work / "bare")
        (bare / ".dockerignore").unlink()
        original = (context / DOCKERFILE).read_text()
        images, contexts = {}, {}
        for name, practice in [("production", None)] + [(p.name, p) for p in PRACTICES if not p.unmeasured]:
            dockerfile = work / f"Dockerfile.{name}"
            dockerfile.write_text(undo(practice, original) if practice else original)
            tag = f"{PROJECT_NAME}-lessons-{run_id}:{name}"
            images[name], contexts[name] = (tag, dockerfile), bare if practice and practice.without else context
            tags.append(tag)
        try:
            for name, (tag, dockerfile) in images.items():
                progress(f"building {name}")
                build(contexts[name], dockerfile, tag, args.base, args.ca_bundle)
            result = report(measure(images, contexts, args, run_id))
            result["seconds"] = round(time.monotonic() - STARTED)
        finally:
            remove_measured(tags)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "lessons.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "lessons.md").write_text(markdown(result, args.rounds))
    print(markdown(result, args.rounds))
    progress(f"wrote {args.out}/lessons.json and {args.out}/lessons.md")
    return 0


if __name__ == "__main__":
    sys.exit(exit_on_failure(main, "lessons"))
