"""The deployment tests reuse the service tests' helpers (``servicetools``, ``test_service_server``)."""

from __future__ import annotations

import sys
from pathlib import Path

# tests/service is no package: its conftest.py puts the folder on sys.path; do the same when only
# tests/deploy is collected (an entry already there, from that conftest, is kept as it is)
SERVICE_TESTS = str(Path(__file__).resolve().parents[1] / "service")
if SERVICE_TESTS not in sys.path:
    sys.path.insert(0, SERVICE_TESTS)
