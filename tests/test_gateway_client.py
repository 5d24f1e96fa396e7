"""The gateway's replica client against real sockets: scripted raw-TCP servers on 127.0.0.1 (keep-alive reuse, a
connection the server closed while idle, chunked bodies relayed piece by piece, connect errors, timeouts)."""
from __future__ import annotations

import asyncio

import pytest

from llmfleet.gateway.client import ConnectError, ReadError, ReplicaClient, ReplicaTimeout

OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"


async def _server(handler):
    """A TCP server whose `handler(reader, writer, count)` answers; count = connections accepted so far."""
    accepted = []

    async def on_connect(reader, writer):
        accepted.append(writer)
        try:
            await handler(reader, writer, len(accepted))
        finally:
            writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", accepted


async def _read_request(reader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
    return head + await reader.readexactly(length)


def test_keep_alive_connections_are_reused_and_headers_and_body_arrive():
    async def main():
        seen = []

        async def handler(reader, writer, count):
            while True:
                try:
                    seen.append(await _read_request(reader))
                except asyncio.IncompleteReadError:
                    return
                writer.write(OK)

        server, base, accepted = await _server(handler)
        client = ReplicaClient()
        for _ in range(3):
            response = await client.send("POST", base, "/v1/completions", b'{"a": 1}', {"x-request-id": "r1"})
            assert (response.status_code, response.headers["content-type"]) == (200, "application/json")
            assert await response.read() == b"{}"
        assert len(accepted) == 1   # one connection for all three
        assert seen[0].startswith(b"POST /v1/completions HTTP/1.1\r\n") and b"x-request-id: r1\r\n" in seen[0]
        assert seen[0].endswith(b'\r\n\r\n{"a": 1}')
        await client.aclose()
        server.close()
    asyncio.run(main())


def test_an_idle_connection_the_server_closed_is_replaced_transparently():
    async def main():
        async def handler(reader, writer, count):
            await _read_request(reader)
            writer.write(OK.replace(b"content-length: 2", b"content-length: 2\r\nconnection: keep-alive"))
            await writer.drain()   # then closes, as a keep-alive timer would, without saying so

        server, base, accepted = await _server(handler)
        client = ReplicaClient()
        for _ in range(3):
            response = await client.send("POST", base, "/x", b"{}")
            assert response.status_code == 200 and await response.read() == b"{}"
            await asyncio.sleep(0.05)
        assert len(accepted) == 3
        await client.aclose()
        server.close()
    asyncio.run(main())


def test_a_chunked_stream_is_relayed_piece_by_piece_then_the_connection_is_reused():
    async def main():
        go = asyncio.Event()

        async def handler(reader, writer, count):
            while True:
                try:
                    await _read_request(reader)
                except asyncio.IncompleteReadError:
                    return
                writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
                await writer.drain()
                await go.wait()
                writer.write(b"6\r\nsecond\r\n0\r\n\r\n")

        server, base, accepted = await _server(handler)
        client = ReplicaClient()
        response = await client.send("POST", base, "/s", b"{}")
        chunks = response.chunks()
        assert await anext(chunks) == b"first"   # before the server sent the rest
        go.set()
        assert [c async for c in chunks] == [b"second"]
        again = await client.send("POST", base, "/s", b"{}")
        assert await again.read() == b"firstsecond"
        assert len(accepted) == 1
        await client.aclose()
        server.close()
    asyncio.run(main())


def test_a_connection_lost_mid_body_is_a_read_error():
    async def main():
        async def handler(reader, writer, count):
            await _read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial")
            await writer.drain()

        server, base, _ = await _server(handler)
        client = ReplicaClient()
        response = await client.send("POST", base, "/x", b"{}")
        with pytest.raises(ReadError):
            await response.read()
        await client.aclose()
        server.close()
    asyncio.run(main())


def test_connect_errors_and_timeouts_are_replica_errors():
    async def main():
        async def silent(reader, writer, count):
            await asyncio.sleep(5)

        server, base, _ = await _server(silent)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        with pytest.raises(ConnectError):
            await ReplicaClient().send("POST", f"http://127.0.0.1:{port}", "/x", b"{}")
        server, base, _ = await _server(silent)
        client = ReplicaClient(read_timeout_s=0.2)
        with pytest.raises(ReplicaTimeout):
            await client.send("POST", base, "/x", b"{}")
        await client.aclose()
        server.close()
    asyncio.run(main())


def test_beyond_max_connections_a_request_waits_for_a_connection_to_come_back():
    async def main():
        async def handler(reader, writer, count):
            while True:
                try:
                    await _read_request(reader)
                except asyncio.IncompleteReadError:
                    return
                await asyncio.sleep(0.01)
                writer.write(OK)

        server, base, accepted = await _server(handler)
        client = ReplicaClient(max_connections=2)

        async def one():
            response = await client.send("POST", base, "/x", b"{}")
            return await response.read()

        assert await asyncio.gather(*(one() for _ in range(6))) == [b"{}"] * 6
        assert len(accepted) == 2
        await client.aclose()
        server.close()
    asyncio.run(main())
