"""gunicorn's configuration file and the health check script, checked without Docker."""

import runpy
from pathlib import Path

import pytest
from docker_tools import free_port
from gunicorn.config import Config

import healthcheck

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def gunicorn_settings():
    """The names gunicorn.conf.py defines, as gunicorn would read them."""
    names = runpy.run_path(str(ROOT / "src" / "gunicorn.conf.py"))
    return {name: value for name, value in names.items() if not name.startswith("__") and name != "settings"}


def test_every_name_in_gunicorn_conf_is_a_gunicorn_setting(gunicorn_settings):
    config = Config()
    for name, value in gunicorn_settings.items():
        assert name in config.settings, f"gunicorn has no setting {name!r}"
        config.set(name, value)


def test_gunicorn_binds_all_interfaces_on_port_8080(gunicorn_settings):
    assert gunicorn_settings["bind"] == "0.0.0.0:8080"


def test_gunicorn_works_on_a_read_only_root(gunicorn_settings):
    assert gunicorn_settings["worker_tmp_dir"] == "/dev/shm"
    assert gunicorn_settings["control_socket_disable"] is True


def test_gunicorn_logs_to_stdout_and_never_restarts_its_one_worker_for_a_request_count(gunicorn_settings):
    assert gunicorn_settings["accesslog"] == gunicorn_settings["errorlog"] == "-"
    assert gunicorn_settings["workers"] == 1
    assert gunicorn_settings["max_requests"] == 0
    assert 0 < gunicorn_settings["graceful_timeout"] <= gunicorn_settings["timeout"]


def test_healthcheck_passes_when_healthz_answers(local_server):
    assert healthcheck.healthy(port=local_server)


def test_healthcheck_fails_when_nothing_listens():
    assert not healthcheck.healthy(port=free_port())
