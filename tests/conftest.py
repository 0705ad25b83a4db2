"""Shared set-up: the project root on sys.path, so tests import the app as gunicorn does."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
