"""Mint and read the certificates of the mutually authenticated gRPC link.

Embedded mode mints a throwaway CA per start with :func:`mint_loopback_pki`.
Operators without their own PKI mint a longer-lived one with :func:`mint_pki`.
Keys are ECDSA P-256. Every file is written with mode 0600 into a directory
with mode 0700, and replaces an existing file atomically.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from z4j_brain_plugin.errors import PkiError

# Certificates start this long before "now" so that a peer whose clock is a
# little behind still accepts them.
_CLOCK_SKEW = timedelta(minutes=5)
# A client CN is also a file name and the certificate's DNS subject
# alternative name, so it is limited to characters that are safe in both.
_CN_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,63}")
_DNS_LABEL_PATTERN = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of one side of the link: the CA to trust, its own certificate and key."""

    ca_cert: Path
    cert: Path
    key: Path


@dataclass(frozen=True)
class MintedPki:
    """Files written by :func:`mint_pki`; ``clients`` maps each client CN to its files."""

    ca_cert: Path
    ca_key: Path
    server: TlsFiles
    clients: dict[str, TlsFiles]


@dataclass(frozen=True)
class _Issued:
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def mint_loopback_pki(
    directory: Path,
    *,
    server_cn: str = "z4j-brain",
    client_cn: str = "z4j-scheduler",
    valid_days: int = 30,
) -> tuple[TlsFiles, TlsFiles]:
    """Mint a throwaway CA with a loopback server certificate and one client certificate.

    The server certificate is valid for ``localhost``, ``127.0.0.1`` and ``::1``.
    Returns ``(server_files, client_files)``. Raises PkiError naming the file
    or directory that could not be written, and ValueError for an invalid CN
    or ``valid_days``.
    """
    minted = _mint(directory, server_cn, _LOOPBACK_NAMES, (client_cn,), valid_days)
    return minted.server, minted.clients[client_cn]


def mint_pki(
    directory: Path,
    *,
    server_names: Sequence[str],
    client_cns: Sequence[str],
    valid_days: int = 365,
) -> MintedPki:
    """Mint a CA, a server certificate for ``server_names`` and one client certificate per CN.

    ``server_names`` are DNS names or IP addresses, all of which go into the
    server certificate's subject alternative names. The first one is also its
    CN. Raises PkiError naming the file or directory that could not be
    written, and ValueError for an invalid name or ``valid_days``.
    """
    if not server_names:
        raise ValueError("server_names is empty; give at least one DNS name or IP address")
    return _mint(directory, server_names[0], server_names, client_cns, valid_days)


def read_tls_files(files: TlsFiles) -> tuple[bytes, bytes, bytes]:
    """Read and check the PEM files of one side; return ``(ca_cert, cert, key)`` bytes.

    Raises PkiError naming the file that is missing, unreadable or not valid
    PEM, or the key that does not match its certificate.
    """
    ca_pem = _read_pem(files.ca_cert)
    cert_pem = _read_pem(files.cert)
    key_pem = _read_pem(files.key)
    _load_certificates(files.ca_cert, ca_pem)
    certificate = _load_certificates(files.cert, cert_pem)[0]
    key = _load_private_key(files.key, key_pem)
    if certificate.public_key() != key.public_key():
        raise PkiError(f"private key {files.key} does not match certificate {files.cert}")
    return ca_pem, cert_pem, key_pem


def _mint(
    directory: Path,
    server_cn: str,
    server_names: Sequence[str],
    client_cns: Sequence[str],
    valid_days: int,
) -> MintedPki:
    _check_arguments(server_cn, client_cns, valid_days)
    sans = [_parse_server_name(name) for name in server_names]
    now = datetime.now(UTC)
    ca = _issue_ca(f"{server_cn} CA", now, valid_days)
    server = _issue_leaf(ca, server_cn, sans, ExtendedKeyUsageOID.SERVER_AUTH, now, valid_days)
    clients = {
        cn: _issue_leaf(
            ca, cn, [x509.DNSName(cn)], ExtendedKeyUsageOID.CLIENT_AUTH, now, valid_days
        )
        for cn in client_cns
    }
    return _write_all(directory, ca, server, clients)


def _check_arguments(server_cn: str, client_cns: Sequence[str], valid_days: int) -> None:
    if valid_days < 1:
        raise ValueError(f"invalid valid_days {valid_days}: must be at least 1")
    if not client_cns:
        raise ValueError("client_cns is empty; give at least one client CN")
    if len(set(client_cns)) != len(client_cns):
        raise ValueError(f"client_cns {list(client_cns)!r} contains duplicates")
    if not 1 <= len(server_cn) <= 64:
        raise ValueError(f"invalid server common name {server_cn!r}: use 1 to 64 characters")
    for cn in client_cns:
        if not _CN_PATTERN.fullmatch(cn):
            raise ValueError(
                f"invalid client common name {cn!r}: use 1 to 64 letters, digits, '.' or '-',"
                " starting with a letter or digit"
            )


def _parse_server_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        pass
    if not _is_dns_name(name):
        raise ValueError(f"invalid server name {name!r}: expected a DNS name or an IP address")
    return x509.DNSName(name)


def _is_dns_name(name: str) -> bool:
    labels = name.split(".")
    # A wildcard may only be the whole leftmost label, as in "*.example.com".
    if labels[0] == "*" and len(labels) > 1:
        labels = labels[1:]
    return len(name) <= 253 and all(_DNS_LABEL_PATTERN.fullmatch(label) for label in labels)


def _issue_ca(cn: str, now: datetime, valid_days: int) -> _Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    key_usage = x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )
    builder = (
        _validity(x509.CertificateBuilder(), now, valid_days)
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(key_usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    return _Issued(builder.sign(key, hashes.SHA256()), key)


def _issue_leaf(
    ca: _Issued,
    cn: str,
    sans: Sequence[x509.GeneralName],
    purpose: x509.ObjectIdentifier,
    now: datetime,
    valid_days: int,
) -> _Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        _validity(x509.CertificateBuilder(), now, valid_days)
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_leaf_key_usage(), critical=True)
        .add_extension(x509.ExtendedKeyUsage([purpose]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(_authority_key_id(ca), critical=False)
    )
    builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return _Issued(builder.sign(ca.key, hashes.SHA256()), key)


def _validity(
    builder: x509.CertificateBuilder, now: datetime, days: int
) -> x509.CertificateBuilder:
    return (
        builder.serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + timedelta(days=days))
    )


def _leaf_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _authority_key_id(ca: _Issued) -> x509.AuthorityKeyIdentifier:
    ski = ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski.value)


def _write_all(
    directory: Path, ca: _Issued, server: _Issued, clients: dict[str, _Issued]
) -> MintedPki:
    _make_private_directory(directory)
    ca_cert, ca_key = _write_issued(directory, "ca", ca)
    server_cert, server_key = _write_issued(directory, "server", server)
    client_files = {}
    for cn, issued in clients.items():
        cert, key = _write_issued(directory, f"client-{cn}", issued)
        client_files[cn] = TlsFiles(ca_cert=ca_cert, cert=cert, key=key)
    return MintedPki(
        ca_cert=ca_cert,
        ca_key=ca_key,
        server=TlsFiles(ca_cert=ca_cert, cert=server_cert, key=server_key),
        clients=client_files,
    )


def _make_private_directory(directory: Path) -> None:
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        # mkdir applies the umask and leaves an existing directory alone.
        directory.chmod(0o700)
    except OSError as err:
        raise PkiError(f"could not create directory {directory} with mode 0700: {err}") from err


def _write_issued(directory: Path, stem: str, issued: _Issued) -> tuple[Path, Path]:
    cert_path = directory / f"{stem}.pem"
    key_path = directory / f"{stem}-key.pem"
    _write_private_file(cert_path, issued.certificate.public_bytes(serialization.Encoding.PEM))
    key_pem = issued.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_private_file(key_path, key_pem)
    return cert_path, key_path


def _write_private_file(path: Path, data: bytes) -> None:
    """Write ``data`` to a new 0600 file beside ``path``, then rename it over ``path``."""
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        temporary.unlink(missing_ok=True)
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(data)
        os.replace(temporary, path)
    except OSError as err:
        raise PkiError(f"could not write {path}: {err}") from err


def _read_pem(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise PkiError(f"could not read {path}: {err}") from err


def _load_certificates(path: Path, pem: bytes) -> list[x509.Certificate]:
    try:
        certificates = x509.load_pem_x509_certificates(pem)
    except ValueError as err:
        raise PkiError(f"{path} is not a PEM certificate: {err}") from err
    return certificates


def _load_private_key(path: Path, pem: bytes) -> PrivateKeyTypes:
    try:
        return serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as err:
        raise PkiError(f"{path} is not an unencrypted PEM private key: {err}") from err
