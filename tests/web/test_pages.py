"""The web UI's pages over plain HTTP (no browser): served without a token, carrying no
data, with a strict Content-Security-Policy, and their static files."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.web.conftest import Platform

PAGES = ["/", "/runs/1", "/runners", "/schedules", "/drift", "/notifications", "/login"]


@pytest.mark.parametrize("path", PAGES)
def test_pages_are_served_without_a_token_and_carry_no_data(platform: Platform, path: str) -> None:
    if platform.backend.client.get("/deployments/secretive").status_code == 404:
        platform.backend.deploy("secretive", {"main.tf": 'resource "terraform_data" "x" {}\n'})
    response = httpx.get(platform.url + path)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "secretive" not in response.text
    assert "<script>" not in response.text  # every script is a file under /static
    for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', response.text):
        static = httpx.get(platform.url + asset)
        assert static.status_code == 200, asset


def test_the_login_message_is_a_fixed_text_never_the_url(platform: Platform) -> None:
    known = httpx.get(platform.url + "/login", params={"reason": "invalid"})
    assert "The API token was refused" in known.text
    crafted = httpx.get(platform.url + "/login", params={"reason": "<b>pwned</b>"})
    assert crafted.status_code == 200
    assert "pwned" not in crafted.text


def test_unknown_pages_are_404(platform: Platform) -> None:
    assert httpx.get(platform.url + "/runs/abc").status_code == 404
    assert httpx.get(platform.url + "/static/nope.js").status_code == 404
    # The API keeps its own routes and auth.
    assert httpx.get(platform.url + "/api/v1/runs").status_code == 401
