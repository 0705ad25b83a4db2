"""What every app built on this template keeps, applied by one call: `skeleton.init_app(app)`.

The sample's module-level app makes the call, and so does a factory's create_app(), as Flask's
extensions are set up: the health route, the body limit, the security headers and errors answered
in JSON without a traceback, malformed bodies included.
"""

from flask import Flask, current_app, jsonify, request
from gunicorn.http.errors import ParseException
from werkzeug.exceptions import BadRequest, ClientDisconnected, HTTPException, RequestEntityTooLarge

import settings

# Right for a JSON API, which loads nothing: a page served under it can load no stylesheet, image,
# script or font. An app that serves HTML sets its own in app.config["CONTENT_SECURITY_POLICY"].
API_CONTENT_SECURITY_POLICY = "default-src 'none'; frame-ancestors 'none'"
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
# Sent only over HTTPS, as the HSTS specification requires. Behind a TLS-terminating proxy, gunicorn
# reports HTTPS only when X-Forwarded-Proto comes from an address in FORWARDED_ALLOW_IPS.
HSTS = "max-age=31536000; includeSubDomains"


def init_app(app: Flask) -> Flask:
    """Give app the skeleton; return it. Call it once, before the app serves its first request."""
    app.config.update(MAX_CONTENT_LENGTH=settings.MAX_CONTENT_LENGTH)
    app.config.setdefault("CONTENT_SECURITY_POLICY", API_CONTENT_SECURITY_POLICY)
    app.add_url_rule("/healthz", "healthz", healthz, methods=["GET"])
    app.before_request(refuse_large_bodies)
    app.after_request(add_security_headers)
    app.register_error_handler(HTTPException, http_error_as_json)
    app.register_error_handler(ParseException, body_the_parser_rejects)
    app.register_error_handler(ClientDisconnected, body_cut_short)
    return app


def healthz():
    """The route the health checks, the Kubernetes probes and the tests ask."""
    return jsonify(status="ok")


def refuse_large_bodies():
    # Werkzeug enforces the limit only when a route reads the body; refuse by the declared
    # length up front, so that no route has to remember to.
    if (request.content_length or 0) > settings.MAX_CONTENT_LENGTH:
        raise RequestEntityTooLarge()


def add_security_headers(response):
    response.headers.update(SECURITY_HEADERS)
    response.headers["Content-Security-Policy"] = current_app.config["CONTENT_SECURITY_POLICY"]
    if request.is_secure:
        response.headers["Strict-Transport-Security"] = HSTS
    return response


def http_error_as_json(error: HTTPException):
    """Answer every HTTP error, 500 included, with a short JSON body and never a traceback."""
    response = jsonify(error=error.name, status=error.code)
    response.status_code = error.code
    return response


# gunicorn parses a request's body only as a route reads it, so its parser's complaints (a chunk
# size that is not hex, a chunk without its CRLF, a bad trailer) are raised inside the route, where
# they would be logged with a traceback and answered 500. Werkzeug's development server never raises
# them; gunicorn is installed in every image all the same.
def body_the_parser_rejects(error: ParseException):
    return refuse_malformed_body(str(error))


# How Werkzeug reports a body that stops before its end (under gunicorn, a chunked body without its
# last chunk) and, under its development server, any body it cannot read.
def body_cut_short(error: ClientDisconnected):
    return refuse_malformed_body("it ended early or could not be read")


def refuse_malformed_body(reason: str):
    """Answer a malformed body with 400 and close the connection: its next bytes can no longer be
    told apart from the next request. The client is at fault, so one line at WARNING, no traceback."""
    current_app.logger.warning("Malformed request body from %s: %s", request.remote_addr, reason)
    close_connection()
    return http_error_as_json(BadRequest())


def close_connection() -> None:
    """Have gunicorn answer `Connection: close` and close the connection after this response.

    gunicorn writes the Connection header itself and drops one the app sets (PEP 3333 keeps
    hop-by-hop headers from apps); it obeys its request's force_close(), and a chunked body's reader
    holds that request. Elsewhere there is no such request, and nothing to do.
    """
    gunicorn_request = getattr(getattr(request.environ.get("wsgi.input"), "reader", None), "req", None)
    if gunicorn_request is not None:
        gunicorn_request.force_close()
