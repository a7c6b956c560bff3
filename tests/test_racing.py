"""The loopback gate of tests/racing.py: racers start together, and a missing racer fails."""

import subprocess
import sys

import pytest

from tests.racing import gate, intervals, most_at_once
from tests.test_e2e import ROOT

RACER = """
import time
from tests.racing import report, wait_at_gate
started = wait_at_gate()
time.sleep(0.2)
report(started)
"""


def racer(environment: dict[str, str]) -> subprocess.Popen:
    """A plain Python process that races for 0.2 s once the gate opens."""
    command = [sys.executable, "-c", RACER]
    return subprocess.Popen(command, cwd=ROOT, env=environment, stdout=subprocess.PIPE, text=True)


def test_racers_released_by_the_gate_overlap():
    with gate(3) as opened:
        racers = [racer(opened) for _ in range(3)]
        spans = [intervals(racer.communicate(timeout=60)[0]) for racer in racers]

    assert most_at_once(spans) == 3


def test_a_gate_that_not_every_racer_reached_fails_and_lets_the_others_go():
    missing = pytest.raises(pytest.fail.Exception, match="only 1 of 2 racers reached the gate")
    with missing, gate(2, timeout=2) as opened:
        lonely = racer(opened)
        lonely.communicate(timeout=60)

    assert lonely.returncode != 0  # it was told the race is off, not left waiting


@pytest.mark.parametrize(
    ("spans", "most"),
    [
        ([(0, 1), (2, 3)], 1),
        ([(0, 1), (1, 2)], 1),  # touching is not overlapping
        ([(0, 2), (1, 3), (1.5, 1.6)], 3),
        ([(0, 10), (1, 2), (3, 4)], 2),
    ],
)
def test_most_at_once_counts_the_spans_that_share_a_moment(spans, most):
    assert most_at_once(spans) == most
