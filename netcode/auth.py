"""Access tokens: who may join which room, with which rights (LiveKit-style JWTs).

A server operator holds an API key and secret. An application backend mints a short-lived
token for each user with :class:`AccessToken`; the client presents it when it connects and
the room server checks it with :func:`verify_token` (or a :class:`TokenVerifier` holding
several keys). Tokens are HS256 JWTs with these claims:

- ``iss``: the API key (it selects the secret that signed the token)
- ``sub``: the participant identity (non-empty, at most :data:`MAX_IDENTITY_CHARS`)
- ``nbf``, ``exp``: validity window (seconds since the epoch)
- ``name``, ``metadata``: optional display name and opaque application metadata
- ``video``: the :class:`Grants` (named ``video`` for LiveKit compatibility; ``grants`` is
  accepted too)

Every refusal raises a subclass of :class:`TokenError` that says which check failed, with a
stable ``code`` the signaling layer sends to the client so that the client raises the same
exception class.

This module does no IO besides reading the clock when no ``now`` is given.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, ClassVar

import attrs
import jwt

from netcode.errors import NetcodeError

__all__ = [
    "DEFAULT_TTL",
    "MAX_IDENTITY_CHARS",
    "MAX_TOKEN_BYTES",
    "AccessToken",
    "Claims",
    "Grants",
    "InvalidSignature",
    "MalformedToken",
    "MissingGrant",
    "TokenError",
    "TokenExpired",
    "TokenNotYetValid",
    "TokenVerifier",
    "UnknownApiKey",
    "WrongRoom",
    "check_api_secret",
    "token_error_from_code",
    "verify_token",
]

#: Token lifetime when :meth:`AccessToken.with_ttl` is not called (LiveKit's default too).
DEFAULT_TTL = timedelta(hours=6)

#: Longest identity accepted, in characters.
MAX_IDENTITY_CHARS = 256

#: Shortest API secret accepted: HS256 wants a key of at least 256 bits (RFC 7518 3.2), and
#: a shorter secret can be brute-forced from any token signed with it.
MIN_SECRET_CHARS = 32


def check_api_secret(api_secret: str) -> str:
    """Return ``api_secret``, or raise ValueError if it is shorter than MIN_SECRET_CHARS."""
    if not isinstance(api_secret, str) or len(api_secret) < MIN_SECRET_CHARS:
        got = len(api_secret) if isinstance(api_secret, str) else type(api_secret).__name__
        raise ValueError(
            f"api_secret must be at least {MIN_SECRET_CHARS} characters, got {got}; make one "
            "with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    return api_secret


#: Longest token accepted by the verifier; a real token is a few hundred bytes, so anything
#: much larger is refused before any parsing (the token arrives from the network).
MAX_TOKEN_BYTES = 8192

#: Clock skew tolerated between the minting backend and the verifying server.
DEFAULT_LEEWAY_S = 10.0

_ALGORITHM = "HS256"


# --- errors -------------------------------------------------------------------------------


class TokenError(NetcodeError):
    """An access token was refused. Subclasses say why; ``code`` names the reason on the wire."""

    #: Stable machine-readable reason, sent by the signaling server as ``{"error": code}``.
    code: ClassVar[str] = "invalid_token"
    #: HTTP status the signaling server answers with.
    http_status: ClassVar[int] = 401


class MalformedToken(TokenError):
    """The token is not a well-formed netcode JWT (bad encoding, missing or mistyped claim)."""

    code = "malformed_token"


class InvalidSignature(TokenError):
    """The token's signature does not match the secret of its API key (or it is unsigned)."""

    code = "invalid_signature"


class UnknownApiKey(TokenError):
    """The token was issued for an API key this server does not know."""

    code = "unknown_api_key"


class TokenExpired(TokenError):
    """The token's ``exp`` time has passed."""

    code = "token_expired"


class TokenNotYetValid(TokenError):
    """The token's ``nbf`` time is still in the future."""

    code = "token_not_yet_valid"


class WrongRoom(TokenError):
    """The token grants a different room than the one being joined."""

    code = "wrong_room"
    http_status = 403


class MissingGrant(TokenError):
    """The token lacks a grant the operation needs; ``grant`` names it (e.g. ``room_join``)."""

    code = "missing_grant"
    http_status = 403

    def __init__(self, message: str, grant: str = "") -> None:
        super().__init__(message)
        self.grant = grant


_ERRORS_BY_CODE: dict[str, type[TokenError]] = {
    cls.code: cls
    for cls in (
        TokenError,
        MalformedToken,
        InvalidSignature,
        UnknownApiKey,
        TokenExpired,
        TokenNotYetValid,
        WrongRoom,
        MissingGrant,
    )
}


def token_error_from_code(code: str, message: str, *, grant: str = "") -> TokenError:
    """Rebuild the :class:`TokenError` subclass named by a wire ``code`` (client side).

    An unknown code gives a plain :class:`TokenError`, so a newer server never breaks an
    older client.
    """
    cls = _ERRORS_BY_CODE.get(code, TokenError)
    if cls is MissingGrant:
        return MissingGrant(message, grant)
    return cls(message)


# --- values -------------------------------------------------------------------------------

# Wire names of the grant fields, camelCase as in LiveKit's VideoGrants.
_GRANT_CLAIMS: dict[str, str] = {
    "room_join": "roomJoin",
    "room": "room",
    "can_publish_data": "canPublishData",
    "can_subscribe": "canSubscribe",
    "room_admin": "roomAdmin",
    "room_host": "roomHost",
}


@attrs.frozen
class Grants:
    """What a token allows."""

    #: may join the room named by ``room``
    room_join: bool = False
    #: the room the token is for ("" for none)
    room: str = ""
    #: may publish data messages and data tracks
    can_publish_data: bool = True
    #: may subscribe to other participants' data
    can_subscribe: bool = True
    #: may administer the room (kick, mute, update metadata of others)
    room_admin: bool = False
    #: peer-to-peer rooms: hosts the game (a listen server); the first to join with it does
    room_host: bool = False

    def to_claim(self) -> dict[str, bool | str]:
        """The grants as a JWT claim object (camelCase keys, LiveKit style).

        ``roomHost`` (netcode's own) is written only when set, so other tokens keep
        LiveKit's exact shape.
        """
        claim = {wire: getattr(self, field) for field, wire in _GRANT_CLAIMS.items()}
        if not self.room_host:
            del claim["roomHost"]
        return claim

    @classmethod
    def from_claim_untrusted(cls, claim: object) -> Grants:
        """Read grants from a decoded claim; raises :class:`MalformedToken` on bad types.

        Unknown keys are ignored (a LiveKit token carries more grants than netcode uses);
        missing keys take their defaults.
        """
        if not isinstance(claim, Mapping):
            raise MalformedToken("grants claim is not an object")
        defaults = cls()

        def read(field: str, expected: type[bool] | type[str]) -> Any:
            wire = _GRANT_CLAIMS[field]
            value = claim.get(wire, getattr(defaults, field))
            # `type() is` rather than isinstance: True is an int, 1 is not a bool.
            if type(value) is not expected:
                raise MalformedToken(f"grant {wire!r} is not a {expected.__name__}")
            return value

        return cls(
            room_join=read("room_join", bool),
            room=read("room", str),
            can_publish_data=read("can_publish_data", bool),
            can_subscribe=read("can_subscribe", bool),
            room_admin=read("room_admin", bool),
            room_host=read("room_host", bool),
        )


@attrs.frozen
class Claims:
    """A verified token's contents."""

    #: the participant identity (JWT ``sub``)
    identity: str
    #: display name ("" if none)
    name: str
    #: opaque application metadata ("" if none)
    metadata: str
    #: what the token allows
    grants: Grants
    #: expiry time, seconds since the epoch
    expires_at: float


def _check_identity(identity: object) -> str:
    if not isinstance(identity, str) or not identity:
        raise ValueError("identity must be a non-empty string")
    if len(identity) > MAX_IDENTITY_CHARS:
        raise ValueError(f"identity of {len(identity)} chars exceeds {MAX_IDENTITY_CHARS}")
    return identity


# --- minting ------------------------------------------------------------------------------


class AccessToken:
    """Builder for an access token (LiveKit style); every ``with_*`` returns ``self``.

    >>> token = (
    ...     AccessToken("key", "secret-of-at-least-32-bytes-length!")
    ...     .with_identity("alice")
    ...     .with_grants(Grants(room_join=True, room="arena"))
    ...     .to_jwt()
    ... )

    The secret must be at least 32 characters (:data:`MIN_SECRET_CHARS`; ValueError).
    """

    def __init__(self, api_key: str, api_secret: str) -> None:
        if not api_key:
            raise ValueError("api_key must be non-empty")
        self._api_key = api_key
        self._api_secret = check_api_secret(api_secret)
        self._identity = ""
        self._name = ""
        self._metadata = ""
        self._ttl = DEFAULT_TTL
        self._grants = Grants()

    def with_identity(self, identity: str) -> AccessToken:
        """Set the participant identity (required; non-empty, at most 256 chars)."""
        self._identity = _check_identity(identity)
        return self

    def with_name(self, name: str) -> AccessToken:
        """Set the display name."""
        self._name = name
        return self

    def with_metadata(self, metadata: str) -> AccessToken:
        """Set opaque application metadata (often JSON)."""
        self._metadata = metadata
        return self

    def with_ttl(self, ttl: timedelta | float) -> AccessToken:
        """Set the lifetime, as a timedelta or in seconds (default 6 hours)."""
        if not isinstance(ttl, timedelta):
            ttl = timedelta(seconds=ttl)
        if ttl <= timedelta(0):
            raise ValueError(f"ttl must be positive seconds, got {ttl.total_seconds():g} s")
        self._ttl = ttl
        return self

    def with_grants(self, grants: Grants) -> AccessToken:
        """Set what the token allows."""
        self._grants = grants
        return self

    def to_jwt(self, *, now: float | None = None) -> str:
        """Sign and encode the token. ``now`` (epoch seconds) defaults to the current time."""
        if not self._identity:
            raise ValueError("an access token needs an identity: call with_identity() first")
        issued = int(time.time() if now is None else now)
        payload: dict[str, Any] = {
            "iss": self._api_key,
            "sub": self._identity,
            "nbf": issued,
            "exp": issued + int(self._ttl.total_seconds()),
            "name": self._name,
            "metadata": self._metadata,
            "video": self._grants.to_claim(),
        }
        return jwt.encode(payload, self._api_secret, algorithm=_ALGORITHM)


# --- verifying ----------------------------------------------------------------------------


def _number_claim(payload: Mapping[str, Any], name: str) -> float:
    value = payload.get(name)
    # bool is an int subclass; a token with "exp": true is malformed, not "expires at 1".
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MalformedToken(f"claim {name!r} is missing or not a number")
    return float(value)


def _string_claim(payload: Mapping[str, Any], name: str) -> str:
    value = payload.get(name, "")
    if not isinstance(value, str):
        raise MalformedToken(f"claim {name!r} is not a string")
    return value


class TokenVerifier:
    """Checks tokens against one or more API keys.

    ``TokenVerifier(api_key, api_secret)`` knows one key; :meth:`from_keys` takes a mapping
    of key to secret, so keys can be rotated without downtime.
    """

    def __init__(self, api_key: str, api_secret: str, *, leeway_s: float = DEFAULT_LEEWAY_S):
        """Raises ValueError for a secret shorter than :data:`MIN_SECRET_CHARS`."""
        self._secrets: dict[str, str] = {api_key: check_api_secret(api_secret)}
        self._leeway_s = leeway_s

    @classmethod
    def from_keys(
        cls, secrets: Mapping[str, str], *, leeway_s: float = DEFAULT_LEEWAY_S
    ) -> TokenVerifier:
        """A verifier that accepts tokens from any of ``secrets`` (API key -> secret)."""
        if not secrets:
            raise ValueError("a TokenVerifier needs at least one API key")
        verifier = cls.__new__(cls)
        verifier._secrets = {key: check_api_secret(secret) for key, secret in secrets.items()}
        verifier._leeway_s = leeway_s
        return verifier

    def verify(
        self,
        token: str,
        *,
        room: str | None = None,
        require_join: bool = True,
        now: float | None = None,
    ) -> Claims:
        """Check ``token`` and return its claims, or raise the :class:`TokenError` that applies.

        Checks, in order: size and encoding, API key, signature, validity window, identity
        and claim types, then grants: with ``require_join`` the token must carry
        ``room_join`` and name a room; with ``room`` given it must name that room.
        ``now`` is epoch seconds (default: the current time).
        """
        if not isinstance(token, str) or not token:
            raise MalformedToken("token is empty or not a string")
        if len(token) > MAX_TOKEN_BYTES:
            raise MalformedToken(f"token of {len(token)} chars exceeds {MAX_TOKEN_BYTES}")
        if not token.isascii():  # a JWT is base64url and dots; PyJWT would fail to encode it
            raise MalformedToken("token is not ASCII")

        # Read the issuer before checking the signature: it selects the secret.
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.InvalidTokenError as exc:
            raise MalformedToken(f"token is not a valid JWT: {exc}") from None
        api_key = unverified.get("iss")
        if not isinstance(api_key, str) or not api_key:
            raise MalformedToken("token has no issuer (iss) naming its API key")
        secret = self._secrets.get(api_key)
        if secret is None:
            raise UnknownApiKey(f"unknown API key {api_key[:64]!r}")

        try:
            # Time claims are checked below against our own `now`, so tests can script time.
            payload: dict[str, Any] = jwt.decode(
                token,
                secret,
                algorithms=[_ALGORITHM],
                options={"verify_exp": False, "verify_nbf": False, "verify_iat": False},
            )
        except (jwt.InvalidSignatureError, jwt.InvalidAlgorithmError) as exc:
            raise InvalidSignature(f"token signature is not valid: {exc}") from None
        except jwt.InvalidTokenError as exc:
            raise MalformedToken(f"token is not a valid JWT: {exc}") from None

        current = time.time() if now is None else now
        expires_at = _number_claim(payload, "exp")
        not_before = _number_claim(payload, "nbf")
        if current > expires_at + self._leeway_s:
            raise TokenExpired(f"token expired {current - expires_at:.0f} s ago")
        if current < not_before - self._leeway_s:
            raise TokenNotYetValid(f"token is valid only in {not_before - current:.0f} s")

        identity = payload.get("sub")
        try:
            identity = _check_identity(identity)
        except ValueError as exc:
            raise MalformedToken(f"token identity (sub): {exc}") from None

        grants_claim = payload["video"] if "video" in payload else payload.get("grants", {})
        grants = Grants.from_claim_untrusted(grants_claim)
        if require_join:
            if not grants.room_join:
                raise MissingGrant("token lacks the room_join grant", "room_join")
            if not grants.room:
                raise MissingGrant("token grants room_join but names no room", "room")
        if room is not None and grants.room != room:
            raise WrongRoom(f"token is for room {grants.room!r}, not {room!r}")

        return Claims(
            identity=identity,
            name=_string_claim(payload, "name"),
            metadata=_string_claim(payload, "metadata"),
            grants=grants,
            expires_at=expires_at,
        )


def verify_token(
    token: str,
    api_key: str,
    api_secret: str,
    *,
    room: str | None = None,
    require_join: bool = True,
    now: float | None = None,
) -> Claims:
    """Verify ``token`` against one API key; see :meth:`TokenVerifier.verify`."""
    return TokenVerifier(api_key, api_secret).verify(
        token, room=room, require_join=require_join, now=now
    )
