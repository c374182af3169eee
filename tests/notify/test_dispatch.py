"""The dispatcher's promises, with notifiers written against the seam: retry what may
succeed, stop on what will not, warn once per failed target, never raise, and never
repeat an exception's text (which may quote a URL)."""

from __future__ import annotations

import pytest

from forge_ci.notify import Delivery, Dispatcher, Event, RetryPolicy, Route

EVENT = Event.create("backup.failed", environment="production", summary="dump failed",
                     environ={})


class Scripted:
    """Answers attempts from a script; records how many it got."""

    def __init__(self, *answers: Delivery, label: str = "notify[0] (test, example.com)") -> None:
        self.answers = list(answers)
        self.calls = 0
        self._label = label

    @property
    def label(self) -> str:
        return self._label

    def send(self, event: Event, timeout: float) -> Delivery:
        self.calls += 1
        return self.answers.pop(0)


class Raising:
    label = "notify[1] (plugin, example.com)"

    def send(self, event: Event, timeout: float) -> Delivery:
        raise RuntimeError("POST https://hooks.example.com/T0/B0/very-secret-token failed")


FLAKY = Delivery.failed("the receiver answered HTTP 503", retryable=True)
FINAL = Delivery.failed("the receiver answered HTTP 400", retryable=False)


def test_retries_until_delivered() -> None:
    notifier = Scripted(FLAKY, FLAKY, Delivery(ok=True))
    warnings: list[str] = []
    (outcome,) = Dispatcher([Route(notifier)], RetryPolicy(attempts=5, backoff=0),
                            warnings.append).notify(EVENT)
    assert (outcome.delivered, outcome.attempts, notifier.calls) == (True, 3, 3)
    assert warnings == []


def test_a_final_answer_is_not_retried() -> None:
    notifier = Scripted(FINAL)
    warnings: list[str] = []
    (outcome,) = Dispatcher([Route(notifier)], RetryPolicy(backoff=0), warnings.append
                            ).notify(EVENT)
    assert notifier.calls == 1 and not outcome.delivered
    assert warnings == ["notification backup.failed to notify[0] (test, example.com) not "
                        "delivered after 1 attempt: the receiver answered HTTP 400"]


def test_a_notifier_that_raises_is_contained_and_its_text_not_repeated() -> None:
    warnings: list[str] = []
    after = Scripted(Delivery(ok=True), label="notify[2] (test, example.org)")
    outcomes = Dispatcher([Route(Raising()), Route(after)], RetryPolicy(backoff=0),
                          warnings.append).notify(EVENT)
    assert [o.delivered for o in outcomes] == [False, True]
    assert warnings == ["notification backup.failed to notify[1] (plugin, example.com) not "
                        "delivered after 1 attempt: the notifier failed unexpectedly "
                        "(RuntimeError)"]


def test_a_broken_warn_callback_does_not_fail_the_caller() -> None:
    def warn(message: str) -> None:
        raise OSError("stderr closed")

    (outcome,) = Dispatcher([Route(Scripted(FINAL))], RetryPolicy(backoff=0), warn
                            ).notify(EVENT)
    assert not outcome.delivered


def test_only_matching_routes_are_tried() -> None:
    deploys, backups = Scripted(), Scripted(Delivery(ok=True))
    outcomes = Dispatcher([Route(deploys, ("deploy",)), Route(backups, ("backup.failed",))],
                          RetryPolicy(backoff=0), print).notify(EVENT)
    assert (deploys.calls, backups.calls, len(outcomes)) == (0, 1, 1)


def test_policy() -> None:
    policy = RetryPolicy(backoff=2.0, max_backoff=5.0)
    assert [policy.wait_before(n) for n in (1, 2, 3, 4)] == [2.0, 4.0, 5.0, 5.0]
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(timeout=0)
