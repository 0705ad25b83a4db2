"""Which of an image's files its server opens while it serves, beside the files the image holds.

Usage: python3 scripts/4-measure/floor.py IMAGE [--memory M --cpus N --pids-limit N] [-- HARDENING...]
`make bench` measures the secure image with it; alone, it prints the report as JSON.

The image runs as a container whose process only waits (the image's python3, asleep), so that its
namespaces and its root exist. Its server is then started a second time, from this machine, under
strace, which follows it from the first instruction: nsenter enters the container's mount, network
and process namespaces as the image's user, in its working directory, with the environment Docker
gave the container, and runs the image's entry point and command. The server starts, answers
every route (GET /, POST /echo, GET /healthz), an error (a 404), and the image's HEALTHCHECK
command runs the same way. Every file opened or executed is recorded, and with an executable, the
dynamic loader the kernel opens for it. Needs root, strace and nsenter (Linux).

The bytes opened are those of the regular files opened, each counted once; the bytes held are
those of every regular file of the image. What is opened is the floor a smaller image could reach
with the same server: the rest is held and never read while it serves.
"""

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

# docker_tools, the helper every script shares, sits in scripts/, one folder up.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from docker_tools import (
    MB,
    PROJECT_NAME,
    CommandFailed,
    docker,
    docker_result,
    exit_on_failure,
    request,
    run_command,
    wait_until_serving,
    walk_image,
)

# A successful open, openat or execve in strace's output (-f, -y): its pid, the call, the
# directory a relative path starts from (the working directory or openat's descriptor, as -y names
# it), and the path.
CALL = re.compile(
    r"^\d+\s+(?P<call>open|openat|openat2|execve|execveat)\("
    r'(?:(?:AT_FDCWD|\d+)<(?P<dir>[^>]*)>, )?"(?P<path>[^"]*)".*\)\s+=\s+\d+(?:<[^>]*>)?$'
)
# Run with python3 inside the container: each path of the JSON list of [how, path] its argument
# holds, resolved through its symbolic links; an executable's ELF interpreter (PT_INTERP) added.
# Prints a JSON list.
RESOLVE = """
import json, os, struct, sys
found = set()
for kind, path in json.loads(sys.argv[1]):
    real = os.path.realpath(path)
    found.add(real)
    if kind != "exec":
        continue
    with open(real, "rb") as elf:
        head = elf.read(64)
        if head[:4] != b"\\x7fELF" or head[4] != 2:
            continue
        offset, = struct.unpack_from("<Q", head, 32)
        size, count = struct.unpack_from("<HH", head, 54)
        for number in range(count):
            elf.seek(offset + number * size)
            kind, _, at, _, _, length = struct.unpack("<IIQQQQ", elf.read(40))
            if kind == 3:
                elf.seek(at)
                found.add(os.path.realpath(elf.read(length).rstrip(b"\\0").decode()))
print(json.dumps(sorted(found)))
"""


def opened_paths(trace: str, workdir: str) -> list[tuple[str, str]]:
    """The paths strace's output shows opened or executed inside the container, each with how:
    ("exec", path) or ("open", path); a relative path made absolute from its directory or the
    working directory. What env and nsenter open on this machine is left out: everything before
    the first program nsenter executes."""
    found, entered, inside = [], False, False
    for line in trace.splitlines():
        match = CALL.match(line)
        if not match:
            continue
        executes = match["call"].startswith("execve")
        inside = inside or (entered and executes)
        entered = entered or (executes and match["path"].endswith("/nsenter"))
        if not inside:
            continue
        path = match["path"]
        if not path.startswith("/"):
            path = f"{(match['dir'] or workdir).rstrip('/')}/{path}"
        found.append(("exec" if executes else "open", path))
    return found


def held_files(image: str) -> dict[str, int]:
    """Every regular file of the image, by its absolute path, with its size; a hard link once."""
    files = {}
    for member, _ in walk_image(image):
        if member.isreg():
            files["/" + member.name.lstrip("./")] = member.size
    return files


def summarize(opened: list[str], held: dict[str, int], depth: int = 3) -> dict:
    """Files and bytes opened and held, and the folders (depth levels deep) holding the most bytes
    never opened, largest first."""
    opened_held = sorted(path for path in set(opened) if path in held)
    unopened: dict[str, int] = {}
    for path, size in held.items():
        if path not in opened_held:
            folder = "/".join(path.split("/")[: depth + 1])
            unopened[folder] = unopened.get(folder, 0) + size
    return {
        "opened": {"files": len(opened_held), "bytes": sum(held[path] for path in opened_held)},
        "held": {"files": len(held), "bytes": sum(held.values())},
        "unopened_by_folder": dict(sorted(unopened.items(), key=lambda item: -item[1])[:10]),
        "opened_files": opened_held,
    }


def traced(pid: str, user: str, environment: list[str], command: list[str], log: Path) -> list[str]:
    """The command to run command inside the namespaces of the container whose process is pid, in
    its root and working directory, as user ("UID GID"), under strace writing to log."""
    uid, _, gid = user.partition(" ")
    return [
        *["strace", "--follow-forks", "--quiet=all", "--decode-fds=path", "--signal=none"],
        *["--trace=open,openat,openat2,execve,execveat", "--output", str(log)],
        *["env", "--ignore-environment", *environment],
        *[shutil.which("nsenter"), "--target", pid, "--mount", "--net", "--pid", "--ipc", "--uts"],
        *["--root", "--wd", "--setuid", uid, "--setgid", gid, *command],
    ]


def descendants(pid: int) -> list[int]:
    """The processes pid started, and theirs, by what Linux's /proc lists as each one's children."""
    children = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        children += [int(child) for child in (task / "children").read_text().split()]
    return [found for child in children for found in (child, *descendants(child))]


def stop(tracer: subprocess.Popen) -> None:
    """Stop what strace traces with SIGTERM, as `docker stop` would (gunicorn then stops its workers
    and exits), and wait for strace, which exits with it."""
    for pid in descendants(tracer.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    tracer.wait(timeout=60)


def serve_and_trace(image: str, limits: list[str], hardening: list[str]) -> dict:
    """Start image's server under strace inside a waiting container of it, ask it every route, an
    error and its health check; return what it opened beside what the image holds."""
    for tool in ("strace", "nsenter"):
        if not shutil.which(tool):
            raise CommandFailed(f"measuring the files a server opens needs {tool} (Debian: apt-get install {tool})")
    config = json.loads(docker("image", "inspect", "--format", "{{json .Config}}", image))
    port = int(next(iter(config.get("ExposedPorts") or {"8080/tcp": {}})).partition("/")[0])
    name = f"{PROJECT_NAME}-floor-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix=f"{PROJECT_NAME}-floor-") as scratch:
        server_log, check_log = Path(scratch) / "server", Path(scratch) / "check"
        server = None
        try:
            waiting = ["--entrypoint", "python3", image, "-c", "import time; time.sleep(600)"]
            docker("run", "--detach", "--name", name, "--publish", f"127.0.0.1::{port}", *limits, *hardening, *waiting)
            published = int(docker("port", name, f"{port}/tcp").split()[0].rsplit(":", 1)[1])
            pid = docker("inspect", "--format", "{{.State.Pid}}", name).strip()
            user = docker("exec", name, "python3", "-c", "import os; print(os.getuid(), os.getgid())").strip()
            environment = Path(f"/proc/{pid}/environ").read_text().split("\0")[:-1]
            workdir = config.get("WorkingDir") or "/"
            command = [*(config.get("Entrypoint") or []), *(config.get("Cmd") or [])]
            # strace writes to its own file; the server's log is of no use here.
            server = subprocess.Popen(
                traced(pid, user, environment, command, server_log),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            wait_until_serving(published, name, timeout=30)
            answers = {
                "GET /": request(published, "/").status,
                "POST /echo": request(published, "/echo", method="POST", body=b"x" * 1000).status,
                "GET /healthz": request(published, "/healthz").status,
                "GET /missing": request(published, "/missing").status,
            }
            check = (config.get("Healthcheck") or {}).get("Test") or []
            check = ["/bin/sh", "-c", check[1]] if check[:1] == ["CMD-SHELL"] else check[1:]
            if check:
                checked = run_command(*traced(pid, user, environment, check, check_log), check=False)
                answers["health check"] = checked.returncode
            stop(server)
            server = None
            logs = [log.read_text() for log in (server_log, check_log) if log.exists()]
            paths = [path for trace in logs for path in opened_paths(trace, workdir)]
            resolved = json.loads(docker("exec", name, "python3", "-c", RESOLVE, json.dumps(paths)))
        finally:
            if server is not None:
                server.kill()
                server.wait(timeout=30)
            docker_result("rm", "--force", name, check=False)
    return {"image": image, "answers": answers, **summarize(resolved, held_files(image))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image")
    parser.add_argument("hardening", nargs="*", help="docker run flags the image runs with (--read-only ...)")
    parser.add_argument("--memory", default="256m")
    parser.add_argument("--cpus", default="1")
    parser.add_argument("--pids-limit", default="128")
    args = parser.parse_args(argv)
    limits = ["--memory", args.memory, "--cpus", args.cpus, "--pids-limit", args.pids_limit]
    started = time.monotonic()
    report = serve_and_trace(args.image, limits, args.hardening)
    report["seconds"] = time.monotonic() - started
    print(json.dumps(report, indent=2))
    opened, held = report["opened"], report["held"]
    print(
        f"{args.image}: its server opened {opened['files']:,} files, {opened['bytes'] / MB:.1f} MB, "
        f"of the {held['files']:,}, {held['bytes'] / MB:.1f} MB, it holds",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(exit_on_failure(main, "floor"))
