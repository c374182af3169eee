"""What an HTTP API client needs from the retry and poll policy, as a protocol.

The panel clients (:mod:`forge_ci.provision.cyberpanel.api`,
:mod:`forge_ci.provision.cpanel.api`) take any object of this shape, so they
depend on what they use, not on the policy class's name or module
(:class:`forge_ci.provision.policy.Policy` has it; tests pass zero intervals).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class Deadline(Protocol):
    @property
    def passed(self) -> bool:
        """True once the time limit is reached."""
        ...

    def wait(self) -> None:
        """Sleep one poll interval (never past the limit)."""
        ...


class RetryPolicy(Protocol):
    @property
    def action_timeout(self) -> float:
        """Seconds a long job (a website being created) may take."""
        ...

    @property
    def api_retries(self) -> int:
        """How many times a request is repeated after a network error or a 5xx."""
        ...

    @property
    def sleep(self) -> Callable[[float], None]:
        ...

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based)."""
        ...

    def deadline(self, seconds: float) -> Deadline:
        ...
