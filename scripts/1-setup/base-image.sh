#!/usr/bin/env bash
# Print the name of a base image the Dockerfiles can build from.
#
#   scripts/1-setup/base-image.sh IMAGE
#       IMAGE itself if it is present or can be pulled. Where no registry answers (an offline
#       machine, a firewall), a stand-in built from Debian's packages with mmdebstrap instead:
#       Debian 13 with its python3, pip and venv, named localhost/python-stand-in:debian13 (never
#       python:*; localhost/, which Docker and Podman both read as this machine's own image),
#       rebuilt once it is a week old or when its package list here changes. A registry that
#       answers with an error fails the script.
#   scripts/1-setup/base-image.sh --rebuild
#       Build the stand-in now, from Debian's current packages.
#   scripts/1-setup/base-image.sh --from-prefix DIR TAG
#       Build a stand-in TAG whose Python is the CPython installed under DIR (built from source
#       with a shared libpython), copied to /usr/local: the layout of the official python images.
#
# With PLATFORM=os/arch (linux/arm64), the image is that platform's: pulled for it, or a stand-in
# built from that architecture's packages and named after it (localhost/python-stand-in:debian13-arm64), so
# it never takes the place of the engine's own. Building another architecture's stand-in runs
# its package scripts under QEMU, which `make engine PLATFORM=...` sets up.
#
# Messages go to stderr; only the image name goes to stdout.
set -euo pipefail

# DOCKER may hold arguments too ("sudo docker", "docker --context remote"): split it into words.
read -r -a DOCKER <<<"${DOCKER:-docker}"
# Python does what GNU and BSD tools do differently (timeout, date -d): scripts/docker_tools.py,
# which reads DOCKER from the environment; an array is never exported, so env passes its words.
PYTHON=${PYTHON:-python3}
DOCKER_TOOLS=$(dirname "$0")/../docker_tools.py
PLATFORM=${PLATFORM:-}
ARCH=${PLATFORM#*/}
STAND_IN=${STAND_IN:-localhost/python-stand-in:debian13${PLATFORM:+-${ARCH//\//-}}}
# Podman, which DOCKER may run: its import takes the platform as --os, --arch and --variant, and its
# image inspect has no Variant (the architecture's variant is not checked there).
if "${DOCKER[@]}" --version 2>/dev/null | grep -qi podman; then
    PODMAN=yes
else
    PODMAN=
fi
# Debian 13, the release of the pinned python:3.13.*-slim-trixie base. Its python3 is 3.13 too, so
# the stand-in runs the Python minor version the real base does (a different patch release).
SUITE=trixie
# The stand-in's packages, as the official python images have them: Python with venv, and the CA
# bundle, time zones and service names a service needs at run time. pip comes from ensurepip, not
# Debian's python3-pip, which brings Debian's own packaging and friends: pip could not replace them.
STAND_IN_PACKAGES=python3,python3-venv,python-is-python3,ca-certificates,tzdata,netbase
# The stand-in is rebuilt, with Debian's security updates, once it is this many days old.
MAX_AGE_DAYS=${STAND_IN_MAX_AGE_DAYS:-7}
# Debian's release with its updates and security updates, so a new stand-in has every fix.
MIRRORS=(
    "deb http://deb.debian.org/debian $SUITE main"
    "deb http://deb.debian.org/debian $SUITE-updates main"
    "deb http://deb.debian.org/debian-security $SUITE-security main"
)
say() { printf '%s: %s\n' "${0##*/}" "$*" >&2; }

need_mmdebstrap() {
    command -v mmdebstrap >/dev/null && return
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
        say "building a stand-in base image needs mmdebstrap (apt-get install mmdebstrap); install it or make the base image pullable."
        exit 1
    fi
    say "installing mmdebstrap from Debian's packages."
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap >/dev/null
}

# Debian's name for a Docker architecture (linux/arm/v7 is armhf), or nothing for this machine's own.
debian_arch() {
    case $ARCH in
        "") ;;
        arm/v7) echo armhf ;;
        arm/v6 | arm/v5) echo armel ;;
        386) echo i386 ;;
        ppc64le) echo ppc64el ;;
        mips64le) echo mips64el ;;
        *) echo "$ARCH" ;;
    esac
}

# debootstrap a minimal Debian into a tarball and import it: import_rootfs TAG PACKAGES [HOOK...]
# The hooks are shell snippets mmdebstrap runs with "$1" set to the new root, hence single quotes.
# The tarball is whole before the import starts, so a failed hook never leaves a half image tagged.
# shellcheck disable=SC2016
import_rootfs() {
    local tag=$1 packages=$2 arch tarball
    shift 2
    need_mmdebstrap
    arch=$(debian_arch)
    tarball=$(mktemp)
    if ! mmdebstrap --quiet --variant=minbase --aptopt='APT::Install-Recommends "false"' \
        ${arch:+--architectures="$arch"} --include="$packages" "$@" \
        --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
        "$SUITE" - "${MIRRORS[@]}" >"$tarball"; then
        rm -f "$tarball"
        say "building $tag failed in mmdebstrap; its error is above."
        exit 1
    fi
    local flags=(${PLATFORM:+--platform "$PLATFORM"})
    if [ -n "$PODMAN" ]; then
        # Quiet, as Docker's import is: Podman reports each blob it copies.
        flags=(--quiet)
        [ -z "$PLATFORM" ] || flags+=(--os "${PLATFORM%%/*}" --arch "$(cut -d/ -f2 <<<"$PLATFORM")")
        [ -z "$(cut -d/ -f3 <<<"$PLATFORM")" ] || flags+=(--variant "$(cut -d/ -f3 <<<"$PLATFORM")")
    fi
    "${DOCKER[@]}" import ${flags[@]+"${flags[@]}"} \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["python3"]' \
        --change "LABEL stand-in.packages=$packages" \
        - "$tag" <"$tarball" >/dev/null
    rm -f "$tarball"
}

# Whether a failed pull (its error output in file $1) failed because no registry could be reached:
# a name that does not resolve, a connection refused or timed out. Anything else, such as "not
# found", "unauthorized" or "toomanyrequests", is the registry's answer and must not be hidden.
registry_unreachable() {
    grep -Eqi 'no such host|server misbehaving|name resolution|connection refused|network is unreachable|no route to host|i/o timeout|handshake timeout|deadline exceeded|Client\.Timeout|waiting for connection' "$1"
}

# Whether the engine relayed a registry's answer: "Error response from daemon", where a docker that
# could not run at all, or an engine that did not answer, says something else.
registry_answered() {
    grep -q 'Error response from daemon' "$1"
}

# Print the stand-in's age in whole days; fail if there is no stand-in.
stand_in_age_days() {
    env DOCKER="${DOCKER[*]}" "$PYTHON" "$DOCKER_TOOLS" age-days "$STAND_IN"
}

# Print the packages the stand-in was built with, as its label records them.
stand_in_packages() {
    "${DOCKER[@]}" image inspect --format '{{index .Config.Labels "stand-in.packages"}}' "$STAND_IN" 2>/dev/null
}

# shellcheck disable=SC2016
build_debian_stand_in() {
    say "building $STAND_IN from Debian $SUITE's ${PLATFORM:+$ARCH }packages ($STAND_IN_PACKAGES); this takes about a minute${PLATFORM:+, or ten under emulation}."
    # Like the official image: `python` and `pip` exist, pip is the only package outside a venv,
    # and it may install there. Debian disables ensurepip, so pip installs itself from the wheel
    # that python3-venv brings.
    import_rootfs "$STAND_IN" "$STAND_IN_PACKAGES" \
        --customize-hook='rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED' \
        --customize-hook='chroot "$1" sh -c "set -- /usr/share/python-wheels/pip-*.whl && python3 \"\$1/pip\" install --quiet --no-index --no-compile --root-user-action=ignore \"\$1\""'
}

# shellcheck disable=SC2016
build_prefix_stand_in() {
    local prefix=$1 tag=$2
    [ -x "$prefix/bin/python3" ] || { say "$prefix/bin/python3 does not exist."; exit 1; }
    ls "$prefix"/lib/libpython3*.so* >/dev/null 2>&1 \
        || { say "$prefix has no shared libpython (configure --enable-shared)."; exit 1; }
    say "building $tag: Debian $SUITE with the CPython of $prefix in /usr/local."
    # The libraries the official image installs for the standard library's extension modules.
    import_rootfs "$tag" ca-certificates,netbase,tzdata,libssl3t64,libsqlite3-0,libffi8,zlib1g,liblzma5,libbz2-1.0,libuuid1,libexpat1,libncursesw6,libreadline8t64 \
        --customize-hook="tar -C '$prefix' --exclude=./lib/python3.*/test --exclude=./lib/python3.*/site-packages/* -cf - . | tar -C \"\$1\"/usr/local -xf -" \
        --customize-hook="sed -i.orig '1s|^#!$prefix/|#!/usr/local/|' \"\$1\"/usr/local/bin/* 2>/dev/null; rm -f \"\$1\"/usr/local/bin/*.orig" \
        --customize-hook='strip --strip-unneeded "$1"/usr/local/lib/libpython3*.so.* "$1"/usr/local/bin/python3.*[0-9] 2>/dev/null || true' \
        --customize-hook='chroot "$1" ldconfig && chroot "$1" /usr/local/bin/python3 -m ensurepip --default-pip >/dev/null'
}

if [ "${1:-}" = --from-prefix ]; then
    [ $# = 3 ] || { say "usage: $0 --from-prefix DIR TAG"; exit 2; }
    build_prefix_stand_in "$2" "$3"
    echo "$3"
    exit 0
fi
if [ "${1:-}" = --rebuild ]; then
    build_debian_stand_in
    exit 0
fi
[ $# = 1 ] || { say "usage: $0 IMAGE | --rebuild | --from-prefix DIR TAG"; exit 2; }
image=$1

# Present, and for the platform asked for if there is one (a tag holds one platform's image).
present() {
    local platform
    local variant='{{with .Variant}}/{{.}}{{end}}'
    [ -z "$PODMAN" ] || variant=
    platform=$("${DOCKER[@]}" image inspect --format "{{.Os}}/{{.Architecture}}$variant" "$1" 2>/dev/null) \
        && { [ -z "$PLATFORM" ] || [ "$platform" = "$PLATFORM" ] || [ "${platform%/*}" = "$PLATFORM" ]; }
}

if present "$image"; then
    echo "$image"
    exit 0
fi
say "pulling $image${PLATFORM:+ for $PLATFORM}."
pull_errors=$(mktemp)
trap 'rm -f "$pull_errors"' EXIT
status=0
# A pull that hangs, as on a registry that drops packets instead of refusing them, is stopped after
# PULL_TIMEOUT seconds with status 124, as GNU timeout would (macOS has no timeout command).
env DOCKER="${DOCKER[*]}" "$PYTHON" "$DOCKER_TOOLS" pull "${PULL_TIMEOUT:-180}" "$image" "$PLATFORM" 2>"$pull_errors" \
    || status=$?
if [ "$status" = 0 ]; then
    echo "$image"
    exit 0
fi
if [ "$status" != 124 ] && ! registry_unreachable "$pull_errors"; then
    say "cannot pull $image: $(tail -n 1 "$pull_errors")"
    if registry_answered "$pull_errors"; then
        say "the registry answered, so no stand-in is used: check the name and tag, log in (docker login), or wait out a rate limit."
    fi
    exit 1
fi
say "no registry answers ($(tail -n 1 "$pull_errors")); using the stand-in $STAND_IN instead of $image."
if ! present "$STAND_IN" || ! age=$(stand_in_age_days); then
    build_debian_stand_in
elif [ "$(stand_in_packages)" != "$STAND_IN_PACKAGES" ]; then
    say "$STAND_IN was built with other packages than this script asks for; rebuilding it."
    build_debian_stand_in
elif [ "$age" -ge "$MAX_AGE_DAYS" ]; then
    say "$STAND_IN is $age days old; rebuilding it with Debian's current packages."
    build_debian_stand_in
else
    say "$STAND_IN was built $age days ago (rebuilt after $MAX_AGE_DAYS days, or now with make base)."
fi
echo "$STAND_IN"
