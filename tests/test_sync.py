"""The background threads' beat: rounds start every recheck interval, whatever a round costs."""

import os
import threading
import time
from itertools import pairwise

from tenants.sync import BackgroundSync

INTERVAL = 0.4
ROUND_COST = 0.25


def test_a_slow_round_does_not_push_the_next_one_back(settings) -> None:
    settings.AUTHZ = {**getattr(settings, "AUTHZ", {}), "CONFIG_RECHECK_INTERVAL": INTERVAL}
    beat, starts = BackgroundSync(), []
    beat._pid = os.getpid()

    def slow_round() -> None:
        starts.append(time.monotonic())
        time.sleep(ROUND_COST)
        if len(starts) == 5:
            beat._pid = None  # the loop ends after this round

    thread = threading.Thread(target=beat._every_recheck, args=(slow_round,), daemon=True)
    thread.start()
    thread.join(timeout=10)

    assert not thread.is_alive()
    gaps = [later - earlier for earlier, later in pairwise(starts)]
    # An interval after a round would make each gap INTERVAL + ROUND_COST (0.65 s).
    assert max(gaps) < INTERVAL + ROUND_COST / 2, gaps
    assert min(gaps) > INTERVAL - 0.05, gaps


def test_a_round_longer_than_the_interval_is_followed_at_once_and_not_made_up(settings) -> None:
    settings.AUTHZ = {**getattr(settings, "AUTHZ", {}), "CONFIG_RECHECK_INTERVAL": 0.1}
    beat, starts = BackgroundSync(), []
    beat._pid = os.getpid()

    def round_() -> None:
        starts.append(time.monotonic())
        time.sleep(0.35 if len(starts) == 1 else 0)  # the first round overruns three beats
        if len(starts) == 3:
            beat._pid = None

    thread = threading.Thread(target=beat._every_recheck, args=(round_,), daemon=True)
    thread.start()
    thread.join(timeout=10)

    first_gap, second_gap = starts[1] - starts[0], starts[2] - starts[1]
    assert first_gap < 0.35 + 0.08, starts  # at once after the overrun
    assert second_gap > 0.1 - 0.03, starts  # then the beat again, no burst of missed rounds
