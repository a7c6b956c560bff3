"""The API's own failures, each with a status, a human sentence, a code and an RFC 6750 error."""

from rest_framework import exceptions, status


class InvalidRequest(exceptions.APIException):
    """The Authorization header is not a well-formed bearer credential."""

    status_code = status.HTTP_400_BAD_REQUEST
    default_detail = "The Authorization header must be: Bearer <access token>."
    default_code = "invalid_request"
    bearer_error = "invalid_request"


class InvalidToken(exceptions.AuthenticationFailed):
    """The bearer token is refused; ``code`` says why, ``check`` which check (authz/steps.py)."""

    bearer_error = "invalid_token"

    def __init__(self, detail: str | None = None, code: str | None = None, check: str = "") -> None:
        super().__init__(detail, code)
        self.check = check


class InsufficientScope(exceptions.PermissionDenied):
    """The token is valid but lacks a scope the endpoint demands."""

    default_detail = "You don't have access to this resource"
    default_code = "insufficient_scope"
    bearer_error = "insufficient_scope"

    def __init__(
        self, required_scopes: tuple[str, ...], alternatives: tuple[str, ...] = ()
    ) -> None:
        super().__init__()
        self.required_scopes = required_scopes
        # Each a space-separated set, any one of which would do (a route's scopes).
        self.alternatives = alternatives


class IssuerUnavailable(exceptions.APIException):
    """The tenant's issuer cannot be reached and no usable key is cached: an outage."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "The token issuer is unavailable; try again shortly."
    default_code = "issuer_unavailable"
    retry_after_seconds = 30

    def __init__(self, retry_after: int = 30) -> None:
        super().__init__()
        self.retry_after_seconds = retry_after


class InvalidDPoPProof(exceptions.AuthenticationFailed):
    """The DPoP proof is refused (RFC 9449 section 7.1); ``code`` says why."""

    default_code = "invalid_dpop_proof"
    bearer_error = "invalid_dpop_proof"


class UseDPoPNonce(InvalidDPoPProof):
    """The proof lacks the nonce this API issues; the answer carries a fresh ``DPoP-Nonce``."""

    default_code = "use_dpop_nonce"
    bearer_error = "use_dpop_nonce"

    def __init__(self, detail: str, nonce: str) -> None:
        super().__init__(detail, code=self.default_code)
        self.nonce = nonce


class ReplayCheckUnavailable(exceptions.APIException):
    """The shared store cannot tell a new DPoP proof from a replay: refused, not risked."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "DPoP proofs cannot be checked for replay right now; try again shortly."
    default_code = "dpop_replay_check_unavailable"
    retry_after_seconds = 5
