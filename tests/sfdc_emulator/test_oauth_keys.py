"""IntegrationKeys: the certificates the connected app can trust."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from sfdc_emulator.oauth import IntegrationKeys


def _write_public_key(path: Path, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> Path:
    path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


def test_ensure_creates_then_reloads_an_rsa_key_pair(tmp_path: Path) -> None:
    first = IntegrationKeys.ensure(tmp_path)
    again = IntegrationKeys.ensure(tmp_path)
    assert isinstance(first.public_key, rsa.RSAPublicKey)
    assert again.public_key.public_numbers() == first.public_key.public_numbers()


def test_a_bare_rsa_public_key_is_trusted(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    keys = IntegrationKeys.from_certificate(_write_public_key(tmp_path / "rsa.pem", key))
    assert keys.public_key.public_numbers() == key.public_key().public_numbers()


def test_a_non_rsa_key_is_refused_when_loaded(tmp_path: Path) -> None:
    # Assertions are RS256 only: an EC key could never verify one.
    path = _write_public_key(tmp_path / "ec.pem", ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(ValueError, match="not an RSA public key"):
        IntegrationKeys.from_certificate(path)
