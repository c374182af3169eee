"""The provision package's leaves of the error tree (see :mod:`forge_ci.errors`).

::

    ProvisionError                      exit 1
    ├── ProviderAuthError               exit 2  the provider refused the token: nothing touched
    ├── ProviderUnavailable             exit 1  API unreachable, 5xx or rate limit after retries
    ├── ProviderApiError                exit 1  any other refusal (invalid input, quota, ...)
    ├── CapacityError                   exit 1  no configured type/location can take the server
    ├── NotManagedError                 exit 1  a resource with forge's name lacks forge's labels
    ├── ProvisionTimeout                exit 1  an action or the first boot took too long
    └── BootstrapError                  exit 1  cloud-init failed or the host key rotation did

Providers translate their library's exceptions into these where they enter
(:mod:`forge_ci.provision.hetzner.api` for hcloud). Messages carry names, ids
and codes, never a token.
"""

from __future__ import annotations

from forge_ci.errors import ExitCode, ProvisionError


class ProviderAuthError(ProvisionError):
    # A wrong or read-only token is a secret problem: nothing was changed.
    exit_code = ExitCode.USAGE


class ProviderUnavailable(ProvisionError):
    pass


class ProviderApiError(ProvisionError):
    """The API refused a request. ``code`` is the provider's error code."""

    def __init__(self, message: str, *, code: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.code = code


class CapacityError(ProvisionError):
    pass


class NotManagedError(ProvisionError):
    pass


class ProvisionTimeout(ProvisionError):
    pass


class BootstrapError(ProvisionError):
    pass


__all__ = [
    "BootstrapError",
    "CapacityError",
    "NotManagedError",
    "ProviderApiError",
    "ProviderAuthError",
    "ProviderUnavailable",
    "ProvisionError",
    "ProvisionTimeout",
]
