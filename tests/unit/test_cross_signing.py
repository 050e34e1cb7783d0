"""Cross-signing keys: stored once (0600) and reused, and their signatures check out with an
independent Ed25519 implementation (PyNaCl, which Synapse uses)."""

from __future__ import annotations

import base64
from pathlib import Path

from nacl.signing import VerifyKey

from abusebot.cross_signing import CrossSigningKeys, canonical

USER = "@bot:example.org"


def raw(value: str) -> bytes:
    return base64.b64decode(value + "=" * (-len(value) % 4))


def test_keys_are_made_once_private_and_reused(tmp_path: Path) -> None:
    first = CrossSigningKeys.load_or_create(tmp_path)
    assert (tmp_path / "cross_signing.json").stat().st_mode & 0o777 == 0o600
    again = CrossSigningKeys.load_or_create(tmp_path)
    assert again == first
    assert len({first.master.public, first.self_signing.public, first.user_signing.public}) == 3


def test_the_master_key_signs_the_self_signing_key_verifiably(tmp_path: Path) -> None:
    keys = CrossSigningKeys.load_or_create(tmp_path)
    ssk = keys.key_object(USER, "self_signing")
    signature = ssk["signatures"][USER][f"ed25519:{keys.master.public}"]
    VerifyKey(raw(keys.master.public)).verify(canonical(ssk), raw(signature))  # raises when wrong
    assert ssk["keys"] == {f"ed25519:{keys.self_signing.public}": keys.self_signing.public}


def test_a_device_signature_covers_the_canonical_json_without_signatures_and_unsigned(tmp_path: Path) -> None:
    keys = CrossSigningKeys.load_or_create(tmp_path)
    device = {
        "user_id": USER,
        "device_id": "DEV",
        "algorithms": ["m.megolm.v1.aes-sha2"],
        "keys": {"ed25519:DEV": "abc", "curve25519:DEV": "déf"},
        "signatures": {USER: {"ed25519:DEV": "own"}},
        "unsigned": {"device_display_name": "abusebot"},
    }
    signature = keys.self_signing.sign(device)
    VerifyKey(raw(keys.self_signing.public)).verify(canonical(device), raw(signature))
    assert canonical(device).startswith(b'{"algorithms":')
    assert b"unsigned" not in canonical(device)
    assert "déf".encode() in canonical(device)  # canonical JSON is UTF-8, not \\u escapes
