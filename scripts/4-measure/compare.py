"""Compare images side by side, statically: platform, sizes, layers, user, health check, contents, lint.

Usage: python3 scripts/4-measure/compare.py [--hadolint PATH] [--out DIR] [--page FILE] IMAGE=DOCKERFILE ...

Prints a table, writes it as DIR/compare.md (DIR is docs/reference/ unless --out says) and the sizes
as a bar chart, DIR/sizes.svg, and puts the table between the compare markers of the page --page
names (`make compare`: docs/reference/images.md). What an image contains is read from its exported
filesystem, so the check needs no shell in it. `make compare` passes every variant,
each for the engine's own platform and for the one it emulates (linux/amd64 on Apple Silicon,
linux/arm64 elsewhere).
"""

import argparse
import gzip
import json
import re
import subprocess
import sys
from pathlib import Path

# docker_tools, the helper every script shares, sits in scripts/, one folder up.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from docker_tools import DOCKER, MB, as_docker_writes_it, docker, exit_on_failure, walk_image

SHELLS = {"sh", "bash", "dash", "ash", "busybox"}


def contents(image: str) -> dict:
    """Count the files of an image's filesystem and look for a shell and for pip among them."""
    files, shell, pip = 0, False, False
    for member, _ in walk_image(image):
        if member.isdir():
            continue
        files += 1
        directory, _, name = member.name.rpartition("/")
        shell = shell or (directory.endswith("bin") and name in SHELLS)
        pip = pip or re.search(r"/(site|dist)-packages/pip/", member.name) is not None
    return {"files": files, "shell": shell, "pip": pip}


def compressed_size(image: str) -> int:
    """Bytes of `docker save IMAGE | gzip`: roughly what a registry stores and a pull downloads."""
    written = 0

    class Counter:
        def write(self, data: bytes) -> None:
            nonlocal written
            written += len(data)

        def flush(self) -> None:
            pass

    with (
        subprocess.Popen([*DOCKER, "save", image], stdout=subprocess.PIPE) as save,
        gzip.GzipFile(fileobj=Counter(), mode="wb", compresslevel=6) as packed,
    ):
        while chunk := save.stdout.read(1 << 20):
            packed.write(chunk)
    return written


def hadolint_findings(hadolint: str, dockerfile: str) -> list[str]:
    """The rule codes hadolint reports for a Dockerfile, with the project's .hadolint.yaml."""
    config = Path(__file__).resolve().parents[2] / ".hadolint.yaml"
    result = subprocess.run(
        [hadolint, "--config", config, "--format", "json", dockerfile], capture_output=True, text=True
    )
    # hadolint exits 1 when it has findings, so only missing output means it did not run.
    if not result.stdout:
        sys.exit(f"hadolint did not check {dockerfile}: {result.stderr.strip()}")
    return sorted(finding["code"] for finding in json.loads(result.stdout))


def describe(image: str, dockerfile: str, hadolint: str) -> dict:
    info = as_docker_writes_it(json.loads(docker("image", "inspect", image))[0])
    health = (info["Config"].get("Healthcheck") or {}).get("Test") or ["NONE"]
    return {
        "image": image,
        "dockerfile": dockerfile,
        "platform": f"{info['Os']}/{info['Architecture']}",
        "size_bytes": info["Size"],
        "compressed_bytes": compressed_size(image),
        "layers": len(info["RootFS"]["Layers"]),
        "user": info["Config"].get("User") or "root (unset)",
        "healthcheck": {"CMD": "exec form", "CMD-SHELL": "shell form"}.get(health[0], "none"),
        **contents(image),
        "hadolint": hadolint_findings(hadolint, dockerfile),
    }


def cells(row: dict) -> dict:
    """One image's facts as the table shows them."""
    return {
        "image": row["image"],
        "platform": row["platform"],
        "size": f"{row['size_bytes'] / MB:.1f} MB",
        "compressed": f"{row['compressed_bytes'] / MB:.1f} MB",
        "layers": str(row["layers"]),
        "user": row["user"],
        "healthcheck": row["healthcheck"],
        "files": f"{row['files']:,}",
        "shell": "yes" if row["shell"] else "no",
        "pip": "yes" if row["pip"] else "no",
        "hadolint": ", ".join(row["hadolint"]) or "none",
    }


def text_table(rows: list[dict]) -> str:
    table = [cells(row) for row in rows]
    headers = list(table[0])
    widths = {key: max(len(key), *(len(row[key]) for row in table)) for key in headers}

    def line(values: dict) -> str:
        return "  ".join(values[key].ljust(widths[key]) for key in headers).rstrip()

    return "\n".join([line({k: k for k in headers}), line({k: "-" * widths[k] for k in headers}), *map(line, table)])


def markdown_table(rows: list[dict]) -> str:
    table = [cells(row) for row in rows]
    headers = list(table[0])
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(f"`{row[k]}`" if k == "image" else row[k] for k in headers) + " |" for row in table]
    return "\n".join(lines) + "\n"


def svg_chart(rows: list[dict]) -> str:
    """A horizontal bar chart of uncompressed and compressed sizes, as plain SVG."""
    label_width, bar_width, bar_height, gap = 210, 440, 16, 14
    largest = max(row["size_bytes"] for row in rows)
    height = 40 + len(rows) * (2 * bar_height + gap) + 24
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_width + bar_width + 90}" height="{height}" '
        'font-family="sans-serif" font-size="12">',
        '<text x="10" y="20" font-size="14" font-weight="bold">Image size (MB)</text>',
    ]
    y = 36
    for row in rows:
        parts.append(f'<text x="10" y="{y + bar_height + 4}">{row["image"]}</text>')
        for key, colour in (("size_bytes", "#3b6ea8"), ("compressed_bytes", "#8fb3de")):
            width = max(1, round(bar_width * row[key] / largest))
            parts.append(f'<rect x="{label_width}" y="{y}" width="{width}" height="{bar_height}" fill="{colour}"/>')
            parts.append(f'<text x="{label_width + width + 6}" y="{y + bar_height - 4}">{row[key] / MB:.1f}</text>')
            y += bar_height
        y += gap
    legend_y = y + 8
    parts += [
        f'<rect x="{label_width}" y="{legend_y - 10}" width="10" height="10" fill="#3b6ea8"/>',
        f'<text x="{label_width + 14}" y="{legend_y}">uncompressed</text>',
        f'<rect x="{label_width + 110}" y="{legend_y - 10}" width="10" height="10" fill="#8fb3de"/>',
        f'<text x="{label_width + 124}" y="{legend_y}">compressed (gzip of docker save)</text>',
        "</svg>",
    ]
    return "\n".join(parts) + "\n"


def replace_between_markers(text: str, name: str, content: str) -> str:
    """Put content between <!-- name:start --> and <!-- name:end -->, which must both be there."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if start not in text or end not in text:
        raise SystemExit(f"compare: the page has no {start} ... {end} markers to write between")
    before, rest = text.split(start, 1)
    _, after = rest.split(end, 1)
    return f"{before}{start}\n{content}{end}{after}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", metavar="IMAGE=DOCKERFILE")
    parser.add_argument("--hadolint", default="hadolint", help="the hadolint program")
    parser.add_argument("--out", type=Path, default=Path("docs/reference"), help="folder for compare.md and sizes.svg")
    parser.add_argument("--page", type=Path, help="the documentation page whose compare markers get the table")
    args = parser.parse_args(argv)
    pairs = [pair.split("=", 1) for pair in args.images]
    if any(len(pair) != 2 for pair in pairs):
        parser.error("give each image as IMAGE=DOCKERFILE")
    rows = [describe(image, dockerfile, args.hadolint) for image, dockerfile in pairs]
    print(text_table(rows))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "compare.md").write_text(markdown_table(rows))
    (args.out / "compare.json").write_text(json.dumps(rows, indent=2) + "\n")
    (args.out / "sizes.svg").write_text(svg_chart(rows))
    if args.page:
        args.page.write_text(replace_between_markers(args.page.read_text(), "compare", markdown_table(rows)))
    print(f"\nWrote {args.out}/compare.md, compare.json and sizes.svg" + (f", and {args.page}" if args.page else ""))
    return 0


if __name__ == "__main__":
    sys.exit(exit_on_failure(main, "compare"))
