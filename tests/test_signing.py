"""Signature v2 against NCP's own openssl recipe, and the emulator-side verification."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from aitems_sync.aitems import signing

OPENSSL_RECIPE = (
    """printf '%s' "$METHOD $URI"$'\\n'"$TS"$'\\n'"$AK" """
    '| openssl dgst -sha256 -hmac "$SK" -binary | openssl enc -base64'
)
AK = "ncp-access-key-1"
SK = "ncp-secret-key-1"
TS = 1_700_000_000_000


def openssl_signature(
    method: str, uri: str, timestamp_ms: int, access_key: str, secret: str
) -> str:
    """The signature NCP's documented shell recipe computes."""
    env = {
        **os.environ,
        "METHOD": method,
        "URI": uri,
        "TS": str(timestamp_ms),
        "AK": access_key,
        "SK": secret,
        "LC_ALL": "C.UTF-8",
    }
    done = subprocess.run(
        ["bash", "-c", OPENSSL_RECIPE], env=env, capture_output=True, check=True, text=True
    )
    return done.stdout.strip()


needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not on PATH")


@needs_openssl
@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE"])
@pytest.mark.parametrize(
    "uri",
    [
        "/api/v1/services",
        "/api/v1/services/49qkb0fbnar/datasets/3r570daoluf",
        "/api/v1/schemas?datasetType=user&offset=0&limit=10",
        "/api/v1/schemas?limit=10&datasetType=user&offset=0",
        "/api/v1/services/49qkb0fbnar/schedule?action=start",
    ],
)
def test_sign_matches_the_openssl_recipe(method: str, uri: str) -> None:
    assert signing.sign(method, uri, TS, AK, SK) == openssl_signature(method, uri, TS, AK, SK)


@needs_openssl
@pytest.mark.parametrize(
    ("secret", "access_key", "timestamp_ms"),
    [
        ("säkrèt-키-🔑", AK, TS),
        ("short", "another-key", 1),
        ("x" * 100, AK, 9_999_999_999_999),
    ],
)
def test_sign_matches_the_openssl_recipe_for_any_key_and_time(
    secret: str, access_key: str, timestamp_ms: int
) -> None:
    uri = "/api/v1/services/abc/datasets/def"
    expected = openssl_signature("POST", uri, timestamp_ms, access_key, secret)
    assert signing.sign("POST", uri, timestamp_ms, access_key, secret) == expected


def test_sign_upper_cases_the_method() -> None:
    assert signing.sign("post", "/api/v1/x", TS, AK, SK) == signing.sign(
        "POST", "/api/v1/x", TS, AK, SK
    )


def test_sign_depends_on_the_query_order() -> None:
    sorted_uri = "/api/v1/schemas?datasetType=user&limit=10"
    unsorted_uri = "/api/v1/schemas?limit=10&datasetType=user"
    assert signing.sign("GET", sorted_uri, TS, AK, SK) != signing.sign(
        "GET", unsorted_uri, TS, AK, SK
    )


def test_string_to_sign_is_three_lines_without_trailing_newline() -> None:
    text = signing.string_to_sign("post", "/api/v1/services/s/datasets/d", TS, AK)
    assert text == f"POST /api/v1/services/s/datasets/d\n{TS}\n{AK}"


def test_signed_headers_carry_the_four_headers() -> None:
    headers = signing.signed_headers("GET", "/api/v1/services", TS, AK, SK)
    assert headers == {
        "x-ncp-apigw-timestamp": str(TS),
        "x-ncp-iam-access-key": AK,
        "x-ncp-apigw-signature-v2": signing.sign("GET", "/api/v1/services", TS, AK, SK),
        "Content-Type": "application/json",
    }


def good_headers(uri: str = "/api/v1/services/s", timestamp_ms: int = TS) -> dict[str, str]:
    """Lower-cased headers of a correctly signed GET, as the emulator sees them."""
    signed = signing.signed_headers("GET", uri, timestamp_ms, AK, SK)
    return {name.lower(): value for name, value in signed.items()}


def test_verify_accepts_a_good_signature() -> None:
    assert signing.verify("GET", "/api/v1/services/s", good_headers(), {AK: SK}, TS + 1000) is None


def test_verify_accepts_a_timestamp_just_under_five_minutes_off() -> None:
    now = TS + signing.MAX_CLOCK_SKEW_MS - 1
    assert signing.verify("GET", "/api/v1/services/s", good_headers(), {AK: SK}, now) is None


@pytest.mark.parametrize(
    ("uri", "headers", "secrets", "now_ms", "reason"),
    [
        ("/api/v1/services/s", good_headers(), {AK: "wrong"}, TS, "signature does not match"),
        ("/api/v1/services/other", good_headers(), {AK: SK}, TS, "signature does not match"),
        ("/api/v1/services/s?x=1", good_headers(), {AK: SK}, TS, "signature does not match"),
        ("/api/v1/services/s", good_headers(), {"other": SK}, TS, "unknown access key"),
        (
            "/api/v1/services/s",
            good_headers(),
            {AK: SK},
            TS + signing.MAX_CLOCK_SKEW_MS,
            "5 minutes",
        ),
        (
            "/api/v1/services/s",
            good_headers(),
            {AK: SK},
            TS - signing.MAX_CLOCK_SKEW_MS,
            "5 minutes",
        ),
        ("/api/v1/services/s", {}, {AK: SK}, TS, "missing authentication headers"),
        (
            "/api/v1/services/s",
            {k: v for k, v in good_headers().items() if k != "x-ncp-apigw-signature-v2"},
            {AK: SK},
            TS,
            "missing authentication headers",
        ),
        (
            "/api/v1/services/s",
            {**good_headers(), "x-ncp-apigw-timestamp": "soon"},
            {AK: SK},
            TS,
            "not an integer",
        ),
    ],
    ids=[
        "wrong-secret",
        "other-path",
        "added-query",
        "unknown-key",
        "five-minutes-old",
        "five-minutes-ahead",
        "no-headers",
        "no-signature",
        "bad-timestamp",
    ],
)
def test_verify_rejects(
    uri: str, headers: dict[str, str], secrets: dict[str, str], now_ms: int, reason: str
) -> None:
    result = signing.verify("GET", uri, headers, secrets, now_ms)
    assert result is not None
    assert reason in result
