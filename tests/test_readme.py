"""The README and docs/ as text, held to what they quote: every Dockerfile excerpt is still in the
Dockerfile it names, every make target of the lesson shows the docker command it runs, every
link to a heading finds one, and every figure the lesson and the measured sections quote is one that
`make bench`, `make compare` or `make lessons` wrote into docs/.
"""

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
from containers import ROOT, TABLE
from test_dockerfiles import instructions

pytestmark = pytest.mark.unit

README = ROOT / "README.md"
DOCKERFILES = tuple(row["dockerfile"] for row in TABLE.values())
PAGES = (README, *sorted((ROOT / "docs").glob("*.md")))
# The README's lesson: the section from naive to secure, up to the next section.
LESSON_HEADING = "## From naive to secure, one step at a time"
# A link to a Dockerfile of the project: each excerpt is of the last one linked above it, under its heading.
DOCKERFILE_LINK = re.compile(r"\[`(Dockerfile[\w.]*)`\]\(\1\)")
# A line of an excerpt that stands for lines left out.
ELISION = "# ..."
# The README's commands are written for the project as it is shipped.
SHIPPED = ("IMAGE=flask-app", "CONTAINER=flask-app", "WSGI_APP=app:app", "DOCKER=docker")
# What make adds to every build and run for its own bookkeeping, which the README leaves out and
# names: the base it resolved, the commit's time, OCI labels, a proxy's CA, make run's own label.
BOOKKEEPING = re.compile(r"(--label|--secret) \S+|--build-arg (BASE_IMAGE|SOURCE_DATE_EPOCH)=\S*")


def fenced_blocks(text: str) -> list[tuple[str, list[str], str]]:
    """Each fenced code block: its info string, its lines, and the last Dockerfile the text above it
    links to under the same heading (empty if none)."""
    blocks = []
    linked = ""
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.startswith("```") and line != "```":
            end = lines.index("```", index + 1)
            blocks.append((line[3:].strip(), lines[index + 1 : end], linked))
            index = end
        elif line.startswith("#"):
            linked = ""
        else:
            linked = ([linked, *DOCKERFILE_LINK.findall(line)])[-1]
        index += 1
    return blocks


def section(heading: str) -> str:
    """A section of the README, from its heading to the next one of its level; empty if there is none."""
    text = README.read_text().partition(f"\n{heading}\n")[2]
    return re.split(r"^## ", text, maxsplit=1, flags=re.MULTILINE)[0]


def lesson() -> str:
    """The lesson's section of the README; empty if there is none."""
    return section(LESSON_HEADING)


def excerpts() -> list[tuple[str, list[str]]]:
    """Every dockerfile block of the README and docs/, with the Dockerfile the text above it links to."""
    return [
        (linked, lines)
        for page in PAGES
        for info, lines, linked in fenced_blocks(page.read_text())
        if info == "dockerfile"
    ]


def in_order(chunks: list[list[str]], lines: list[str]) -> bool:
    """Whether each chunk is a run of consecutive lines, the chunks in order."""
    start = 0
    for chunk in chunks:
        starts = [at for at in range(start, len(lines) - len(chunk) + 1) if lines[at : at + len(chunk)] == chunk]
        if not starts:
            return False
        start = starts[0] + len(chunk)
    return True


def chunks(excerpt: list[str]) -> list[list[str]]:
    """An excerpt's runs of lines, split where a line says lines were left out."""
    runs: list[list[str]] = [[]]
    for line in excerpt:
        if line == ELISION:
            runs.append([])
        else:
            runs[-1].append(line)
    return [run for run in runs if run]


def test_the_readme_quotes_each_dockerfile():
    assert {name for name, _ in excerpts()} >= set(DOCKERFILES)


@pytest.mark.parametrize("dockerfile, excerpt", excerpts(), ids=lambda value: value if isinstance(value, str) else "")
def test_every_dockerfile_excerpt_is_still_verbatim_in_the_dockerfile_it_names(dockerfile, excerpt):
    assert dockerfile in DOCKERFILES, "no Dockerfile is linked above this excerpt, under its heading:\n" + (
        "\n".join(excerpt)
    )
    lines = (ROOT / dockerfile).read_text().splitlines()
    assert in_order(chunks(excerpt), lines), f"not, as it stands, in {dockerfile}:\n" + "\n".join(excerpt)


def shown_commands() -> list[tuple[str, list[str]]]:
    """Each `$ make TARGET` of the lesson's console blocks, with the `$ docker ...` line that follows
    it (its continuation lines joined), split into words."""
    shown = []
    for info, lines, _ in fenced_blocks(lesson()):
        if info != "console":
            continue
        text = re.sub(r"\\\n\s*", " ", "\n".join(lines)).splitlines()
        commands = [line[2:] for line in text if line.startswith("$ ")]
        for command, following in zip(commands, [*commands[1:], ""], strict=True):
            if match := re.match(r"make ([\w-]+)", command):
                assert following.startswith("docker "), f"`make {match.group(1)}` is not followed by its docker command"
                shown.append((match.group(1), shlex.split(following)))
    return shown


def make_runs(target: str) -> list[list[str]]:
    """The docker build and docker run commands `make -n TARGET` prints, without make's bookkeeping."""
    environment = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/")}
    printed = subprocess.run(
        ["make", "--dry-run", "--no-print-directory", target, *SHIPPED],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=environment,
        check=True,
    ).stdout
    commands = []
    for line in re.sub(r"\\\n\s*", " ", printed).splitlines():
        if match := re.search(r"\bdocker (build|run) .*", line):
            commands.append(without_bookkeeping(shlex.split(re.split(r" \|\| | >/dev/null", match.group(0))[0])))
    return commands


def without_bookkeeping(words: list[str]) -> list[str]:
    """A command's words less each option that BOOKKEEPING matches, with its value."""
    kept: list[str] = []
    for word in words:
        if kept and BOOKKEEPING.fullmatch(f"{kept[-1]} {word}"):
            kept.pop()
        else:
            kept.append(word)
    return kept


def test_the_lesson_shows_a_build_and_a_run_of_every_variant():
    targets = {target for target, _ in shown_commands()}
    variants = ("naive", "production", "slim", "secure")
    assert targets >= {f"{verb}-{variant}" for verb in ("build", "run") for variant in variants}, targets


@pytest.mark.parametrize("target, shown", shown_commands(), ids=lambda value: value if isinstance(value, str) else "")
def test_every_make_target_of_the_lesson_shows_the_docker_command_it_runs(target, shown):
    printed = make_runs(target)
    assert shown in printed, f"`make -n {target}` runs, besides what it adds to every build and run:\n" + "\n".join(
        " ".join(command) for command in printed
    )


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces made hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors of a page's headings, those inside code blocks left out; a repeated one gets -1, -2."""
    found: set[str] = set()
    fenced = False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (match := re.match(r"#{1,6} (.+)", line)):
            anchor = base = slug(match.group(1))
            repeat = 0
            while anchor in found:
                repeat += 1
                anchor = f"{base}-{repeat}"
            found.add(anchor)
    return found


def internal_links() -> list[tuple[str, Path, str]]:
    """Every link to a heading in the README and docs/: the page it is on, the page it names, the anchor."""
    links = []
    for page in PAGES:
        for target, anchor in re.findall(r"\]\(([^)#\s:]*)#([^)\s]+)\)", page.read_text()):
            named = (page.parent / target).resolve() if target else page
            links.append((page.relative_to(ROOT).as_posix(), named, anchor))
    return links


def test_the_readme_and_docs_link_to_headings():
    assert len(internal_links()) >= 10


@pytest.mark.parametrize("page, target, anchor", internal_links())
def test_every_internal_link_finds_its_heading(page, target, anchor):
    assert target.is_file(), f"{page} links to {target}, which does not exist"
    assert anchor in anchors(target), f"{page} links to #{anchor}, which {target.name} has no heading for"


# The pages `make bench`, `make compare` and `make lessons` write: the measured figures.
MEASURED_PAGES = ("bench.md", "compare.md", "lessons.md")
# The sections that quote them.
QUOTING = ("## The basics, shown", LESSON_HEADING, "## The four images", "## Measured: builds, start-up, memory, load")
# A figure: a decimal (not part of a version such as 26.1.5), a number with thousands separators,
# a whole number of MB, kB or ms, or the first of "N of M".
FIGURE = re.compile(r"(?<![\w.,-])(\d{1,3}(?:,\d{3})+|\d+\.\d+(?![.\d])|\d+(?= ?(?:MB|kB|ms)\b)|\d+(?= of \d))")


def prose(heading: str) -> str:
    """A section of the README without its code blocks or the tables the measuring commands write into it."""
    text = re.sub(r"<!-- (\w+):start -->.*?<!-- \1:end -->", "", section(heading), flags=re.DOTALL)
    return re.sub(r"^```.*?^```$", "", text, flags=re.DOTALL | re.MULTILINE)


def quoted_figures() -> list[tuple[str, str, str]]:
    """Each figure the quoting sections give: the section, the figure, the words around it."""
    found = []
    for heading in QUOTING:
        text = prose(heading)
        for match in FIGURE.finditer(text):
            context = " ".join(text[max(0, match.start() - 50) : match.end() + 20].split())
            found.append((heading, match.group(1), context))
    return found


def test_the_lesson_quotes_measured_figures():
    assert len(quoted_figures()) >= 40


@pytest.mark.parametrize("heading, figure, context", quoted_figures())
def test_every_figure_the_readme_quotes_was_measured_by_a_make_command(heading, figure, context):
    """After `make bench`, `make compare` or `make lessons`, the prose quotes the new figures."""
    measured = " ".join((ROOT / "docs" / page).read_text() for page in MEASURED_PAGES)
    # requirements.txt's own size, which slim's build stage leaves behind in production's layer.
    measured += f" {(ROOT / 'requirements.txt').stat().st_size / 1000:.1f} kB"
    assert re.search(rf"(?<![\d.,]){re.escape(figure)}(?![\d]|[.,]\d)", measured), (
        f"{heading}: {figure} ({context!r}) is in none of docs/{', docs/'.join(MEASURED_PAGES)}"
    )


def readme_row(label: str) -> list[str]:
    """The cells after the first of the README's table row whose first cell is label."""
    for line in (ROOT / "README.md").read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == label:
            return cells[1:]
    pytest.fail(f"the README has no table row {label!r}")


def test_the_readme_counts_as_many_stages_as_each_dockerfile_has_from_lines():
    dockerfiles = [cell.strip("`") for cell in readme_row("Dockerfile")]
    stages = readme_row("Stages (`FROM` lines)")
    assert sorted(dockerfiles) == sorted(DOCKERFILES)
    for dockerfile, cell in zip(dockerfiles, stages, strict=True):
        froms = [line for line in instructions(dockerfile) if line.upper().startswith("FROM ")]
        assert cell.startswith(f"{len(froms)}:"), f"{dockerfile} has {len(froms)} FROM lines; the README says {cell!r}"
