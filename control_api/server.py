"""Runs the FastAPI app with uvicorn inside the node's event loop (no second loop, no thread)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Generator

import structlog
import uvicorn

from control_api.http import ApiContext, BodyLimitMiddleware, create_app

log = structlog.get_logger("voicecall.api")


class _EmbeddedServer(uvicorn.Server):
    """uvicorn normally takes over SIGINT/SIGTERM; the daemon owns signals, so don't."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class ApiServer:
    def __init__(self, server: uvicorn.Server, task: asyncio.Task[None], sock: socket.socket):
        self._server = server
        self._task = task
        self._sock = sock
        self.host, self.port = sock.getsockname()[:2]

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def stop(self) -> None:
        self._server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self._task), 10)
        except TimeoutError:
            self._server.force_exit = True
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._sock.close()


def _bind(listen: str) -> socket.socket:
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, int(port)))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


async def start_api(ctx: ApiContext, listen: str | None = None) -> ApiServer:
    """Bind ``[api] listen`` (or ``listen``; port 0 = any free port) and serve. Returns once the
    socket is listening; raises ``OSError`` if the address is taken."""
    app = create_app(ctx)
    asgi = BodyLimitMiddleware(app, ctx.config.api.max_body_bytes,
                               ctx.config.api.max_inflight_requests)
    sock = _bind(listen or ctx.config.api.listen)
    config = uvicorn.Config(asgi, log_level="warning", access_log=False, lifespan="off",
                            proxy_headers=False, server_header=False, timeout_keep_alive=5,
                            h11_max_incomplete_event_size=64 * 1024)
    server = _EmbeddedServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="api-server")
    while not server.started:
        if task.done():
            sock.close()
            task.result()
            raise OSError("API server stopped during start-up")
        await asyncio.sleep(0.01)
    api = ApiServer(server, task, sock)
    log.info("api_listening", url=api.base_url)
    return api
