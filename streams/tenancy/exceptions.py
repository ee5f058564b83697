"""Errors of the tenancy package."""

from streams.errors import StreamsError


class TenancyError(StreamsError):
    """Base of tenancy errors."""


class InvalidTenantName(TenancyError, ValueError):
    """A tenant name breaks the naming rule (it ends up in topic names and keys)."""


class TenantNotFound(TenancyError, LookupError):
    """No tenant of that name is onboarded."""


class OnboardingError(TenancyError):
    """A step of onboarding, rotation or deletion failed; re-running the command is safe."""


class QuotaUnsupported(OnboardingError):
    """Quotas asked of a broker without per-user principals (PLAINTEXT: every client is anonymous)."""
