"""TLS material for the emulator: a local test CA and a server certificate.

simple-salesforce builds every URL as ``https://{host}/...`` (it drops the scheme of
``instance_url``), so the emulator must speak HTTPS. A trustme CA signs one server
certificate that covers ``127.0.0.1``, ``localhost`` and any extra hostnames (e.g.
``login.salesforce.com`` when a client is pointed at the emulator through /etc/hosts or a
custom resolver). Clients trust the emulator by using the CA bundle PEM
(``session.verify = ca_bundle`` / ``REQUESTS_CA_BUNDLE``); the gRPC server can serve the
same certificate and key.

The CA is kept across restarts (same state dir) so a client that loaded the bundle once
keeps trusting a restarted emulator; the server certificate is re-issued whenever the
requested hostnames change.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import trustme

DEFAULT_HOSTNAMES: tuple[str, ...] = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class TlsMaterial:
    """Paths of the PEM files written into ``<state_dir>/tls``.

    ``ca_bundle`` is what clients trust; ``cert_file`` (leaf + chain) and ``key_file`` are
    what servers (uvicorn, grpc) present.
    """

    ca_bundle: Path
    cert_file: Path
    key_file: Path
    hostnames: tuple[str, ...]

    def cert_chain_pem(self) -> bytes:
        return self.cert_file.read_bytes()

    def private_key_pem(self) -> bytes:
        return self.key_file.read_bytes()


def _normalize(hostnames: Sequence[str]) -> tuple[str, ...]:
    seen: list[str] = []
    for name in (*DEFAULT_HOSTNAMES, *hostnames):
        name = name.strip().lower()
        if name and name not in seen:
            seen.append(name)
    return tuple(seen)


def ensure_tls(state_dir: Path, hostnames: Sequence[str] = ()) -> TlsMaterial:
    """Create (or reuse) the CA and a server certificate for ``hostnames``.

    Always covers 127.0.0.1 and localhost. Returns the paths; the CA bundle path is what
    the handshake publishes as ``ca_bundle``.
    """
    tls_dir = Path(state_dir) / "tls"
    tls_dir.mkdir(parents=True, exist_ok=True)
    names = _normalize(hostnames)
    ca_cert = tls_dir / "ca.pem"
    ca_key = tls_dir / "ca.key"
    cert_file = tls_dir / "server.pem"
    key_file = tls_dir / "server.key"
    names_file = tls_dir / "hostnames.json"

    if ca_cert.exists() and ca_key.exists():
        ca = trustme.CA.from_pem(ca_cert.read_bytes(), ca_key.read_bytes())
    else:
        ca = trustme.CA(organization_name="sfdc-emulator test CA")
        ca.cert_pem.write_to_path(str(ca_cert))
        ca.private_key_pem.write_to_path(str(ca_key))
        ca_key.chmod(0o600)
        names_file.unlink(missing_ok=True)

    current = json.loads(names_file.read_text()) if names_file.exists() else None
    if current != list(names) or not cert_file.exists() or not key_file.exists():
        leaf = ca.issue_cert(*names, common_name=names[0])
        cert_file.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        key_file.write_bytes(leaf.private_key_pem.bytes())
        key_file.chmod(0o600)
        names_file.write_text(json.dumps(list(names)))
    return TlsMaterial(ca_bundle=ca_cert, cert_file=cert_file, key_file=key_file, hostnames=names)
