"""scripts/2-build/assemble_rootfs.py: its parts on small inputs, and whole runs on this machine's Pythons.

The whole runs assemble a root from a real virtual environment, then start the copied interpreter
inside it with chroot: the root holds everything Python needs, or the import fails. They need root
(chroot, ldconfig -r, chown), so they are marked `root` rather than `unit`. They cover both
layouts a base image has: Debian's python3 under /usr, and CPython built from source with a shared
libpython under its own prefix (/usr/local in the official images).
"""

import _ctypes
import ctypes
import glob
import hashlib
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import assemble_rootfs
import pytest
from containers import ROOT

LDD_OUTPUT = """\
\tlinux-vdso.so.1 (0x00007ffd5a5f2000)
\tlibpython3.12.so.1.0 => /usr/local/lib/libpython3.12.so.1.0 (0x00007f2d1c400000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f2d1c21e000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f2d1cb8d000)
"""


@pytest.mark.unit
def test_parse_ldd_returns_library_paths_and_the_loader_but_not_the_vdso():
    assert assemble_rootfs.parse_ldd(LDD_OUTPUT) == [
        "/usr/local/lib/libpython3.12.so.1.0",
        "/lib/x86_64-linux-gnu/libc.so.6",
        "/lib64/ld-linux-x86-64.so.2",
    ]


@pytest.mark.unit
def test_parse_ldd_fails_naming_a_missing_library():
    with pytest.raises(SystemExit, match=r"libssl\.so\.3 => not found"):
        assemble_rootfs.parse_ldd("\tlibssl.so.3 => not found\n")


@pytest.mark.unit
@pytest.mark.parametrize(
    ("relative", "kept"),
    [
        ("json", True),
        ("asyncio", True),
        ("lib-dynload/_ssl.cpython-312-x86_64-linux-gnu.so", True),
        ("decimal.py", True),
        ("_pydecimal.py", False),
        ("_pyio.py", False),
        ("test", False),
        ("idlelib", False),
        ("tkinter", False),
        ("ensurepip", False),
        ("site-packages", False),
        ("config-3.12-x86_64-linux-gnu", False),
        ("unittest/test", False),
        ("lib-dynload/_tkinter.cpython-312-x86_64-linux-gnu.so", False),
        ("lib-dynload/_testcapi.cpython-312-x86_64-linux-gnu.so", False),
        ("lib-dynload/readline.cpython-312-x86_64-linux-gnu.so", False),
    ],
)
def test_stdlib_is_pruned_of_what_a_server_never_imports(tmp_path, relative, kept):
    stdlib = tmp_path / "python3.12"
    entry = stdlib / relative
    (entry.parent if entry.suffix == ".so" else entry).mkdir(parents=True)
    if entry.suffix == ".so":
        entry.touch()
    assert assemble_rootfs.keep_stdlib_entry(entry, stdlib) is kept


@pytest.mark.unit
@pytest.mark.parametrize(
    ("relative", "kept"),
    [
        ("bin/python", True),
        ("bin/gunicorn", True),
        ("bin/pip", False),
        ("bin/pip3.12", False),
        ("bin/activate", False),
        ("lib/python3.12/site-packages/flask", True),
        ("lib/python3.12/site-packages/flask-3.1.3.dist-info", True),
        ("lib/python3.12/site-packages/pip", False),
        ("lib/python3.12/site-packages/pip-25.0.dist-info", False),
        ("lib/python3.12/site-packages/setuptools", False),
        ("lib/python3.12/site-packages/_distutils_hack", False),
        ("lib/python3.12/site-packages/gevent/tests/", False),
        ("lib/python3.12/site-packages/zope/interface/tests/", False),
        ("lib/python3.12/site-packages/gevent/libev/corecext.cpython-312-x86_64-linux-gnu.so", True),
        ("lib/python3.12/site-packages/gevent/libev/corecext.pyx", False),
        ("lib/python3.12/site-packages/greenlet/greenlet.h", False),
        ("lib/python3.12/site-packages/greenlet/TGreenlet.cpp", False),
        ("lib/python3.12/site-packages/gevent/monkey.py", True),
        ("lib/python3.12/site-packages/gevent/resolver/thread.py", True),
        ("lib/python3.12/site-packages/gevent/resolver/cares.cpython-312-x86_64-linux-gnu.so", False),
        ("lib/python3.12/site-packages/gevent/resolver/ares.py", False),
        ("lib/python3.12/site-packages/gevent/libev/_corecffi.abi3.so", False),
        ("lib/python3.12/site-packages/gevent/libuv/", False),
        ("lib/python3.12/site-packages/gevent/_ffi/", False),
        ("lib/python3.12/site-packages/gevent/testing/", False),
        ("lib/python3.12/site-packages/mypackage/testing/", True),
        # pip's bytecode of single-file modules (typing_extensions.py), which the assembly compiles anew.
        ("lib/python3.12/site-packages/__pycache__/", False),
        ("lib/python3.12/site-packages/typing_extensions.py", True),
    ],
)
def test_venv_loses_its_installers_test_suites_c_sources_and_unused_backends(tmp_path, relative, kept):
    entry = tmp_path / relative
    if relative.endswith("/"):
        entry.mkdir(parents=True)
    assert assemble_rootfs.keep_venv_entry(entry) is kept


def misaligned_copy(source: Path, target: Path) -> None:
    """Copy a 64-bit little-endian ELF file, moving its first LOAD segment's file offset by 8 bytes."""
    data = bytearray(source.read_bytes())
    (phoff,) = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    for at in range(phoff, phoff + phnum * phentsize, phentsize):
        if struct.unpack_from("<I", data, at)[0] == 1:
            struct.pack_into("<Q", data, at + 8, struct.unpack_from("<Q", data, at + 8)[0] + 8)
            break
    target.write_bytes(data)


@pytest.mark.linux
def test_load_segments_aligned_tells_a_loadable_library_from_a_misaligned_one(tmp_path):
    library = Path(_ctypes.__file__)
    misaligned_copy(library, tmp_path / "misaligned.so")
    assert assemble_rootfs.load_segments_aligned(library)
    assert not assemble_rootfs.load_segments_aligned(tmp_path / "misaligned.so")
    with pytest.raises(OSError, match="aligned"):
        ctypes.CDLL(str(tmp_path / "misaligned.so"))


@pytest.mark.linux
def test_a_file_that_strip_would_misalign_keeps_its_symbols(tmp_path, monkeypatch):
    """As strip does to two of numpy's bundled libraries: the original is kept, and named."""
    library = tmp_path / "libpatched.so"
    shutil.copy2(_ctypes.__file__, library)
    misaligned_copy(library, tmp_path / "what-strip-makes")
    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "strip").write_text(f'#!/bin/sh\ncp "{tmp_path / "what-strip-makes"}" "$3"\n')
    (tools / "strip").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}{os.pathsep}{os.environ['PATH']}")
    before = library.read_bytes()
    assert assemble_rootfs.strip_symbols([library]) == [library]
    assert library.read_bytes() == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["bin", "libpatched.so", "what-strip-makes"]


@pytest.mark.unit
def test_dpkg_knows_a_file_under_either_side_of_merged_usr():
    aliases = assemble_rootfs.path_aliases("/lib/x86_64-linux-gnu/libc.so.6")
    assert {"/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib/x86_64-linux-gnu/libc.so.6"} <= aliases


@pytest.mark.unit
def test_dpkg_status_entries_are_found_for_the_files_copied(tmp_path):
    (tmp_path / "info").mkdir()
    (tmp_path / "info" / "libssl3:amd64.list").write_text("/usr/lib/x86_64-linux-gnu/libssl.so.3\n")
    (tmp_path / "info" / "bash.list").write_text("/bin/bash\n")
    status = tmp_path / "status"
    status.write_text(
        "Package: bash\nStatus: install ok installed\nVersion: 5.2\n\n"
        "Package: libssl3\nStatus: install ok installed\nVersion: 3.0.17\n"
    )
    owners = assemble_rootfs.dpkg_owners(["/lib/x86_64-linux-gnu/libssl.so.3"], dpkg_root=tmp_path)
    assert owners == {"libssl3"}
    entries = assemble_rootfs.dpkg_status_entries(owners, status)
    assert entries == {"libssl3": "Package: libssl3\nStatus: install ok installed\nVersion: 3.0.17\n"}


@pytest.mark.unit
def test_copy_path_recreates_the_links_on_the_way(tmp_path):
    source = tmp_path / "source"
    (source / "usr" / "lib").mkdir(parents=True)
    (source / "lib").symlink_to("usr/lib")
    (source / "usr" / "lib" / "libx.so.1.2").write_text("library")
    (source / "usr" / "lib" / "libx.so.1").symlink_to("libx.so.1.2")
    root = tmp_path / "root"

    assemble_rootfs.copy_path(str(source / "lib" / "libx.so.1"), root)

    copied = root / source.relative_to("/")
    assert os.readlink(copied / "lib") == "usr/lib"
    assert os.readlink(copied / "usr" / "lib" / "libx.so.1") == "libx.so.1.2"
    assert (copied / "lib" / "libx.so.1").read_text() == "library"


@pytest.mark.root
def test_accounts_give_no_one_a_shell_and_tmp_is_sticky(tmp_path, root_user):
    assemble_rootfs.write_accounts(tmp_path, "app", 10001)
    assert (tmp_path / "home" / "app").stat().st_uid == 10001
    passwd = (tmp_path / "etc" / "passwd").read_text().splitlines()
    assert "app:x:10001:10001:app:/home/app:/sbin/nologin" in passwd
    assert all(line.endswith(":/sbin/nologin") for line in passwd)
    assert "app:x:10001:" in (tmp_path / "etc" / "group").read_text()
    assert (tmp_path / "tmp").stat().st_mode & 0o7777 == 0o1777


def debian_python() -> Path:
    """Debian's (or Ubuntu's) python3 under /usr."""
    if not Path("/usr/bin/python3").exists() or not Path("/var/lib/dpkg/status").exists():
        pytest.fail("the /usr layout test needs a Debian or Ubuntu python3 at /usr/bin/python3")
    return Path("/usr/bin/python3")


@pytest.fixture(scope="module", params=["usr", "prefix"], ids=["debian-usr-layout", "source-built-prefix-layout"])
def assembled(request, tmp_path_factory, root_user, source_built_python):
    """A root assembled from a venv holding a small package, plus pip to be dropped."""
    tmp_path = tmp_path_factory.mktemp(request.param)
    python = debian_python() if request.param == "usr" else source_built_python / "bin" / "python3"
    venv = tmp_path / "venv"
    subprocess.run([python, "-m", "venv", "--without-pip", venv], check=True)
    site = Path(glob.glob(str(venv / "lib" / "python3.*" / "site-packages"))[0])
    (site / "hello").mkdir()
    (site / "hello" / "__init__.py").write_text("GREETING = 'hello'\n")
    (site / "hello-1.0.dist-info").mkdir()
    (site / "hello-1.0.dist-info" / "METADATA").write_text("Name: hello\nVersion: 1.0\n")
    (site / "pip").mkdir()
    (site / "pip" / "__init__.py").touch()
    # Real wheels: pyzmq's extension finds the libraries it bundles (pyzmq.libs/) through RPATH
    # $ORIGIN, and greenlet's module carries debug data.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            venv / "bin" / "python",
            "install",
            "--quiet",
            "--no-deps",
            "--require-hashes",
            "--requirement",
            ROOT / "tests" / "native-wheel.txt",
        ],
        check=True,
    )
    root = tmp_path / "root"
    summary = assemble_rootfs.assemble(venv, root, "app", 10001, extras=["libzstd1", dlopened_library()])
    return root, venv, summary


def dlopened_library() -> str:
    """A library no Python module links to, as a program would load it with dlopen: libcap's."""
    listing = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, check=True).stdout
    return re.search(r"\slibcap\.so\.2 \(.*\) => (\S+)", listing).group(1)


def run_in(root: Path, venv: Path, code: str) -> str:
    result = subprocess.run(
        ["chroot", root, venv / "bin" / "python", "-c", code],
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"], "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.mark.root
def test_assembled_root_runs_python_with_its_extension_modules(assembled):
    root, venv, _ = assembled
    code = "import ssl, hashlib, sqlite3, json, ctypes, lzma, bz2, zlib, uuid, decimal, hello; print(hello.GREETING)"
    assert run_in(root, venv, code) == "hello"


@pytest.mark.root
def test_assembled_root_has_no_installer_shell_or_tests(assembled):
    root, venv, _ = assembled
    assert (
        run_in(root, venv, "import importlib.util as u; print([u.find_spec(m) for m in ('pip', 'ensurepip', 'test')])")
        == "[None, None, None]"
    )
    for shell in ("bin/sh", "usr/bin/sh", "bin/bash", "usr/bin/bash"):
        assert not (root / shell).exists()


@pytest.mark.root
def test_assembled_stdlib_and_venv_are_bytecode_only(assembled):
    root, venv, summary = assembled
    stdlib = next(root.glob(f"{Path(summary['interpreter']).parent.parent.relative_to('/')}/lib/python3.*"))
    package = next((root / venv.relative_to("/")).glob("lib/python3.*/site-packages/hello"))
    for module in (stdlib / "json" / "__init__", package / "__init__"):
        assert module.with_suffix(".pyc").exists()
    site_packages = package.parent
    sources = [path for folder in (stdlib, site_packages) for path in folder.rglob("*.py")]
    assert not sources, sources[:20]


@pytest.mark.root
def test_assembled_root_keeps_what_scanners_read(assembled):
    root, venv, summary = assembled
    assert (root / "etc" / "os-release").exists()
    assert (root / "etc" / "debian_version").read_text() == Path("/etc/debian_version").read_text()
    assert (root / "var" / "lib" / "dpkg" / "status.d" / "base-files").exists()
    assert (root / "var" / "lib" / "dpkg" / "status.d" / "libc6").read_text().startswith("Package: libc6\n")
    assert next((root / venv.relative_to("/")).glob("lib/python3.*/site-packages/hello-1.0.dist-info/METADATA"))
    assert "libc6" in summary["packages"]


@pytest.mark.root
def test_assembled_root_loads_a_wheels_bundled_libraries(assembled):
    root, venv, _ = assembled
    assert re.fullmatch(r"\d+\.\d+\.\d+", run_in(root, venv, "import zmq; print(zmq.zmq_version())"))


@pytest.mark.root
def test_assembled_root_holds_the_wheels_compiled_files_without_symbols_or_debug_data(assembled):
    root, venv, _ = assembled
    compiled = [
        path for path in (root / venv.relative_to("/")).rglob("*.so*") if assemble_rootfs.is_shared_object(path)
    ]
    # greenlet's wheel carries debug data; pyzmq's extension modules and libzmq were patched by auditwheel.
    assert any("greenlet" in path.name for path in compiled) and any("libzmq" in path.name for path in compiled)
    for path in compiled:
        sections = subprocess.run(["readelf", "--section-headers", "--wide", path], capture_output=True, text=True)
        assert sections.returncode == 0, sections.stderr
        assert ".dynsym" in sections.stdout
        assert not re.search(r"\] \.(symtab|debug_\w+) ", sections.stdout), f"{path} is not stripped"


@pytest.mark.root
def test_assembled_root_holds_no_file_twice_and_nothing_of_the_build_root(assembled):
    root, _, _ = assembled
    contents = {}
    for path in root.rglob("*"):
        assert str(root).lstrip("/") not in path.relative_to(root).as_posix(), f"{path} is under a copy of the root"
        if path.is_file() and not path.is_symlink():
            contents[path.relative_to(root).parts] = hashlib.sha256(path.read_bytes()).digest()
    # A file copied twice is one path, with one content, under two folders: lib/x.so and usr/lib/x.so.
    # Files that are only alike, such as every package's INSTALLER, lie at other paths.
    copies = [
        "/".join(parts)
        for parts, content in contents.items()
        if any(contents.get(parts[start:]) == content for start in range(1, len(parts)))
    ]
    assert not copies, copies
    for loader_file in ("etc/ld.so.conf", "etc/ld.so.cache"):
        assert str(root).encode() not in (root / loader_file).read_bytes()


@pytest.mark.root
def test_assembled_root_has_what_a_service_needs_at_run_time(assembled):
    root, venv, summary = assembled
    code = (
        "import locale, socket, ssl, zoneinfo;"
        "print(ssl.create_default_context().cert_store_stats()['x509_ca'] > 100,"
        " zoneinfo.ZoneInfo('Europe/Paris').key, locale.setlocale(locale.LC_ALL, 'C.UTF-8'),"
        " socket.getservbyname('https'), socket.getprotobyname('tcp'))"
    )
    assert run_in(root, venv, code) == "True Europe/Paris C.UTF-8 443 6"
    assert "hosts: files dns" in (root / "etc" / "nsswitch.conf").read_text()
    assert not (root / "usr" / "share" / "zoneinfo" / "right").exists()
    assert {"ca-certificates", "tzdata", "netbase", "libc-bin"} <= set(summary["packages"])


@pytest.mark.root
def test_assembled_root_brings_the_extras_it_is_given(assembled):
    root, venv, _ = assembled
    library = dlopened_library()
    assert (root / library.lstrip("/")).exists()
    assert (
        run_in(root, venv, "import ctypes; ctypes.CDLL('libcap.so.2'); ctypes.CDLL('libzstd.so.1'); print('ok')")
        == "ok"
    )
    assert (root / "var" / "lib" / "dpkg" / "status.d" / "libzstd1").exists()
    assert not (root / "usr" / "share" / "doc" / "libzstd1").exists()
