"""The portability check (scripts/0-lint/portability.py): the Makefile and the shell scripts pass it, it
catches each construct a Mac lacks, it leaves alone the portable lines that resemble them, and
`make lint` runs it."""

import re
from pathlib import Path

import portability
import pytest
import yaml
from docker_tools import ROOT

# One line of each construct the check knows, in the kind of file where it breaks: "sh" for a bash
# script, "make" for a Makefile.
PLANTED = {
    "timeout": ("sh", 'timeout 180 "${DOCKER[@]}" pull --quiet "$image"'),
    "timeout with a signal": ("sh", "timeout -s KILL 10s docker pull python"),
    "timeout in a recipe": ("make", "\t@timeout 30 $(DOCKER) info"),
    "date -d": ("sh", 'echo $(($(date +%s) - $(date -d "$created" +%s)))'),
    "date -u -d in a recipe": ("make", "CREATED = $(shell date -u -d @$(SOURCE_DATE_EPOCH) +%Y-%m-%dT%H:%M:%SZ)"),
    "date --date": ("sh", 'date --date="$created" +%s'),
    "sed -i": ("sh", "sed -i 's/a/b/' file"),
    "sed -Ei": ("make", "\tsed -Ei 's/a/b/' file"),
    "sed -i '' (BSD's)": ("sh", "sed -i '' 's/a/b/' file"),
    "readlink -f": ("sh", 'here=$(readlink -f "$0")'),
    "stat -c": ("sh", 'size=$(stat -c %s "$file")'),
    "grep -oP": ("sh", "grep -oP '(?<=v)\\d+' version"),
    "find -printf": ("make", "\tfind . -type f -printf '%s\\n'"),
    "nproc": ("sh", "jobs=$(nproc)"),
    "mapfile": ("sh", "mapfile -t lines <file"),
    "readarray": ("sh", "readarray -t lines <file"),
    "declare -A": ("sh", "declare -A seen=()"),
    "local -n": ("sh", "local -n result=$1"),
    "${var,,}": ("sh", "arch=${ARCH,,}"),
    "${var^^}": ("sh", 'echo "${name^^}"'),
    "${var@Q}": ("sh", 'echo "${name@Q}"'),
    "|&": ("sh", "docker pull python |& tee log"),
    "&>>": ("sh", "docker pull python &>>log"),
    "a negative subscript": ("sh", "last=${parts[-1]}"),
    "a negative length": ("sh", "trimmed=${line:0:-1}"),
    "wait -n": ("sh", "wait -n"),
    "coproc": ("sh", "coproc docker events"),
    ";;&": ("sh", "    a) echo a ;;&"),
    "{fd}>": ("sh", "exec {log}>file"),
    "printf %(...)T": ("sh", "printf '%(%s)T' -1"),
    "[[ -v ]]": ("sh", "[[ -v PLATFORM ]] && echo set"),
    "shopt -s globstar": ("sh", "shopt -s globstar"),
    "$EPOCHSECONDS": ("sh", "now=$EPOCHSECONDS"),
    "read -N": ("sh", "read -r -N 4 magic <file"),
    "{01..10}": ("sh", "for n in {01..10}; do :; done"),
    ".ONESHELL": ("make", ".ONESHELL:"),
    "$(file ...)": ("make", "$(file >list.txt,$(VARIANTS))"),
    "!=": ("make", "EPOCH != git log -1 --format=%ct"),
    "::=": ("make", "IMAGE ::= my-service"),
    "undefine": ("make", "undefine PLATFORM"),
    "grouped targets": ("make", "docs/bench.json docs/bench.md &: scripts/4-measure/bench.py"),
    "echo -e": ("make", '\t@echo -e "a\\tb"'),
    "sed -i on a continued line": ("sh", "sed \\\n    -i 's/a/b/' file"),
    "timeout on a continued line in a recipe": ("make", "\t@timeout \\\n\t\t30 $(DOCKER) info"),
}

# Portable lines that look like some of the above: each must pass.
PORTABLE = {
    "--timeout, an option of another command": ("sh", 'wrk --timeout 5s "http://127.0.0.1:$port/"'),
    "timeout, a word in a grep pattern": ("sh", "grep -Eqi 'i/o timeout|handshake timeout|deadline exceeded' \"$1\""),
    "timeout, a word in a message": ("sh", 'say "the pull did not finish: a timeout."'),
    "timeout, a word in a comment": ("sh", "# macOS has no timeout 180 command"),
    "date without -d": ("make", "\t@date -u +%Y-%m-%dT%H:%M:%SZ"),
    "date +%s": ("sh", "now=$(date +%s)"),
    "sed -i with a suffix": ("sh", "sed -i.orig 's/a/b/' file && rm file.orig"),
    "sed -E": ("make", "SOURCE_URL := $(shell git remote get-url origin | sed -E 's|^(https://)[^@]*@|\\1|')"),
    "grep -E": ("sh", 'grep -Eqx enabled "$handler"'),
    "readlink without -f": ("sh", 'target=$(readlink "$link")'),
    "a negative offset, which bash 3.2 has": ("sh", '[ "${*: -1}" = "$STAND_IN" ]'),
    "${var:+...}": ("sh", '"${DOCKER[@]}" pull ${PLATFORM:+--platform "$PLATFORM"} "$image"'),
    "${var//pattern/string}": ("sh", "STAND_IN=${STAND_IN:-base${PLATFORM:+-${ARCH//\\//-}}}"),
    "read -r -a": ("sh", 'read -r -a DOCKER <<<"${DOCKER:-docker}"'),
    "local": ("sh", "local tag=$1 packages=$2 arch"),
    "${#array[@]}": ("sh", "count=${#MIRRORS[@]}"),
    "!= in a recipe": ("make", '\t@[ "$$a" != "$$b" ] || exit 1'),
    "?= and :=": ("make", "PLATFORM ?=\nARCH_TAG := $(call arch_tag,$(PLATFORM))"),
    "a brace group": ("sh", "{ apt-get update -qq && apt-get install -y wrk; } >/dev/null"),
    "2>&1 |": ("sh", "docker pull python 2>&1 | tail -n 1"),
    "nproc=, a limit's name": ("make", "LIMITS := --ulimit nproc=4096:4096"),
    "sed -E on a continued line": ("sh", "git remote get-url origin \\\n    | sed -E 's|^(https://)[^@]*@|\\1|'"),
}


def check(tmp_path: Path, kind: str, line: str) -> list[str]:
    """The check's findings on a file of that kind holding the line."""
    if kind == "make":
        path = tmp_path / "Makefile"
        path.write_text(f"all:\n{line}\n")
    else:
        path = tmp_path / "script.sh"
        path.write_text(f"#!/usr/bin/env bash\nset -euo pipefail\n{line}\n")
    return portability.findings(path)


@pytest.mark.unit
def test_the_makefile_and_the_shell_scripts_use_nothing_a_mac_lacks():
    found = [finding for path in portability.default_files() for finding in portability.findings(path)]
    assert found == [], "\n".join(found)


@pytest.mark.unit
@pytest.mark.parametrize("kind, line", PLANTED.values(), ids=PLANTED.keys())
def test_the_check_catches_what_a_mac_lacks(tmp_path, kind, line):
    found = check(tmp_path, kind, line)
    assert len(found) == 1, found


@pytest.mark.unit
@pytest.mark.parametrize("kind, line", PORTABLE.values(), ids=PORTABLE.keys())
def test_the_check_leaves_portable_lines_alone(tmp_path, kind, line):
    assert check(tmp_path, kind, line) == []


@pytest.mark.unit
def test_the_check_fails_with_the_file_and_line_of_a_planted_timeout(tmp_path, capsys):
    script = tmp_path / "base-image.sh"
    text = (ROOT / "scripts" / "1-setup" / "base-image.sh").read_text()
    script.write_text(text + 'timeout 180 "${DOCKER[@]}" pull --quiet "$image"\n')
    assert portability.main([str(script)]) == 1
    assert f"{script}:{text.count(chr(10)) + 1}: timeout: macOS has no timeout command" in capsys.readouterr().out


@pytest.mark.unit
def test_the_check_reports_a_continued_construct_at_its_first_line(tmp_path):
    """Two lines that the check reads as one, since the first ends in a backslash: the script's third
    and fourth; and the line after them, read on its own."""
    found = check(tmp_path, "sh", "sed \\\n    -i 's/a/b/' file\nnow=$EPOCHSECONDS")
    assert [finding.split(": ")[0].rsplit(":", 1)[1] for finding in found] == ["3", "5"], found


@pytest.mark.unit
def test_make_lint_runs_the_check_on_the_makefile_the_shell_scripts_and_ci_run():
    hooks = [
        hook
        for repo in yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())["repos"]
        for hook in repo["hooks"]
    ]
    [hook] = [hook for hook in hooks if "scripts/0-lint/portability.py" in hook["entry"]]
    for path in [
        "Makefile",
        *(f"scripts/{p.parent.name}/{p.name}" for p in (ROOT / "scripts").glob("*/*.sh")),
        ".ci/run",
    ]:
        assert re.search(hook["files"], path), f"the portability hook does not check {path}"
