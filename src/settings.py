"""Settings read from the environment: every knob of the app and its server, with its default, once."""

import os


def _whole_number(name: str, default: int, minimum: int = 1) -> int:
    """Read a whole number from the environment, failing with a sentence that names the variable."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SystemExit(f"{name} must be a whole number, got {raw!r}.") from None
    if value < minimum:
        raise SystemExit(f"{name} must be at least {minimum}, got {value}.")
    return value


# The WSGI entry point gunicorn serves (module:app or module:create_app()): the images set it from
# project.env's WSGI_APP line, which make passes to every build.
WSGI_APP = os.environ.get("WSGI_APP") or None
# The port the app listens on, inside the container.
PORT = _whole_number("PORT", 8080)
# Request bodies larger than this many bytes are refused with 413.
MAX_CONTENT_LENGTH = _whole_number("MAX_CONTENT_LENGTH", 1024 * 1024)
# gunicorn worker processes, and the connections each one serves at once; see gunicorn.conf.py.
# One worker uses one CPU, which is what the container is given (make run, compose.yaml, Kubernetes).
WEB_CONCURRENCY = _whole_number("WEB_CONCURRENCY", 1)
WORKER_CONNECTIONS = _whole_number("WORKER_CONNECTIONS", 1000)
# Seconds a client gets to send a request's headers, and an idle keep-alive connection stays open.
KEEPALIVE = _whole_number("KEEPALIVE", 5)
# Seconds a worker may go without checking in before it is replaced, and seconds requests in flight
# get to finish on shutdown.
TIMEOUT = _whole_number("TIMEOUT", 30)
GRACEFUL_TIMEOUT = _whole_number("GRACEFUL_TIMEOUT", 20)
