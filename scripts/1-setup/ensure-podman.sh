#!/usr/bin/env bash
# Make sure Podman answers, for DOCKER=podman: installed from Debian's packages at the version
# scripts/docker_tools.py pins if it is missing (on Debian, as root). It never installs Docker.
#
# Podman has no daemon and builds with its own builder (Buildah), so there are no plugins to look
# for. With PLATFORM set to another architecture's, it runs that architecture's programs through the
# host's QEMU handlers, which this script checks and does not set up (make engine with Docker does).
set -euo pipefail

# DOCKER may hold arguments too ("sudo podman", "podman --root DIR"): split it into words.
read -r -a DOCKER <<<"${DOCKER:-podman}"
PYTHON=${PYTHON:-python3}
PLATFORM=${PLATFORM:-}
say() { printf '%s: %s\n' "${0##*/}" "$*" >&2; }

if ! "${DOCKER[@]}" --version >/dev/null 2>&1; then
    # shellcheck source=/dev/null
    . /etc/os-release 2>/dev/null || true
    if [ "$(id -u)" != 0 ] || [ "${ID:-}" != debian ] || ! command -v apt-get >/dev/null; then
        say "${DOCKER[*]} is not installed. Install Podman (Fedora, RHEL: dnf install podman; Debian, Ubuntu: apt-get install podman; macOS: brew install podman, then podman machine init and podman machine start), and try again."
        exit 1
    fi
    "$PYTHON" "$(dirname "$0")/../docker_tools.py" install podman >/dev/null
    if ! errors=$("${DOCKER[@]}" --version 2>&1); then
        say "${DOCKER[*]} does not run, though Podman is installed now: $(tail -n 1 <<<"$errors")"
        exit 1
    fi
fi

if ! errors=$("${DOCKER[@]}" info 2>&1 >/dev/null); then
    say "${DOCKER[*]} is installed but does not answer: $(tail -n 1 <<<"$errors")"
    exit 1
fi

if [ -n "$PLATFORM" ]; then
    native=$("${DOCKER[@]}" version --format '{{.Server.OsArch}}')
    case ${PLATFORM#linux/} in
        amd64) qemu_arch=x86_64 ;;
        arm64) qemu_arch=aarch64 ;;
        *) qemu_arch=${PLATFORM#linux/} ;;
    esac
    if [ "$PLATFORM" != "$native" ] && ! grep -qx enabled "/proc/sys/fs/binfmt_misc/qemu-$qemu_arch" 2>/dev/null; then
        say "this $native machine cannot run $PLATFORM programs: install QEMU's binfmt handlers (Debian/Ubuntu: apt-get install qemu-user-static binfmt-support) and try again."
        exit 1
    fi
fi
