"""The secure image for the platform the engine emulates, built and run on this machine under QEMU.

Of linux/amd64 and linux/arm64, that is the one the engine does not run natively: linux/arm64 on an
amd64 machine, linux/amd64 on Apple Silicon. The build goes through the Makefile with PLATFORM set,
as a user's would, so it also proves that `make engine` sets up the emulation and the stand-in base
exists for that platform. Slow, because every program of the build runs emulated: `make
test-emulated` runs these alone.
"""

import os
import platform
import sys

import pytest
from containers import (
    LOCKDOWN,
    assert_serves,
    elf_machine,
    image_elf_files,
    images_under_test,
    inspect,
    platform_tag,
    running,
    wait_until_serving,
)
from docker_tools import AMD64, ARM64, emulated_platform

# The architecture ELF files name for each platform's programs.
ELF_MACHINE = {AMD64: "x86-64", ARM64: "aarch64"}


@pytest.fixture(scope="module")
def emulated_secure(emulated):
    """The secure image built for the emulated platform, NAME:secure-ARCH, or FLASK_APP_TEST_IMAGE's
    (see images_under_test)."""
    # Under emulation, and the first time with the platform's stand-in base to build, which runs
    # Debian's package scripts (Python byte-compiling its standard library) under QEMU too.
    suffix = platform_tag(emulated)
    with images_under_test(("secure",), f"PLATFORM={emulated}", tag_suffix=suffix, timeout=2400) as tags:
        yield tags["secure"]


@pytest.mark.unit
@pytest.mark.parametrize(
    ("native", "expected"), [(AMD64, ARM64), (ARM64, AMD64)], ids=["an amd64 machine", "Apple Silicon"]
)
def test_the_emulated_platform_is_the_one_the_engine_does_not_run_natively(native, expected):
    assert emulated_platform(native) == expected


@pytest.mark.linux
def test_elf_machine_names_the_architecture_of_this_machines_python():
    with open(os.path.realpath(sys.executable), "rb") as python:
        header = python.read(20)
    expected = {"x86_64": "x86-64", "aarch64": "aarch64"}.get(platform.machine(), platform.machine())
    assert elf_machine(header) == expected
    assert elf_machine(b"#!/bin/sh\n" + bytes(10)) is None


@pytest.mark.emulated
def test_emulated_image_is_built_for_the_emulated_platform(emulated_secure, emulated):
    image = inspect(emulated_secure)
    assert f"{image['Os']}/{image['Architecture']}" == emulated


@pytest.mark.emulated
def test_every_elf_file_in_the_emulated_image_is_built_for_its_platform(emulated_secure, emulated):
    machines = image_elf_files(emulated_secure)
    # The interpreter and the C library at least, so an empty or unreadable image cannot pass.
    assert any(path.endswith("/libc.so.6") for path in machines), sorted(machines)
    assert any("/python3" in path and "/bin/" in path for path in machines), sorted(machines)
    foreign = {path: machine for path, machine in machines.items() if machine != ELF_MACHINE[emulated]}
    assert not foreign, f"files of another architecture in the {emulated} image: {foreign}"


@pytest.mark.emulated
def test_emulated_image_serves_under_the_readme_lockdown(emulated_secure, emulated):
    flags = ("--platform", emulated, *LOCKDOWN, "--user", "12345:0")
    with running(emulated_secure, *flags, wait=False) as container:
        # Everything runs emulated, so gunicorn takes several times longer to start than natively.
        wait_until_serving(container, timeout=120)
        assert_serves(container)
