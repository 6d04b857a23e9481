"""``python -m service.healthcheck``: exit 0 when the local server is ready (the container's HEALTHCHECK)."""

from __future__ import annotations

import sys
import urllib.request

from service.settings import Settings


def main() -> int:
    """Ask /readyz on TSC_PORT over loopback; 0 when it answers 200, 1 otherwise."""
    url = f"http://127.0.0.1:{Settings().port}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return 0 if response.status == 200 else 1
    except OSError:
        return 1


if __name__ == "__main__":
    sys.exit(main())
