"""The quickstart's token decoding, with the fix: PyJWKClient and its key cache."""

import jwt
from django.conf import settings

jwks_client = jwt.PyJWKClient(f"{settings.AUTH0_DOMAIN}.well-known/jwks.json", cache_keys=True)


def jwt_decode_token(token: str) -> dict:
    """Verify the token against the issuer's key set; return its payload."""
    signing_key = jwks_client.get_signing_key_from_jwt(token)
    return jwt.decode(
        token,
        signing_key.key,
        audience=settings.API_IDENTIFIER,
        issuer=settings.AUTH0_DOMAIN,
        algorithms=["RS256"],
    )
