"""The test helpers of tests/processes.py: a claim with a number in it fails when it is late."""

import time

import pytest

from tests.processes import Answer, Web


class ScriptedWeb(Web):
    """Two workers whose rounds take ``round_seconds`` and pass from ``passing_after`` on."""

    def __init__(self, round_seconds: float, passing_after: float) -> None:
        super().__init__("http://unused", access_log=None)
        self.round_seconds = round_seconds
        self.passing_from = time.monotonic() + passing_after

    def everyone(self, path: str, **request: object) -> list[Answer]:
        """One round: both workers answer 200 once the time has come, 404 before."""
        time.sleep(self.round_seconds)
        status = 200 if time.monotonic() >= self.passing_from else 404
        return [Answer(pid, status, None, "", self.round_seconds) for pid in (1, 2)]


def ok(answer: Answer) -> bool:
    """A 200."""
    return answer.status == 200


def test_until_returns_the_seconds_of_a_round_that_passed_in_time():
    web = ScriptedWeb(round_seconds=0.05, passing_after=0.3)

    elapsed = web.until(ok, "/", within=2)

    assert 0.3 <= elapsed < 2


def test_until_fails_a_round_that_passed_only_after_within():
    web = ScriptedWeb(round_seconds=0.6, passing_after=0.9)  # passes in the round ending at 1.2

    with pytest.raises(pytest.fail.Exception, match=r"Passed only after 1\.\d s > 1 s"):
        web.until(ok, "/", within=1)


def test_until_fails_when_no_round_passes_within():
    web = ScriptedWeb(round_seconds=0.1, passing_after=60)

    with pytest.raises(pytest.fail.Exception, match=r"Still failing after 0\.\d s > 0\.5 s"):
        web.until(ok, "/", within=0.5)
