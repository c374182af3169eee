"""Telling people what happened: Slack, Discord, Teams, a signed webhook, e-mail.

- :mod:`~forge_ci.notify.events`: the closed set of event names and :class:`Event`;
- :mod:`~forge_ci.notify.config`: the ``notify:`` entries of forge.yml and
  :func:`build_notifiers`;
- :mod:`~forge_ci.notify.base`: the :class:`Notifier` seam (one attempt, never
  raises, no secret in its results) and the :class:`Dispatcher` (filter, retry,
  warn, never fail the caller);
- :mod:`~forge_ci.notify.http` and :mod:`~forge_ci.notify.email`: the senders;
- :mod:`~forge_ci.notify.hooks`: what the CLI sends after each verb (imported by the
  entry point only, as it needs a command's context).
"""

from forge_ci.notify.base import Delivery, Dispatcher, Notifier, Outcome, RetryPolicy, Route
from forge_ci.notify.config import NotifyTarget, build_notifiers, parse_targets
from forge_ci.notify.events import EVENTS, GROUPS, Event, Severity, github_context

__all__ = [
    "EVENTS",
    "GROUPS",
    "Delivery",
    "Dispatcher",
    "Event",
    "Notifier",
    "NotifyTarget",
    "Outcome",
    "RetryPolicy",
    "Route",
    "Severity",
    "build_notifiers",
    "github_context",
    "parse_targets",
]
