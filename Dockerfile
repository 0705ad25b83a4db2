# The production image: one stage, gunicorn, a non-root user, and layers ordered for fast rebuilds.
# It keeps the base image's shell, pip and apt, which makes it easy to debug; Dockerfile.multistage
# removes them and everything else the server does not run.

# The base image, pinned to a patch release so a rebuild cannot change Python underneath you, and
# named with its registry: Podman, which has no default registry, finds the image Docker does.
# Dependabot reads this line and bumps the tag; bump it in all four Dockerfiles at once, then run
# `make test`. make builds on it, or on what it names in its place: a stand-in where it cannot be
# pulled, or the image BASE_IMAGE names (a mirror).
FROM docker.io/library/python:3.13.17-slim-trixie

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
# with its hashes. requirements.txt is mounted for this one command, not copied: a file one layer
# copies stays in the image even when a later layer deletes it. A proxy's CA, if make passes one, is
# mounted over the image's CA bundle for pip, and never stored.
RUN --mount=type=bind,source=requirements.txt,target=/tmp/requirements.txt \
    --mount=type=secret,id=ca-bundle,target=/etc/ssl/certs/ca-certificates.crt \
    python3 -m venv --without-pip /opt/venv \
    && pip --python /opt/venv/bin/python install --require-hashes -r /tmp/requirements.txt

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
