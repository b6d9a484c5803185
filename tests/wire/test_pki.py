"""Minting and reading the certificates of the gRPC link."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store

from z4j_brain_plugin.errors import PkiError
from z4j_brain_plugin.pki import TlsFiles, mint_loopback_pki, mint_pki, read_tls_files


def load_certificate(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def common_name(certificate: x509.Certificate) -> str:
    value = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert isinstance(value, str)
    return value


def verify_server(files: TlsFiles, name: x509.GeneralName) -> None:
    store = Store([load_certificate(files.ca_cert)])
    verifier = PolicyBuilder().store(store).build_server_verifier(name)  # type: ignore[arg-type]
    verifier.verify(load_certificate(files.cert), [])


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_loopback_directory_is_private(tmp_path: Path) -> None:
    directory = tmp_path / "pki"

    server, client = mint_loopback_pki(directory)

    assert mode(directory) == 0o700
    written = sorted(directory.iterdir())
    assert {server.ca_cert, server.cert, server.key, client.cert, client.key} <= set(written)
    assert directory / "ca-key.pem" in written
    for path in written:
        assert mode(path) == 0o600, path


def test_existing_directory_mode_fixed(tmp_path: Path) -> None:
    directory = tmp_path / "pki"
    directory.mkdir(mode=0o755)
    directory.chmod(0o755)

    mint_loopback_pki(directory)

    assert mode(directory) == 0o700


def test_existing_files_replaced_private(tmp_path: Path) -> None:
    directory = tmp_path / "pki"
    first, _ = mint_loopback_pki(directory)
    first.key.chmod(0o644)
    old_key = first.key.read_bytes()

    second, _ = mint_loopback_pki(directory)

    assert second.key == first.key
    assert mode(second.key) == 0o600
    assert second.key.read_bytes() != old_key
    assert not list(directory.glob(".*.tmp"))


@pytest.mark.parametrize(
    "name",
    [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ],
)
def test_loopback_server_certificate_verifies(tmp_path: Path, name: x509.GeneralName) -> None:
    server, _ = mint_loopback_pki(tmp_path / "pki")

    verify_server(server, name)


def test_loopback_server_certificate_rejects_other_name(tmp_path: Path) -> None:
    server, _ = mint_loopback_pki(tmp_path / "pki")

    with pytest.raises(x509.verification.VerificationError):
        verify_server(server, x509.DNSName("brain.example.com"))


def test_loopback_client_certificate_verifies(tmp_path: Path) -> None:
    _, client = mint_loopback_pki(tmp_path / "pki", client_cn="scheduler-a")
    store = Store([load_certificate(client.ca_cert)])

    verified = (
        PolicyBuilder()
        .store(store)
        .build_client_verifier()
        .verify(load_certificate(client.cert), [])
    )

    assert common_name(verified.chain[0]) == "scheduler-a"


def test_leaf_purposes(tmp_path: Path) -> None:
    server, client = mint_loopback_pki(tmp_path / "pki")

    server_usage = load_certificate(server.cert).extensions.get_extension_for_class(
        x509.ExtendedKeyUsage
    )
    client_usage = load_certificate(client.cert).extensions.get_extension_for_class(
        x509.ExtendedKeyUsage
    )

    assert list(server_usage.value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert list(client_usage.value) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_client_certificate_from_other_mint_rejected(tmp_path: Path) -> None:
    first, _ = mint_loopback_pki(tmp_path / "first")
    _, other_client = mint_loopback_pki(tmp_path / "second")
    store = Store([load_certificate(first.ca_cert)])

    with pytest.raises(x509.verification.VerificationError):
        PolicyBuilder().store(store).build_client_verifier().verify(
            load_certificate(other_client.cert), []
        )


def test_keys_are_p256_and_match(tmp_path: Path) -> None:
    server, client = mint_loopback_pki(tmp_path / "pki")
    for files in (server, client):
        key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
        certificate = load_certificate(files.cert)

        assert isinstance(key, ec.EllipticCurvePrivateKey)
        assert key.curve.name == "secp256r1"
        assert key.public_key() == certificate.public_key()


def test_validity_days(tmp_path: Path) -> None:
    server, _ = mint_loopback_pki(tmp_path / "pki", valid_days=3)
    certificate = load_certificate(server.cert)

    lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc

    # Three days plus the five minutes of back-dating for clock skew.
    assert lifetime.total_seconds() == 3 * 86400 + 300


def test_mint_pki_names_and_clients(tmp_path: Path) -> None:
    minted = mint_pki(
        tmp_path / "pki",
        server_names=["brain.internal", "10.1.2.3", "fd00::7"],
        client_cns=["scheduler-a", "scheduler-b"],
    )

    server_certificate = load_certificate(minted.server.cert)
    sans = server_certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert sans.value.get_values_for_type(x509.DNSName) == ["brain.internal"]
    assert sans.value.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("10.1.2.3"),
        ipaddress.ip_address("fd00::7"),
    ]
    assert common_name(server_certificate) == "brain.internal"
    assert sorted(minted.clients) == ["scheduler-a", "scheduler-b"]
    for cn, files in minted.clients.items():
        assert common_name(load_certificate(files.cert)) == cn
        assert files.ca_cert == minted.ca_cert
    assert mode(minted.ca_key) == 0o600


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"server_names": []}, "server_names is empty"),
        ({"server_names": ["bad name"]}, "invalid server name 'bad name'"),
        ({"server_names": ["-bad.example"]}, "invalid server name '-bad.example'"),
        ({"client_cns": []}, "client_cns is empty"),
        ({"client_cns": ["a", "a"]}, "contains duplicates"),
        ({"client_cns": ["../escape"]}, "invalid client common name '../escape'"),
        ({"valid_days": 0}, "invalid valid_days 0"),
    ],
)
def test_mint_pki_invalid_arguments(
    tmp_path: Path, arguments: dict[str, object], message: str
) -> None:
    defaults: dict[str, object] = {
        "server_names": ["localhost"],
        "client_cns": ["z4j-scheduler"],
        "valid_days": 30,
    }

    with pytest.raises(ValueError, match=message):
        mint_pki(tmp_path / "pki", **{**defaults, **arguments})  # type: ignore[arg-type]

    assert not (tmp_path / "pki").exists()


def test_wildcard_server_name_accepted(tmp_path: Path) -> None:
    minted = mint_pki(tmp_path / "pki", server_names=["brain", "*.brain.svc"], client_cns=["a"])

    verify_server(minted.server, x509.DNSName("x.brain.svc"))


def test_unwritable_directory_raises_pki_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")

    with pytest.raises(PkiError, match=f"could not create directory {blocker / 'pki'}"):
        mint_loopback_pki(blocker / "pki")


def test_read_tls_files_returns_pem(tmp_path: Path) -> None:
    server, _ = mint_loopback_pki(tmp_path / "pki")

    ca_pem, cert_pem, key_pem = read_tls_files(server)

    assert ca_pem == server.ca_cert.read_bytes()
    assert cert_pem == server.cert.read_bytes()
    assert key_pem == server.key.read_bytes()


def test_read_tls_files_missing_file(tmp_path: Path) -> None:
    server, _ = mint_loopback_pki(tmp_path / "pki")
    server.cert.unlink()

    with pytest.raises(PkiError, match=f"could not read {server.cert}"):
        read_tls_files(server)


def test_read_tls_files_invalid_pem(tmp_path: Path) -> None:
    server, _ = mint_loopback_pki(tmp_path / "pki")
    server.ca_cert.write_text("garbage")

    with pytest.raises(PkiError, match=f"{server.ca_cert} is not a PEM certificate"):
        read_tls_files(server)


def test_read_tls_files_invalid_key(tmp_path: Path) -> None:
    server, _ = mint_loopback_pki(tmp_path / "pki")
    server.key.write_text("garbage")

    with pytest.raises(PkiError, match=f"{server.key} is not an unencrypted PEM private key"):
        read_tls_files(server)


def test_read_tls_files_mismatched_key(tmp_path: Path) -> None:
    server, client = mint_loopback_pki(tmp_path / "pki")
    mixed = TlsFiles(ca_cert=server.ca_cert, cert=server.cert, key=client.key)

    with pytest.raises(PkiError, match=f"private key {client.key} does not match"):
        read_tls_files(mixed)
