"""A copy of the project reshaped as Flask's tutorial shapes an app, for the tests and for
`make test-template-copy`: a package with a create_app() factory, a blueprint with templates and
static files, Flask-SQLAlchemy on SQLite under /tmp, the sample app removed, and the entry point
changed in its one place, project.env. Like a copy copier makes, it has neither the template's own
files nor its lesson. It works on a scratch copy of whatever project runs it, a copy made with
copier too, and adds only the dependencies that project does not pin already.

`python tests/factory_copy.py FOLDER` makes the copy in FOLDER, which must not exist yet.
"""

import base64
import re
import sys
from pathlib import Path

from bench import copy_context

# The dependencies it adds, pinned as the docs ask, each unless the project already names it in
# requirements.in (whose pin then stands): SQLAlchemy's bytecode is what once made two builds of the
# same copy differ.
REQUIREMENTS = {"flask-sqlalchemy": "Flask-SQLAlchemy==3.1.1", "sqlalchemy": "SQLAlchemy==2.0.44"}
# What an app that serves HTML sets: its own pages' styles, images, scripts and fonts may load.
HTML_CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self'; script-src 'self'; font-src 'self'; frame-ancestors 'none'"
)
# A one-pixel PNG, and the first bytes of a WOFF2 font: what the static folder serves.
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII=")
STATIC = {
    "style.css": b"body { font-family: Inter, sans-serif; }\n",
    "app.js": b"document.documentElement.dataset.ready = 'yes';\n",
    "logo.png": PNG,
    "inter.woff2": b"wOF2" + bytes(60),
    "icon.svg": b'<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"/>\n',
}
FILES = {
    "src/acme/__init__.py": f'''"""Acme, a service shaped as Flask's tutorial shapes one: an application factory."""

from flask import Flask

import skeleton
from acme.db import db


def create_app() -> Flask:
    app = Flask(__name__)
    app.config.update(
        # /tmp is the one writable place under a read-only root, and a tmpfs: lost when the
        # container stops. A database that must last lives on a volume or a server.
        SQLALCHEMY_DATABASE_URI="sqlite:////tmp/acme.sqlite3",
        CONTENT_SECURITY_POLICY="{HTML_CONTENT_SECURITY_POLICY}",
    )
    skeleton.init_app(app)
    db.init_app(app)
    from acme.pages import pages

    app.register_blueprint(pages)
    with app.app_context():
        db.create_all()
    return app
''',
    "src/acme/db.py": '''"""The database and its one table."""

from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import Mapped, mapped_column

db = SQLAlchemy()


class Note(db.Model):
    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str]
''',
    "src/acme/pages/__init__.py": '''"""The pages: HTML from templates, static files, and notes kept in the database."""

from flask import Blueprint, jsonify, render_template, request

from acme.db import Note, db

# Its own URL for its static files: the app's /static route, there even without a folder, comes first.
pages = Blueprint("pages", __name__, template_folder="templates", static_folder="static", static_url_path="/assets")


@pages.get("/")
def home():
    return render_template("home.html", notes=db.session.scalars(db.select(Note)).all())


@pages.post("/notes")
def add_note():
    db.session.add(Note(text=request.get_json()["text"]))
    db.session.commit()
    return jsonify(notes=db.session.scalar(db.select(db.func.count(Note.id)))), 201
''',
    "src/acme/pages/templates/base.html": """<!doctype html>
<html lang="en">
<head>
  <title>{% block title %}Acme{% endblock %}</title>
  <link rel="stylesheet" href="{{ url_for('pages.static', filename='style.css') }}">
  <link rel="icon" href="{{ url_for('pages.static', filename='icon.svg') }}">
  <script src="{{ url_for('pages.static', filename='app.js') }}" defer></script>
</head>
<body>{% block content %}{% endblock %}</body>
</html>
""",
    "src/acme/pages/templates/home.html": """{% extends "base.html" %}
{% block content %}
<img src="{{ url_for('pages.static', filename='logo.png') }}" alt="Acme">
<ul>{% for note in notes %}<li>{{ note.text }}</li>{% endfor %}</ul>
{% endblock %}
""",
    "tests/test_sample_app.py": '''"""Acme's own tests, in the place of the sample's."""

import pytest

pytestmark = pytest.mark.unit


def test_home_page_links_its_stylesheet(app):
    page = app.test_client().get("/")
    assert page.status_code == 200
    assert b"/assets/style.css" in page.data
''',
}


# What copier reads or renders and never copies as it is, and the template's tests of itself
# (copier.yml's _exclude says why): a copy of the folder leaves them out too, as the docs say.
TEMPLATE_ONLY = frozenset(
    {
        "copier.yml",
        "project.env.jinja",
        "README.md.jinja",
        "{{ _copier_conf.answers_file }}.jinja",
        "tests/test_template.py",
    }
)
# The lesson, which stays in the template: naive and slim, the script that measures each practice,
# the peer bench measures beside the images, the tests that hold them, and the documentation site, docs/.
LESSON = frozenset(
    {
        "Dockerfile.naive",
        "Dockerfile.slim",
        "scripts/4-measure/lessons.py",
        "scripts/4-measure/peer/Dockerfile",
        "tests/structure-naive.yaml",
        "tests/structure-slim.yaml",
        "tests/test_basics.py",
        "tests/test_docs_site.py",
        "tests/test_lessons.py",
        "tests/test_peer.py",
        "tests/test_docs.py",
    }
)


def left_out(name: str) -> bool:
    """Whether a file of the template, by its path relative to it, stays out of a copy."""
    return name in TEMPLATE_ONLY or name in LESSON or name.startswith("docs/")


def requirement_name(line: str) -> str:
    """The normalized name a requirements line pins (PEP 503), or "" for a comment or a blank line."""
    match = re.match(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)", line)
    return re.sub(r"[-_.]+", "-", match.group(1)).lower() if match else ""


def make_factory_copy(destination: Path) -> Path:
    """Copy the project to destination and reshape it; return destination. Run `make lock` in it next."""
    copy = copy_context(destination)
    for path in [path for path in copy.rglob("*") if path.is_file()]:
        if left_out(path.relative_to(copy).as_posix()):
            path.unlink()
    (copy / "src/app.py").unlink(missing_ok=True)
    for name, text in FILES.items():
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        (copy / name).write_text(text)
    for name, content in STATIC.items():
        (copy / "src/acme/pages/static").mkdir(parents=True, exist_ok=True)
        (copy / "src/acme/pages/static" / name).write_bytes(content)
    env = copy / "project.env"
    env.write_text(re.sub(r"^WSGI_APP=.*$", "WSGI_APP=acme:create_app()", env.read_text(), flags=re.MULTILINE))
    add_requirements(copy / "requirements.in")
    return copy


def add_requirements(requirements_in: Path) -> None:
    """Append to a requirements.in each of REQUIREMENTS it does not name already: a project that pins
    SQLAlchemy keeps its own pin, which `make lock` could not reconcile with a second one."""
    pinned = {requirement_name(line) for line in requirements_in.read_text().splitlines()}
    with requirements_in.open("a") as requirements:
        requirements.writelines(f"{line}\n" for name, line in REQUIREMENTS.items() if name not in pinned)


if __name__ == "__main__":
    destination = Path(sys.argv[1])
    if destination.exists():
        sys.exit(f"{destination} exists already: name a folder that does not.")
    print(make_factory_copy(destination))
