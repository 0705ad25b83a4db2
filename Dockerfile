# The production image: one stage, gunicorn, a non-root user, and layers ordered for fast rebuilds.
# It keeps the base image's shell, pip and apt, which makes it easy to debug; Dockerfile.multistage
# removes them and everything else the server does not run.

# The base image, pinned to a patch release so a rebuild cannot change Python underneath you, and
# named with its registry: Podman, which has no default registry, finds the image Docker does.
# `--build-arg BASE_IMAGE=...` replaces it (the Makefile does so for a mirror or a stand-in); the
# default names the stage below, so Dependabot, which cannot read build arguments, still sees and
# bumps the tag. Bump it in all four Dockerfiles at once, then run `make test`. The stage only
# names the image and never runs, hence no HEALTHCHECK. checkov, which cannot read build arguments
# either, takes FROM ${BASE_IMAGE} for an image without a tag (CKV_DOCKER_7); its skip holds for the
# whole file, so tests/test_dockerfiles.py checks the pin instead.
# checkov:skip=CKV_DOCKER_7: FROM ${BASE_IMAGE} is the pinned python-base stage unless overridden
ARG BASE_IMAGE=python-base
# hadolint ignore=DL3057
FROM docker.io/library/python:3.13.17-slim-trixie AS python-base
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PATH=/opt/venv/bin:$PATH \
    PORT=8080

# A numeric user with a real home, so tools that write to $HOME work and no process runs as root.
# No setuid or setgid programs (CIS Docker Benchmark 4.8): su, mount, passwd and the like are of no
# use to a non-root server and only a way to gain privileges. Deleting them adds no bytes to the
# image, where clearing their mode bits would copy each one into this layer.
RUN groupadd --gid 10001 app \
    && useradd --no-log-init --uid 10001 --gid app --create-home --home-dir /home/app --shell /usr/sbin/nologin app \
    && find / -xdev -type f -perm /6000 -delete

# Requirements first, so a code change does not reinstall dependencies. Every package is pinned
# with its hashes. A proxy's CA, if the Makefile passes one, is mounted for pip and never stored.
COPY requirements.txt /tmp/requirements.txt
RUN --mount=type=secret,id=ca-bundle \
    if [ -f /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi; \
    python3 -m venv --without-pip /opt/venv \
    && pip --python /opt/venv/bin/python install --require-hashes -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# The code: src/ is copied whole into /app, so a module or package added there is in the image
# without a change here. It comes last, after the dependencies, so a code change rebuilds this layer only.
WORKDIR /app
COPY src/ ./

# The entry point gunicorn serves (gunicorn.conf.py reads it): project.env's WSGI_APP, which make
# passes; by hand, --build-arg WSGI_APP=app:app. Declared last, so a new one rebuilds nothing above.
ARG WSGI_APP
ENV WSGI_APP=${WSGI_APP}

USER 10001:10001
EXPOSE 8080
# No --start-interval: Docker Engine 25 added it, and Podman's builder and older engines stop at it.
# The first check runs after --interval, so the engine says healthy about 10 s after the start.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python3", "/app/healthcheck.py"]
ENTRYPOINT ["gunicorn", "--config", "/app/gunicorn.conf.py"]
