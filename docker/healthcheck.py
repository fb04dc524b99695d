"""Container health check without curl: ``healthcheck.py http URL`` (2xx), ``https URL CAFILE``
(2xx over TLS, the server's certificate verified against CAFILE) or ``tcp HOST PORT``.

Exit 0 when healthy, 1 otherwise (Docker's HEALTHCHECK contract). Standard library only.
"""

from __future__ import annotations

import socket
import ssl
import sys
import urllib.error
import urllib.request


def main(argv: list[str]) -> int:
    try:
        if len(argv) == 2 and argv[0] == "http":
            with urllib.request.urlopen(argv[1], timeout=4) as reply:
                return 0 if 200 <= reply.status < 300 else 1
        if len(argv) == 3 and argv[0] == "https":
            context = ssl.create_default_context(cafile=argv[2])
            with urllib.request.urlopen(argv[1], timeout=4, context=context) as reply:
                return 0 if 200 <= reply.status < 300 else 1
        if len(argv) == 3 and argv[0] == "tcp":
            with socket.create_connection((argv[1], int(argv[2])), timeout=4):
                return 0
    except (OSError, urllib.error.URLError, ValueError):
        return 1
    print("usage: healthcheck.py http URL | https URL CAFILE | tcp HOST PORT", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
