"""Self cross-signing: the bot's master, self-signing and user-signing keys, and its device
signed by them.

Element excludes devices their owner has not cross-signed ("exclude insecure devices",
MSC4153): an unsigned bot device gets no room keys and goes deaf in encrypted rooms. nio has no
cross-signing, so it is here: three Ed25519 keys (pycryptodome, already a dependency of nio),
their seeds kept in ``data_dir/cross_signing.json`` (mode 0600, written before they are
uploaded, so a crash in between reuses them), uploaded with ``keys/device_signing/upload``,
and the device's keys signed with ``keys/signatures/upload``.

At each start the homeserver's view is checked and only what is missing is done: a restart with
the same ``data_dir`` changes nothing a member sees. If ``data_dir`` is lost, new keys are made;
replacing the old ones needs the account's password (the homeserver asks for it), and members
see that the bot's identity changed.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import structlog
from Crypto.PublicKey import ECC
from Crypto.Signature import eddsa

from abusebot.files import write_private

log = structlog.get_logger("abusebot.cross_signing")

KEYS_FILE = "cross_signing.json"
USAGES = ("master", "self_signing", "user_signing")
Call = Callable[[str, str, Any], Awaitable[Any]]


def b64(data: bytes) -> str:
    """Unpadded standard base64, as Matrix writes keys and signatures."""
    return base64.b64encode(data).decode().rstrip("=")


def canonical(value: Mapping[str, Any]) -> bytes:
    """Matrix canonical JSON of ``value`` without ``signatures`` and ``unsigned`` (what is signed)."""
    body = {k: v for k, v in value.items() if k not in ("signatures", "unsigned")}
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()


@attrs.frozen
class SigningKey:
    """One Ed25519 key pair, from its 32-byte seed."""

    seed: bytes

    @classmethod
    def generate(cls) -> SigningKey:
        """A new random key."""
        return cls(bytes(ECC.generate(curve="ed25519").seed))

    @property
    def public(self) -> str:
        """The public key, unpadded base64."""
        key = ECC.construct(curve="ed25519", seed=self.seed)
        return b64(key.public_key().export_key(format="raw"))

    def sign(self, value: Mapping[str, Any]) -> str:
        """The signature of ``value``'s canonical JSON, unpadded base64."""
        key = ECC.construct(curve="ed25519", seed=self.seed)
        return b64(eddsa.new(key, "rfc8032").sign(canonical(value)))


@attrs.frozen
class CrossSigningKeys:
    """The bot's three cross-signing keys."""

    master: SigningKey
    self_signing: SigningKey
    user_signing: SigningKey

    @classmethod
    def load_or_create(cls, data_dir: Path) -> CrossSigningKeys:
        """The keys in ``data_dir``, made (and written, 0600) when there are none."""
        path = data_dir / KEYS_FILE
        try:
            stored = json.loads(path.read_text())
            return cls(*(SigningKey(base64.b64decode(stored[u] + "=" * (-len(stored[u]) % 4))) for u in USAGES))
        except FileNotFoundError:
            pass
        keys = cls(SigningKey.generate(), SigningKey.generate(), SigningKey.generate())
        write_private(path, json.dumps({u: b64(getattr(keys, u).seed) for u in USAGES}))
        log.info("cross_signing_keys_made", master=keys.master.public)
        return keys

    def key_object(self, user_id: str, usage: str) -> dict[str, Any]:
        """The published form of one key; the master key signs the other two."""
        key: SigningKey = getattr(self, usage)
        body: dict[str, Any] = {"user_id": user_id, "usage": [usage], "keys": {f"ed25519:{key.public}": key.public}}
        if usage != "master":
            body["signatures"] = {user_id: {f"ed25519:{self.master.public}": self.master.sign(body)}}
        return body


@attrs.frozen
class Standing:
    """What the homeserver says of the bot's cross-signing."""

    master: str | None  # the published master key (public, base64)
    self_signing: str | None
    device_signed: bool  # the device carries a signature of the published self-signing key

    @property
    def complete(self) -> bool:
        """Cross-signed: keys published and the device signed."""
        return self.master is not None and self.self_signing is not None and self.device_signed


async def standing(read: Call, user_id: str, device_id: str) -> tuple[Standing, dict[str, Any] | None]:
    """The homeserver's view, and the device's published keys (``None`` when not uploaded)."""
    reply = await read("POST", "/_matrix/client/v3/keys/query", {"device_keys": {user_id: [device_id]}})
    reply = reply if isinstance(reply, Mapping) else {}

    def published(kind: str) -> str | None:
        keys = _mapping(_mapping(reply.get(kind)).get(user_id)).get("keys")
        values = [v for v in _mapping(keys).values() if isinstance(v, str)]
        return values[0] if values else None

    device = _mapping(_mapping(reply.get("device_keys")).get(user_id)).get(device_id)
    ssk = published("self_signing_keys")
    signatures = _mapping(_mapping(_mapping(device).get("signatures")).get(user_id))
    signed = ssk is not None and f"ed25519:{ssk}" in signatures
    return Standing(published("master_keys"), ssk, signed), dict(device) if isinstance(device, Mapping) else None


async def ensure(
    read: Call, write: Call, data_dir: Path, user_id: str, device_id: str, password: str | None
) -> Standing:
    """Publish the keys and sign the device where the homeserver lacks them; the standing after."""
    keys = CrossSigningKeys.load_or_create(data_dir)
    now, device = await standing(read, user_id, device_id)
    if now.master != keys.master.public or now.self_signing != keys.self_signing.public:
        body = {u + "_key": keys.key_object(user_id, u) for u in USAGES}
        await _upload_keys(write, body, user_id, password, replacing=now.master is not None)
        log.info("cross_signing_keys_published", master=keys.master.public, replaced=now.master)
        now, device = await standing(read, user_id, device_id)
    if not now.device_signed and device is not None:
        signed = {k: v for k, v in device.items() if k not in ("signatures", "unsigned")}
        signed["signatures"] = {user_id: {f"ed25519:{keys.self_signing.public}": keys.self_signing.sign(device)}}
        reply = await write("POST", "/_matrix/client/v3/keys/signatures/upload", {user_id: {device_id: signed}})
        failures = _mapping(_mapping(reply).get("failures"))
        if failures:
            log.error("device_signing_failed", failures=failures)
        now, _ = await standing(read, user_id, device_id)
        log.info("device_cross_signed", device_id=device_id, signed=now.device_signed)
    return now


async def _upload_keys(
    write: Call, body: dict[str, Any], user_id: str, password: str | None, *, replacing: bool
) -> None:
    """Upload; the homeserver asks for the password (user-interactive auth) when keys exist
    already (a lost ``data_dir``), not for a first upload (MSC3967)."""
    from abusebot.matrix import MatrixError

    try:
        await write("POST", "/_matrix/client/v3/keys/device_signing/upload", body)
        return
    except MatrixError as err:
        session = err.body.get("session") if isinstance(err.body, Mapping) else None
        if err.status != 401 or not isinstance(session, str):
            raise
        if not password:
            raise MatrixError(
                401,
                {"errcode": "M_FORBIDDEN", "error": "replacing the cross-signing keys needs the account's password"},
            ) from err
    auth = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user_id},
        "password": password,
        "session": session,
    }
    log.warning(
        "cross_signing_keys_replaced" if replacing else "cross_signing_auth", note="identity changes for members"
    )
    await write("POST", "/_matrix/client/v3/keys/device_signing/upload", {**body, "auth": auth})


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}
