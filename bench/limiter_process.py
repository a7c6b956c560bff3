"""One counting process of ``bench.limiter``: its own ``Limiter``, one limit, a time span.

    python -m bench.limiter_process KEY RATE GO PAUSE READY

Once connected it creates the file READY and waits for the file GO, which holds START and END
(epoch seconds). It counts a request against the limit every PAUSE seconds from START to END and
prints, as JSON, the requests admitted per window (the window the call started in, as the
limiter's) and the requests sent.
"""

import json
import sys
import time
from collections import Counter
from pathlib import Path

import django


def main() -> None:
    """Count from START to END; print what was admitted per window."""
    key, rate, go, pause, ready = sys.argv[1:6]
    django.setup()
    from tenants.ratelimit import Limit, limiter, parse_rate

    parsed = parse_rate(rate)
    limit = Limit("subject", f"bench-limiter-{key}", parsed)
    limiter.count([Limit("subject", f"bench-limiter-warm-up-{key}", parsed)])  # connected
    Path(ready).touch()
    while not Path(go).exists():
        time.sleep(0.01)
    start, end = Path(go).read_text().split()
    time.sleep(max(0.0, float(start) - time.time()))
    admitted: Counter[int] = Counter()
    sent = 0
    while (now := time.time()) < float(end):
        verdicts = limiter.count([limit])
        sent += 1
        if verdicts is None or verdicts[0].allowed:  # no verdict: the API would serve it
            admitted[int(now // parsed.seconds)] += 1
        time.sleep(float(pause))
    print(json.dumps({"admitted": admitted, "sent": sent}))


if __name__ == "__main__":
    main()
