# The production image: one stage, gunicorn, a non-root user, and layers ordered for fast rebuilds.
# It keeps the base image's shell, pip and apt, which makes it easy to debug; Dockerfile.multistage
# removes them and everything else the server does not run.

# Pinned to a patch release so a rebuild cannot change Python underneath you. To bump it, change
# the tag here and in the other two Dockerfiles (Dependabot proposes it), then run `make test`.
ARG BASE_IMAGE=python:3.12.15-slim-bookworm
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PATH=/opt/venv/bin:$PATH \
    PORT=8080

# A numeric user with a real home, so tools that write to $HOME work and no process runs as root.
RUN groupadd --gid 10001 app \
    && useradd --no-log-init --uid 10001 --gid app --create-home --home-dir /home/app --shell /usr/sbin/nologin app

# Requirements first, so a code change does not reinstall dependencies. Every package is pinned
# with its hashes. A proxy's CA, if the Makefile passes one, is mounted for pip and never stored.
COPY requirements.txt /tmp/requirements.txt
RUN --mount=type=secret,id=ca-bundle \
    if [ -f /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi; \
    python3 -m venv --without-pip /opt/venv \
    && pip --python /opt/venv/bin/python install --require-hashes -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

WORKDIR /app
COPY app.py settings.py gunicorn.conf.py healthcheck.py ./

USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["python3", "/app/healthcheck.py"]
ENTRYPOINT ["gunicorn", "--config", "/app/gunicorn.conf.py"]
CMD ["app:app"]
