"""The documentation site as a reader's browser shows it: Chromium, driven by Playwright, reads
every page `make docs` built, as `make docs-serve` serves them on a free port of 127.0.0.1.

One crawl from index.html visits every page and records what each check needs; the tests then
assert one claim each. The controls inject pages that each break one claim into a copy of docs/,
and the same crawl must catch each with the check meant for it. These tests are marked docs;
those marked unit read how CI builds, reads and publishes the site.

Chromium is $CHROMIUM, else Debian's /usr/bin/chromium (apt-get install chromium). On GitHub's
runners, CI names the one `playwright install chromium` downloads.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urldefrag, urljoin, urlsplit

import pytest
import yaml
from containers import ROOT, must
from docker_tools import free_port, request
from playwright.sync_api import Browser, Page, Request, Response, Route, sync_playwright

SITE = ROOT / "docs" / "_build" / "html"
DEBIAN_CHROMIUM = Path("/usr/bin/chromium")
# A phone's width in CSS pixels, as a small phone (an iPhone SE) shows a page.
PHONE = {"width": 375, "height": 667}
# The word the search must find, and the folder of the lesson page it must list first.
SEARCHED, LESSON = "HEALTHCHECK", "lesson/"
# The controls: for each check, a page that breaks it (its name and Markdown) and what the check
# must then report for that page.
CONTROLS = {
    "broken_links": ("missing-anchor", "[a section no page has](index.md#no-such-section)", "'no-such-section'"),
    "outside_requests": (
        "cdn-font",
        '<link rel="stylesheet" href="https://fonts.googleapis.com/css2?family=Inter">',
        "https://fonts.googleapis.com/css2?family=Inter",
    ),
    "console_errors": ("console-error", '<script>console.error("a control logs this")</script>', "a control logs this"),
    "failed_requests": ("missing-script", '<script src="no-such-script.js"></script>', "no-such-script.js (HTTP 404)"),
    "broken_images": ("missing-image", '<img src="no-such-image.svg" alt="a control">', "no-such-image.svg"),
    "too_wide": ("too-wide", '<div style="width: 1000px">A line as wide as a desktop.</div>', "px wide"),
    "wide_tables": ("wide-table", "| A | B |\n|---|---|\n| " + "unbreakable" * 20 + " | b |", "a table needs"),
}

# What scrolls the text sideways, or cuts it off: the page itself, or a box around the page's title
# (a theme scrolls its content column rather than the page) that is wider inside than out. A code
# block or a table that scrolls within itself does not count: a reader scrolls that alone.
SIDEWAYS = """() => {
  const boxes = [];
  for (let box = document.querySelector("h1") ?? document.body; box; box = box.parentElement) {
    const scrolls = box === document.documentElement || getComputedStyle(box).overflowX !== "visible";
    const name = box.tagName.toLowerCase() + (box.className ? "." + box.className : "");
    if (scrolls && box.scrollWidth > box.clientWidth) boxes.push(`${name} is ${box.scrollWidth} px wide`);
  }
  return boxes;
}"""
# A table wider than the box it is in, which then scrolls it sideways (Furo's table wrapper) or lets
# it stick out: a reader of a phone sees part of each row at a time.
WIDE_TABLES = """() => [...document.querySelectorAll("article table")]
  .map(table => table.parentElement)
  .filter(box => box.scrollWidth > box.clientWidth)
  .map(box => `a table needs ${box.scrollWidth} px of ${box.clientWidth} px`)"""


@dataclass
class Visit:
    """What one page showed the browser; each list holds what one check found wrong."""

    status: int
    console_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    outside_requests: list[str] = field(default_factory=list)
    broken_images: list[str] = field(default_factory=list)
    too_wide: list[str] = field(default_factory=list)
    wide_tables: list[str] = field(default_factory=list)
    broken_links: list[str] = field(default_factory=list)
    ids: set[str] = field(default_factory=set)
    links: list[str] = field(default_factory=list)


@dataclass
class Site:
    """A crawl of a served site: each page, by its path from the site's root, and its visit; and
    the pages built that no link from index.html leads to."""

    root: str
    pages: dict[str, Visit] = field(default_factory=dict)
    unreached: list[str] = field(default_factory=list)

    def findings(self, check: str) -> list[str]:
        """What one check (a list of Visit) found, each prefixed with the page it was on."""
        return [f"{path}: {item}" for path, visit in self.pages.items() for item in getattr(visit, check)]

    def path(self, url: str) -> str | None:
        """A URL as a path from the site's root (index.html for a folder), or None for another site's."""
        if not url.startswith(self.root):
            return None
        path = urlsplit(url).path.removeprefix(urlsplit(self.root).path)
        return path + "index.html" if path == "" or path.endswith("/") else path


def visit(page: Page, url: str) -> Visit:
    """Load url in page, letting no request leave 127.0.0.1, and record what the checks need; then
    narrow the page to a phone's width and measure it."""
    found = Visit(0)

    def only_local(route: Route) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            found.outside_requests.append(route.request.url)
            route.abort("blockedbyclient")

    def failed(request: Request) -> None:
        if urlsplit(request.url).hostname == "127.0.0.1":
            found.failed_requests.append(f"{request.url} ({request.failure})")

    def answered(response: Response) -> None:
        if response.status >= 400:
            found.failed_requests.append(f"{response.url} (HTTP {response.status})")

    page.route("**/*", only_local)
    page.on("console", lambda message: message.type == "error" and found.console_errors.append(message.text))
    page.on("pageerror", lambda error: found.console_errors.append(str(error)))
    page.on("requestfailed", failed)
    page.on("response", answered)
    found.status = page.goto(url, wait_until="networkidle").status
    found.broken_images = page.eval_on_selector_all(
        "img", "images => images.filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src)"
    )
    found.ids = set(page.eval_on_selector_all("[id], a[name]", "nodes => nodes.map(n => n.id || n.name)"))
    # What a reader can follow: the links, and the search box, a form that opens the search page.
    found.links = page.eval_on_selector_all("a[href], form[action]", "links => links.map(a => a.href || a.action)")
    page.set_viewport_size(PHONE)
    found.too_wide = [f"{box} at a phone's {PHONE['width']} px" for box in page.evaluate(SIDEWAYS)]
    found.wide_tables = [f"{table} at a phone's {PHONE['width']} px" for table in page.evaluate(WIDE_TABLES)]
    return found


def crawl(browser: Browser, root: str, folder: Path) -> Site:
    """Visit every page reachable by links from root's index.html, then any other page built into
    folder; then check every internal link against the page it names (or, for a file that is not a
    page, the server's answer)."""
    site = Site(root)
    context = browser.new_context()

    def reach(queue: list[str]) -> None:
        while queue:
            path = queue.pop(0)
            if path not in site.pages:
                page = context.new_page()
                site.pages[path] = visit(page, urljoin(root, path))
                page.close()
                queue += [p for p in map(site.path, site.pages[path].links) if p and p.endswith(".html")]

    reach(["index.html"])
    site.unreached = sorted({page.relative_to(folder).as_posix() for page in folder.rglob("*.html")} - set(site.pages))
    reach(list(site.unreached))
    for visited in site.pages.values():
        for link in dict.fromkeys(visited.links):
            target, anchor = urldefrag(link)
            named = site.path(target)
            if named is None:
                continue
            linked = site.pages.get(named) or Visit(context.request.get(target).status)
            if linked.status != 200:
                visited.broken_links.append(f"{named} does not exist (HTTP {linked.status})")
            elif anchor and named.endswith(".html") and anchor not in linked.ids:
                visited.broken_links.append(f"{named} has no element with the id {anchor!r}")
    context.close()
    return site


def chromium() -> str:
    """The Chromium to drive: $CHROMIUM, else Debian's; the test fails when there is none."""
    executable = os.environ.get("CHROMIUM") or str(DEBIAN_CHROMIUM)
    if not Path(executable).is_file():
        pytest.fail(
            f"there is no Chromium at {executable}: install Debian's (apt-get install chromium; make test-docs does), "
            "or name another with CHROMIUM=/path/to/chrome, such as the one playwright install chromium downloads."
        )
    return executable


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """Chromium, headless and without its sandbox, which needs user namespaces that root or a container lacks."""
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        yield launched
        launched.close()


@contextmanager
def serving(command: list[str], port: int, log: Path, timeout: float = 120) -> Iterator[str]:
    """Run command, which serves a site on 127.0.0.1:port, for the block; yield the site's root URL.

    The command runs in a process group of its own, and the whole group is stopped afterwards:
    make and the server it started.
    """
    with log.open("w") as output:
        server = subprocess.Popen(command, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        started = time.monotonic()
        while True:
            try:
                request(port, "/")
                break
            except OSError:
                if server.poll() is not None or time.monotonic() - started > timeout:
                    pytest.fail(f"{' '.join(command)} served nothing on port {port}; it printed:\n{log.read_text()}")
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/"
    finally:
        # A command that failed may have left nothing of its group to stop.
        with suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


@pytest.fixture(scope="session")
def site(browser, tmp_path_factory) -> Iterator[Site]:
    """The site `make docs-serve` builds and serves on a free port, crawled once; stopped afterwards."""
    port = free_port()
    command = ["make", "--no-print-directory", "docs-serve", f"DOCS_PORT={port}", f"DOCS_BUILD={SITE}"]
    with serving(command, port, tmp_path_factory.mktemp("docs-serve") / "make.log") as root:
        yield crawl(browser, root, SITE)


@pytest.fixture(scope="session")
def controls(browser, tmp_path_factory) -> Iterator[Site]:
    """A copy of docs/ with the controls' pages in its table of contents, built, served and crawled.

    Built without --fail-on-warning, as Sphinx itself refuses the link to a missing anchor: the
    browser must catch it too, and the others, which Sphinx lets through.
    """
    scratch = tmp_path_factory.mktemp("controls")
    shutil.copytree(ROOT / "docs", scratch / "docs", ignore=shutil.ignore_patterns("_build"))
    for name, markdown, _ in CONTROLS.values():
        (scratch / "docs" / f"{name}.md").write_text(f"# A control: {name}\n\n{markdown}\n")
    names = "\n".join(name for name, _, _ in CONTROLS.values())
    with (scratch / "docs" / "index.md").open("a") as index:
        index.write(f"\n```{{toctree}}\n:hidden:\n\n{names}\n```\n")
    built = scratch / "html"
    build = [sys.executable, "-m", "sphinx", "--quiet", "--builder", "html", scratch / "docs", built]
    must(subprocess.run(build, capture_output=True, text=True, timeout=600), "building the controls' copy of docs/")
    port = free_port()
    server = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory", built, str(port)]
    with serving([str(part) for part in server], port, scratch / "http.log") as root:
        yield crawl(browser, root, built)


@pytest.mark.docs
def test_the_crawl_finds_the_index_and_the_pages_it_links(site):
    assert "index.html" in site.pages and len(site.pages) > 1, sorted(site.pages)


@pytest.mark.docs
def test_every_built_page_is_reachable_from_the_index(site):
    assert site.unreached == [], (
        f"no link leads to these pages from index.html; if {SITE.relative_to(ROOT)} keeps them from an earlier "
        "build of pages since renamed, remove that folder and run make docs again"
    )


@pytest.mark.docs
def test_every_page_loads_without_a_console_error(site):
    assert site.findings("console_errors") == []


@pytest.mark.docs
def test_every_page_and_everything_it_asks_for_loads(site):
    assert {path: visit.status for path, visit in site.pages.items() if visit.status != 200} == {}
    assert site.findings("failed_requests") == []


@pytest.mark.docs
def test_no_request_leaves_127_0_0_1(site):
    outside = site.findings("outside_requests")
    assert len(outside) == 0, outside


@pytest.mark.docs
def test_every_image_loads(site):
    assert site.findings("broken_images") == []


@pytest.mark.docs
def test_every_internal_link_and_anchor_resolves(site):
    assert site.findings("broken_links") == []


@pytest.mark.docs
def test_no_page_scrolls_sideways_at_a_phones_width(site):
    assert site.findings("too_wide") == []


@pytest.mark.docs
def test_no_table_of_the_lesson_scrolls_sideways_at_a_phones_width(site):
    """The reference pages' tables may scroll within themselves; the lesson's, read on a phone, fit."""
    assert [finding for finding in site.findings("wide_tables") if finding.startswith(LESSON)] == []


@pytest.mark.docs
def test_searching_healthcheck_lists_a_lesson_page_first_and_opens_it(browser, site):
    page = browser.new_page()
    page.goto(urljoin(site.root, "index.html"))
    page.fill("form[role=search] input[name=q]", SEARCHED)
    page.press("form[role=search] input[name=q]", "Enter")
    page.wait_for_function(
        "() => /^(Search finished|Your search did not match)/"
        ".test(document.querySelector('#search-results .search-summary')?.innerText ?? '')"
    )
    results = page.eval_on_selector_all("#search-results ul.search li > a", "links => links.map(a => a.href)")
    listed = [site.path(result) for result in results]
    assert listed, f"searching {SEARCHED} finds no page"
    assert listed[0].startswith(LESSON), (
        f"searching {SEARCHED} lists {listed[0]} first, not a page of {LESSON}: {listed}"
    )
    page.click("#search-results ul.search li > a")
    page.wait_for_url(f"**/{listed[0]}*")
    assert SEARCHED in page.inner_text("article"), f"{listed[0]}, which the search listed first, never says {SEARCHED}"
    page.close()


@pytest.mark.docs
@pytest.mark.parametrize("check", CONTROLS, ids=[name for name, _, _ in CONTROLS.values()])
def test_each_check_catches_the_page_that_breaks_it(controls, check):
    name, _, reported = CONTROLS[check]
    caught = [finding for finding in controls.findings(check) if finding.startswith(f"{name}.html: ")]
    assert any(reported in finding for finding in caught), f"{check} did not catch {name}.html: {caught}"


WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"


def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def steps_using(job: dict, action: str) -> list[dict]:
    return [step for step in job.get("steps", []) if step.get("uses", "").startswith(f"{action}@")]


@pytest.mark.unit
def test_ci_reads_the_site_in_chromium_before_it_uploads_it_and_publishes_it_from_main_alone():
    jobs = workflow()["jobs"]
    runs = [step.get("run", "") for step in jobs["docs"]["steps"]]
    (upload,) = steps_using(jobs["docs"], "actions/upload-pages-artifact")
    assert runs.index("make test-docs") < jobs["docs"]["steps"].index(upload)
    assert upload["with"]["path"] == SITE.relative_to(ROOT).as_posix()
    assert jobs["docs"]["permissions"] == {"contents": "read"}
    deploying = [name for name, job in jobs.items() if steps_using(job, "actions/deploy-pages")]
    writing = [name for name, job in jobs.items() if job.get("permissions", {}).get("pages") == "write"]
    assert deploying == writing == ["pages"]
    pages = jobs["pages"]
    main = "github.event_name == 'push' && github.ref == 'refs/heads/main'"
    # A copy made with copier has no site: the docs job then skips its steps, and nothing is published.
    site = "steps.site.outputs.present == 'true'"
    assert all(step.get("if", "").startswith(site) for step in jobs["docs"]["steps"][2:])
    assert upload["if"] == f"{site} && {main}"
    assert pages["if"] == f"{main} && needs.docs.outputs.site == 'true'"
    assert pages["permissions"] == {"pages": "write", "id-token": "write"}
    assert pages["concurrency"] == {"group": "pages", "cancel-in-progress": False}
    assert set(pages["needs"]) == {"ci-ok", "docs"}
    assert "docs" in jobs["ci-ok"]["needs"], "the site is published once every job, the docs job among them, is green"


@pytest.mark.unit
def test_every_action_the_workflow_uses_is_pinned_to_a_commit_with_its_release_beside_it():
    uses = re.findall(r"^\s*(?:- )?uses: (.*)$", WORKFLOW.read_text(), re.MULTILINE)
    assert uses
    assert [use for use in uses if not re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40} # v\d+(\.\d+)*", use)] == []
