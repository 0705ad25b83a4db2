#!/usr/bin/env bash
# Make sure a Docker engine with BuildKit (buildx) and Compose answers, installing them from Debian's
# packages if not; with PLATFORM set to another architecture's (linux/arm64 on an amd64 machine),
# make sure the engine can run that architecture's programs under QEMU emulation too.
#
# Where all of it already works this does nothing. On a Debian 12 machine with only the docker
# client (a CI runner image, a fresh VM), it installs Docker Engine, buildx and Compose v2 from
# Debian's packages and starts the daemon, and QEMU when a foreign platform is asked for. Anywhere
# else (macOS, Windows, other Linux systems) it says what to install and fails, installing nothing.
set -euo pipefail

# DOCKER may hold arguments too ("sudo docker", "docker --context remote"): split it into words.
read -r -a DOCKER <<<"${DOCKER:-docker}"
PLATFORM=${PLATFORM:-}
say() { printf '%s: %s\n' "${0##*/}" "$*" >&2; }
SYSTEM=$(uname -s)

# What to install where this script does not install an engine itself.
how_to_get_an_engine() {
    case $SYSTEM in
        Darwin) echo "On macOS, install and start Docker Desktop, OrbStack or Colima (brew install colima docker docker-buildx docker-compose, then colima start)" ;;
        MINGW* | MSYS* | CYGWIN*) echo "On Windows, install Docker Desktop with its WSL2 back end, and run make inside WSL2" ;;
        *) echo "Start Docker, or install it (Docker Engine: https://docs.docker.com/engine/install/, or Docker Desktop)" ;;
    esac
}

how_to_get_the_plugins() {
    case $SYSTEM in
        Darwin) echo "Docker Desktop and OrbStack include both; with Colima, brew install docker-buildx docker-compose and add brew's plugin folder to cliPluginsExtraDirs in ~/.docker/config.json, as brew says" ;;
        *) echo "Debian/Ubuntu: apt-get install docker-buildx docker-compose-v2, or Docker's docker-buildx-plugin docker-compose-plugin" ;;
    esac
}

engine_answers() { "${DOCKER[@]}" info >/dev/null 2>&1; }
buildx_present() { "${DOCKER[@]}" buildx version >/dev/null 2>&1; }
compose_present() { "${DOCKER[@]}" compose version >/dev/null 2>&1; }
plugins_present() { buildx_present && compose_present; }

# Another architecture's programs run under QEMU: binfmt_misc hands them to qemu-user, registered
# with the fix-binary flag (F), so the kernel finds QEMU inside containers and builds too.
emulation_works() {
    local handler=/proc/sys/fs/binfmt_misc/qemu-$1
    grep -qx enabled "$handler" 2>/dev/null && grep -q '^flags:.*F' "$handler"
}

ensure_emulation() {
    [ -n "$PLATFORM" ] || return 0
    local arch native qemu_arch
    arch=$(cut -d/ -f2 <<<"$PLATFORM")
    native=$("${DOCKER[@]}" version --format '{{.Server.Arch}}')
    [ "$arch" != "$native" ] || return 0
    case $arch in
        amd64) qemu_arch=x86_64 ;;
        arm64) qemu_arch=aarch64 ;;
        386) qemu_arch=i386 ;;
        loong64) qemu_arch=loongarch64 ;;
        mips64le) qemu_arch=mips64el ;;
        *) qemu_arch=$arch ;;
    esac
    # Docker Desktop runs its engine in a VM of its own, which emulates amd64 and arm64 already. On
    # macOS, OrbStack and Colima set up emulation in their VM too, which the Mac cannot look into; a
    # platform the VM cannot run fails the build there, with "exec format error".
    if [ "$SYSTEM" = Darwin ] || [ "$("${DOCKER[@]}" info --format '{{.OperatingSystem}}')" = "Docker Desktop" ] \
        || emulation_works "$qemu_arch"; then
        return 0
    fi
    # shellcheck source=/dev/null
    . /etc/os-release 2>/dev/null || true
    if [ "$(id -u)" = 0 ] && [ "${ID:-}" = debian ] && command -v apt-get >/dev/null; then
        say "setting up QEMU emulation to run $PLATFORM on this $native machine (qemu-user-static, binfmt-support)."
        # Where no init system has mounted binfmt_misc (a container, a minimal VM), mount it first.
        [ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc || true
        export DEBIAN_FRONTEND=noninteractive
        { apt-get update -qq && apt-get install -y -qq --no-install-recommends qemu-user-static binfmt-support; } \
            >/dev/null || true
        update-binfmts --enable "qemu-$qemu_arch" 2>/dev/null || true
    fi
    if ! emulation_works "$qemu_arch"; then
        say "this $native machine cannot run $PLATFORM programs: install QEMU's binfmt handlers (Debian/Ubuntu: apt-get install qemu-user-static binfmt-support; elsewhere: docker run --privileged --rm tonistiigi/binfmt --install $arch) and try again."
        exit 1
    fi
}

start_dockerd() {
    say "starting dockerd (log: /var/log/dockerd.log)."
    setsid dockerd >/var/log/dockerd.log 2>&1 </dev/null &
    for _ in $(seq 60); do
        engine_answers && return
        sleep 0.5
    done
    say "dockerd did not start within 30 s. See /var/log/dockerd.log."
    exit 1
}

if engine_answers && plugins_present; then
    ensure_emulation
    exit 0
fi

# Installed but not running, as on a machine that has just booted without an init system.
if [ "$(id -u)" = 0 ] && command -v dockerd >/dev/null && plugins_present; then
    engine_answers || start_dockerd
    ensure_emulation
    exit 0
fi

# shellcheck source=/dev/null
. /etc/os-release 2>/dev/null || true
if [ "$(id -u)" != 0 ] || [ "${ID:-}" != debian ] || ! command -v apt-get >/dev/null; then
    if ! engine_answers; then
        say "no Docker engine answers. $(how_to_get_an_engine), and try again."
    else
        say "the docker buildx or compose plugin is missing. Install them ($(how_to_get_the_plugins)) and try again."
    fi
    exit 1
fi

# Bookworm's own docker.io is 20.10, whose BuildKit only works through its older client, and its
# docker-compose is v1; trixie's Engine 26, buildx and Compose v2 run on bookworm's containerd and
# runc. Pinned at priority 100, trixie only supplies the packages asked for by name.
if [ "${VERSION_CODENAME:-}" = bookworm ]; then
    suite=trixie
    if [ ! -f /etc/apt/sources.list.d/docker-from-trixie.sources ]; then
        say "adding Debian trixie as an apt source (pinned at priority 100) for Docker Engine 26, buildx and Compose v2."
        cat >/etc/apt/sources.list.d/docker-from-trixie.sources <<'SOURCES'
Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
        cat >/etc/apt/preferences.d/docker-from-trixie <<'PIN'
Package: *
Pin: release n=trixie
Pin-Priority: 100
PIN
    fi
    packages=("docker.io/$suite" "docker-buildx/$suite" "docker-compose/$suite")
else
    packages=(docker.io docker-buildx docker-compose)
fi

say "no Docker engine with buildx and compose answers; installing them from Debian's packages."
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends -o Dpkg::Options::=--force-confold "${packages[@]}" >/dev/null

engine_answers || start_dockerd
if ! plugins_present; then
    say "the docker buildx or compose plugin is still missing after the install. Check 'apt-cache policy docker-buildx docker-compose'."
    exit 1
fi
say "Docker $("${DOCKER[@]}" version --format '{{.Server.Version}}') is running with buildx and $("${DOCKER[@]}" compose version --short 2>/dev/null | sed 's/^/Compose /')."
ensure_emulation
