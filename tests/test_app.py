"""What an app built on this template keeps, through Flask's test client: the health route, JSON
errors, the body limit, security headers, debug off and settings from the environment.

The sample app's own routes are tested in test_sample_app.py."""

import importlib

import pytest
from containers import HSTS, SECURITY_HEADERS

import app as app_module
import settings

pytestmark = pytest.mark.unit


@pytest.fixture
def client():
    """A test client of the app as configured by default."""
    return app_module.app.test_client()


def test_healthz_answers_ok_in_json(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_debug_mode_is_off():
    assert app_module.app.debug is False


@pytest.mark.parametrize(
    ("method", "path", "status", "name"),
    [("GET", "/missing", 404, "Not Found"), ("POST", "/healthz", 405, "Method Not Allowed")],
)
def test_http_errors_are_json_without_traceback(client, method, path, status, name):
    response = client.open(path, method=method)
    assert response.status_code == status
    assert response.get_json() == {"error": name, "status": status}
    assert b"Traceback" not in response.data


def test_body_over_the_limit_is_refused_with_413(client):
    response = client.post("/echo", data=b"x" * (settings.MAX_CONTENT_LENGTH + 1))
    assert response.status_code == 413
    assert response.get_json() == {"error": "Request Entity Too Large", "status": 413}


def test_declared_length_over_the_limit_is_refused_on_any_route(client):
    declared = {"CONTENT_LENGTH": str(settings.MAX_CONTENT_LENGTH + 1)}
    response = client.get("/healthz", environ_overrides=declared)
    assert response.status_code == 413


def test_unhandled_exception_becomes_json_500_without_traceback(client, monkeypatch):
    def broken():
        raise RuntimeError("secret internal detail")

    monkeypatch.setitem(app_module.app.view_functions, "healthz", broken)
    response = client.get("/healthz")
    assert response.status_code == 500
    assert response.get_json() == {"error": "Internal Server Error", "status": 500}
    assert b"secret internal detail" not in response.data
    assert b"Traceback" not in response.data


@pytest.mark.parametrize("path", ["/", "/healthz", "/missing"])
def test_security_headers_are_on_every_response(client, path):
    response = client.get(path)
    for header, value in SECURITY_HEADERS.items():
        assert response.headers[header] == value


def test_hsts_is_sent_over_https_only(client):
    assert client.get("/", base_url="https://localhost").headers["Strict-Transport-Security"] == HSTS
    assert "Strict-Transport-Security" not in client.get("/").headers


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
