"""The access log the images write is gunicorn's own, line for line (src/access_log.py)."""

import datetime
import time
from types import SimpleNamespace

import pytest
from gunicorn.config import Config
from gunicorn.glogging import Logger

from access_log import AccessLogger

pytestmark = pytest.mark.unit

# Requests whose lines differ in every field the combined format writes: a user from basic
# authentication, quotes where a client may put them, a referer, a body of no bytes, none sent.
REQUESTS = {
    "plain": ({}, "200 OK", 28),
    "quotes in every client's field": (
        {
            "RAW_URI": '/a"b?c="d"',
            "HTTP_REFERER": 'https://example.com/"x"',
            "HTTP_USER_AGENT": 'agent "quoted" 1.0',
            "REMOTE_ADDR": "10.0.0.7",
        },
        "404 NOT FOUND",
        207,
    ),
    "a user by basic authentication": ({"HTTP_AUTHORIZATION": "Basic YWxpY2U6c2VjcmV0"}, "401 UNAUTHORIZED", 0),
    "nothing sent": ({"REQUEST_METHOD": "HEAD"}, "500 INTERNAL SERVER ERROR", None),
}


def line(logger_class, settings: dict, capsys, extra: dict, status: str, sent) -> str:
    config = Config()
    for name, value in {"accesslog": "-", **settings}.items():
        config.set(name, value)
    logger = logger_class(config)
    environ = {
        "REQUEST_METHOD": "GET",
        "RAW_URI": "/",
        "PATH_INFO": "/",
        "QUERY_STRING": "",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        **extra,
    }
    response = SimpleNamespace(status=status, sent=sent, headers=[("Content-Type", "application/json")])
    request = SimpleNamespace(headers=[("HOST", "localhost"), ("USER-AGENT", environ.get("HTTP_USER_AGENT", ""))])
    capsys.readouterr()
    logger.access(response, request, environ, datetime.timedelta(microseconds=1234))
    return capsys.readouterr().out


def both(settings: dict, capsys, extra: dict, status: str, sent) -> tuple[str, str]:
    """gunicorn's line and AccessLogger's, written within the same second (tried again across one)."""
    for _ in range(3):
        second = int(time.time())
        lines = (
            line(Logger, settings, capsys, extra, status, sent),
            line(AccessLogger, settings, capsys, extra, status, sent),
        )
        if int(time.time()) == second:
            return lines
    raise AssertionError("the clock crossed a second in each of three tries")


@pytest.mark.parametrize(("extra", "status", "sent"), REQUESTS.values(), ids=REQUESTS)
def test_the_access_line_is_gunicorns_own(capsys, extra, status, sent):
    gunicorns, ours = both({}, capsys, extra, status, sent)
    assert gunicorns.count("\n") == 1
    assert ours == gunicorns


def test_a_format_of_ones_own_is_written_by_gunicorn_as_it_was_given(capsys):
    """GUNICORN_CMD_ARGS='--access-logformat ...' still works: AccessLogger leaves that to gunicorn."""
    settings = {"access_log_format": '%(h)s "%(r)s" %(s)s %(L)s {host}i'.replace("{host}i", "%({host}i)s")}
    gunicorns, ours = both(settings, capsys, {}, "200 OK", 28)
    assert ours == gunicorns
    assert gunicorns.endswith('"GET / HTTP/1.1" 200 0.001234 localhost\n')
