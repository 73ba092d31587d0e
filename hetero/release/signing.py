"""Ed25519 signatures over fixtures and reports: a verdict nobody can forge or quietly weaken.

A content hash (`content_sha256`) catches accidents only: whoever edits a fixture's thresholds can recompute it. The
team that owns the cloud therefore signs what it releases with a private key, and mobile CI trusts its public key
(`hetero check --trust KEY.pub`): the signature covers the content hash, which covers the header (space, thresholds,
source) and every array, so one changed byte anywhere is refused. Each message names what it signs
("hetero.fixture/1", "hetero.report/1") so a signature over one kind of document never verifies another.

Keys are standard PEM (PKCS#8 private, SubjectPublicKeyInfo public) — `openssl genpkey -algorithm ed25519` makes the
same — or an OpenSSH `ssh-ed25519 …` public line. The `cryptography` package does the cryptography.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hetero.errors import InputError

ALGORITHM = "ed25519"


class SignatureError(InputError):
    """A document that must be signed by a trusted key is unsigned, signed by another key, or altered: exit 2."""


@dataclass(frozen=True)
class TrustedKey:
    """A public key CI trusts, with the id a signature names it by and the file it came from."""

    key: Any  # cryptography Ed25519PublicKey
    key_id: str
    path: str


def _crypto():
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:  # pragma: no cover - pinned in every install; a hand-made environment may lack it
        raise InputError("signing needs the package 'cryptography': pip install cryptography") from None
    return ed25519, serialization, InvalidSignature


def _raw_public(key: Any) -> bytes:
    _, serialization, _ = _crypto()
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public_key: Any) -> str:
    """sha256 of the raw 32-byte public key, first 16 hex digits: how a signature names its key."""
    return hashlib.sha256(_raw_public(public_key)).hexdigest()[:16]


def _read(path: Path, what: str) -> bytes:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} not found: {path}")
    data = path.read_bytes()
    if len(data) > 64 * 1024:
        raise InputError(f"{path}: not a {what} (a key file is a few hundred bytes, this is {len(data):,})")
    return data


def generate_key(path: Path) -> tuple[Path, str]:
    """A new Ed25519 key pair: the private key at `path` (PEM, mode 0600) and the public key at `path`.pub.
    Refuses to overwrite either. Returns the public key's path and id."""
    ed25519, serialization, _ = _crypto()
    path, pub = Path(path), Path(f"{path}.pub")
    for p in (path, pub):
        if p.exists():
            raise InputError(f"{p} exists: a key is never overwritten (remove it first if you mean to)")
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private)
    pub.write_bytes(public)
    return pub, key_id(key.public_key())


def load_private_key(path: Path) -> Any:
    """An Ed25519 private key from a PEM file (unencrypted PKCS#8 or OpenSSH)."""
    ed25519, serialization, _ = _crypto()
    data = _read(path, "private key")
    try:
        if b"OPENSSH PRIVATE KEY" in data:
            key = serialization.load_ssh_private_key(data, password=None)
        else:
            key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise InputError(f"{path}: not an unencrypted Ed25519 private key ({str(e)[:80]})") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise InputError(f"{path}: a {type(key).__name__}, not an Ed25519 private key")
    return key


def load_public_key(path: Path) -> TrustedKey:
    """An Ed25519 public key from PEM or an OpenSSH `ssh-ed25519 …` line."""
    ed25519, serialization, _ = _crypto()
    data = _read(path, "public key")
    try:
        if data.lstrip().startswith(b"ssh-"):
            key = serialization.load_ssh_public_key(data.strip())
        else:
            key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, binascii.Error) as e:
        raise InputError(f"{path}: not an Ed25519 public key ({str(e)[:80]})") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise InputError(f"{path}: a {type(key).__name__}, not an Ed25519 public key")
    return TrustedKey(key, key_id(key), str(path))


def _message(kind: str, digest: str) -> bytes:
    return f"{kind}\n{digest}".encode()


def sign(private_key: Any, kind: str, digest: str) -> dict[str, str]:
    """The signature record stored beside a document: algorithm, key id, and the signature over (kind, digest)."""
    sig = private_key.sign(_message(kind, digest))
    return {
        "algorithm": ALGORITHM,
        "key_id": key_id(private_key.public_key()),
        "signature": base64.b64encode(sig).decode(),
    }


def verify(record: Any, kind: str, digest: str, trusted: list[TrustedKey], where: str) -> TrustedKey:
    """The trusted key that signed `digest` as `kind`; SignatureError when unsigned, signed by an untrusted key,
    or altered after signing. The embedded key id only picks the key: trust comes from `trusted` alone."""
    _, _, invalid = _crypto()
    if not trusted:
        raise InputError("verify needs at least one trusted public key")
    if not isinstance(record, dict) or not record:
        raise SignatureError(f"{where}: not signed, and a trusted key is configured (sign it: hetero sign)")
    if record.get("algorithm") != ALGORITHM or not isinstance(record.get("signature"), str):
        raise SignatureError(f"{where}: signature record is malformed (algorithm {record.get('algorithm')!r})")
    try:
        sig = base64.b64decode(record["signature"], validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError(f"{where}: signature is not base64") from None
    named = [k for k in trusted if k.key_id == record.get("key_id")]
    if not named:
        ids = ", ".join(k.key_id for k in trusted)
        raise SignatureError(f"{where}: signed by key {record.get('key_id')!r}, which is not trusted (trusted: {ids})")
    try:
        named[0].key.verify(sig, _message(kind, digest))
    except invalid:
        raise SignatureError(
            f"{where}: signature does not match its content: it was altered after key {named[0].key_id} signed it"
        ) from None
    return named[0]
