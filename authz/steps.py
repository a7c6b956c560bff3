"""The checks a request's credential meets, in the order the API makes them, for the debugger.

Every refusal names its check: a ``TokenError`` carries ``check`` (its class's, or the raise
site's where one error code serves two checks), and the API's other refusal codes map here.
The token debugger marks the checks before a refusal passed and those after it not reached.
"""

SCHEME = "scheme"
FORMAT = "format"
ALGORITHM = "algorithm"
TYPE = "type"
KEY = "key"
KEY_FIT = "key_fit"
SIGNATURE = "signature"
REQUIRED = "required"
TIME = "time"
ISSUER = "issuer"
AUDIENCE = "audience"
CLAIM_TYPES = "claim_types"
ORGANIZATION = "organization"
SCOPE_CLAIMS = "scope_claims"
BINDING = "binding"
PROOF = "proof"
SCOPES = "scopes"

ORDER: tuple[tuple[str, str], ...] = (
    (SCHEME, "Authorization header and scheme (Bearer or DPoP, as the tenant takes them)"),
    (FORMAT, "A well-formed JWT of acceptable size"),
    (ALGORITHM, "Signing algorithm (alg) allowed"),
    (TYPE, "Token type (typ) and profile"),
    (ISSUER, "Issuer (iss) one the tenant lists"),
    (KEY, "Key id (kid) known in the tenant's key set"),
    (KEY_FIT, "Key type and curve fit the algorithm"),
    (SIGNATURE, "Signature"),
    (REQUIRED, "Required claims present"),
    (TIME, "iat, nbf and exp, with the tenant's leeway"),
    (AUDIENCE, "Audience (aud)"),
    (CLAIM_TYPES, "Subject (sub), jti and client_id"),
    (ORGANIZATION, "Organization (org_id)"),
    (SCOPE_CLAIMS, "Scope claims well-formed"),
    (BINDING, "DPoP binding (cnf.jkt) fits the scheme"),
    (PROOF, "DPoP proof"),
    (SCOPES, "Scopes against the endpoint's rule"),
)

# The check of each refusal code that is not a TokenError's.
CHECK_OF_CODE = {
    "not_authenticated": SCHEME,
    "invalid_request": SCHEME,
    "dpop_required": SCHEME,
    "dpop_not_accepted": SCHEME,
    "issuer_unavailable": KEY,
    "dpop_bound_token": BINDING,
    "token_not_bound": BINDING,
    "invalid_dpop_proof": PROOF,
    "use_dpop_nonce": PROOF,
    "dpop_replay_check_unavailable": PROOF,
    "insufficient_scope": SCOPES,
}
