"""The sample app: a greeting and a route that reads a body, on the template's skeleton.

The images serve it with gunicorn, through WSGI_APP in project.env (app:app). `python src/app.py`
runs Flask's development server, for a quick look on the host.
"""

from flask import Flask, jsonify, request

import settings
import skeleton

app = skeleton.init_app(Flask(__name__))


@app.get("/")
def index():
    return jsonify(message="Hello, World!")


@app.post("/echo")
def echo():
    """Count the bytes of a request body: the route that shows the body limit at work."""
    return jsonify(received_bytes=len(request.get_data()))


if __name__ == "__main__":
    # debug=False overrides FLASK_DEBUG and .env files: the debugger runs any code a visitor sends.
    app.run(host="0.0.0.0", port=settings.PORT, debug=False, load_dotenv=False)
