"""A bounded HTTP client for the demo: one new connection per request, one line per result.

Run inside the demo's client namespace:
    python -m tests.demo_client URL INTERVAL_S DURATION_S
Prints ``<monotonic> ok <body>`` or ``<monotonic> fail <reason>`` per request,
then stops by itself after DURATION_S.
"""

from __future__ import annotations

import sys
import time
import urllib.error
import urllib.request


def main() -> int:
    url, interval, duration = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    end = time.monotonic() + duration
    next_at = time.monotonic()
    while time.monotonic() < end:
        start = time.monotonic()
        try:
            with urllib.request.urlopen(url, timeout=0.25) as resp:
                body = resp.read().decode().strip()
            print(f"{start:.4f} ok {body}", flush=True)
        except (OSError, urllib.error.URLError) as exc:
            reason = getattr(exc, "reason", exc)
            print(f"{start:.4f} fail {reason}", flush=True)
        next_at += interval
        time.sleep(max(0.0, next_at - time.monotonic()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
