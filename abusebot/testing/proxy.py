"""A small HTTP proxy on 127.0.0.1 between the bot and Synapse, for tests and benchmarks that
need to see, hold or change what passes (a kill at the worst moment, a slow join, a list whose
rules Synapse does not hold)."""

from __future__ import annotations

import aiohttp
from aiohttp import web


class Proxy:
    """Forwards every request to ``upstream``. Subclasses change it in :meth:`before` (runs
    first, may wait) and :meth:`after` (gets the upstream answer; returns the body to send)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.url = ""
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Listen on a free port of 127.0.0.1 (:attr:`url`)."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))

    async def close(self) -> None:
        """Stop listening."""
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def before(self, request: web.Request) -> None:
        """Called before a request goes upstream."""

    async def after(self, request: web.Request, status: int, body: bytes) -> bytes:
        """Called with the upstream answer; returns the body to send back."""
        return body

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("authorization", "content-type")}
        await self.before(request)
        async with self._session.request(
            request.method, self.upstream + request.path_qs, data=await request.read(), headers=headers
        ) as upstream:
            body = await self.after(request, upstream.status, await upstream.read())
            return web.Response(status=upstream.status, body=body, content_type=upstream.content_type)
