"""Connection limits (issue 11, item 5): idle timeout, concurrency limit, header size, on a real uvicorn.

The server runs in-process on a loopback port with the production uvicorn configuration
(:func:`qwen3_rerank.server.run.uvicorn_config`) over the fake model; clients are raw sockets,
so the test controls exactly what each connection sends and when. The load behaviour (500 idle
connections, 50 slow clients) is measured by ``scripts/bench_connections.py``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")

from server_fakes import FakeReranker  # noqa: E402

from qwen3_rerank.cli.main import build_parser  # noqa: E402
from qwen3_rerank.cli.options import UsageError  # noqa: E402
from qwen3_rerank.cli.serve import resolve  # noqa: E402
from qwen3_rerank.server.app import create_app  # noqa: E402
from qwen3_rerank.server.run import protocol_class, raise_open_file_limit, uvicorn_config  # noqa: E402
from qwen3_rerank.server.settings import ServerSettings  # noqa: E402

BODY = b'{"query":"q","texts":["a"]}'
REQUEST = (
    b"POST /rerank HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: %d\r\n" % len(BODY)
    + b"%b\r\n"
    + BODY
)


def run(coro) -> None:
    asyncio.run(asyncio.wait_for(coro, 60))


@asynccontextmanager
async def serving(**settings: object) -> AsyncIterator[int]:
    """The app on a real uvicorn with the production config; yields its port."""
    config = ServerSettings(max_batch_wait=0.0, port=0, **settings)  # type: ignore[arg-type]
    server = uvicorn.Server(uvicorn_config(config, create_app(config, FakeReranker())))
    task = asyncio.ensure_future(server.serve())
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert not task.done() and time.monotonic() < deadline, "server did not start"
            await asyncio.sleep(0.02)
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        await task


async def request(port: int, extra_header: bytes = b"") -> int:
    """Send one rerank request on a new connection; its status code."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(REQUEST.replace(b"%b", extra_header))
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 10)
        return int(status_line.split()[1])
    finally:
        writer.close()


async def closed_by_server_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1), seconds) == b""
    except asyncio.TimeoutError:
        return False


def test_a_silent_connection_is_closed_after_the_keep_alive_timeout():
    async def scenario() -> None:
        async with serving(timeout_keep_alive=1) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            began = time.monotonic()
            assert await closed_by_server_within(reader, 5)  # stock uvicorn keeps it for ever
            assert 0.8 < time.monotonic() - began < 3
            writer.close()
            # a connection that keeps sending is not cut: a request whose body comes over 2 s
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            head, body = REQUEST.replace(b"%b", b"").split(b"\r\n\r\n")
            writer.write(head + b"\r\n\r\n")
            for i in range(0, len(body), 2):
                writer.write(body[i : i + 2])
                await writer.drain()
                await asyncio.sleep(0.15)
            status_line = await asyncio.wait_for(reader.readline(), 10)
            assert int(status_line.split()[1]) == 200
            writer.close()

    run(scenario())


def test_connections_past_the_limit_get_503_and_the_limit_frees_up():
    async def scenario() -> None:
        async with serving(limit_concurrency=4, timeout_keep_alive=30) as port:
            assert await request(port) == 200
            idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
            await asyncio.sleep(0.2)
            assert await request(port) == 503  # 3 idle + this one = the limit of 4
            for _reader, writer in idle:
                writer.close()
            await asyncio.sleep(0.3)
            assert await request(port) == 200

    run(scenario())


def test_headers_past_the_limit_get_400():
    """h11 refuses a request head that grows past the limit before it is complete (the bytes it
    would have to buffer); a head that arrives whole in one read is parsed at once."""

    async def scenario() -> None:
        async with serving(max_header_bytes=2048) as port:
            assert await request(port, b"X-Pad: " + b"a" * 1000 + b"\r\n") == 200
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(REQUEST.split(b"%b")[0] + b"X-Pad: " + b"a" * 4000 + b"\r\n")  # head not finished
            await writer.drain()
            status_line = await asyncio.wait_for(reader.readline(), 10)
            assert int(status_line.split()[1]) == 400
            writer.close()
            assert await request(port, b"X-Pad: " + b"a" * 200_000 + b"\r\n") == 400  # more than one read

    run(scenario())


def test_uvicorn_config_carries_the_settings():
    settings = ServerSettings(limit_concurrency=7, timeout_keep_alive=3, max_header_bytes=999)
    config = uvicorn_config(settings, object())
    assert (config.limit_concurrency, config.timeout_keep_alive, config.h11_max_incomplete_event_size) == (7, 3, 999)
    assert config.http is not None and issubclass(config.http, protocol_class().__mro__[1])
    with pytest.raises(ValueError, match="limit_concurrency"):
        ServerSettings(limit_concurrency=0)


def test_flags_and_environment():
    parser = build_parser()
    args = parser.parse_args(["serve", "--limit-concurrency", "50"])
    env = {"QWEN3_RERANK_LIMIT_CONCURRENCY": "9", "QWEN3_RERANK_TIMEOUT_KEEP_ALIVE": "11"}
    settings, _ = resolve(args, env)
    assert (settings.limit_concurrency, settings.timeout_keep_alive, settings.max_header_bytes) == (50, 11, 16384)
    defaults, _ = resolve(parser.parse_args(["serve"]), {})
    assert (defaults.limit_concurrency, defaults.timeout_keep_alive) == (1024, 5)
    with pytest.raises(UsageError, match="QWEN3_RERANK_MAX_HEADER_BYTES"):
        resolve(parser.parse_args(["serve"]), {"QWEN3_RERANK_MAX_HEADER_BYTES": "0"})


def test_open_file_limit_is_raised_to_fit_the_connections():
    resource = pytest.importorskip("resource")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (300, hard))
        wanted = 600 if hard == resource.RLIM_INFINITY else min(600, hard)
        assert raise_open_file_limit(600 - 256) == wanted
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == wanted
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
