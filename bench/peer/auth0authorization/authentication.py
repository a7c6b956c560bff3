"""drf-jwt's JSONWebTokenAuthentication as the quickstart configures it, without a user table."""

import jwt
from rest_framework import authentication, exceptions

from .utils import jwt_decode_token


class TokenUser:
    """The token's subject as the request's user: nothing is stored."""

    is_authenticated = True

    def __init__(self, payload: dict) -> None:
        self.username = payload.get("sub", "").replace("|", ".")


class Auth0JSONWebTokenAuthentication(authentication.BaseAuthentication):
    """``Authorization: Bearer <token>``, verified by ``jwt_decode_token``."""

    def authenticate(self, request):
        """None without a Bearer header; the user and payload, or 401."""
        auth = authentication.get_authorization_header(request).split()
        if not auth or auth[0].lower() != b"bearer":
            return None
        if len(auth) != 2:
            raise exceptions.AuthenticationFailed("Invalid Authorization header.")
        try:
            payload = jwt_decode_token(auth[1].decode())
        except jwt.PyJWTError as error:
            raise exceptions.AuthenticationFailed(str(error)) from error
        return TokenUser(payload), payload

    def authenticate_header(self, request):
        """401, not 403, for a missing or bad token."""
        return 'Bearer realm="api"'
