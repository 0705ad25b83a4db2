"""The sample app's own routes and the limits its images keep: replace these with your own.

Everything else under tests/ tests what a service built on this template keeps, whatever its code.
"""

import compare
import pytest
from containers import VARIANTS, inspect, running
from docker_tools import MB


@pytest.mark.unit
def test_root_greets(client):
    response = client.get("/")
    assert response.status_code == 200
    assert response.get_json() == {"message": "Hello, World!"}


@pytest.mark.unit
def test_echo_counts_the_body(client):
    assert client.post("/echo", data=b"x" * 1000).get_json() == {"received_bytes": 1000}


@pytest.mark.integration
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_image_greets(images, variant):
    with running(images[variant]) as container:
        assert container.get("/").json() == {"message": "Hello, World!"}


@pytest.mark.integration
@pytest.mark.docker
def test_the_samples_secure_image_is_at_most_45_mb_and_18_mb_compressed(images):
    """42.1 MB and 16.6 MB as measured; gevent, greenlet, zope.interface and libstdc++ are 6.2 and 2.3 MB of it.
    Docker's size: Podman counts the layers' tar streams, headers and all (1.3 MB more here)."""
    assert inspect(images["secure"])["Size"] <= 45 * MB
    assert compare.compressed_size(images["secure"]) <= 18 * MB
