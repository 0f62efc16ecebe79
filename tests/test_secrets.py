"""What of a URL or a header value may be shown, and what an echo of it must not show."""

from __future__ import annotations

import pytest

from relay.secrets import mask_url, url_secrets, value_secrets


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://hooks.slack.com/services/T0/B0/tok3nSECRET", "https://hooks.slack.com/<secret>"),
        ("https://crm.example.com", "https://crm.example.com"),
        ("https://crm.example.com/", "https://crm.example.com"),
        ("https://crm2.example.com?token=tok3nSECRET", "https://crm2.example.com/<secret>"),
        ("https://alice:hunter2pw@crm.example.com/", "https://crm.example.com/<secret>"),
        ("https://x.logic.azure.com:443?sig=TEAMSSIG123", "https://x.logic.azure.com:443/<secret>"),
        ("https://crm.example.com#frag", "https://crm.example.com/<secret>"),
        ("https://[v.example/x", "<secret>"),
        ("not a url", "<secret>"),
    ],
)
def test_mask_url_shows_the_scheme_and_host_only(url: str, shown: str) -> None:
    assert mask_url(url) == shown


def test_url_secrets_name_every_piece_an_answer_might_echo() -> None:
    url = "https://alice:hunter2pw@crm.example.com/hooks/catch/123/s3cr3tPathTok/?token=tok%3DSECRET&v=1"

    pieces = url_secrets(url)

    for piece in (
        url,
        "/hooks/catch/123/s3cr3tPathTok/",
        "s3cr3tPathTok",
        "tok%3DSECRET",
        "tok=SECRET",
        "hunter2pw",
        "alice:hunter2pw",
        "YWxpY2U6aHVudGVyMnB3",  # Basic auth, as aiohttp sends the userinfo
    ):
        assert piece in pieces
    assert "1" not in pieces and "hooks" not in pieces  # too common to mask
    assert pieces == sorted(pieces, key=len, reverse=True)  # longest masked first


def test_value_secrets_include_the_token_of_a_scheme_and_token_value() -> None:
    assert value_secrets("Bearer crm-token-5f1e0c77d2") == [
        "Bearer crm-token-5f1e0c77d2",
        "crm-token-5f1e0c77d2",
    ]
