"""Settings from the environment / emulator handshake, JWT assertions, SOQL identifiers."""

from __future__ import annotations

import json
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from resources.salesforce import soql
from resources.salesforce.auth import TokenProvider
from resources.salesforce.errors import InvalidIdentifierError
from resources.salesforce.settings import SalesforceSettings


def test_local_handshake_wins_over_production_values(tmp_path: Path) -> None:
    info = tmp_path / "emulator.json"
    info.write_text(
        json.dumps(
            {
                "instance_url": "https://localhost:8443",
                "token_url": "https://localhost:8443/services/oauth2/token",
                "client_id": "cid",
                "username": "sync@example.com",
                "private_key_path": "/k.pem",
                "ca_bundle": "/ca.pem",
                "api_version": "66.0",
                "pubsub_target": "localhost:7443",
                "pubsub_tls": True,
                "tenant_id": "00D000000000001AAA",
            }
        )
    )
    s = SalesforceSettings.from_env(
        {
            "SFDC_EMULATOR_INFO": str(info),
            "SFDC_INSTANCE_URL": "https://prod.my.salesforce.com",
            "SFDC_API_BUDGET_PCT": "5",
        }
    )
    assert s.instance_url == "https://localhost:8443"
    assert s.verify == "/ca.pem" and s.api_budget_pct == 5
    assert s.audience == "https://localhost:8443"


def test_prod_reads_each_variable_and_keeps_secrets_out_of_repr() -> None:
    s = SalesforceSettings.from_env(
        {
            "SFDC_ENV": "prod",
            "SFDC_EMULATOR_INFO": "/does/not/matter.json",
            "SFDC_INSTANCE_URL": "https://acme.my.salesforce.com/",
            "SFDC_TOKEN_URL": "https://login.salesforce.com/services/oauth2/token",
            "SFDC_AUTH_FLOW": "client_credentials",
            "SFDC_CLIENT_SECRET": "s3cr3t",
            "SFDC_API_VERSION": "v66",
            # Was "false" (read as False) until issue 13: production now refuses plaintext
            # Pub/Sub (test_prod_refuses_plaintext_pubsub below); "0" still parses.
            "SFDC_PUBSUB_TLS": "1",
        }
    )
    assert s.instance_url == "https://acme.my.salesforce.com"
    assert s.api_version == "66.0" and s.pubsub_tls is True
    assert s.audience == "https://login.salesforce.com"
    assert "s3cr3t" not in repr(s)


def test_prod_refuses_plaintext_pubsub_and_local_allows_it() -> None:
    base = {
        "SFDC_INSTANCE_URL": "https://acme.my.salesforce.com",
        "SFDC_PUBSUB_TLS": "false",
    }
    with pytest.raises(ValueError, match="SFDC_PUBSUB_TLS=false is refused with SFDC_ENV=prod"):
        SalesforceSettings.from_env({**base, "SFDC_ENV": "PROD"})
    # The emulator on loopback speaks plaintext gRPC: local keeps reading the variable.
    assert SalesforceSettings.from_env({**base, "SFDC_ENV": "local"}).pubsub_tls is False
    assert SalesforceSettings.from_env({**base, "SFDC_ENV": "prod", "SFDC_PUBSUB_TLS": "true"})


def test_jwt_assertion_is_rs256_with_salesforce_claims(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / "key.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    s = SalesforceSettings(
        instance_url="https://x.my.salesforce.com",
        token_url="https://login.salesforce.com/services/oauth2/token",
        client_id="consumer-key",
        username="sync@example.com",
        private_key_path=str(path),
    )
    token = TokenProvider(s).jwt_assertion(now=1_700_000_000)
    claims = jwt.decode(
        token,
        key.public_key(),
        algorithms=["RS256"],
        audience="https://login.salesforce.com",
        options={"verify_exp": False},
    )
    assert claims["iss"] == "consumer-key" and claims["sub"] == "sync@example.com"
    assert 0 < claims["exp"] - 1_700_000_000 <= 180


@pytest.mark.parametrize(
    "name", ["Account; DELETE", "Name'--", "", "1Field", "Bad Name", "Trailing_", "a.b"]
)
def test_invalid_identifiers_never_reach_soql(name: str) -> None:
    with pytest.raises(InvalidIdentifierError):
        soql.identifier(name)


def test_select_builds_validated_soql() -> None:
    assert soql.select("Account", ["Id", "Owner.Name", "Custom__c"], "Id != null") == (
        "SELECT Id, Owner.Name, Custom__c FROM Account WHERE Id != null"
    )
    with pytest.raises(InvalidIdentifierError):
        soql.ids_in(["001' OR Name != '"])


def test_dagster_resource_builds_settings_from_the_handshake(tmp_path: Path) -> None:
    from resources.salesforce.resource import SalesforceResource

    info = tmp_path / "emulator.json"
    info.write_text(
        json.dumps(
            {"instance_url": "https://127.0.0.1:9443", "tenant_id": "00D", "api_version": "59.0"}
        )
    )
    resource = SalesforceResource(env="local", emulator_info=str(info), api_budget_pct="7")
    s = resource.settings()
    assert s.instance_url == "https://127.0.0.1:9443" and s.api_version == "59.0"
    assert s.api_budget_pct == 7
