"""Assemble the root filesystem of the secure image: only what a Python service needs to run.

Run in the build stage of Dockerfile.multistage, it copies into an empty folder, which the
final `FROM scratch` stage takes whole:

- the interpreter the virtual environment points at, and the shared libraries it and every
  extension module load (their ldd closure, the dynamic loader included), with an ld.so.cache;
- the standard library without what a server never imports (test suites, IDLE, tkinter, ...),
  as bytecode only, because the running container's root filesystem is read-only;
- the virtual environment without pip, setuptools and wheel, the dependencies' test suites and
  C sources, and the gevent backends the server never loads, as bytecode too, with its compiled
  files stripped of symbols and debug data;
- the metadata a vulnerability scanner reads: Python dist-info stays in place, and the Debian
  packages the copied files come from get their dpkg status entries (/var/lib/dpkg/status.d,
  as distroless does), with /etc/os-release and /etc/debian_version;
- what a service needs at run time, as distroless ships it: the public CA bundle where OpenSSL
  looks by default, time zones, the C.UTF-8 locale, /etc/services, /etc/protocols and an
  /etc/nsswitch.conf;
- whatever an extras file lists (--extras): Debian packages whose files the service needs, such as
  libraries it loads with dlopen, and single paths;
- a minimal /etc/passwd and /etc/group, a home for the app user and a sticky, world-writable /tmp.

It works for both layouts a base image has: Debian's python3 under /usr and CPython built from
source under /usr/local with a shared libpython (the official python images).
"""

import argparse
import json
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

# Top-level entries of the standard library a web service does not import: test suites, the IDE,
# GUI toolkits, installers, build configuration, and the base interpreter's own site-packages.
STDLIB_DROP = {
    "test",
    "idlelib",
    "tkinter",
    "turtle.py",
    "turtledemo",
    "ensurepip",
    "venv",
    "lib2to3",
    "distutils",
    "pydoc_data",
    "curses",
    "__phello__",
    "site-packages",
    "dist-packages",
    # Pure-Python twins of C modules the interpreter has; imported only when those are missing.
    "_pydecimal.py",
    "_pydatetime.py",
    "_pyio.py",
}
# Directory names dropped anywhere: test suites nested in packages, and stale bytecode.
TREE_DROP = {"test", "tests", "idle_test", "__pycache__"}
# Extension modules (by the name before the first dot) for the dropped packages, for terminals,
# and for obsolete databases; they are also what pulls X11, ncurses and gdbm into the closure.
EXTENSION_DROP = re.compile(
    r"^(_tkinter|_curses|_curses_panel|readline|_gdbm|_dbm|nis|_crypt|spwd|ossaudiodev"
    r"|_test\w*|_xxtestfuzz|_ctypes_test|xxlimited\w*|xxsubtype)\."
)
# Installers have no place in a running image.
VENV_DROP = re.compile(r"^(pip|setuptools|wheel|_distutils_hack|pkg_resources)([-.].*)?$|^distutils-precedence\.pth$")
VENV_BIN_DROP = re.compile(r"^(pip[\d.]*|wheel|activate.*|Activate\.ps1)$")
# C and C++ sources and headers that packages with extension modules ship beside them (gevent,
# greenlet): nothing compiles at run time, and there is no compiler to do it.
SOURCE_DROP = re.compile(r"\.(c|cc|cpp|h|hpp|pyx|pxd)$")
# Parts of the dependencies the server never loads, as paths under site-packages. gevent ships
# three event loops and two resolvers, and gunicorn's gevent worker uses one of each: libev through
# its C extension, and a thread pool to resolve names. (GEVENT_LOOP=libuv or GEVENT_RESOLVER=ares
# would need theirs back.) gevent.testing is its test harness.
PACKAGE_DROP = re.compile(r"^gevent/((libuv|_ffi|testing)\b|libev/(_?corecffi|watcher)\b|resolver/c?ares\b)")
# How scanners tell which distribution, and so which advisories, the packages belong to: Syft and
# Grype read os-release, Trivy's Debian detector needs debian_version.
OS_RELEASE_FILES = ("/etc/os-release", "/etc/debian_version")
# Loaded with dlopen, so invisible to ldd: glibc needs libgcc_s to unwind a thread that exits.
DLOPENED_LIBRARIES = ("libgcc_s.so.1",)
# What a service needs at run time besides its code and libraries, as distroless and Chainguard
# images ship it, with the Debian package each comes from: time zones for zoneinfo, the C.UTF-8
# locale, and the names of services and protocols. The public CA bundle is added too, from where
# the interpreter's OpenSSL looks by default (see interpreter_facts).
RUNTIME_DATA = {
    "tzdata": ("/usr/share/zoneinfo",),
    "libc-bin": ("/usr/lib/locale/C.utf8",),
    "netbase": ("/etc/services", "/etc/protocols"),
    # The file extensions' media types: without it, Python's own shorter table sends .woff2 as
    # application/octet-stream, where the base image, and so production, sends font/woff2.
    "media-types": ("/etc/mime.types",),
}
# Left out of RUNTIME_DATA: the zones again, counting leap seconds, which no system clock does.
RUNTIME_DATA_DROP = ("/usr/share/zoneinfo/right",)
# Name lookups from files and DNS only: no NSS modules that the image does not hold.
NSSWITCH = """\
passwd: files
group: files
shadow: files
hosts: files dns
networks: files
protocols: files
services: files
"""
# Parts of a Debian package that a running service never reads.
PACKAGE_DOCS = ("/usr/share/doc/", "/usr/share/man/", "/usr/share/lintian/", "/usr/share/info/")


def parse_ldd(output: str) -> list[str]:
    """Return the paths of the libraries in ldd's output; fail on any library it cannot find."""
    paths = []
    for line in output.splitlines():
        line = line.strip()
        if "=> not found" in line:
            raise SystemExit(f"a required library is missing from the build stage: {line}")
        match = re.match(r"^(?:\S+ => )?(/\S+) \(0x[0-9a-f]+\)$", line)
        if match:
            paths.append(match.group(1))
    return paths


def is_elf(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(4) == b"\x7fELF"


def is_shared_object(path: Path) -> bool:
    """An ELF file that ldd can follow: extension modules and libraries (libfoo.so, libfoo.so.1.2)."""
    named_so = re.search(r"\.so(\.\d+)*$", path.name) is not None
    return named_so and path.is_file() and not path.is_symlink() and is_elf(path)


def copy_path(source: str, root: Path) -> None:
    """Copy one file to the same place under root, recreating every symlink on the way to it.

    /lib -> usr/lib on merged-/usr systems and libfoo.so.1 -> libfoo.so.1.2.3 both end up in the
    new root as links, so every name a program or the loader looks for resolves there too.
    """
    current = Path("/")
    for part in Path(source).parts[1:]:
        current = current / part
        target = root / current.relative_to("/")
        if current.is_symlink():
            link = os.readlink(current)
            if not target.is_symlink():
                target.parent.mkdir(parents=True, exist_ok=True)
                target.symlink_to(link)
            copy_path(os.path.normpath(current.parent / link), root)
            current = Path(os.path.realpath(current))
        elif current.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        elif not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(current, target)


def copy_tree(source: Path, target: Path, keep) -> list[Path]:
    """Copy a directory tree, keeping the entries for which keep(path) is true; return the files."""
    copied = []
    target.mkdir(parents=True, exist_ok=True)
    shutil.copystat(source, target)
    for entry in sorted(source.iterdir()):
        if not keep(entry):
            continue
        destination = target / entry.name
        if entry.is_symlink():
            destination.symlink_to(os.readlink(entry))
        elif entry.is_dir():
            copied += copy_tree(entry, destination, keep)
        else:
            shutil.copy2(entry, destination)
            copied.append(destination)
    return copied


def keep_stdlib_entry(entry: Path, stdlib: Path) -> bool:
    if entry.parent == stdlib and (entry.name in STDLIB_DROP or entry.name.startswith("config-")):
        return False
    if entry.is_dir() and entry.name in TREE_DROP:
        return False
    return not EXTENSION_DROP.match(entry.name)


def keep_venv_entry(entry: Path) -> bool:
    if entry.parent.name == "bin":
        return not VENV_BIN_DROP.match(entry.name)
    if entry.parent.name == "site-packages":
        # TREE_DROP too: pip leaves the bytecode of single-file modules in site-packages/__pycache__,
        # compiled in its own process, whose bytes differed from build to build.
        return not VENV_DROP.match(entry.name) and not (entry.is_dir() and entry.name in TREE_DROP)
    if "site-packages" in entry.parts:
        under_packages = "/".join(entry.parts[entry.parts.index("site-packages") + 1 :])
        if PACKAGE_DROP.match(under_packages):
            return False
    if entry.is_dir():
        # Test suites of dependencies too: gevent's holds TLS keys and certificates made for its tests.
        return entry.name not in TREE_DROP
    return not SOURCE_DROP.search(entry.name)


def interpreter_facts(python: Path) -> dict:
    """Ask the venv's interpreter where its executable, standard library and extensions live."""
    # os.py sits in the standard library; lib-dynload is the sys.path entry that holds extensions.
    # OpenSSL's default CA file is where Python's ssl.create_default_context() looks.
    script = (
        "import json, os, ssl, sys;"
        "print(json.dumps({'executable': os.path.realpath(sys.executable),"
        " 'stdlib': os.path.dirname(os.__file__),"
        " 'dynload': [p for p in sys.path if p.endswith('lib-dynload')][0],"
        " 'cafile': ssl.get_default_verify_paths().openssl_cafile}))"
    )
    return json.loads(subprocess.run([python, "-c", script], check=True, capture_output=True, text=True).stdout)


def shared_library_closure(elf_files: list[Path]) -> set[str]:
    """Return every library the given ELF files load: what ldd finds, and what glibc dlopens."""
    libraries = set()
    for path in elf_files:
        result = subprocess.run(["ldd", path], capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"ldd failed on {path}: {(result.stderr or result.stdout).strip()}")
        libraries.update(parse_ldd(result.stdout))
    libc_dirs = {os.path.dirname(library) for library in libraries if os.path.basename(library) == "libc.so.6"}
    for directory in libc_dirs:
        for name in DLOPENED_LIBRARIES:
            if os.path.exists(os.path.join(directory, name)):
                libraries.add(os.path.join(directory, name))
    return libraries


def path_aliases(path: str) -> set[str]:
    """The names one file may be registered under by dpkg, with and without merged /usr."""
    names = {path, os.path.realpath(path)}
    for name in list(names):
        parts = Path(name).parts
        if len(parts) > 2 and parts[1] == "usr" and parts[2] in {"bin", "sbin", "lib", "lib64"}:
            names.add(str(Path("/", *parts[2:])))
        elif len(parts) > 1 and parts[1] in {"bin", "sbin", "lib", "lib64"}:
            names.add(str(Path("/usr", *parts[1:])))
    return names


def dpkg_owners(files: list[str], dpkg_root: Path = Path("/var/lib/dpkg")) -> set[str]:
    """Return the names of the Debian packages that installed any of the given files."""
    owner_of = {}
    for listing in (dpkg_root / "info").glob("*.list"):
        package = listing.stem.split(":")[0]
        for line in listing.read_text().splitlines():
            owner_of[line] = package
    return {owner_of[name] for path in files for name in path_aliases(path) if name in owner_of}


def dpkg_status_entries(packages: set[str], status_file: Path) -> dict[str, str]:
    """Return the status paragraph of each named package, as /var/lib/dpkg/status holds it."""
    entries = {}
    for paragraph in status_file.read_text().split("\n\n"):
        match = re.match(r"^Package: (\S+)$", paragraph.strip(), re.MULTILINE)
        if match and match.group(1) in packages:
            entries[match.group(1)] = paragraph.strip() + "\n"
    return entries


def runtime_data(cafile: str) -> dict[str, list[str]]:
    """The paths of RUNTIME_DATA and the CA bundle, by package; fail naming a package that is missing."""
    wanted = {package: list(paths) for package, paths in RUNTIME_DATA.items()}
    wanted["ca-certificates"] = [cafile]
    for package, paths in wanted.items():
        for path in paths:
            if not os.path.exists(path):
                raise SystemExit(
                    f"{path} is missing from the build stage: install the {package} package there "
                    "(the official python images have it)."
                )
    return wanted


def package_files(package: str, dpkg_root: Path = Path("/var/lib/dpkg")) -> list[str]:
    """The files and links a Debian package installed, without its documentation."""
    listings = sorted((dpkg_root / "info").glob(f"{package}.list")) + sorted(
        (dpkg_root / "info").glob(f"{package}:*.list")
    )
    if not listings:
        raise SystemExit(f"the Debian package {package} is not installed in the build stage: install it there first.")
    paths = []
    for line in listings[0].read_text().splitlines():
        if line.startswith(PACKAGE_DOCS) or not os.path.lexists(line):
            continue
        if os.path.islink(line) or not os.path.isdir(line):
            paths.append(line)
    return paths


def read_extras(path: Path) -> list[str]:
    """The entries of an extras file: Debian package names and absolute paths, one a line, # comments."""
    entries = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            entries.append(line)
    return entries


def extra_paths(entries: list[str]) -> list[str]:
    """Every file the extras bring: each package's files, each path (a folder with what it holds)."""
    paths = []
    for entry in entries:
        if not entry.startswith("/"):
            paths += package_files(entry)
        elif not os.path.lexists(entry):
            raise SystemExit(f"{entry}, listed as an extra, does not exist in the build stage.")
        else:
            paths.append(entry)
    return paths


def copy_any(path: str, root: Path, keep=lambda entry: True) -> list[str]:
    """Copy a file, a link or a whole folder (its entries for which keep is true) to the same place
    under root; return the files copied."""
    if os.path.isdir(path) and not os.path.islink(path):
        copied = copy_tree(Path(path), root / path.lstrip("/"), keep)
        return ["/" + str(p.relative_to(root)) for p in copied]
    copy_path(path, root)
    return [os.path.realpath(path)]


def load_segments_aligned(path: Path) -> bool:
    """Whether each LOAD segment of an ELF file sits at a file offset congruent to its address.

    The loader maps segments page by page and refuses a file where they are not ("ELF load command
    address/offset not page-aligned").
    """
    with path.open("rb") as handle:
        header = handle.read(64)
        is_64 = header[4] == 2
        order = "<" if header[5] == 1 else ">"
        # Where the program headers start, and their size and number (e_phoff, e_phentsize, e_phnum).
        (phoff,) = struct.unpack_from(order + ("Q" if is_64 else "I"), header, 0x20 if is_64 else 0x1C)
        phentsize, phnum = struct.unpack_from(order + "HH", header, 0x36 if is_64 else 0x2A)
        for index in range(phnum):
            handle.seek(phoff + index * phentsize)
            entry = handle.read(phentsize)
            if is_64:
                kind, _, offset, address, _, _, _, align = struct.unpack_from(order + "IIQQQQQQ", entry)
            else:
                kind, offset, address, _, _, _, _, align = struct.unpack_from(order + "IIIIIIII", entry)
            if kind == 1 and align > 1 and (address - offset) % align:
                return False
    return True


def strip_symbols(files: list[Path]) -> list[Path]:
    """Strip the dependencies' compiled files of symbols and debug data; return those left as they were.

    Debian strips its own libraries, but wheels often ship theirs unstripped: greenlet's module is
    1.4 MB, of which 1.2 MB is debug data. The dynamic symbols, which the loader needs, stay. A
    library that auditwheel's patchelf gave an extra segment (numpy.libs/ holds two) can come out
    of strip with that segment misaligned, and would no longer load: such a file keeps its symbols.
    """
    strip = shutil.which("strip")
    if files and strip is None:
        raise SystemExit(
            "strip is missing from the build stage: install binutils there, as Dockerfile.multistage does."
        )
    unstripped = []
    for path in files:
        stripped = path.with_name(path.name + ".stripped")
        subprocess.run([strip, "--strip-unneeded", "-o", stripped, path], check=True)
        if load_segments_aligned(stripped):
            shutil.copymode(path, stripped)
            stripped.replace(path)
        else:
            stripped.unlink()
            unstripped.append(path)
    return unstripped


def write_accounts(root: Path, user: str, uid: int) -> None:
    """Write /etc/passwd and /etc/group with root, the app user and nobody; no one has a shell."""
    etc = root / "etc"
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "passwd").write_text(
        "root:x:0:0:root:/root:/sbin/nologin\n"
        f"{user}:x:{uid}:{uid}:{user}:/home/{user}:/sbin/nologin\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"
    )
    (etc / "group").write_text(f"root:x:0:\n{user}:x:{uid}:\nnogroup:x:65534:\n")
    home = root / "home" / user
    home.mkdir(parents=True, exist_ok=True)
    os.chown(home, uid, uid)
    tmp = root / "tmp"
    tmp.mkdir(exist_ok=True)
    tmp.chmod(0o1777)


def compile_bytecode(python: str, directory: Path, root: Path) -> None:
    """Replace the .py files under directory with bytecode, so a read-only root never compiles.

    Each .pyc takes the place of its .py (Python imports such sourceless modules), which keeps the
    image small: a traceback through these files then shows no source lines, which the standard
    library and the dependencies can spare; the app itself keeps its sources. unchecked-hash .pyc
    files are used as they are, without comparing a source timestamp. The paths recorded in them
    are those of the image.

    One process compiles every file, in compileall's sorted order, so that the same files give the
    same bytes. A .pyc depends on what its process compiled before: marshal marks an object for
    reuse only while something else holds a reference to it, and whether the compiler shares one
    constant between two functions (werkzeug's headers.py, typing_extensions) changes with earlier
    work. With -j, the workers take files as they come free, so that history changed from build to build.
    """
    command = [python, "-m", "compileall", "-q", "-b", "--invalidation-mode", "unchecked-hash"]
    subprocess.run([*command, "-s", str(root), "-p", "/", str(directory)], check=True)
    for source in directory.rglob("*.py"):
        if source.with_suffix(".pyc").exists():
            source.unlink()


def assemble(venv: Path, root: Path, user: str, uid: int, extras: list[str] = ()) -> dict:
    """Build the root filesystem under root; return a summary of what went in.

    extras are Debian package names and absolute paths to bring along too (see read_extras).
    """
    facts = interpreter_facts(venv / "bin" / "python")
    venv_files = copy_tree(venv, root / venv.relative_to("/"), keep_venv_entry)
    copied = list(venv_files)
    # The venv's python links to the base interpreter: bring the whole chain of links and the binary.
    for entry in (venv / "bin").iterdir():
        if entry.is_symlink():
            copy_path(str(entry), root)

    stdlib = Path(facts["stdlib"])
    dynload = Path(facts["dynload"])
    for directory in [stdlib] if dynload.is_relative_to(stdlib) else [stdlib, dynload]:
        copied += copy_tree(
            directory, root / directory.relative_to("/"), lambda entry: keep_stdlib_entry(entry, stdlib)
        )

    data = runtime_data(facts["cafile"])
    data_files = [
        file
        for paths in data.values()
        for path in paths
        for file in copy_any(path, root, lambda entry: str(entry) not in RUNTIME_DATA_DROP)
    ]
    extra_files = [file for path in extra_paths(list(extras)) for file in copy_any(path, root)]

    # ldd runs on the originals, never on the copies: a wheel's bundled libraries (numpy.libs/ and
    # the like) are found through RPATH $ORIGIN, which would point into the new root and have them
    # copied a second time under it.
    originals = ["/" + str(path.relative_to(root)) for path in copied]
    elf_files = [Path(facts["executable"])] + [
        Path(path) for path in originals + extra_files if is_shared_object(Path(path))
    ]
    libraries = shared_library_closure(elf_files)
    unstripped = strip_symbols([path for path in venv_files if is_shared_object(path)])
    for library in sorted(libraries):
        copy_path(library, root)
    # The loader's search path: the system's library folders, not the ones a wheel bundles.
    library_dirs = sorted(
        {os.path.dirname(os.path.realpath(library)) for library in libraries if not Path(library).is_relative_to(venv)}
    )
    (root / "etc").mkdir(parents=True, exist_ok=True)
    (root / "etc" / "ld.so.conf").write_text("".join(f"{d}\n" for d in library_dirs))
    subprocess.run(["ldconfig", "-X", "-r", str(root)], check=True)

    release_files = [name for name in OS_RELEASE_FILES if Path(name).exists()]
    for name in release_files:
        copy_path(name, root)

    image_files = [facts["executable"], *libraries, *release_files, *originals, *data_files, *extra_files]
    packages = set()
    if Path("/var/lib/dpkg/status").exists():
        # The CA bundle is made by update-ca-certificates, so no package lists it as its own.
        packages = dpkg_owners(image_files) | {"ca-certificates"}
        status_dir = root / "var/lib/dpkg/status.d"
        status_dir.mkdir(parents=True, exist_ok=True)
        for name, entry in dpkg_status_entries(packages, Path("/var/lib/dpkg/status")).items():
            (status_dir / name).write_text(entry)

    (root / "etc" / "nsswitch.conf").write_text(NSSWITCH)
    write_accounts(root, user, uid)
    for directory in (stdlib, venv):
        compile_bytecode(facts["executable"], root / directory.relative_to("/"), root)
    return {
        "interpreter": facts["executable"],
        "libraries": sorted(libraries),
        "packages": sorted(packages),
        "unstripped": ["/" + str(path.relative_to(root)) for path in unstripped],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", type=Path, required=True, help="the virtual environment the app runs in")
    parser.add_argument("--root", type=Path, required=True, help="an empty folder to fill")
    parser.add_argument("--user", default="app", help="name of the app user in /etc/passwd")
    parser.add_argument("--uid", type=int, default=10001, help="UID and GID of the app user")
    parser.add_argument(
        "--extras", type=Path, help="a file of Debian packages and paths to bring along too, one a line"
    )
    args = parser.parse_args(argv)
    if args.root.exists() and any(args.root.iterdir()):
        parser.error(f"{args.root} is not empty")
    extras = read_extras(args.extras) if args.extras else []
    summary = assemble(args.venv.absolute(), args.root.absolute(), args.user, args.uid, extras)
    print(f"interpreter: {summary['interpreter']}")
    print(f"libraries ({len(summary['libraries'])}): {' '.join(summary['libraries'])}")
    print(f"dpkg status entries ({len(summary['packages'])}): {' '.join(summary['packages']) or 'none'}")
    if summary["unstripped"]:
        print(f"kept their symbols, as strip would misalign their segments: {' '.join(summary['unstripped'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
