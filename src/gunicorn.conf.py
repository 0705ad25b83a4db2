"""gunicorn settings for the images that serve with gunicorn (all but naive), all read from the environment."""

import settings

# The app, named once in project.env; an app named on gunicorn's command line takes its place.
wsgi_app = settings.WSGI_APP
bind = f"0.0.0.0:{settings.PORT}"
workers = settings.WEB_CONCURRENCY
# gevent gives each connection a greenlet, not a thread: a client that sends its request slowly
# waits without holding anything another client needs. Each worker serves up to
# `worker_connections` at once, and a thread pool of a fixed size no longer caps them.
worker_class = "gevent"
worker_connections = settings.WORKER_CONNECTIONS
# A request's headers must arrive within `keepalive` seconds of the connection opening (or of the
# previous response); then the connection is closed. The same bound closes idle keep-alive connections.
keepalive = settings.KEEPALIVE
# gevent workers are cooperative: one that does not check in for `timeout` seconds (a request
# stuck in CPU-bound code blocks every other request of that worker) is killed and replaced.
timeout = settings.TIMEOUT
graceful_timeout = settings.GRACEFUL_TIMEOUT

# Workers touch a heartbeat file every second; /dev/shm is memory, and writable on a read-only root.
worker_tmp_dir = "/dev/shm"
# gunicorn 25.1 opens a control socket under $HOME or $XDG_RUNTIME_DIR; nothing here uses it,
# and it cannot be created on a read-only root.
control_socket_disable = True

# A worker is never restarted after a number of requests (gunicorn's max_requests): with one worker,
# nothing answers while its successor starts. At 100,000 requests `make bench` saw it under load:
# errors, and 1 s for the slowest requests at 64 connections. The tests hold memory flat over 10,000
# requests; should a leak come, the memory limit stops the container, and Compose or Kubernetes
# restarts it.
max_requests = 0

# Logs go to stdout and stderr, where `docker logs` and every log collector look.
accesslog = "-"
errorlog = "-"
# The access lines of gunicorn's default format, written for less work (see access_log.py).
logger_class = "access_log.AccessLogger"


def post_request(worker, req, environ, resp):
    """Let the worker's other connections run before this one reads its next request.

    A greenlet yields only when it would block. A client that sends its next request the moment a
    response arrives (a load generator on the same machine, a busy proxy) finds the worker still
    running its greenlet, and could keep it to itself while other connections wait.
    """
    # Imported here, so that every name this file defines is a gunicorn setting.
    import gevent.monkey

    # Only where gevent runs the worker: GUNICORN_CMD_ARGS="--worker-class gthread" may replace it.
    if gevent.monkey.is_module_patched("socket"):
        gevent.sleep(0)
