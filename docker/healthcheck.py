"""Docker HEALTHCHECK: exit 0 when /health/ready answers 200 (no curl in slim images)."""

import os
import sys
import urllib.request

port = os.environ.get("BEHAVIORLM_PORT", "8000")
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=4) as r:
        sys.exit(0 if r.status == 200 else 1)
except Exception:
    sys.exit(1)
