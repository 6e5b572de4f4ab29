"""OAuth token endpoint and SOAP login over real HTTPS: pyjwt-signed assertions, the other
grants, and simple-salesforce's own login functions pointed at the emulator."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from simple_salesforce import SalesforceLogin
from simple_salesforce.exceptions import SalesforceAuthenticationFailed

from sfdc_emulator.oauth import JWT_BEARER_GRANT
from tests.sfdc_emulator.http_fixtures import Emulator, emulator

__all__ = ["emulator"]


def assertion(em: Emulator, key: bytes | None = None, **claims: Any) -> str:
    info = em.info
    payload = {
        "iss": info["client_id"],
        "sub": info["username"],
        "aud": "https://login.salesforce.com",
        "exp": int(time.time()) + 120,
        **claims,
    }
    key = key or Path(info["private_key_path"]).read_bytes()
    return jwt.encode(payload, key, algorithm="RS256")


def token_request(em: Emulator, data: dict[str, str], **kwargs: Any) -> requests.Response:
    return em.session().post(em.info["token_url"], data=data, **kwargs)


def connected_app(em: Emulator) -> dict[str, str]:
    path = Path(em.info["state_dir"]) / "integration" / "connected_app.json"
    return json.loads(path.read_text())


def test_jwt_bearer_exchange_gives_a_working_token(emulator: Emulator) -> None:
    response = token_request(
        emulator, {"grant_type": JWT_BEARER_GRANT, "assertion": assertion(emulator)}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "Bearer" and body["instance_url"] == emulator.server.url
    assert body["id"].endswith(f"/{emulator.info['org_id']}/{emulator.info['user_id']}")
    assert {"scope", "issued_at", "signature"} <= set(body)
    assert emulator.sf(token=body["access_token"]).limits()


@pytest.mark.parametrize(
    ("claims", "error", "description"),
    [
        ({"aud": "https://evil.example.com"}, "invalid_grant", "audience is invalid"),
        ({"exp": int(time.time()) - 60}, "invalid_grant", "expired"),
        ({"exp": int(time.time()) + 3600}, "invalid_grant", "3 minutes"),
        ({"iss": "someone-else"}, "invalid_client_id", "client identifier invalid"),
        ({"sub": "nobody@example.com"}, "invalid_grant", "approved"),
    ],
)
def test_bad_assertions_are_refused(
    emulator: Emulator, claims: dict[str, Any], error: str, description: str
) -> None:
    response = token_request(
        emulator, {"grant_type": JWT_BEARER_GRANT, "assertion": assertion(emulator, **claims)}
    )
    assert response.status_code == 400
    assert response.json()["error"] == error
    assert description in response.json()["error_description"]


def test_assertion_signed_with_another_key_is_refused(emulator: Emulator) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    response = token_request(
        emulator, {"grant_type": JWT_BEARER_GRANT, "assertion": assertion(emulator, key=other)}
    )
    assert response.status_code == 400
    assert response.json() == {"error": "invalid_grant", "error_description": "invalid assertion"}


def test_instance_url_is_a_valid_audience(emulator: Emulator) -> None:
    token = assertion(emulator, aud=emulator.server.url)
    response = token_request(emulator, {"grant_type": JWT_BEARER_GRANT, "assertion": token})
    assert response.status_code == 200


def test_client_credentials_basic_and_body(emulator: Emulator) -> None:
    app = connected_app(emulator)
    basic = base64.b64encode(f"{app['client_id']}:{app['client_secret']}".encode()).decode()
    response = token_request(
        emulator, {"grant_type": "client_credentials"}, headers={"Authorization": f"Basic {basic}"}
    )
    assert response.status_code == 200 and response.json()["issued_at"].isdigit()
    body = {"grant_type": "client_credentials", "client_id": app["client_id"]}
    response = token_request(emulator, {**body, "client_secret": app["client_secret"]})
    assert response.status_code == 200
    response = token_request(emulator, {**body, "client_secret": "wrong"})
    assert response.status_code == 400 and response.json()["error"] == "invalid_client"


def test_password_and_refresh_token_grants(emulator: Emulator) -> None:
    app = connected_app(emulator)
    response = token_request(
        emulator,
        {
            "grant_type": "password",
            "client_id": app["client_id"],
            "client_secret": app["client_secret"],
            "username": emulator.info["username"],
            "password": app["password"] + app["security_token"],
        },
    )
    assert response.status_code == 200
    refresh = emulator.server.oauth.issue_refresh_token()
    response = token_request(
        emulator,
        {"grant_type": "refresh_token", "client_id": app["client_id"], "refresh_token": refresh},
    )
    assert response.status_code == 200
    assert emulator.sf(token=response.json()["access_token"]).limits()
    bad = token_request(
        emulator,
        {"grant_type": "refresh_token", "client_id": app["client_id"], "refresh_token": "x"},
    )
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_grant"


def test_soap_login_through_simple_salesforce(emulator: Emulator) -> None:
    app = connected_app(emulator)
    session_id, instance = SalesforceLogin(
        username=emulator.info["username"],
        password=app["password"],
        security_token=app["security_token"],
        scratch_url=emulator.server.url,
        session=emulator.session(),
    )
    assert instance == urlsplit(emulator.server.url).netloc
    assert emulator.sf(token=session_id).limits()
    with pytest.raises(SalesforceAuthenticationFailed) as info:
        SalesforceLogin(
            username=emulator.info["username"],
            password="wrong",
            security_token="",
            scratch_url=emulator.server.url,
            session=emulator.session(),
        )
    assert info.value.code == "INVALID_LOGIN"


class _ToEmulator(requests.adapters.HTTPAdapter):
    """Sends https://login.salesforce.com/... to the emulator (as /etc/hosts would)."""

    def __init__(self, netloc: str) -> None:
        super().__init__()
        self.netloc = netloc

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        parts = urlsplit(request.url or "")
        request.url = urlunsplit(parts._replace(netloc=self.netloc))
        return super().send(request, **kwargs)


def test_simple_salesforce_jwt_login_against_login_salesforce_com(emulator: Emulator) -> None:
    session = emulator.session()
    session.mount("https://login.salesforce.com", _ToEmulator(urlsplit(emulator.server.url).netloc))
    session_id, instance = SalesforceLogin(
        username=emulator.info["username"],
        consumer_key=emulator.info["client_id"],
        privatekey_file=emulator.info["private_key_path"],
        domain="login",
        session=session,
    )
    assert instance == urlsplit(emulator.server.url).netloc
    assert emulator.sf(token=session_id).limits()
