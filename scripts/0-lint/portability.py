"""Find what the Makefile and the shell scripts use that a Mac does not have.

`make run`, `make test` and the other targets the docs show run where people run Docker, macOS
included, whose tools are BSD's rather than GNU's, whose /bin/bash is 3.2 and whose make is GNU Make
3.81. Each rule below is one construct that works on Debian and fails there, with what to do instead:

- GNU-only commands and options (timeout, date -d, sed -i without a suffix, ...), in every file;
- bash 4 and 5 syntax (mapfile, associative arrays, ${var,,}, |&, ...), in the bash scripts;
- GNU Make 3.82 and 4 features (.ONESHELL, $(file ...), !=, ...), in the Makefile.

    python3 scripts/0-lint/portability.py [FILE ...]

checks the files given (pre-commit passes them), or the Makefile, scripts/*/*.sh and .ci/run, and
prints each finding as FILE:LINE: what, and why. A line ending in a backslash is read together with
the line it continues onto, as the shell and make read it, and reported at its first line.
Whole-line comments are not read.
"""

import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Rule:
    what: str
    pattern: re.Pattern
    why: str


def command(name: str) -> str:
    """A regex for name used as a command word, not inside a longer word or an option (--timeout)."""
    return rf"(?<![\w./$-]){name}\b"


def option(name: str, options: str) -> re.Pattern:
    """A regex for a command given one of some options, anywhere before the end of its command."""
    return re.compile(rf"{command(name)}[^|;&)\n]*?\s(?:{options})(?=\s|$|=)")


# Commands and options that GNU has and a Mac does not (or reads otherwise).
TOOLS = (
    Rule(
        "timeout",
        re.compile(rf"{command('g?timeout')}\s+(?:-\S+\s+(?:[A-Z]+\s+)?)*\d+(?:\.\d+)?[smhd]?\s+\S"),
        "macOS has no timeout command; bound the time in Python (docker_tools.pull does)",
    ),
    Rule(
        "date -d, --date or -r",
        option("date", r"-[a-zA-Z]*[dr]|--date|--reference"),
        "GNU date -d reads a date and -r a file, BSD date -r reads seconds and has no -d; format in Python",
    ),
    Rule(
        "sed -i without a suffix",
        option("sed", r"-[a-zA-Z]*i|--in-place"),
        "BSD sed takes the next argument as the backup's suffix; write -i.orig (both read it) or use a temporary file",
    ),
    Rule("readlink -f", option("readlink", r"-[a-zA-Z]*[fem]"), "older macOS readlink has no -f; use cd and pwd -P"),
    Rule("stat -c or --format", option("stat", r"-[a-zA-Z]*c|--format|--printf"), "BSD stat formats with -f"),
    Rule("grep -P", option("grep", r"-[a-zA-Z]*P|--perl-regexp"), "BSD grep has no Perl regexes; use -E"),
    Rule("find -printf", option("find", r"-printf|-fprintf"), "BSD find has no -printf; use -exec or stat"),
    Rule("nproc", re.compile(command("nproc") + "(?!=)"), "macOS has no nproc; ask Python (os.cpu_count())"),
)

# Bash syntax newer than macOS's /bin/bash, 3.2.
BASH = (
    Rule("mapfile or readarray", re.compile(command("(?:mapfile|readarray)")), "bash 4; read lines with while read"),
    Rule(
        "declare -A, -g, -n, -l or -u",
        re.compile(r"\b(?:declare|local|typeset|readonly)\s+(?:-\w+\s+)*-\w*[Agnlu]\b"),
        "associative arrays, -l and -u are bash 4, -g 4.2, namerefs (-n) 4.3",
    ),
    Rule("${var,,} or ${var^^}", re.compile(r"\$\{[#!]?\w+(?:\[[^]]*\])?[,^]"), "case conversion is bash 4; use tr"),
    Rule("${var@Q}", re.compile(r"\$\{\w+(?:\[[^]]*\])?@[QEPAaKkUuL]\}"), "parameter transformation is bash 4.4"),
    Rule("|&", re.compile(r"\|&"), "bash 4; write 2>&1 |"),
    Rule("&>>", re.compile(r"&>>"), "bash 4; write >>file 2>&1"),
    Rule(
        "a negative array subscript",
        re.compile(r"\$\{\w+\[-\d+\]\}|\b\w+\[-\d+\]="),
        "bash 4.3; index from ${#array[@]}",
    ),
    Rule("${var:offset:-length}", re.compile(r"\$\{[\w@*]+(?:\[[^]]*\])?:[^}:]*:\s*-"), "a negative length is 4.2"),
    Rule("wait -n, -f or -p", re.compile(rf"{command('wait')}\s+-\w*[nfp]"), "bash 4.3 and later"),
    Rule("coproc", re.compile(command("coproc")), "bash 4"),
    Rule(";& or ;;& in case", re.compile(r";;&|(?<![;&]);&(?!&)"), "fall-through is bash 4"),
    Rule("{fd}> redirection", re.compile(r"(?<!\$)\{[A-Za-z_]\w*\}[<>]"), "a variable file descriptor is bash 4.1"),
    Rule("printf %(...)T", re.compile(r"%\([^)]*\)T"), "bash 4.2; format the time in Python"),
    Rule("test -v", re.compile(r"(?:\[\[?|\btest)\s+-v\s"), "bash 4.2; use ${var+set}"),
    Rule(
        "a bash 4 shell option",
        re.compile(r"\bshopt\s+-s\s+(?:globstar|lastpipe|inherit_errexit|autocd|direxpand|dirspell|checkjobs)\b"),
        "these options came with bash 4 and later",
    ),
    Rule(
        "a bash 4 variable",
        re.compile(r"\$\{?(?:BASHPID|EPOCHSECONDS|EPOCHREALTIME|SRANDOM|BASH_ARGV0)\b"),
        "unset in bash 3.2",
    ),
    Rule("read -N or -i", re.compile(rf"{command('read')}\s+(?:-\w+\s+)*-\w*[Ni]\b"), "bash 4"),
    Rule(
        "{01..10} or {1..10..2}",
        re.compile(r"\{0\d+\.\.\d+\}|\{-?\d+\.\.-?\d+\.\.\d+\}"),
        "padding and steps in brace expansion are bash 4",
    ),
)

# GNU Make newer than macOS's, 3.81.
MAKE = (
    Rule(
        "a special target of GNU Make 3.82 or later",
        re.compile(r"^\s*(?:\.ONESHELL|\.RECIPEPREFIX|\.SHELLFLAGS|\.EXTRA_PREREQS|\.NOTINTERMEDIATE|\.WAIT)\b"),
        "GNU Make 3.81 ignores it",
    ),
    Rule("undefine or private", re.compile(r"^\s*(?:undefine|private)\s"), "GNU Make 3.82"),
    Rule("$(file ...), $(let ...), $(intcmp ...)", re.compile(r"\$\((?:file|let|intcmp|guile)\s"), "GNU Make 4"),
    Rule("!=, ::= or :::=", re.compile(r"^\s*[\w.-]+\s*(?:!=|:::?=)"), "GNU Make 4; use := and $(shell ...)"),
    Rule("grouped targets (&:)", re.compile(r"^[^\t#=]*&:"), "GNU Make 4.3"),
    Rule(
        "echo -e or echo -n",
        re.compile(rf"{command('echo')}\s+-[en]\b"),
        "recipes run /bin/sh, whose echo prints -e and -n on Debian (dash) or macOS; use printf",
    ),
)


def rules_for(path: Path, text: str) -> tuple[Rule, ...]:
    """The rules a file is held to: the tools' always, bash's in bash scripts, make's in a Makefile."""
    first_line = text.split("\n", 1)[0]
    if path.name == "Makefile" or path.suffix == ".mk":
        return TOOLS + MAKE
    if first_line.startswith("#!") and "bash" in first_line:
        return TOOLS + BASH
    return TOOLS


def logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """Each line joined to the lines its trailing backslashes continue it onto, with the number of its first."""
    pieces: list[str] = []
    first = 1
    for number, line in enumerate(text.splitlines(), start=1):
        if not pieces:
            first = number
        if line.endswith("\\"):
            pieces.append(line[:-1])
            continue
        pieces.append(line)
        yield first, " ".join(pieces)
        pieces = []
    if pieces:
        yield first, " ".join(pieces)


def findings(path: Path) -> list[str]:
    """Each line of a file that breaks a rule, as FILE:LINE: what: why."""
    text = path.read_text()
    rules = rules_for(path, text)
    found = []
    for number, line in logical_lines(text):
        if line.lstrip().startswith("#"):
            continue
        for rule in rules:
            if rule.pattern.search(line):
                found.append(f"{path}:{number}: {rule.what}: {rule.why}\n    {line.strip()}")
    return found


def default_files() -> list[Path]:
    """What the documented make targets run: the Makefile, the shell scripts and the CI entry point."""
    return [ROOT / "Makefile", *sorted((ROOT / "scripts").glob("*/*.sh")), ROOT / ".ci" / "run"]


def main(argv: list[str]) -> int:
    paths = [Path(argument) for argument in argv] or default_files()
    found = [finding for path in paths for finding in findings(path)]
    for finding in found:
        print(finding)
    if found:
        print(f"portability: {len(found)} construct(s) that macOS lacks (bash 3.2, BSD tools, GNU Make 3.81)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
