#!/usr/bin/env bash
# Make sure a Docker engine with BuildKit (buildx) and Compose answers, installing them from Debian's
# packages if not.
#
# Where all three already work this does nothing. On a Debian 12 machine with only the docker
# client (a CI runner image, a fresh VM), it installs Docker Engine, buildx and Compose v2 from
# Debian's packages and starts the daemon. Anywhere else it says what to do and fails.
set -euo pipefail

# DOCKER may hold arguments too ("sudo docker", "docker --context remote"): split it into words.
read -r -a DOCKER <<<"${DOCKER:-docker}"
say() { printf 'flask-app: %s\n' "$*" >&2; }

engine_answers() { "${DOCKER[@]}" info >/dev/null 2>&1; }
buildx_present() { "${DOCKER[@]}" buildx version >/dev/null 2>&1; }
compose_present() { "${DOCKER[@]}" compose version >/dev/null 2>&1; }
plugins_present() { buildx_present && compose_present; }

if engine_answers && plugins_present; then
    exit 0
fi

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

# Installed but not running, as on a machine that has just booted without an init system.
if [ "$(id -u)" = 0 ] && command -v dockerd >/dev/null && plugins_present; then
    engine_answers || start_dockerd
    exit 0
fi

# shellcheck source=/dev/null
. /etc/os-release 2>/dev/null || true
if [ "$(id -u)" != 0 ] || [ "${ID:-}" != debian ] || ! command -v apt-get >/dev/null; then
    if ! engine_answers; then
        say "no Docker engine answers. Start Docker (or install it: https://docs.docker.com/engine/install/) and try again."
    else
        say "the docker buildx or compose plugin is missing. Install them (Debian/Ubuntu: apt-get install docker-buildx docker-compose-v2, or Docker's docker-buildx-plugin docker-compose-plugin) and try again."
    fi
    exit 1
fi

# Bookworm's own docker.io is 20.10, whose BuildKit only works through its older client, and its
# docker-compose is v1; trixie's Engine 26, buildx and Compose v2 run on bookworm's containerd and
# runc. Pinned at priority 100, trixie only supplies the packages asked for by name.
if [ "${VERSION_CODENAME:-}" = bookworm ]; then
    suite=trixie
    if [ ! -f /etc/apt/sources.list.d/flask-app-trixie.sources ]; then
        say "adding Debian trixie as an apt source (pinned at priority 100) for Docker Engine 26, buildx and Compose v2."
        cat >/etc/apt/sources.list.d/flask-app-trixie.sources <<'SOURCES'
Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
        cat >/etc/apt/preferences.d/flask-app-trixie <<'PIN'
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
