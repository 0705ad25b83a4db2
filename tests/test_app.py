"""What an app built on this template keeps, through Flask's test client: the health route, JSON
errors, the body limit, security headers, debug off and settings from the environment.

The app is the one the images serve (project.env's WSGI_APP); what needs a route that reads a body
runs on an app of the test's own with the same skeleton. The sample app's own routes are tested in
test_sample_app.py."""

import importlib
import logging

import pytest
from containers import API_CONTENT_SECURITY_POLICY, HSTS
from flask import Flask, jsonify, request
from gunicorn.config import Config
from gunicorn.http import wsgi
from gunicorn.http.parser import RequestParser

import settings
import skeleton

pytestmark = pytest.mark.unit


@pytest.fixture
def uploads():
    """An app of the test's own on the skeleton, with a route that reads the body: POST /upload."""
    app = skeleton.init_app(Flask("uploads"))

    @app.post("/upload")
    def upload():
        return jsonify(received_bytes=len(request.get_data()))

    return app


def test_healthz_answers_ok_in_json(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_debug_mode_is_off(app):
    assert app.debug is False


@pytest.mark.parametrize(
    ("method", "path", "status", "name"),
    [("GET", "/missing", 404, "Not Found"), ("POST", "/healthz", 405, "Method Not Allowed")],
)
def test_http_errors_are_json_without_traceback(client, method, path, status, name):
    response = client.open(path, method=method)
    assert response.status_code == status
    assert response.get_json() == {"error": name, "status": status}
    assert b"Traceback" not in response.data


def test_body_over_the_limit_is_refused_with_413(uploads):
    response = uploads.test_client().post("/upload", data=b"x" * (settings.MAX_CONTENT_LENGTH + 1))
    assert response.status_code == 413
    assert response.get_json() == {"error": "Request Entity Too Large", "status": 413}


def test_declared_length_over_the_limit_is_refused_on_any_route(client):
    declared = {"CONTENT_LENGTH": str(settings.MAX_CONTENT_LENGTH + 1)}
    response = client.get("/healthz", environ_overrides=declared)
    assert response.status_code == 413


def test_unhandled_exception_becomes_json_500_without_traceback(app, client, monkeypatch):
    def broken():
        raise RuntimeError("secret internal detail")

    monkeypatch.setitem(app.view_functions, "healthz", broken)
    response = client.get("/healthz")
    assert response.status_code == 500
    assert response.get_json() == {"error": "Internal Server Error", "status": 500}
    assert b"secret internal detail" not in response.data
    assert b"Traceback" not in response.data


def served_by_gunicorn(app: Flask, raw: bytes) -> tuple[wsgi.Response, bytes]:
    """The app's answer to raw request bytes, read by gunicorn's own parser and written by its WSGI
    response object, in this process: what the gunicorn images do, without a socket."""
    config, peer = Config(), ("192.0.2.7", 40000)
    gunicorn_request = next(RequestParser(config, iter([raw]), peer))
    response, environ = wsgi.create(gunicorn_request, None, peer, ("127.0.0.1", 8080), config)
    return response, b"".join(app(environ, response.start_response))


CHUNKED = b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
# Chunked bodies gunicorn's parser rejects while the route reads them, with the reason it gives.
MALFORMED_CHUNKS = {
    "a chunk size that is not hex": (b"zz\r\nhello\r\n0\r\n\r\n", "Invalid chunk size"),
    "chunk data not followed by CRLF": (b"5\r\nhelloXX0\r\n\r\n", "Invalid chunk terminator"),
    "a malformed chunk extension": (b"5;=x\r\nhello\r\n0\r\n\r\n", "Invalid chunk extension"),
    "a chunk-size line over the limit": (b"f" * 9000, "line over 8190 bytes"),
    "a trailer that is not a header": (b"0\r\nnot a header\r\n\r\n", "Invalid HTTP Header"),
    "a body that stops before its last chunk": (b"5\r\nhel", "ended early or could not be read"),
}


@pytest.mark.parametrize("case", MALFORMED_CHUNKS)
def test_malformed_body_gets_400_in_json_and_closes_the_connection_under_gunicorn(uploads, case, caplog):
    body, reason = MALFORMED_CHUNKS[case]
    response, answer = served_by_gunicorn(uploads, CHUNKED + body)
    assert response.status_code == 400
    assert answer == b'{"error":"Bad Request","status":400}\n'
    assert dict(response.headers).items() >= skeleton.SECURITY_HEADERS.items()
    assert response.should_close(), "gunicorn would answer Connection: keep-alive"
    [record] = [record for record in caplog.records if record.name == uploads.logger.name]
    assert record.levelno == logging.WARNING and record.exc_info is None
    assert "192.0.2.7" in record.getMessage() and reason in record.getMessage()


def test_a_well_formed_chunked_body_is_read_and_keeps_the_connection_under_gunicorn(uploads):
    """The control for the test above: the same parser, a body it accepts."""
    response, answer = served_by_gunicorn(uploads, CHUNKED + b"5\r\nhello\r\n0\r\n\r\n")
    assert (response.status_code, answer) == (200, b'{"received_bytes":5}\n')
    assert not response.should_close()


@pytest.mark.parametrize("path", ["/healthz", "/missing"])
def test_security_headers_are_on_every_response(client, security_headers, path):
    response = client.get(path)
    for header, value in security_headers.items():
        assert response.headers[header] == value


def test_hsts_is_sent_over_https_only(client):
    assert client.get("/healthz", base_url="https://localhost").headers["Strict-Transport-Security"] == HSTS
    assert "Strict-Transport-Security" not in client.get("/healthz").headers


def test_the_content_security_policy_is_the_api_one_unless_the_app_sets_its_own():
    assert skeleton.API_CONTENT_SECURITY_POLICY == API_CONTENT_SECURITY_POLICY
    api = skeleton.init_app(Flask("api"))
    assert api.test_client().get("/healthz").headers["Content-Security-Policy"] == API_CONTENT_SECURITY_POLICY


def test_an_apps_content_security_policy_setting_reaches_the_header():
    """What an app that serves HTML sets, before or after init_app: its own pages' files may load."""
    html = "default-src 'none'; style-src 'self'; img-src 'self'; script-src 'self'; font-src 'self'"
    set_before = Flask("before")
    set_before.config["CONTENT_SECURITY_POLICY"] = html
    set_after = skeleton.init_app(Flask("after"))
    set_after.config["CONTENT_SECURITY_POLICY"] = html
    for app in (skeleton.init_app(set_before), set_after):
        assert app.test_client().get("/missing").headers["Content-Security-Policy"] == html


@pytest.fixture
def reload_settings(monkeypatch):
    """Reload settings under a changed environment; restore the defaults afterwards."""
    yield lambda: importlib.reload(settings)
    monkeypatch.undo()
    importlib.reload(settings)


def test_settings_default_to_port_8080(reload_settings, monkeypatch):
    monkeypatch.delenv("PORT", raising=False)
    assert reload_settings().PORT == 8080


def test_settings_read_the_environment(reload_settings, monkeypatch):
    monkeypatch.setenv("PORT", "9000")
    monkeypatch.setenv("WEB_CONCURRENCY", "3")
    reloaded = reload_settings()
    assert (reloaded.PORT, reloaded.WEB_CONCURRENCY) == (9000, 3)


@pytest.mark.parametrize(("value", "message"), [("abc", "whole number"), ("0", "at least 1")])
def test_bad_setting_stops_with_a_sentence_naming_it(reload_settings, monkeypatch, value, message):
    monkeypatch.setenv("PORT", value)
    with pytest.raises(SystemExit, match=f"PORT must be .*{message}"):
        reload_settings()
