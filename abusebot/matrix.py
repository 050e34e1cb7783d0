"""The I/O edge: HTTP calls to the homeserver through matrix-nio's ``AsyncClient`` transport.

We use nio for login and for its aiohttp session, but read responses raw: nio's own retry loop
reads only the body's ``retry_after_ms`` (never the ``Retry-After`` header), retries 429s forever
by default, and its typed sync parsing drops wrongly-typed events. Every *write* goes through
:class:`WriteQueue`, the one place that knows about rate limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import json
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import attrs
import structlog
from nio import AsyncClient, AsyncClientConfig

log = structlog.get_logger("abusebot.matrix")

API = "/_matrix/client/v3"


def q(value: str) -> str:
    """Percent-encode one path segment (room ids, user ids, event types)."""
    return quote(value, safe="")


class MatrixError(Exception):
    """The homeserver answered with an error status."""

    def __init__(self, status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> None:
        self.status = status
        self.body = body
        self.errcode = str(body.get("errcode", "")) if isinstance(body, Mapping) else ""
        self.error = str(body.get("error", "")) if isinstance(body, Mapping) else ""
        self.headers = dict(headers or {})
        super().__init__(f"{status} {self.errcode}: {self.error}".strip())

    @property
    def rate_limited(self) -> bool:
        """True for ``M_LIMIT_EXCEEDED`` / HTTP 429."""
        return self.status == 429 or self.errcode == "M_LIMIT_EXCEEDED"

    def retry_after(self) -> float | None:
        """Seconds to wait: the body's ``retry_after_ms``, else the ``Retry-After`` header."""
        ms = self.body.get("retry_after_ms") if isinstance(self.body, Mapping) else None
        if isinstance(ms, int) and not isinstance(ms, bool) and ms >= 0:
            return ms / 1000
        header = self.headers.get("Retry-After") or self.headers.get("retry-after")
        if header is not None:
            with contextlib.suppress(ValueError):
                return max(0.0, float(header))
        return None


def _parsed(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else {}
    except ValueError:
        return {"error": raw[:200].decode("utf-8", "replace")}


def iter_json_array(raw: bytes) -> Iterator[Any]:
    """The items of a JSON array, one at a time: a 100,000-event answer never exists as 100,000
    dicts at once (parsed whole, they cost ~90 MB that the allocator does not give back)."""
    text = raw.decode("utf-8", "replace")
    decoder = json.JSONDecoder()
    end = len(text)
    index = _skip_space(text, 0)
    if index >= end or text[index] != "[":
        return
    index = _skip_space(text, index + 1)
    while index < end and text[index] != "]":
        try:
            item, index = decoder.raw_decode(text, index)
        except ValueError:
            return
        yield item
        index = _skip_space(text, index)
        if index < end and text[index] == ",":
            index = _skip_space(text, index + 1)


def _skip_space(text: str, index: int) -> int:
    while index < len(text) and text[index] in " \t\r\n":
        index += 1
    return index


def _object(reply: Any) -> dict[str, Any]:
    """A JSON answer that should be an object: a wrong type is an empty one, never a crash."""
    return reply if isinstance(reply, dict) else {}


class HomeserverUnavailable(Exception):
    """The homeserver could not be reached (connection refused, reset, timed out)."""


def unreachable(err: BaseException) -> str:
    """Why a request did not get an answer, in words (not a repr of aiohttp's internals)."""
    if isinstance(err, aiohttp.ClientConnectorError):
        cause = err.os_error.strerror if err.os_error is not None and err.os_error.strerror else "no connection"
        return f"cannot connect to {err.host}:{err.port} ({cause.lower()})"
    if isinstance(err, asyncio.TimeoutError):
        return "no answer in time"
    if isinstance(err, aiohttp.ServerDisconnectedError):
        return "the server closed the connection"
    text = str(err).strip()
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


class Homeserver:
    """Raw client-server API calls. Reads go straight out; writes should use :class:`WriteQueue`."""

    def __init__(self, url: str, user_id: str, device_name: str = "abusebot") -> None:
        self.client = AsyncClient(
            url,
            user_id,
            config=AsyncClientConfig(max_limit_exceeded=0, max_timeouts=0, request_timeout=90),
        )
        self.user_id = user_id
        self.device_name = device_name

    @property
    def access_token(self) -> str:
        """The current access token (empty before login)."""
        return self.client.access_token or ""

    @property
    def device_id(self) -> str:
        """The current device id (empty before login)."""
        return self.client.device_id or ""

    async def login_password(self, password: str, device_id: str | None = None) -> None:
        """Log in with a password, reusing ``device_id`` when we had one.

        A raw ``/login``: nio's own login logs a schema-validation error for every refusal
        ("'user_id' is a required property") before it says what the homeserver said.
        """
        body: dict[str, Any] = {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": self.user_id},
            "password": password,
            "initial_device_display_name": self.device_name,
        }
        if device_id:
            body["device_id"] = device_id
        self.client.access_token = ""
        reply = await self.request("POST", f"{API}/login", body)
        token, user_id, device = reply.get("access_token"), reply.get("user_id"), reply.get("device_id")
        if not (isinstance(token, str) and isinstance(user_id, str) and isinstance(device, str)):
            raise MatrixError(502, {"errcode": "M_UNKNOWN", "error": "the login answer lacks a token, user or device"})
        self.user_id = user_id
        self.restore(token, device)

    def restore(self, access_token: str, device_id: str | None) -> None:
        """Use an existing access token instead of logging in."""
        self.client.access_token = access_token
        self.client.user_id = self.user_id
        self.client.device_id = device_id or ""

    async def close(self) -> None:
        """Close the HTTP session."""
        await self.client.close()

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """One HTTP call; returns the JSON body, raises :class:`MatrixError` or
        :class:`HomeserverUnavailable`."""
        return _parsed(await self.request_bytes(method, path, body, query=query, timeout=timeout))

    async def request_bytes(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> bytes:
        """One HTTP call; returns the body unparsed (a large answer can then be read piece by
        piece), raises :class:`MatrixError` or :class:`HomeserverUnavailable`."""
        if query:
            path = f"{path}?{urlencode({k: v for k, v in query.items() if v is not None})}"
        headers = {"Content-Type": "application/json"}
        if self.client.access_token:
            headers["Authorization"] = f"Bearer {self.client.access_token}"
        data = None if body is None else json.dumps(body)
        try:
            response = await self.client.send(method, path, data, headers, timeout=timeout)
            async with response:
                raw = await response.read()
                status = response.status
                response_headers = dict(response.headers)
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as err:
            raise HomeserverUnavailable(f"{method} {path.split('?')[0]}: {unreachable(err)}") from err
        if status >= 400:
            parsed = _parsed(raw)
            raise MatrixError(status, parsed if isinstance(parsed, Mapping) else {}, response_headers)
        return bytes(raw)

    # -- reads ------------------------------------------------------------------------------------

    async def whoami(self) -> str:
        """The user id the access token belongs to (and, when the homeserver says, its device)."""
        reply = await self.request("GET", f"{API}/account/whoami")
        device = reply.get("device_id") if isinstance(reply, Mapping) else None
        if isinstance(device, str) and device and not self.client.device_id:
            self.client.device_id = device
        return str(reply.get("user_id", ""))

    async def sync(self, since: str | None, timeout_ms: int, sync_filter: str) -> dict[str, Any]:
        """One ``/sync`` long-poll, returned as raw JSON."""
        query = {"filter": sync_filter, "timeout": timeout_ms if since else 0, "since": since}
        return _object(await self.request("GET", f"{API}/sync", query=query, timeout=timeout_ms / 1000 + 60))

    async def resolve_alias(self, alias: str) -> str:
        """Room id for an alias."""
        reply = await self.request("GET", f"{API}/directory/room/{q(alias)}")
        return str(reply["room_id"])

    async def room_id(self, room: str) -> str | None:
        """The id of a room given by id or alias; ``None`` when the alias does not resolve."""
        if not room.startswith("#"):
            return room
        try:
            return await self.resolve_alias(room)
        except (MatrixError, HomeserverUnavailable):
            return None

    async def joined_rooms(self) -> list[str]:
        """The rooms the bot is joined to, as the homeserver says now (not a cached sync)."""
        reply = await self.request("GET", f"{API}/joined_rooms")
        rooms = reply.get("joined_rooms") if isinstance(reply, Mapping) else None
        return [room for room in rooms if isinstance(room, str)] if isinstance(rooms, list) else []

    async def room_state(self, room_id: str) -> list[dict[str, Any]]:
        """The full current state of a room."""
        reply = await self.request("GET", f"{API}/rooms/{q(room_id)}/state")
        return list(reply) if isinstance(reply, list) else []

    async def room_state_stream(self, room_id: str) -> Iterator[Any]:
        """The full current state of a room, one event at a time (for policy lists of any size)."""
        return iter_json_array(await self.request_bytes("GET", f"{API}/rooms/{q(room_id)}/state"))

    async def state_event(self, room_id: str, event_type: str, state_key: str = "") -> dict[str, Any] | None:
        """One state event's content, or ``None`` when there is none."""
        try:
            return _object(await self.request("GET", f"{API}/rooms/{q(room_id)}/state/{q(event_type)}/{q(state_key)}"))
        except MatrixError as err:
            if err.status == 404:
                return None
            raise

    async def messages(
        self,
        room_id: str,
        start: str | None,
        *,
        direction: str = "b",
        limit: int = 100,
        end: str | None = None,
        sync_filter: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """One page of ``/messages``."""
        query: dict[str, Any] = {"dir": direction, "limit": limit, "from": start, "to": end}
        if sync_filter:
            query["filter"] = json.dumps(sync_filter)
        return _object(await self.request("GET", f"{API}/rooms/{q(room_id)}/messages", query=query))


@attrs.frozen
class Write:
    """One queued write: a label for logs, and the HTTP call."""

    priority: int
    method: str
    path: str
    body: Any
    label: str


class Priority:
    """Queue order: removing a bad actor first, then cleaning up, then talking."""

    BAN = 0
    MEMBERSHIP = 1  # kick, unban, power levels, joins
    REDACT = 2
    STATE = 3
    MESSAGE = 4
    #: Joining the rooms of a first start: after everything else, so replies never wait behind it.
    BACKGROUND = 5


class WriteQueue:
    """The one rate-limit-aware path for every write to the homeserver.

    * On ``M_LIMIT_EXCEEDED`` it waits ``retry_after_ms``, else the ``Retry-After`` header,
      else exponential backoff; the pause applies to all workers (the limit is per account).
    * Homeserver unreachable: exponential backoff too (writes wait for it to return).
    * Attempts are capped; the caller then gets the last error.
    * Lower priority numbers go first: bans before redactions before messages.
    """

    def __init__(
        self,
        homeserver: Homeserver,
        *,
        workers: int = 4,
        max_attempts: int = 12,
        base_backoff: float = 0.5,
        max_backoff: float = 60.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.homeserver = homeserver
        self.max_attempts = max_attempts
        self.base_backoff = base_backoff
        self.max_backoff = max_backoff
        self._sleep = sleep
        self._heap: list[tuple[int, int, Write, asyncio.Future[Any]]] = []
        self._counter = itertools.count()
        self._ready = asyncio.Condition()
        self._paused_until = 0.0
        self._workers = [asyncio.create_task(self._work(i), name=f"write-{i}") for i in range(workers)]
        self.rate_limited_count = 0

    @property
    def depth(self) -> int:
        """Writes waiting for a worker."""
        return len(self._heap)

    async def submit(self, write: Write) -> Any:
        """Queue ``write`` and wait for its result (the JSON reply)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        async with self._ready:
            heapq.heappush(self._heap, (write.priority, next(self._counter), write, future))
            self._ready.notify()
        return await future

    async def close(self) -> None:
        """Stop the workers; queued writes fail with ``CancelledError``."""
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for _, _, _, future in self._heap:
            if not future.done():
                future.cancel()
        self._heap.clear()

    async def _work(self, number: int) -> None:
        while True:
            async with self._ready:
                while not self._heap:
                    await self._ready.wait()
                _, _, write, future = heapq.heappop(self._heap)
            if future.done():
                continue
            try:
                future.set_result(await self._perform(write))
            except asyncio.CancelledError:
                future.cancel()
                raise
            except Exception as err:  # the caller decides what a failure means
                if not future.done():
                    future.set_exception(err)

    def _backoff(self, attempt: int) -> float:
        return float(min(self.max_backoff, self.base_backoff * 2 ** (attempt - 1)) * random.uniform(0.8, 1.2))

    async def _perform(self, write: Write) -> Any:
        attempt = 0
        while True:
            attempt += 1
            pause = self._paused_until - time.monotonic()
            if pause > 0:
                await self._sleep(pause)
            try:
                return await self.homeserver.request(write.method, write.path, write.body)
            except MatrixError as err:
                if not err.rate_limited or attempt >= self.max_attempts:
                    raise
                self.rate_limited_count += 1
                wait = err.retry_after()
                wait = self._backoff(attempt) if wait is None else wait
                self._paused_until = max(self._paused_until, time.monotonic() + wait)
                log.warning("rate_limited", write=write.label, wait_s=round(wait, 3), attempt=attempt)
            except HomeserverUnavailable as err:
                if attempt >= self.max_attempts:
                    raise
                wait = self._backoff(attempt)
                log.warning("homeserver_unavailable", write=write.label, wait_s=round(wait, 3), error=str(err))
                await self._sleep(wait)


def txn_id(*parts: str) -> str:
    """A transaction id: derived from ``parts`` (so a replayed send is deduplicated by the
    homeserver), or random when no parts are given."""
    if not parts:
        return secrets.token_hex(12)
    import hashlib

    return "ab" + hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:30]


class Api:
    """Writes, each a :class:`Write` through the queue; reads delegate to :class:`Homeserver`."""

    def __init__(self, homeserver: Homeserver, queue: WriteQueue) -> None:
        self.hs = homeserver
        self.queue = queue
        #: ``(room, type, content) -> (type, content)``: encrypts for an encrypted room (the bot
        #: sets it once its device is ready); ``None``: everything is sent as it is.
        self.encryptor: Callable[[str, str, Mapping[str, Any]], Awaitable[tuple[str, Mapping[str, Any]]]] | None = None

    async def write(self, method: str, path: str, body: Any, priority: int = Priority.MESSAGE) -> Any:
        """A write of another kind (key uploads, to-device messages) through the same queue."""
        return await self._write(priority, method, path, body, f"{method} {path.split('?')[0][-60:]}")

    async def _write(self, priority: int, method: str, path: str, body: Any, label: str) -> Any:
        return await self.queue.submit(Write(priority, method, path, body, label))

    async def _membership(self, action: str, priority: int, room_id: str, user_id: str, reason: str) -> None:
        await self._write(
            priority,
            "POST",
            f"{API}/rooms/{q(room_id)}/{action}",
            {"user_id": user_id, "reason": reason},
            f"{action} {user_id} in {room_id}",
        )

    async def ban(self, room_id: str, user_id: str, reason: str, priority: int = Priority.BAN) -> None:
        """Ban ``user_id`` from ``room_id`` (by default ahead of everything else in the queue; a
        ban of someone not in the room, made ahead of time, goes behind everything)."""
        await self._membership("ban", priority, room_id, user_id, reason)

    async def unban(self, room_id: str, user_id: str, reason: str, priority: int = Priority.MEMBERSHIP) -> None:
        """Lift a ban."""
        await self._membership("unban", priority, room_id, user_id, reason)

    async def kick(self, room_id: str, user_id: str, reason: str, priority: int = Priority.MEMBERSHIP) -> None:
        """Kick a member."""
        await self._membership("kick", priority, room_id, user_id, reason)

    async def redact(
        self, room_id: str, event_id: str, reason: str, txn: str | None = None, priority: int = Priority.REDACT
    ) -> None:
        """Redact one event."""
        path = f"{API}/rooms/{q(room_id)}/redact/{q(event_id)}/{q(txn or txn_id('redact', event_id))}"
        body = {"reason": reason} if reason else {}  # no reason: nothing for the room to read
        await self._write(priority, "PUT", path, body, f"redact {event_id}")

    async def put_state(
        self, room_id: str, event_type: str, state_key: str, content: Mapping[str, Any], priority: int = Priority.STATE
    ) -> str:
        """Send a state event; returns its event id."""
        reply = await self._write(
            priority,
            "PUT",
            f"{API}/rooms/{q(room_id)}/state/{q(event_type)}/{q(state_key)}",
            dict(content),
            f"state {event_type} in {room_id}",
        )
        return str(reply.get("event_id", ""))

    async def send(
        self,
        room_id: str,
        content: Mapping[str, Any],
        *,
        event_type: str = "m.room.message",
        txn: str | None = None,
        priority: int = Priority.MESSAGE,
    ) -> str:
        """Send a timeline event (encrypted in an encrypted room); returns its event id."""
        if self.encryptor is not None:
            event_type, content = await self.encryptor(room_id, event_type, content)
        path = f"{API}/rooms/{q(room_id)}/send/{q(event_type)}/{q(txn or txn_id())}"
        reply = await self._write(priority, "PUT", path, dict(content), f"send {event_type} to {room_id}")
        return str(reply.get("event_id", ""))

    async def join(self, room: str, priority: int = Priority.MEMBERSHIP, via: Sequence[str] = ()) -> str:
        """Join a room by id or alias (``via``: servers to join through, for a room id we have
        never been in, such as a Space's child); returns the room id."""
        servers = "&".join(f"{name}={q(server)}" for server in via[:10] for name in ("via", "server_name"))
        path = f"{API}/join/{q(room)}" + (f"?{servers}" if servers else "")
        reply = await self._write(priority, "POST", path, {}, f"join {room}")
        return str(reply.get("room_id", room))

    async def invite(self, room_id: str, user_id: str) -> None:
        """Invite someone (back) to a room."""
        body = {"user_id": user_id}
        await self._write(Priority.MEMBERSHIP, "POST", f"{API}/rooms/{q(room_id)}/invite", body, f"invite {room_id}")

    async def leave(self, room_id: str) -> None:
        """Leave (or decline an invite to) a room."""
        await self._write(Priority.MEMBERSHIP, "POST", f"{API}/rooms/{q(room_id)}/leave", {}, f"leave {room_id}")

    async def create_room(self, body: Mapping[str, Any]) -> str:
        """Create a room; returns its id."""
        reply = await self._write(Priority.STATE, "POST", f"{API}/createRoom", dict(body), "create room")
        return str(reply["room_id"])
