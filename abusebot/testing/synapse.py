"""A throwaway Synapse homeserver on a loopback port, for tests, the demo and benchmarks.

The server is the real ``matrix-synapse`` package run as a subprocess: SQLite, bound to
127.0.0.1 only, registration by shared secret, and rate limits raised so tests measure the
bot rather than Synapse's throttling.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import attrs
import yaml

#: Rate-limit settings that effectively switch throttling off for a test server.
_GENEROUS = {"per_second": 10000, "burst_count": 10000}
_RATE_LIMIT_KEYS = (
    "rc_message",
    "rc_registration",
    "rc_admin_redaction",
    "rc_3pid_validation",
    "rc_presence",
    "rc_delayed_event_mgmt",
    "rc_room_creation",
    "rc_reports",
    "rc_send_email",
)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@attrs.define
class RegisteredUser:
    """An account created on the test server, with a ready access token."""

    user_id: str
    password: str
    access_token: str
    device_id: str


class SynapseError(RuntimeError):
    """The test homeserver could not be started or answered an admin call with an error."""


@attrs.define
class SynapseServer:
    """One Synapse process in its own temporary directory.

    Use :meth:`start` and :meth:`stop`, or the object as a context manager.
    """

    server_name: str = "localhost"
    base_dir: Path | None = None
    port: int = attrs.field(factory=free_port)
    shared_secret: str = attrs.field(factory=lambda: secrets.token_hex(16))
    process: subprocess.Popen[bytes] | None = None
    _own_dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        """The client-server API base URL."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        """Where Synapse writes its log (useful when a test fails)."""
        assert self.base_dir is not None
        return self.base_dir / "homeserver.log"

    def write_config(self) -> Path:
        """Generate the homeserver config, log config and signing key; return the config path."""
        if self.base_dir is None:
            self._own_dir = tempfile.TemporaryDirectory(prefix="abusebot-synapse-")
            self.base_dir = Path(self._own_dir.name)
        base = self.base_dir
        base.mkdir(parents=True, exist_ok=True)
        log_config = {
            "version": 1,
            "formatters": {"precise": {"format": "%(asctime)s %(name)s %(levelname)s %(message)s"}},
            "handlers": {
                "file": {
                    "class": "logging.FileHandler",
                    "formatter": "precise",
                    "filename": str(base / "homeserver.log"),
                }
            },
            "root": {"level": "WARNING", "handlers": ["file"]},
            "disable_existing_loggers": False,
        }
        (base / "log.yaml").write_text(yaml.safe_dump(log_config))
        self._write_signing_key(base / "signing.key")
        config: dict[str, Any] = {
            "server_name": self.server_name,
            "pid_file": str(base / "homeserver.pid"),
            "listeners": [
                {
                    "port": self.port,
                    "bind_addresses": ["127.0.0.1"],
                    "type": "http",
                    "tls": False,
                    "x_forwarded": False,
                    "resources": [{"names": ["client"], "compress": False}],
                }
            ],
            "database": {"name": "sqlite3", "args": {"database": str(base / "homeserver.db")}},
            "log_config": str(base / "log.yaml"),
            "media_store_path": str(base / "media"),
            "signing_key_path": str(base / "signing.key"),
            "registration_shared_secret": self.shared_secret,
            "enable_registration": False,
            "report_stats": False,
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
            "federation_domain_whitelist": [],
            "presence": {"enabled": False},
            "url_preview_enabled": False,
            "enable_metrics": False,
            # Password hashing is not what we test; the default cost makes each login ~0.3 s.
            "bcrypt_rounds": 4,
            "macaroon_secret_key": secrets.token_hex(16),
            "form_secret": secrets.token_hex(16),
            "rc_login": {
                "address": _GENEROUS,
                "account": _GENEROUS,
                "failed_attempts": _GENEROUS,
            },
            "rc_joins": {"local": _GENEROUS, "remote": _GENEROUS},
            "rc_joins_per_room": _GENEROUS,
            "rc_invites": {"per_room": _GENEROUS, "per_user": _GENEROUS, "per_issuer": _GENEROUS},
            "rc_media_create": _GENEROUS,
        }
        for key in _RATE_LIMIT_KEYS:
            config[key] = _GENEROUS
        path = base / "homeserver.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    @staticmethod
    def _write_signing_key(path: Path) -> None:
        from signedjson.key import generate_signing_key, write_signing_keys

        if path.exists():
            return
        with path.open("w") as handle:
            write_signing_keys(handle, [generate_signing_key("a_" + secrets.token_hex(2))])

    def start(self, timeout: float = 90.0) -> None:
        """Start Synapse and wait until its client API answers."""
        self._launch(self.write_config(), timeout)

    def restart(self, timeout: float = 90.0) -> None:
        """Start Synapse again on the same port, config and database (after :meth:`kill`)."""
        self.kill()
        assert self.base_dir is not None
        self._launch(self.base_dir / "homeserver.yaml", timeout)

    def kill(self, sig: int = signal.SIGTERM) -> None:
        """End the Synapse process with ``sig`` (SIGKILL if it lingers); keep its directory."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        self.process = None

    def _launch(self, config_path: Path, timeout: float) -> None:
        assert self.base_dir is not None
        env = dict(os.environ)
        env.pop("SYNAPSE_CONFIG_PATH", None)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "synapse.app.homeserver", "-c", str(config_path)],
            cwd=str(self.base_dir),
            stdout=subprocess.DEVNULL,
            stderr=open(self.base_dir / "stderr.log", "ab"),  # noqa: SIM115 - lives as long as the process
            env=env,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SynapseError(f"Synapse exited early ({self.process.returncode}); see {self.base_dir}")
            with (
                contextlib.suppress(OSError, urllib.error.URLError),
                urllib.request.urlopen(f"{self.url}/_matrix/client/versions", timeout=2) as resp,
            ):
                if resp.status == 200:
                    return
            time.sleep(0.2)
        self.stop()
        raise SynapseError(f"Synapse did not answer within {timeout}s; see {self.base_dir}")

    def stop(self) -> None:
        """Stop Synapse (SIGTERM, then SIGKILL) and remove its directory if we made it."""
        self.kill()
        if self._own_dir is not None:
            self._own_dir.cleanup()
            self._own_dir = None

    def __enter__(self) -> SynapseServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- admin helpers (blocking; they run before the bot's event loop matters) --------------

    def _call(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                return json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as err:
            raise SynapseError(f"{method} {path}: {err.code} {err.read()[:300]!r}") from err

    def register(self, localpart: str, password: str | None = None, admin: bool = False) -> RegisteredUser:
        """Register ``localpart`` through the shared-secret admin API and log it in."""
        password = password or secrets.token_hex(12)
        nonce = self._call("GET", "/_synapse/admin/v1/register")["nonce"]
        mac = hmac.new(self.shared_secret.encode(), digestmod=hashlib.sha1)
        mac.update(b"\x00".join([nonce.encode(), localpart.encode(), password.encode()]))
        mac.update(b"\x00admin" if admin else b"\x00notadmin")
        reply = self._call(
            "POST",
            "/_synapse/admin/v1/register",
            {
                "nonce": nonce,
                "username": localpart,
                "password": password,
                "admin": admin,
                "mac": mac.hexdigest(),
            },
        )
        return RegisteredUser(reply["user_id"], password, reply["access_token"], reply["device_id"])

    def set_ratelimit(self, admin_token: str, user_id: str, per_second: float, burst: int) -> None:
        """Override one user's message rate limit (0/0 lifts it, as the README tells admins)."""
        from urllib.parse import quote

        self._call(
            "POST",
            f"/_synapse/admin/v1/users/{quote(user_id)}/override_ratelimit",
            {"messages_per_second": per_second, "burst_count": burst},
            token=admin_token,
        )
