"""Channel keys, customer tokens and bearer parsing: who may ask, and as which customer."""

from __future__ import annotations

from pathlib import Path

import jwt
import pytest
from pydantic import SecretStr

from gateway.cli import main
from gateway.config import AuthConfig, ChannelConfig, GatewayConfig, Settings
from gateway.security import (
    Channel,
    ChannelKeys,
    CustomerTokens,
    InvalidToken,
    TokenSigningUnavailable,
    bearer_token,
    unauthenticated_body,
)

DEMO_CONFIG = Path(__file__).resolve().parents[2] / "config" / "demo.toml"
SECRET = "unit-test-secret-that-is-long-enough-for-hs256"
OTHER_SECRET = "another-secret-that-is-also-long-enough-for-hs256"
NOW = 1_800_000_000.0
AUTH = AuthConfig(jwt_secret=SecretStr(SECRET), token_ttl_seconds=600)


def demo_config() -> GatewayConfig:
    return Settings(gateway_config=DEMO_CONFIG, gateway_jwt_secret=None).config()


def tokens_at(now: float, auth: AuthConfig = AUTH) -> CustomerTokens:
    return CustomerTokens(auth, clock=lambda: now, leeway_seconds=30)


def signed(claims: dict[str, object], secret: str = SECRET) -> str:
    return jwt.encode(claims, secret, algorithm="HS256")


def valid_claims(**changes: object) -> dict[str, object]:
    claims: dict[str, object] = {
        "sub": "C0001",
        "iat": int(NOW),
        "exp": int(NOW) + 600,
        "iss": "commerce-gateway",
        "aud": "commerce-gateway",
    }
    claims.update(changes)
    return {name: value for name, value in claims.items() if value is not None}


# --------------------------------------------------------------------------- demo channels


def test_demo_config_names_the_six_demo_channels_with_their_scopes() -> None:
    channels = demo_config().channels

    assert {key: (config.name, set(config.scopes)) for key, config in channels.items()} == {
        "demo-web": ("web", {"catalog:read", "orders:write"}),
        "demo-mobile": ("mobile", {"catalog:read", "orders:write"}),
        "demo-kiosk": ("kiosk", {"catalog:read", "orders:write"}),
        "demo-pos": ("pos", {"catalog:read", "customer:lookup", "orders:write", "sales:read"}),
        "demo-csr": (
            "csr",
            {"catalog:read", "customer:lookup", "orders:write", "offers:issue", "sales:read"},
        ),
        "demo-partner": ("partner", {"catalog:read"}),
    }


def test_demo_config_signs_customer_tokens_with_its_demo_secret() -> None:
    tokens = CustomerTokens(demo_config().auth)

    assert tokens.can_issue
    assert tokens.verify(tokens.issue("C0001")) == "C0001"


# --------------------------------------------------------------------------- channel keys


def test_each_configured_key_identifies_its_channel() -> None:
    config = demo_config()
    keys = ChannelKeys(config.channels, config.security)

    pos, partner = keys.identify("demo-pos"), keys.identify("demo-partner")

    assert pos is not None
    assert partner is not None
    assert (pos.name, pos.scopes) == (
        "pos",
        frozenset({"catalog:read", "customer:lookup", "orders:write", "sales:read"}),
    )
    assert (partner.name, partner.scopes) == ("partner", frozenset({"catalog:read"}))
    # what each may spend, and whether introspection answers, come with the key
    assert (pos.limits.max_cost, pos.limits.introspection) == (5000, False)
    assert (partner.limits.max_cost, partner.limits.introspection) == (1000, True)
    assert partner.limits.max_tokens == config.security.max_tokens


@pytest.mark.parametrize("offered", [None, "", "demo", "demo-web ", "DEMO-WEB", "demo-web-2"])
def test_missing_unknown_or_nearly_right_keys_identify_no_channel(offered: str | None) -> None:
    keys = ChannelKeys({"demo-web": ChannelConfig(name="web", scopes=frozenset({"catalog:read"}))})

    assert keys.identify(offered) is None


def test_a_channel_allows_only_its_scopes() -> None:
    channel = Channel("pos", frozenset({"catalog:read", "customer:lookup"}))

    assert channel.allows("customer:lookup")
    assert not channel.allows("offers:issue")


# --------------------------------------------------------------------------- customer tokens


def test_an_issued_token_names_its_customer_until_it_expires() -> None:
    token = tokens_at(NOW).issue("C0042")

    assert tokens_at(NOW).verify(token) == "C0042"
    assert tokens_at(NOW + 600 + 29).verify(token) == "C0042"  # within the leeway
    with pytest.raises(InvalidToken, match="expired"):
        tokens_at(NOW + 600 + 30).verify(token)


def test_an_issued_token_carries_the_configured_claims() -> None:
    token = tokens_at(NOW).issue("C0042", ttl_seconds=60)

    claims = jwt.decode(
        token,
        SECRET,
        algorithms=["HS256"],
        audience="commerce-gateway",
        options={"verify_exp": False, "verify_iat": False},  # NOW is not the wall clock
    )

    assert claims == valid_claims(sub="C0042", exp=int(NOW) + 60)


def test_a_token_signed_with_another_secret_is_refused() -> None:
    with pytest.raises(InvalidToken, match="signature"):
        tokens_at(NOW).verify(signed(valid_claims(), OTHER_SECRET))


def test_a_token_for_another_audience_is_refused() -> None:
    with pytest.raises(InvalidToken, match="audience"):
        tokens_at(NOW).verify(signed(valid_claims(aud="another-service")))


def test_a_token_from_another_issuer_is_refused() -> None:
    with pytest.raises(InvalidToken, match="issuer"):
        tokens_at(NOW).verify(signed(valid_claims(iss="someone-else")))


@pytest.mark.parametrize("claim", ["sub", "exp", "iat"])
def test_a_token_without_a_required_claim_is_refused(claim: str) -> None:
    with pytest.raises(InvalidToken, match=f"no '{claim}' claim"):
        tokens_at(NOW).verify(signed(valid_claims(**{claim: None})))


def test_a_token_with_an_empty_subject_is_refused() -> None:
    with pytest.raises(InvalidToken, match="subject"):
        tokens_at(NOW).verify(signed(valid_claims(sub="")))


def test_a_token_issued_in_the_future_is_refused() -> None:
    with pytest.raises(InvalidToken, match="future"):
        tokens_at(NOW).verify(signed(valid_claims(iat=int(NOW) + 300, exp=int(NOW) + 900)))


@pytest.mark.parametrize("token", ["", "not-a-token", "a.b.c", "bm90IGpzb24.e30.c2ln"])
def test_a_malformed_token_is_refused(token: str) -> None:
    with pytest.raises(InvalidToken, match="malformed"):
        tokens_at(NOW).verify(token)


def test_an_unsigned_token_is_refused() -> None:
    unsigned = jwt.encode(valid_claims(), key=None, algorithm="none")

    with pytest.raises(InvalidToken, match="HS256"):
        tokens_at(NOW).verify(unsigned)


def test_a_secret_too_short_for_hs256_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        CustomerTokens(AuthConfig(jwt_secret=SecretStr("short")))


def test_hs256_without_a_secret_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="GATEWAY_JWT_SECRET"):
        CustomerTokens(AuthConfig())


def test_a_lifetime_that_is_not_positive_is_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        tokens_at(NOW).issue("C0001", ttl_seconds=0)


def test_a_public_key_only_verifies_and_never_issues() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    private = ec.generate_private_key(ec.SECP256R1())
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    tokens = tokens_at(NOW, AuthConfig(jwt_public_key=public.decode(), algorithm="ES256"))

    assert tokens.verify(jwt.encode(valid_claims(), private, algorithm="ES256")) == "C0001"
    assert not tokens.can_issue
    with pytest.raises(TokenSigningUnavailable):
        tokens.issue("C0001")


# --------------------------------------------------------------------------- bearer header


def test_no_authorization_header_means_no_token() -> None:
    assert bearer_token(None) is None


@pytest.mark.parametrize(
    "header", ["Bearer abc.def.ghi", "bearer abc.def.ghi", "BEARER  abc.def.ghi"]
)
def test_the_bearer_scheme_is_case_insensitive(header: str) -> None:
    assert bearer_token(header) == "abc.def.ghi"


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Token abc", "abc.def.ghi"])
def test_other_schemes_are_refused(header: str) -> None:
    with pytest.raises(InvalidToken, match="Bearer"):
        bearer_token(header)


@pytest.mark.parametrize("header", ["Bearer", "Bearer   ", ""])
def test_an_empty_bearer_token_is_refused(header: str) -> None:
    with pytest.raises(InvalidToken):
        bearer_token(header)


def test_the_unauthenticated_body_is_a_graphql_error_response() -> None:
    assert unauthenticated_body("unknown API key", "INVALID_API_KEY") == {
        "data": None,
        "errors": [{"message": "unknown API key", "extensions": {"code": "INVALID_API_KEY"}}],
    }


# --------------------------------------------------------------------------- token command


def test_the_token_command_prints_a_token_the_gateway_accepts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GATEWAY_CONFIG", str(DEMO_CONFIG))
    monkeypatch.delenv("GATEWAY_JWT_SECRET", raising=False)

    status = main(["token", "C0001", "--ttl", "120"])

    token = capsys.readouterr().out.strip()
    assert status == 0
    assert CustomerTokens(demo_config().auth).verify(token) == "C0001"
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 120


def test_the_token_command_signs_with_the_secret_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GATEWAY_CONFIG", str(DEMO_CONFIG))
    monkeypatch.setenv("GATEWAY_JWT_SECRET", OTHER_SECRET)

    status = main(["token", "C0002"])

    token = capsys.readouterr().out.strip()
    assert status == 0
    assert CustomerTokens(AuthConfig(jwt_secret=SecretStr(OTHER_SECRET))).verify(token) == "C0002"
    with pytest.raises(InvalidToken, match="signature"):
        CustomerTokens(demo_config().auth).verify(token)
