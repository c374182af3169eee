"""The notifier seam and the dispatcher that drives it.

A :class:`Notifier` is one configured target (a Slack webhook, an SMTP server...).
Its contract:

- ``send(event, timeout)`` makes **one** delivery attempt and returns a
  :class:`Delivery`; it **never raises** (every failure, the unexpected ones too,
  becomes ``Delivery(ok=False, ...)``);
- it waits at most about ``timeout`` seconds per network operation;
- ``retryable`` says whether another attempt might succeed (a timeout, a refused
  connection, an HTTP 5xx or 429, an SMTP 4xx) or not (a 4xx answer, a refused
  login, a server without STARTTLS);
- the ``detail`` text and ``label`` **never contain a secret**: not the webhook
  URL (a chat webhook URL is a credential), the HMAC secret, the SMTP user or
  password, and not a library's exception text, which may quote the URL.

The :class:`Dispatcher` sends an event to every route whose ``events:`` filter
selects it, retries per the :class:`RetryPolicy` it is given, calls the ``warn``
callback once per target that still failed, and returns the outcomes. It never
raises either: a notification that cannot be delivered never fails the deploy,
backup or monitor run that sent it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from forge_ci.notify.events import Event, selects


@dataclass(frozen=True)
class Delivery:
    """The result of one attempt. ``detail`` is safe to show (no secret)."""

    ok: bool
    detail: str = "delivered"
    retryable: bool = False

    @classmethod
    def failed(cls, detail: str, *, retryable: bool) -> Delivery:
        return cls(ok=False, detail=detail, retryable=retryable)


class Notifier(Protocol):
    """One target. See the module docstring for the contract."""

    @property
    def label(self) -> str:
        """``notify[0] (slack, hooks.slack.com)``: place, type and host only."""
        ...

    def send(self, event: Event, timeout: float) -> Delivery: ...


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try: ``attempts`` in all, waiting ``backoff * 2**n`` seconds between
    them (capped at ``max_backoff``), ``timeout`` seconds per network operation.
    Tests pass ``backoff=0``."""

    attempts: int = 3
    backoff: float = 2.0
    max_backoff: float = 30.0
    timeout: float = 10.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.backoff < 0 or self.timeout <= 0:
            raise ValueError("attempts >= 1, backoff >= 0 and timeout > 0")

    def wait_before(self, retry: int) -> float:
        """Seconds before retry number ``retry`` (1 for the second attempt)."""
        return float(min(self.max_backoff, self.backoff * 2 ** (retry - 1)))


@dataclass(frozen=True)
class Route:
    """A notifier and the events it is told about (empty: all)."""

    notifier: Notifier
    events: tuple[str, ...] = ()


@dataclass(frozen=True)
class Outcome:
    """What happened to one event at one target, after retries."""

    target: str
    event: str
    delivered: bool
    attempts: int
    detail: str

    @property
    def warning(self) -> str:
        return (f"notification {self.event} to {self.target} not delivered after "
                f"{self.attempts} attempt{'s' if self.attempts != 1 else ''}: {self.detail}")


class Dispatcher:
    """Send events to every matching route; warn about, never raise on, failures."""

    def __init__(self, routes: Sequence[Route], policy: RetryPolicy,
                 warn: Callable[[str], None]) -> None:
        self._routes = tuple(routes)
        self._policy = policy
        self._warn = warn

    def notify(self, event: Event) -> list[Outcome]:
        outcomes = []
        for route in self._routes:
            if selects(route.events, event.name):
                outcomes.append(self._deliver(route.notifier, event))
        return outcomes

    def _deliver(self, notifier: Notifier, event: Event) -> Outcome:
        attempts = 0
        result = Delivery.failed("not attempted", retryable=False)
        while attempts < self._policy.attempts:
            if attempts:
                self._policy.sleep(self._policy.wait_before(attempts))
            attempts += 1
            result = _send_guarded(notifier, event, self._policy.timeout)
            if result.ok or not result.retryable:
                break
        outcome = Outcome(_label(notifier), event.name, result.ok, attempts, result.detail)
        if not result.ok:
            # A broken warn callback must not fail the caller either.
            with contextlib.suppress(Exception):
                self._warn(outcome.warning)
        return outcome


def _label(notifier: Notifier) -> str:
    try:
        return str(notifier.label)
    except Exception:
        return type(notifier).__name__


def _send_guarded(notifier: Notifier, event: Event, timeout: float) -> Delivery:
    # The contract says send never raises; a plugin may break it. The exception's
    # text may quote a URL, so only its type is reported.
    try:
        return notifier.send(event, timeout)
    except Exception as exc:
        return Delivery.failed(f"the notifier failed unexpectedly ({type(exc).__name__})",
                               retryable=False)
