"""Retry and poll policy, passed in rather than hidden in the code.

Real creates take minutes, so the defaults are patient; tests build a policy with
zero intervals and the same code runs in milliseconds. ``sleep`` and ``clock``
are the only ways provisioning waits or reads time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from forge_ci.config.provision import ProvisionWait

_BACKOFF_CAP = 60.0


@dataclass(frozen=True)
class ProvisionPolicy:
    poll_interval: float = 2.0
    action_timeout: float = 600.0
    boot_timeout: float = 1800.0
    api_retries: int = 5
    api_backoff: float = 1.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)

    @classmethod
    def from_config(cls, wait: ProvisionWait) -> ProvisionPolicy:
        return cls(poll_interval=wait.poll_interval, action_timeout=wait.action_timeout,
                   boot_timeout=wait.boot_timeout, api_retries=wait.api_retries,
                   api_backoff=wait.api_backoff)

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based): doubling, capped."""
        return float(min(_BACKOFF_CAP, self.api_backoff * (2**attempt)))

    def deadline(self, seconds: float) -> Deadline:
        return Deadline(self, self.clock() + seconds)


@dataclass(frozen=True)
class Deadline:
    """A point in time on the policy's clock; :meth:`wait` sleeps one poll interval."""

    policy: ProvisionPolicy
    at: float

    @property
    def passed(self) -> bool:
        return self.policy.clock() >= self.at

    def wait(self) -> None:
        remaining = max(0.0, self.at - self.policy.clock())
        self.policy.sleep(min(self.policy.poll_interval, remaining))
