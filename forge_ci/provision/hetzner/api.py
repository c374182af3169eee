"""The hcloud client behind one narrow door: every call goes through :meth:`Api.call`.

That is where forge's retry policy applies (rate limits, conflicts, gateway
errors, network failures: backoff from the :class:`ProvisionPolicy`) and where hcloud's
exceptions become :mod:`forge_ci.provision.errors`. Actions are polled here,
against the policy's time limit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial
from typing import Any, TypeVar

import requests
from hcloud import APIException, Client
from hcloud.actions import BoundAction

from forge_ci import __version__
from forge_ci.provision.errors import (
    ProviderApiError,
    ProviderAuthError,
    ProviderUnavailable,
    ProvisionTimeout,
)
from forge_ci.provision.policy import ProvisionPolicy

DEFAULT_ENDPOINT = "https://api.hetzner.cloud/v1"
T = TypeVar("T")

# Codes worth the same request again after a pause (Hetzner's docs and hcloud agree).
_RETRY_CODES = frozenset({"rate_limit_exceeded", "conflict", "locked", "timeout", "bad_gateway",
                          "unavailable", "maintenance"})
_RETRY_STATUS = frozenset({500, 502, 503, 504})


def make_client(token: str, endpoint: str | None, *, timeout: float = 30.0) -> Client:
    """An hcloud client whose own retries are off, so :class:`Api` alone decides."""
    client = Client(token=token, api_endpoint=(endpoint or DEFAULT_ENDPOINT).rstrip("/"),
                    application_name="forge-ci", application_version=__version__,
                    timeout=timeout)
    # hcloud retries some requests itself (up to 5 times, exponential backoff of up to a
    # minute) and offers no public setting for it: its Client takes poll_interval,
    # poll_max_retries and timeout only (hcloud 2.27). forge's ProvisionPolicy is the
    # retry policy (Api.call), so hcloud's must be off, or a failing call would wait
    # minutes per forge attempt and tests could not pass zero. The only way is this
    # attribute; tests/provision/test_hetzner_api.py fails if it stops working.
    base = getattr(client, "_client", None)
    if base is not None and hasattr(base, "_retry_max_retries"):
        base._retry_max_retries = 0
    return client


class Api:
    """An hcloud :class:`Client` plus the policy for retries and polling."""

    def __init__(self, client: Client, policy: ProvisionPolicy, *, endpoint: str | None = None,
                 log: Callable[[str], None] = lambda _msg: None) -> None:
        self.client = client
        self.policy = policy
        self.endpoint = endpoint or DEFAULT_ENDPOINT
        self.log = log

    def call(self, what: str, fn: Callable[[], T]) -> T:
        """Run ``fn`` (one API request) with retries; ``what`` names it in messages."""
        attempt = 0
        while True:
            try:
                return fn()
            except APIException as e:
                if not _retryable(e) or attempt >= self.policy.api_retries:
                    raise translate(e, what, retries=attempt) from None
                reason = str(e.code)
            except (requests.ConnectionError, requests.Timeout) as e:
                if attempt >= self.policy.api_retries:
                    raise ProviderUnavailable(
                        f"cannot reach the Hetzner API at {self.endpoint} while {what} "
                        f"({e.__class__.__name__})",
                        hint="check the network (and HCLOUD_ENDPOINT if set), then run again",
                    ) from None
                reason = e.__class__.__name__
            except requests.RequestException as e:
                # A malformed HCLOUD_ENDPOINT and the like: retrying cannot help.
                raise ProviderUnavailable(
                    f"the request to the Hetzner API at {self.endpoint} failed while {what} "
                    f"({e.__class__.__name__})", hint="check HCLOUD_ENDPOINT if it is set",
                ) from None
            delay = self.policy.backoff(attempt)
            self.log(f"{what}: {reason}; retrying in {delay:.0f}s")
            self.policy.sleep(delay)
            attempt += 1

    def wait(self, actions: Iterable[BoundAction], what: str) -> None:
        """Poll each action until it succeeds; the whole wait shares one time limit."""
        deadline = self.policy.deadline(self.policy.action_timeout)
        for action in actions:
            current = action
            while current.status == "running":
                if deadline.passed:
                    raise ProvisionTimeout(
                        f"{what}: Hetzner action {current.id} ({current.command}) still running "
                        f"after {self.policy.action_timeout:.0f}s",
                        hint="look at the project in the Hetzner console; running provision "
                             "again picks up where this one stopped",
                    )
                deadline.wait()
                action_id = current.id
                current = self.call(f"{what} (polling action {action_id})",
                                    partial(self.client.actions.get_by_id, action_id))
            if current.status == "error":
                error: dict[str, Any] = dict(current.error or {})
                raise ProviderApiError(
                    f"{what} failed at Hetzner: {error.get('message', 'unknown error')}",
                    code=str(error.get("code", "action_failed")),
                )


def _retryable(e: APIException) -> bool:
    if isinstance(e.code, int):
        return e.code in _RETRY_STATUS
    return e.code in _RETRY_CODES


def translate(e: APIException, what: str, *, retries: int = 0) -> Exception:
    """The forge error for an hcloud :class:`APIException` met while ``what``."""
    code, message = e.code, e.message
    if code == "unauthorized" or code == 401:
        return ProviderAuthError(
            f"the Hetzner API refused HCLOUD_TOKEN while {what} (unauthorized)",
            hint="pass an API token of the server's project (Security > API tokens) "
                 "as HCLOUD_TOKEN; it may have been revoked",
        )
    if code in ("forbidden", "token_readonly") or code == 403:
        return ProviderAuthError(
            f"HCLOUD_TOKEN may not do this: {what} ({code})",
            hint="provisioning needs a token with Read & Write permission",
        )
    if code == "rate_limit_exceeded":
        return ProviderUnavailable(
            f"the Hetzner API kept rate-limiting forge while {what} ({retries} retries)",
            hint="wait a minute and run again; other tools using the same token share its limit",
        )
    if isinstance(code, int):
        return ProviderUnavailable(f"the Hetzner API answered HTTP {code} while {what}",
                                   hint="Hetzner may be having trouble: run again later")
    hint = None
    if code == "resource_limit_exceeded":
        hint = "the project reached a Hetzner limit: delete unused resources or ask for more"
    elif code == "invalid_input":
        hint = "check the provision: section of forge.yml (names of types, images, locations)"
    return ProviderApiError(f"the Hetzner API refused {what}: {message} ({code})",
                            code=str(code), hint=hint)
