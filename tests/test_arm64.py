"""The secure image for linux/arm64, built and run on this machine under QEMU emulation.

The build goes through the Makefile with PLATFORM=linux/arm64, as a user's would, so it also
proves that `make engine` sets up the emulation and the stand-in base exists for arm64. Slow,
because every program of the build runs emulated: `make test-arm64` runs these alone.
"""

import os
import platform
import sys
import uuid

import pytest
from containers import (
    LOCKDOWN,
    PROJECT_NAME,
    assert_serves,
    build,
    docker,
    elf_machine,
    image_elf_files,
    inspect,
    running,
    wait_until_serving,
)

PLATFORM = "linux/arm64"


@pytest.fixture(scope="module")
def arm64_secure(docker_engine):
    """The secure image built for linux/arm64 under a name of its own, removed at the end.

    With FLASK_APP_TEST_IMAGE=NAME, NAME:secure-arm64 as it is, left in place (CI builds it).
    """
    prebuilt = os.environ.get("FLASK_APP_TEST_IMAGE")
    name = prebuilt or f"{PROJECT_NAME}-test-{uuid.uuid4().hex[:8]}"
    tag = f"{name}:secure-arm64"
    if prebuilt:
        if docker("image", "inspect", tag, check=False).returncode != 0:
            pytest.fail(f"FLASK_APP_TEST_IMAGE={prebuilt}, but {tag} is not there; build or load it.")
        yield tag
        return
    try:
        # Under emulation, and the first time with the arm64 stand-in base to build, which runs
        # Debian's package scripts (Python byte-compiling its standard library) under QEMU too.
        build("secure", name, f"PLATFORM={PLATFORM}", timeout=2400)
        yield tag
    finally:
        docker("image", "rm", "--force", tag, check=False)


@pytest.mark.unit
def test_elf_machine_names_the_architecture_of_this_machines_python():
    with open(os.path.realpath(sys.executable), "rb") as python:
        header = python.read(20)
    expected = {"x86_64": "x86-64", "aarch64": "aarch64"}.get(platform.machine(), platform.machine())
    assert elf_machine(header) == expected
    assert elf_machine(b"#!/bin/sh\n" + bytes(10)) is None


@pytest.mark.arm64
def test_arm64_image_is_built_for_linux_arm64(arm64_secure):
    image = inspect(arm64_secure)
    assert (image["Os"], image["Architecture"]) == ("linux", "arm64")


@pytest.mark.arm64
def test_every_elf_file_in_the_arm64_image_is_aarch64(arm64_secure):
    machines = image_elf_files(arm64_secure)
    # The interpreter and the C library at least, so an empty or unreadable image cannot pass.
    assert any(path.endswith("/libc.so.6") for path in machines), sorted(machines)
    assert any("/python3" in path and "/bin/" in path for path in machines), sorted(machines)
    foreign = {path: machine for path, machine in machines.items() if machine != "aarch64"}
    assert not foreign, f"files of another architecture in the arm64 image: {foreign}"


@pytest.mark.arm64
def test_arm64_image_serves_under_the_readme_lockdown(arm64_secure):
    flags = ("--platform", PLATFORM, *LOCKDOWN, "--user", "12345:0")
    with running(arm64_secure, *flags, wait=False) as container:
        # Everything runs emulated, so gunicorn takes several times longer to start than natively.
        wait_until_serving(container, timeout=120)
        assert_serves(container)
