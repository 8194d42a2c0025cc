"""Access tokens: minting, and every reason the verifier refuses one."""

from __future__ import annotations

import ast
import base64
import json
from datetime import timedelta
from pathlib import Path

import jwt
import pytest

from netcode.auth import (
    DEFAULT_TTL,
    MAX_IDENTITY_CHARS,
    AccessToken,
    Claims,
    Grants,
    InvalidSignature,
    MalformedToken,
    MissingGrant,
    TokenError,
    TokenExpired,
    TokenNotYetValid,
    TokenVerifier,
    UnknownApiKey,
    WrongRoom,
    token_error_from_code,
    verify_token,
)
from netcode.errors import NetcodeError

KEY = "APIkey1"
SECRET = "s" * 40
NOW = 1_700_000_000.0


def make_token(
    identity: str = "alice",
    grants: Grants | None = None,
    *,
    key: str = KEY,
    secret: str = SECRET,
    ttl: float | timedelta = 3600,
    now: float = NOW,
) -> str:
    return (
        AccessToken(key, secret)
        .with_identity(identity)
        .with_name("Alice")
        .with_metadata('{"team": "red"}')
        .with_ttl(ttl)
        .with_grants(grants if grants is not None else Grants(room_join=True, room="arena"))
        .to_jwt(now=now)
    )


def raw_token(payload: dict[str, object], secret: str = SECRET) -> str:
    return jwt.encode(payload, secret, algorithm="HS256")


def test_good_token_round_trips() -> None:
    claims = verify_token(make_token(), KEY, SECRET, room="arena", now=NOW + 10)
    assert claims == Claims(
        identity="alice",
        name="Alice",
        metadata='{"team": "red"}',
        grants=Grants(room_join=True, room="arena"),
        expires_at=NOW + 3600,
    )


def test_token_claims_are_livekit_shaped() -> None:
    payload = jwt.decode(make_token(), SECRET, algorithms=["HS256"], options={"verify_exp": False})
    assert payload["iss"] == KEY
    assert payload["sub"] == "alice"
    assert payload["nbf"] == int(NOW)
    assert payload["exp"] == int(NOW) + 3600
    assert payload["video"] == {
        "roomJoin": True,
        "room": "arena",
        "canPublishData": True,
        "canSubscribe": True,
        "roomAdmin": False,
    }


def test_default_ttl_is_six_hours() -> None:
    token = AccessToken(KEY, SECRET).with_identity("bob").to_jwt(now=NOW)
    payload = jwt.decode(token, SECRET, algorithms=["HS256"], options={"verify_exp": False})
    assert payload["exp"] - payload["nbf"] == DEFAULT_TTL.total_seconds() == 6 * 3600


def test_ttl_accepts_timedelta_and_refuses_non_positive() -> None:
    token = make_token(ttl=timedelta(minutes=5))
    assert verify_token(token, KEY, SECRET, now=NOW).expires_at == NOW + 300
    with pytest.raises(ValueError, match="positive"):
        AccessToken(KEY, SECRET).with_ttl(0)


def test_grants_claim_named_grants_is_accepted() -> None:
    token = raw_token(
        {
            "iss": KEY,
            "sub": "carol",
            "nbf": NOW,
            "exp": NOW + 60,
            "grants": {"roomJoin": True, "room": "arena"},
        }
    )
    claims = verify_token(token, KEY, SECRET, room="arena", now=NOW)
    assert claims.grants == Grants(room_join=True, room="arena")
    assert claims.name == "" and claims.metadata == ""


def test_unknown_grant_keys_are_ignored() -> None:
    token = raw_token(
        {
            "iss": KEY,
            "sub": "dave",
            "nbf": NOW,
            "exp": NOW + 60,
            "video": {"roomJoin": True, "room": "arena", "canPublish": True, "hidden": False},
        }
    )
    assert verify_token(token, KEY, SECRET, now=NOW).identity == "dave"


def test_identity_limits_when_minting() -> None:
    with pytest.raises(ValueError, match="identity"):
        AccessToken(KEY, SECRET).with_identity("")
    with pytest.raises(ValueError, match=str(MAX_IDENTITY_CHARS)):
        AccessToken(KEY, SECRET).with_identity("x" * (MAX_IDENTITY_CHARS + 1))
    with pytest.raises(ValueError, match="with_identity"):
        AccessToken(KEY, SECRET).to_jwt()
    long_ok = "x" * MAX_IDENTITY_CHARS
    assert verify_token(make_token(long_ok), KEY, SECRET, now=NOW).identity == long_ok


# --- refusals -------------------------------------------------------------------------------


def test_wrong_secret_is_invalid_signature() -> None:
    with pytest.raises(InvalidSignature):
        verify_token(make_token(), KEY, "t" * 40, now=NOW)


def test_tampered_payload_is_invalid_signature() -> None:
    header, payload, signature = make_token().split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=="))
    data["video"]["roomAdmin"] = True
    forged = base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    with pytest.raises(InvalidSignature):
        verify_token(f"{header}.{forged}.{signature}", KEY, SECRET, now=NOW)


def test_unsigned_alg_none_token_is_refused() -> None:
    token = jwt.encode(
        {"iss": KEY, "sub": "eve", "nbf": NOW, "exp": NOW + 60}, key="", algorithm="none"
    )
    with pytest.raises(InvalidSignature):
        verify_token(token, KEY, SECRET, now=NOW)


def test_expired_token() -> None:
    with pytest.raises(TokenExpired, match="expired"):
        verify_token(make_token(ttl=60), KEY, SECRET, now=NOW + 3600)


def test_expiry_tolerates_small_clock_skew() -> None:
    verify_token(make_token(ttl=60), KEY, SECRET, now=NOW + 65)
    with pytest.raises(TokenNotYetValid):
        verify_token(make_token(), KEY, SECRET, now=NOW - 3600)


def test_wrong_room() -> None:
    with pytest.raises(WrongRoom, match="arena"):
        verify_token(make_token(), KEY, SECRET, room="lobby", now=NOW)


def test_missing_room_join_grant_is_named() -> None:
    token = make_token(grants=Grants(room="arena"))
    with pytest.raises(MissingGrant, match="room_join") as info:
        verify_token(token, KEY, SECRET, room="arena", now=NOW)
    assert info.value.grant == "room_join"
    # Tokens for other purposes (e.g. admin APIs) pass when joining is not required.
    assert verify_token(token, KEY, SECRET, require_join=False, now=NOW).identity == "alice"


def test_room_join_without_room_is_missing_room_grant() -> None:
    with pytest.raises(MissingGrant) as info:
        verify_token(make_token(grants=Grants(room_join=True)), KEY, SECRET, now=NOW)
    assert info.value.grant == "room"


def test_unknown_api_key() -> None:
    token = make_token(key="other-key")
    with pytest.raises(UnknownApiKey, match="other-key"):
        verify_token(token, KEY, SECRET, now=NOW)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "not-a-jwt",
        "a.b.c",
        "x" * 10_000,
        raw_token({"sub": "alice", "nbf": NOW, "exp": NOW + 60}),  # no iss
        raw_token({"iss": KEY, "nbf": NOW, "exp": NOW + 60}),  # no sub
        raw_token({"iss": KEY, "sub": "", "nbf": NOW, "exp": NOW + 60}),
        raw_token({"iss": KEY, "sub": "a" * 300, "nbf": NOW, "exp": NOW + 60}),
        raw_token({"iss": KEY, "sub": 5, "nbf": NOW, "exp": NOW + 60}),
        raw_token({"iss": KEY, "sub": "alice", "nbf": NOW}),  # no exp
        raw_token({"iss": KEY, "sub": "alice", "exp": NOW + 60}),  # no nbf
        raw_token({"iss": KEY, "sub": "alice", "nbf": NOW, "exp": True}),
        raw_token({"iss": KEY, "sub": "alice", "nbf": NOW, "exp": NOW + 60, "video": []}),
        raw_token(
            {"iss": KEY, "sub": "alice", "nbf": NOW, "exp": NOW + 60, "video": {"roomJoin": 1}}
        ),
        raw_token({"iss": KEY, "sub": "alice", "nbf": NOW, "exp": NOW + 60, "name": 3}),
    ],
)
def test_malformed_tokens(token: str) -> None:
    with pytest.raises(MalformedToken):
        verify_token(token, KEY, SECRET, require_join=False, now=NOW)


def test_verifier_with_several_keys() -> None:
    verifier = TokenVerifier.from_keys({KEY: SECRET, "key2": "u" * 40})
    assert verifier.verify(make_token(), now=NOW).identity == "alice"
    assert (
        verifier.verify(make_token("bob", key="key2", secret="u" * 40), now=NOW).identity == "bob"
    )
    with pytest.raises(InvalidSignature):
        verifier.verify(make_token(key="key2"), now=NOW)


def test_errors_are_netcode_errors_and_round_trip_by_code() -> None:
    for cls in (InvalidSignature, TokenExpired, WrongRoom, MalformedToken, UnknownApiKey):
        assert issubclass(cls, TokenError) and issubclass(cls, NetcodeError)
        rebuilt = token_error_from_code(cls.code, "why")
        assert type(rebuilt) is cls and str(rebuilt) == "why"
    grant_error = token_error_from_code("missing_grant", "no", grant="room_join")
    assert isinstance(grant_error, MissingGrant) and grant_error.grant == "room_join"
    assert type(token_error_from_code("something_new", "?")) is TokenError
    assert WrongRoom.http_status == MissingGrant.http_status == 403
    assert TokenExpired.http_status == 401


def test_auth_module_does_no_async_io() -> None:
    import netcode.auth

    tree = ast.parse(Path(netcode.auth.__file__).read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (
            node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")]
        )
    }
    assert not imported & {"asyncio", "aiortc", "aiohttp", "aioice"}
