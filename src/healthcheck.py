"""Container health check: exit 0 when GET /healthz answers 200, 1 otherwise.

Run as `python healthcheck.py` by the images' HEALTHCHECK, so that no image needs curl or a shell.
"""

import http.client
import sys

import settings


def healthy(host: str = "127.0.0.1", port: int = settings.PORT, timeout: float = 2.0) -> bool:
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", "/healthz")
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


if __name__ == "__main__":
    sys.exit(0 if healthy() else 1)
