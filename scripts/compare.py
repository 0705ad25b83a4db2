"""Print the images side by side: size, layers, user, health check, shell and pip.

Usage: python3 scripts/compare.py IMAGE [IMAGE ...]   (`make compare` passes the three variants)
What an image contains is read from its exported filesystem, so the check needs no shell in it.
"""

import json
import os
import subprocess
import sys
import tarfile

DOCKER = os.environ.get("DOCKER", "docker").split()
SHELLS = {"sh", "bash", "dash", "ash", "busybox"}


def docker(*args: str) -> str:
    result = subprocess.run([*DOCKER, *args], capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"compare: `docker {' '.join(args)}` failed: {result.stderr.strip()}")
    return result.stdout


def contents(image: str) -> dict:
    """Count the files of an image's filesystem and look for a shell and for pip among them."""
    container = docker("create", image).strip()
    files, shell, pip = 0, False, False
    try:
        with (
            subprocess.Popen([*DOCKER, "export", container], stdout=subprocess.PIPE) as export,
            tarfile.open(fileobj=export.stdout, mode="r|") as archive,
        ):
            for member in archive:
                if member.isdir():
                    continue
                files += 1
                directory, _, name = member.name.rpartition("/")
                shell = shell or (directory.endswith("bin") and name in SHELLS)
                pip = pip or "/site-packages/pip/" in member.name or "/dist-packages/pip/" in member.name
    finally:
        docker("rm", "--force", container)
    return {"files": files, "shell": shell, "pip": pip}


def describe(image: str) -> dict:
    info = json.loads(docker("image", "inspect", image))[0]
    health = (info["Config"].get("Healthcheck") or {}).get("Test") or ["NONE"]
    return {
        "image": image,
        "size": f"{info['Size'] / 1e6:.1f} MB",
        "layers": str(len(info["RootFS"]["Layers"])),
        "user": info["Config"].get("User") or "root (unset)",
        "healthcheck": {"CMD": "exec form", "CMD-SHELL": "shell form"}.get(health[0], "none"),
        **{
            key: "yes" if value is True else "no" if value is False else str(value)
            for key, value in contents(image).items()
        },
    }


def table(rows: list[dict]) -> str:
    headers = list(rows[0])
    widths = {key: max(len(key), *(len(row[key]) for row in rows)) for key in headers}
    line = lambda cells: "  ".join(cells[key].ljust(widths[key]) for key in headers).rstrip()  # noqa: E731
    return "\n".join(
        [line({key: key for key in headers}), line({key: "-" * widths[key] for key in headers})]
        + [line(row) for row in rows]
    )


def main(images: list[str]) -> int:
    if not images:
        sys.exit(__doc__.strip().splitlines()[2])
    print(table([describe(image) for image in images]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
