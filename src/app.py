"""The Flask application: a greeting, a health check and production-grade defaults.

`python src/app.py` runs Flask's development server (what the naive image does); the production
and secure images serve the same `app` object with gunicorn (see gunicorn.conf.py).
"""

from flask import Flask, jsonify, request
from gunicorn.http.errors import ParseException
from werkzeug.exceptions import BadRequest, ClientDisconnected, HTTPException, RequestEntityTooLarge

import settings

app = Flask(__name__)
app.config.update(MAX_CONTENT_LENGTH=settings.MAX_CONTENT_LENGTH)

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
}


@app.get("/")
def index():
    return jsonify(message="Hello from flask-app!")


@app.get("/healthz")
def healthz():
    return jsonify(status="ok")


@app.post("/echo")
def echo():
    """Count the bytes of a request body: the route that shows the body limit at work."""
    return jsonify(received_bytes=len(request.get_data()))


@app.before_request
def refuse_large_bodies():
    # Werkzeug enforces the limit only when a route reads the body; refuse by the declared
    # length up front, so that no route has to remember to.
    if (request.content_length or 0) > settings.MAX_CONTENT_LENGTH:
        raise RequestEntityTooLarge()


# Sent only over HTTPS, as the HSTS specification requires. Behind a TLS-terminating proxy, gunicorn
# reports HTTPS only when X-Forwarded-Proto comes from an address in FORWARDED_ALLOW_IPS.
HSTS = "max-age=31536000; includeSubDomains"


@app.after_request
def add_security_headers(response):
    response.headers.update(SECURITY_HEADERS)
    if request.is_secure:
        response.headers["Strict-Transport-Security"] = HSTS
    return response


@app.errorhandler(HTTPException)
def http_error_as_json(error: HTTPException):
    """Answer every HTTP error, 500 included, with a short JSON body and never a traceback."""
    response = jsonify(error=error.name, status=error.code)
    response.status_code = error.code
    return response


# gunicorn parses a request's body only as a route reads it, so its parser's complaints (a chunk
# size that is not hex, a chunk without its CRLF, a bad trailer) are raised inside the route, where
# they would be logged with a traceback and answered 500. Werkzeug's development server never raises
# them; gunicorn is installed in every image all the same.
@app.errorhandler(ParseException)
def body_the_parser_rejects(error: ParseException):
    return refuse_malformed_body(str(error))


# How Werkzeug reports a body that stops before its end (under gunicorn, a chunked body without its
# last chunk) and, under its development server, any body it cannot read.
@app.errorhandler(ClientDisconnected)
def body_cut_short(error: ClientDisconnected):
    return refuse_malformed_body("it ended early or could not be read")


def refuse_malformed_body(reason: str):
    """Answer a malformed body with 400 and close the connection: its next bytes can no longer be
    told apart from the next request. The client is at fault, so one line at WARNING, no traceback."""
    app.logger.warning("Malformed request body from %s: %s", request.remote_addr, reason)
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


if __name__ == "__main__":
    # debug=False overrides FLASK_DEBUG and .env files: the debugger runs any code a visitor sends.
    app.run(host="0.0.0.0", port=settings.PORT, debug=False, load_dotenv=False)
