"""The README and the pages of docs/ as text, held to what they quote: every Dockerfile excerpt is
still in the Dockerfile it names, every make target of the lesson shows the docker command it runs,
every link finds its page and heading, every test a page names exists, each lesson page leads to
the next, the README stays a front page, and every figure the lesson and the measured pages quote
is the one in the row and column it names of what `make bench`, `make compare` or `make lessons`
wrote into docs/reference/.
"""

import os
import re
import shlex
import subprocess
from pathlib import Path

import lessons
import pytest
from containers import ROOT, TABLE

pytestmark = pytest.mark.unit

README = ROOT / "README.md"
DOCS = ROOT / "docs"
DOCKERFILES = tuple(row["dockerfile"] for row in TABLE.values())
# Every page: the README and docs/'s Markdown, less what Sphinx builds.
PAGES = (README, *sorted(page for page in DOCS.rglob("*.md") if "_build" not in page.parts))
# The lesson, one page a step, in the order of its table of contents.
LESSON = DOCS / "lesson"
# The front page's limit, and the three doors it opens.
README_LINES = 150
DOORS = ("docs/lesson/index.md", "docs/copy/index.md", "docs/ship/index.md")
# An excerpt is a code block that names its file in a caption, as the site shows it: a Dockerfile,
# or the .dockerignore beside them.
CAPTION = re.compile(r":caption: (\S+)")
QUOTED = (*DOCKERFILES, ".dockerignore")
# A line of an excerpt that stands for lines left out.
ELISION = "# ..."
# The lesson's commands are written for the project as it is shipped.
SHIPPED = ("IMAGE=flask-app", "CONTAINER=flask-app", "WSGI_APP=app:app", "DOCKER=docker")
# What make adds to every build and run for its own bookkeeping, which the lesson leaves out and
# names: the base it resolved, the commit's time, OCI labels, a proxy's CA, make run's own label.
BOOKKEEPING = re.compile(r"(--label|--secret|--build-context) \S+|--build-arg SOURCE_DATE_EPOCH=\S*")


def fenced_blocks(text: str) -> list[tuple[str, list[str]]]:
    """Each fenced code block: its info string (`{code-block} dockerfile` for a directive) and its
    lines, a directive's options among them."""
    blocks = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        # A block may be indented, inside a list item; its lines are read without the indent.
        indent = lines[index][: len(lines[index]) - len(lines[index].lstrip())]
        line = lines[index].strip()
        # A fence of more backticks holds fenced blocks of fewer, and ends at its own length.
        fence = line[: len(line) - len(line.lstrip("`"))]
        if len(fence) >= 3 and line != fence:
            end = lines.index(f"{indent}{fence}", index + 1)
            blocks.append(
                (line[len(fence) :].strip(), [inner.removeprefix(indent) for inner in lines[index + 1 : end]])
            )
            index = end
        index += 1
    return blocks


def lesson_pages() -> list[Path]:
    """The lesson's pages in reading order: its index, then the steps its table of contents lists."""
    index = LESSON / "index.md"
    toctree = next(lines for info, lines in fenced_blocks(index.read_text()) if info == "{toctree}")
    return [index, *(LESSON / f"{entry}.md" for entry in toctree if entry and not entry.startswith(":"))]


def excerpts() -> list[tuple[str, list[str]]]:
    """Every excerpt of every page, each Dockerfile block and each block with a caption: the file
    its caption names, and its lines."""
    found = []
    for page in PAGES:
        for info, lines in fenced_blocks(page.read_text()):
            if info.split()[-1:] == ["dockerfile"] or any(CAPTION.fullmatch(line) for line in lines):
                options = [line for line in lines if line.startswith(":")]
                caption = next((match.group(1) for line in options if (match := CAPTION.fullmatch(line))), "")
                body = lines[len(options) :]
                found.append((caption, body[1:] if body[:1] == [""] else body))
    return found


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


def test_the_lesson_quotes_each_dockerfile():
    assert {name for name, _ in excerpts()} >= set(DOCKERFILES)


@pytest.mark.parametrize("dockerfile, excerpt", excerpts(), ids=lambda value: value if isinstance(value, str) else "")
def test_every_dockerfile_excerpt_is_still_verbatim_in_the_dockerfile_it_names(dockerfile, excerpt):
    assert dockerfile in QUOTED, "this excerpt names no Dockerfile in its caption (:caption: FILE):\n" + (
        "\n".join(excerpt)
    )
    lines = (ROOT / dockerfile).read_text().splitlines()
    assert in_order(chunks(excerpt), lines), f"not, as it stands, in {dockerfile}:\n" + "\n".join(excerpt)


def shown_commands() -> list[tuple[str, list[str]]]:
    """Each `$ make TARGET` of the lesson's console blocks, with the `$ docker ...` line that follows
    it (its continuation lines joined), split into words."""
    shown = []
    blocks = [block for page in lesson_pages() for block in fenced_blocks(page.read_text())]
    for info, lines in blocks:
        if info != "console":
            continue
        text = re.sub(r"\\\n\s*", " ", "\n".join(lines)).splitlines()
        commands = [line[2:] for line in text if line.startswith("$ ")]
        if not commands:
            continue
        for command, following in zip(commands, [*commands[1:], ""], strict=True):
            if match := re.match(r"make ((?:build|run)-[\w-]+)", command):
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
    """The anchor MyST (myst_heading_anchors) and GitHub give a heading: lower case, punctuation
    dropped, spaces made hyphens."""
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


def prose(text: str) -> str:
    """A page without its code blocks, and without the tables the measuring commands write into it."""
    text = re.sub(r"<!-- (\w+):start -->.*?<!-- \1:end -->", "", text, flags=re.DOTALL)
    return re.sub(r"^( *)```.*?^\1```$", "", text, flags=re.DOTALL | re.MULTILINE)


# A link or an image to a file of the repository, with or without an anchor: [text](target#anchor).
LINK = re.compile(r"\]\(([^()\s#:]*)(?:#([^()\s]+))?\)")


def internal_links() -> list[tuple[str, Path, str]]:
    """Every link of every page to a page, a heading or a picture of the repository: the page it is
    on, the file it names, the anchor (empty if none)."""
    links = []
    for page in PAGES:
        for target, anchor in LINK.findall(prose(page.read_text())):
            named = (page.parent / target).resolve() if target else page
            links.append((page.relative_to(ROOT).as_posix(), named, anchor))
    return links


def test_the_pages_link_to_each_other_and_to_headings():
    links = internal_links()
    assert len(links) >= 50, len(links)
    assert sum(1 for _, _, anchor in links if anchor) >= 5


@pytest.mark.parametrize("page, target, anchor", internal_links())
def test_every_internal_link_finds_its_page_and_heading(page, target, anchor):
    assert target.is_file(), f"{page} links to {target}, which does not exist"
    assert not anchor or anchor in anchors(target), f"{page} links to #{anchor}, which {target.name} has no heading for"


def test_the_readme_is_a_front_page_that_opens_the_three_doors():
    text = README.read_text()
    assert len(text.splitlines()) <= README_LINES, f"README.md has {len(text.splitlines())} lines, over {README_LINES}"
    linked = {target for target, _ in LINK.findall(text)}
    assert set(DOORS) <= linked, f"README.md links none of {sorted(set(DOORS) - linked)}"


# A test's name as a page gives it, in backticks: `test_...`, or `test_file.py::test_...`.
NAMED_TEST = re.compile(r"`(?:(test_\w+\.py)::)?(test_\w+)`")
# The template's tests of itself, which copies leave out (copier.yml): a page names its tests with
# the file, and in a copy, where the file is gone, they are not looked for.
TEMPLATE_ONLY = "test_template.py"


def defined_tests(file: str = "test_*.py") -> set[str]:
    """The name of every test function in tests/, or in one file of it."""
    return {
        name for path in (ROOT / "tests").glob(file) for name in re.findall(r"^def (test_\w+)", path.read_text(), re.M)
    }


def test_every_test_a_page_names_exists():
    defined = defined_tests()
    named = {
        (page.relative_to(ROOT).as_posix(), file, name)
        for page in PAGES
        for file, name in NAMED_TEST.findall(page.read_text())
    }
    assert len(named) >= 50, len(named)
    missing = sorted(
        f"{page}: {file}{'::' if file else ''}{name}"
        for page, file, name in named
        if not (file == TEMPLATE_ONLY and not (ROOT / "tests" / file).exists())
        and name not in (defined_tests(file) if file else defined)
    )
    assert not missing, "these pages name tests that tests/ does not define:\n" + "\n".join(missing)


@pytest.mark.parametrize("page", lesson_pages(), ids=lambda page: page.name)
def test_each_lesson_page_shows_a_command_names_its_test_and_leads_to_the_next(page):
    pages = lesson_pages()
    text = page.read_text()
    if page.name != "index.md":
        assert any(info == "console" for info, _ in fenced_blocks(text)), f"{page.name} shows no command to run"
        assert NAMED_TEST.search(text), f"{page.name} names no test that proves it"
    following = pages[pages.index(page) + 1] if page != pages[-1] else None
    last = text.rstrip().splitlines()[-1]
    assert last.startswith("Next: ["), f"{page.name} does not end with a Next: link"
    if following:
        assert f"]({following.name})" in last, f"{page.name}'s Next: link does not lead to {following.name}"


# The pages `make bench`, `make compare` and `make lessons` write: the measured figures.
MEASURED = DOCS / "reference"
# The pages that quote them: the front page, the lesson, and the reference pages that carry their tables.
QUOTING = (README, *lesson_pages(), DOCS / "reference" / "images.md", DOCS / "reference" / "measured.md")
# A figure in prose: a decimal (one that ends a sentence too, but not part of a version such as
# 26.1.5 or python:3.13), a number with thousands separators, a whole number of MB, kB or ms, of
# layers, answers, requests or setuid programs, or the first of "N of M".
FIGURE = re.compile(
    r"(?<![\w.,:-])(\d{1,3}(?:,\d{3})+|\d+\.\d+(?!\d|\.\d)|\d+(?= ?(?:MB|kB|ms)\b)"
    r"|\d+(?= (?:layers|answers|requests|setuid|a second)\b)|\d+(?= of \d))"
)
# Every number of a measured table's cell, in order: "3.45 [3.43-3.53] s" holds 3.45, 3.43, 3.53.
NUMBER = re.compile(r"\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?")
# Where each figure comes from: on a page, the words just before it; then the measured page, its
# row (the first cell, or the image for compare.md), its column (empty for the row's own label),
# and which number of that cell it is.
QUOTES = (
    (
        "lesson/0-basics.md",
        "`docker stop` took",
        "lessons",
        "Exec form for ENTRYPOINT and CMD",
        "What undoing it changes",
        1,
    ),
    ("README.md", "Secure is", "bench", "size", "secure", 0),
    ("README.md", "that image's", "bench", "size", "peer", 0),
    ("README.md", "production serves", "bench", "requests/s at 64 (wrk)", "production", 0),
    ("README.md", "connections against its", "bench", "requests/s at 64 (wrk)", "peer", 0),
    ("README.md", "health check failed", "bench", "/healthz under 256 slow-header clients (20 s)", "peer", 0),
    ("README.md", "times and production's", "bench", "/healthz under 256 slow-header clients (20 s)", "production", 0),
    ("README.md", "fails each of", "bench", "1,000 keep-alive connections: answers / failures", "peer", 1),
    ("README.md", "less memory,", "bench", "idle memory", "peer", 0),
    ("README.md", "35.5 MB against", "bench", "idle memory", "production", 0),
    ("lesson/0-basics.md", "s instead of", "lessons", "Exec form for ENTRYPOINT and CMD", "What undoing it changes", 0),
    ("lesson/1-naive.md", "`make compare` found it", "compare", "flask-app:naive", "size", 0),
    ("lesson/1-naive.md", "MB,", "compare", "flask-app:naive", "compressed", 0),
    ("lesson/1-naive.md", "one line a second,", "bench", "/healthz under 256 slow-header clients (20 s)", "naive", 0),
    ("lesson/1-naive.md", "189 of", "bench", "/healthz under 256 slow-header clients (20 s)", "naive", 1),
    ("lesson/1-naive.md", "process limit; of", "bench", "1,000 keep-alive connections: answers / failures", "", 0),
    (
        "lesson/1-naive.md",
        "asking twice each, all",
        "bench",
        "1,000 keep-alive connections: answers / failures",
        "naive",
        1,
    ),
    ("lesson/1-naive.md", "failed, with", "bench", "1,000 keep-alive connections: answers / failures", "naive", 0),
    (
        "lesson/2-production.md",
        "one-line change took",
        "lessons",
        "Copy what changes least first: requirements, then the code",
        "What undoing it changes",
        0,
    ),
    (
        "lesson/2-production.md",
        "as naive does,",
        "lessons",
        "Copy what changes least first: requirements, then the code",
        "What undoing it changes",
        1,
    ),
    (
        "lesson/2-production.md",
        "the image grew from",
        "lessons",
        "No bytecode files written (PYTHONDONTWRITEBYTECODE)",
        "What undoing it changes",
        0,
    ),
    (
        "lesson/2-production.md",
        "grew from 187.7 to",
        "lessons",
        "No bytecode files written (PYTHONDONTWRITEBYTECODE)",
        "What undoing it changes",
        1,
    ),
    (
        "lesson/2-production.md",
        "MB (",
        "lessons",
        "No bytecode files written (PYTHONDONTWRITEBYTECODE)",
        "What undoing it changes",
        2,
    ),
    (
        "lesson/2-production.md",
        "75.3 to",
        "lessons",
        "No bytecode files written (PYTHONDONTWRITEBYTECODE)",
        "What undoing it changes",
        3,
    ),
    (
        "lesson/2-production.md",
        "the `find`,",
        "lessons",
        "No setuid or setgid programs (CIS Docker Benchmark 4.8)",
        "What undoing it changes",
        1,
    ),
    (
        "lesson/2-production.md",
        "says `healthy` then (",
        "lessons",
        "Declare a HEALTHCHECK",
        "What undoing it changes",
        0,
    ),
    ("lesson/2-production.md", "production served", "bench", "requests/s at 64 (wrk)", "production", 0),
    ("lesson/2-production.md", "at 64 connections,", "bench", "requests/s at 64 (wrk)", "production", 3),
    ("lesson/2-production.md", "times naive's", "bench", "requests/s at 64 (wrk)", "naive", 0),
    ("lesson/2-production.md", "with a p99 of", "bench", "p99 at 64", "production", 0),
    ("lesson/2-production.md", "ms against", "bench", "p99 at 64", "naive", 0),
    (
        "lesson/2-production.md",
        "256 slow clients,",
        "bench",
        "/healthz under 256 slow-header clients (20 s)",
        "production",
        0,
    ),
    ("lesson/2-production.md", "answered all", "bench", "1,000 keep-alive connections: answers / failures", "", 0),
    ("lesson/2-production.md", "It costs memory:", "bench", "idle memory", "production", 0),
    ("lesson/2-production.md", "published port, the peer served", "bench", "requests/s at 64 (wrk)", "peer", 0),
    ("lesson/2-production.md", "its p99 was", "bench", "p99 at 64", "peer", 0),
    (
        "lesson/2-production.md",
        "under the same slow clients,",
        "bench",
        "/healthz under 256 slow-header clients (20 s)",
        "peer",
        0,
    ),
    ("lesson/2-production.md", "and of the", "bench", "1,000 keep-alive connections: answers / failures", "", 0),
    (
        "lesson/2-production.md",
        "after the first answer, failing",
        "bench",
        "1,000 keep-alive connections: answers / failures",
        "peer",
        1,
    ),
    (
        "lesson/2-production.md",
        "the gap narrows: it served",
        "bench",
        "requests/s at 16, wrk in the container's network namespace",
        "peer",
        0,
    ),
    (
        "lesson/2-production.md",
        "at 16 connections against production's",
        "bench",
        "requests/s at 16, wrk in the container's network namespace",
        "production",
        0,
    ),
    ("lesson/2-production.md", "it idles in", "bench", "idle memory", "peer", 0),
    ("lesson/2-production.md", "idle against naive's", "bench", "idle memory", "naive", 0),
    (
        "lesson/2-production.md",
        "the context was",
        "lessons",
        "A .dockerignore: send the engine only what the build needs",
        "What undoing it changes",
        1,
    ),
    (
        "lesson/2-production.md",
        "kB instead of",
        "lessons",
        "A .dockerignore: send the engine only what the build needs",
        "What undoing it changes",
        0,
    ),
    ("lesson/2-production.md", "the size little:", "compare", "flask-app:production", "size", 0),
    ("lesson/2-production.md", "MB against naive's", "compare", "flask-app:naive", "size", 0),
    ("lesson/3-slim.md", "`make compare` measured", "compare", "flask-app:slim", "layers", 0),
    ("lesson/3-slim.md", "to production's", "compare", "flask-app:production", "layers", 0),
    ("lesson/3-slim.md", "the same size,", "compare", "flask-app:slim", "size", 0),
    ("lesson/4-secure.md", "`make compare` measured", "compare", "flask-app:secure", "size", 0),
    ("lesson/4-secure.md", "44.9 MB,", "compare", "flask-app:secure", "compressed", 0),
    ("lesson/4-secure.md", "compressed,", "compare", "flask-app:secure", "layers", 0),
    ("lesson/4-secure.md", "layers and", "compare", "flask-app:secure", "files", 0),
    ("lesson/4-secure.md", "files, against production's", "compare", "flask-app:production", "files", 0),
    ("lesson/4-secure.md", "as production does (", "bench", "requests/s at 64 (wrk)", "secure", 0),
    ("lesson/4-secure.md", "at 64 connections,", "bench", "idle memory", "secure", 0),
    ("lesson/4-secure.md", "a code change takes", "bench", "warm rebuild after a code change", "secure", 0),
    ("lesson/4-secure.md", "the first build,", "bench", "cold build", "secure", 0),
    ("lesson/4-secure.md", "s against production's", "bench", "cold build", "production", 0),
    ("lesson/4-secure.md", "writes for this app weighs", "bench", "size", "peer", 0),
    ("lesson/4-secure.md", "its server opens", "bench", "files its server opens, of those it holds", "secure", 0),
    ("lesson/4-secure.md", "379 of", "bench", "files its server opens, of those it holds", "secure", 1),
    ("lesson/4-secure.md", "regular files,", "bench", "files its server opens, of those it holds", "secure", 2),
    ("lesson/4-secure.md", "MB of the", "bench", "files its server opens, of those it holds", "secure", 3),
    ("lesson/4-secure.md", "standard library,", "bench", "/usr/lib/python3.13", "MB", 0),
    ("reference/measured.md", "clients, and with", "bench", "1,000 keep-alive connections: answers / failures", "", 0),
    ("reference/measured.md", "it, and", "bench", "requests/s at 64 (wrk)", "production", 3),
    ("reference/measured.md", "at a fixed", "bench", "p50 at 100/s, open loop", "", 1),
    (
        "reference/measured.md",
        "many of them (",
        "bench",
        "the same, gunicorn's gthread worker (2 x 4 threads)",
        "production",
        0,
    ),
    ("reference/measured.md", "fails all of the", "bench", "1,000 keep-alive connections: answers / failures", "", 0),
    ("reference/measured.md", "a container, production served", "bench", "requests/s at 64 (wrk)", "production", 0),
    ("reference/measured.md", "where the peer served", "bench", "requests/s at 64 (wrk)", "peer", 0),
    ("reference/measured.md", "with a p99 of", "bench", "p99 at 64", "production", 0),
    ("reference/measured.md", "ms against", "bench", "p99 at 64", "peer", 0),
    (
        "reference/measured.md",
        "at 16 connections the peer served",
        "bench",
        "requests/s at 16, wrk in the container's network namespace",
        "peer",
        0,
    ),
    (
        "reference/measured.md",
        "against production's",
        "bench",
        "requests/s at 16, wrk in the container's network namespace",
        "production",
        0,
    ),
    (
        "reference/measured.md",
        "at 64 connections",
        "bench",
        "requests/s at 64, wrk in the container's network namespace",
        "peer",
        0,
    ),
    (
        "reference/measured.md",
        "4,388 against",
        "bench",
        "requests/s at 64, wrk in the container's network namespace",
        "production",
        0,
    ),
    ("reference/measured.md", "the peer failed", "bench", "/healthz under 256 slow-header clients (20 s)", "peer", 0),
    (
        "reference/measured.md",
        "closed it, failing",
        "bench",
        "1,000 keep-alive connections: answers / failures",
        "peer",
        1,
    ),
    ("reference/measured.md", "connections.** Of", "bench", "1,000 keep-alive connections: answers / failures", "", 0),
    ("reference/measured.md", "Secure is", "bench", "size", "secure", 0),
    ("reference/measured.md", "production, weighs", "bench", "size", "peer", 0),
    ("reference/measured.md", "The peer idles in", "bench", "idle memory", "peer", 0),
    ("reference/measured.md", "worker take", "bench", "idle memory", "production", 0),
    ("reference/measured.md", "takes the peer", "bench", "warm rebuild after a code change", "peer", 0),
    ("reference/measured.md", "0.29 s, production", "bench", "warm rebuild after a code change", "production", 0),
    ("reference/measured.md", "among them):", "bench", "/usr/lib/python3.13", "MB", 0),
    (
        "reference/measured.md",
        "and production served",
        "bench",
        "requests/s at 16, wrk in the container's network namespace",
        "production",
        0,
    ),
    ("reference/measured.md", "access log, production served", "bench", "no access log", "requests/s", 0),
)


def measured_tables(name: str) -> dict[str, dict[str, str]]:
    """The rows of every table a measured page holds, by their first cell (by the image, for
    compare.md), each a dict of its cells by the column's header, the row's own label under ""."""
    rows: dict[str, dict[str, str]] = {}
    header: list[str] = []
    for line in (MEASURED / f"{name}.md").read_text().splitlines():
        if not line.startswith("|"):
            header = []
            continue
        cells = [cell.strip().strip("`") for cell in line.strip().strip("|").split("|")]
        if not header:
            header = cells
        elif not set(line) <= set("|- "):
            row = dict(zip(header, cells, strict=True))
            rows[cells[0]] = {**row, "": cells[0]}
    return rows


def measured_value(source: str, row: str, column: str, index: int) -> str:
    """The figure a quote names: the index-th number of that cell of that page's tables."""
    rows = measured_tables(source)
    assert row in rows, f"docs/reference/{source}.md has no row {row!r}"
    assert column in rows[row], f"docs/reference/{source}.md has no column {column!r}"
    numbers = NUMBER.findall(rows[row][column])
    assert index < len(numbers), f"{source}.md, {row!r}, {column!r}: {rows[row][column]!r} has no number {index}"
    return numbers[index]


def page_named(name: str) -> Path:
    """A quoting page by the name QUOTES gives it: README.md, or a path under docs/."""
    return README if name == README.name else DOCS / name


def name_of(page: Path) -> str:
    return README.name if page == README else page.relative_to(DOCS).as_posix()


def figures_of(page: Path) -> list[tuple[int, str]]:
    """Each figure of a page's prose (its lines joined), with where it starts."""
    return [(match.start(), match.group(1)) for match in FIGURE.finditer(" ".join(prose(page.read_text()).split()))]


def quoted(page: str, before: str) -> list[tuple[int, str]]:
    """Where the words before appear on a page, each with the figure that follows them."""
    text = " ".join(prose(page_named(page).read_text()).split())
    return [
        (match.end(1), match.group(2)) for match in re.finditer(rf"({re.escape(before)} ?)({FIGURE.pattern})", text)
    ]


def test_every_figure_of_the_quoting_pages_is_tied_to_where_it_was_measured():
    tied = {(page, at) for page, before, *_ in QUOTES for at, _ in quoted(page, before)}
    found = {(name_of(page), at, figure) for page in QUOTING for at, figure in figures_of(page)}
    assert len(found) >= 40, len(found)
    untied = sorted(f"{page}: {figure}" for page, at, figure in found if (page, at) not in tied)
    assert not untied, "these figures are tied to no row and column of a measured page (QUOTES):\n" + "\n".join(untied)


@pytest.mark.parametrize("page, before, source, row, column, index", QUOTES, ids=lambda value: str(value)[:40])
def test_every_figure_is_the_one_its_row_and_column_measured(page, before, source, row, column, index):
    """After `make bench`, `make compare` or `make lessons`, the pages quote the new figures, each in
    its place: two figures of one sentence swapped fail."""
    places = quoted(page, before)
    assert len(places) == 1, f"{page}: {before!r} followed by a figure appears {len(places)} times, not once"
    expected = measured_value(source, row, column, index)
    assert places[0][1] == expected, (
        f"{page}: after {before!r} stands {places[0][1]}; {source}, {row!r}, {column or 'its label'!r} says {expected}"
    )


# The page whose table says, of each image, its Dockerfile and its stages.
IMAGES_PAGE = DOCS / "reference" / "images.md"


def images_row(label: str) -> list[str]:
    """The cells after the first of the images page's table row whose first cell is label."""
    for line in IMAGES_PAGE.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == label:
            return cells[1:]
    pytest.fail(f"{IMAGES_PAGE.name} has no table row {label!r}")


def test_the_images_page_counts_as_many_stages_as_each_dockerfile_has_from_lines():
    dockerfiles = [cell.strip("`") for cell in images_row("Dockerfile")]
    stages = images_row("Stages (`FROM` lines)")
    assert sorted(dockerfiles) == sorted(DOCKERFILES)
    for dockerfile, cell in zip(dockerfiles, stages, strict=True):
        froms = re.findall(r"^FROM ", (ROOT / dockerfile).read_text(), re.MULTILINE)
        assert cell.startswith(f"{len(froms)}:"), f"{dockerfile} has {len(froms)} FROM lines; the page says {cell!r}"


def test_the_lessons_page_has_a_row_for_each_practice():
    """make lessons wrote it with the practices it has now: run it again after adding one."""
    table = (MEASURED / "lessons.md").read_text()
    for practice in lessons.PRACTICES:
        assert f"| {practice.practice} |" in table, practice.name
