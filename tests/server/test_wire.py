"""The WebSocket layer (evstate.server.wire) at the byte level: framing corner cases."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from evstate.config import Config
from tests.server.harness import WAIT, Raw, Served, wait_until


def client_frame(
    payload: bytes, opcode: int = 0x1, *, fin: bool = True, mask: bool = True
) -> bytes:
    """A client frame (RFC 6455 §5.2), masked with a random key."""
    first = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        head = bytes((first, (0x80 if mask else 0) | n))
    elif n < 65536:
        head = bytes((first, (0x80 if mask else 0) | 126)) + struct.pack("!H", n)
    else:
        head = bytes((first, (0x80 if mask else 0) | 127)) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def call_frame(i: int, **data: Any) -> bytes:
    frame = {
        "type": "invokefunction",
        "function_id": "state::set",
        "invocation_id": f"w{i}",
        "data": {"scope": "wire", "key": f"k{i}", "value": i, **data},
    }
    return client_frame(json.dumps(frame).encode())


class RawSocket:
    """A WebSocket client written by hand, to send exactly the bytes a test wants."""

    def __init__(self, url: str, first_bytes: bytes = b"") -> None:
        parts = urlsplit(url)
        assert parts.hostname is not None and parts.port is not None
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=WAIT)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET / HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        self.sock.sendall(request + first_bytes)  # frames may follow the request at once
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self.sock.recv(65536)
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head

    def frames(self, timeout: float = WAIT) -> tuple[int, bytes]:
        """The next server frame: (opcode, payload)."""
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buffer) >= 2:
                first, second = self.buffer[0], self.buffer[1]
                n, at = second & 0x7F, 2
                if n == 126:
                    n, at = struct.unpack_from("!H", self.buffer, 2)[0], 4
                elif n == 127:
                    n, at = struct.unpack_from("!Q", self.buffer, 2)[0], 10
                if len(self.buffer) >= at + n:
                    payload, self.buffer = self.buffer[at : at + n], self.buffer[at + n :]
                    return first & 0x0F, payload
            self.sock.settimeout(max(deadline - time.monotonic(), 0.001))
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buffer += chunk

    def json(self) -> dict[str, Any]:
        while True:
            opcode, payload = self.frames()
            if opcode == 0x1:
                frame: dict[str, Any] = json.loads(payload)
                return frame

    def close(self) -> None:
        self.sock.close()


def test_frames_right_after_the_request_and_split_anywhere(server: Served) -> None:
    client = RawSocket(server.url, first_bytes=call_frame(0))  # before the 101 arrives
    try:
        assert client.json()["type"] == "workerregistered"
        assert client.json()["invocation_id"] == "w0"
        stream = b"".join(call_frame(i) for i in range(1, 30))
        for at in range(0, len(stream), 7):  # 7-byte pieces: headers and masks split
            client.sock.sendall(stream[at : at + 7])
            time.sleep(0.0005)
        answers = [client.json()["invocation_id"] for _ in range(1, 30)]
        assert answers == [f"w{i}" for i in range(1, 30)]  # in order
    finally:
        client.close()
    assert len(server.store.list("wire")) == 30


def test_ping_close_and_big_frames(server: Served) -> None:
    client = RawSocket(server.url)
    try:
        assert client.json()["type"] == "workerregistered"
        client.sock.sendall(client_frame(b"are you there", opcode=0x9))
        assert client.frames() == (0xA, b"are you there")  # pong
        big = call_frame(1, blob="x" * 70_000)  # a 64-bit length
        medium = call_frame(2, blob="y" * 1_000)  # a 16-bit length
        client.sock.sendall(big + medium)
        assert [client.json()["invocation_id"] for _ in range(2)] == ["w1", "w2"]
        client.sock.sendall(client_frame(struct.pack("!H", 1000) + b"bye", opcode=0x8))
        opcode, payload = client.frames()
        assert opcode == 0x8 and struct.unpack("!H", payload[:2])[0] == 1000
    finally:
        client.close()
    wait_until(lambda: not server.hub.connections, what="the close")


def test_fragmented_messages_keep_their_order(server: Served) -> None:
    client = RawSocket(server.url)
    try:
        assert client.json()["type"] == "workerregistered"
        whole = json.dumps(
            {
                "type": "invokefunction",
                "function_id": "state::set",
                "invocation_id": "frag",
                "data": {"scope": "wire", "key": "f", "value": "fragmented"},
            }
        ).encode()
        parts = [whole[:10], whole[10:25], whole[25:]]
        stream = (
            call_frame(1)
            + client_frame(parts[0], opcode=0x1, fin=False)
            + client_frame(b"ping?", opcode=0x9)  # control frames may come in between
            + client_frame(parts[1], opcode=0x0, fin=False)
            + client_frame(parts[2], opcode=0x0, fin=True)
            + call_frame(2)
            + call_frame(3)
        )
        client.sock.sendall(stream)
        seen = []
        while len(seen) < 4:
            opcode, payload = client.frames()
            if opcode == 0x1:
                seen.append(json.loads(payload)["invocation_id"])
        assert seen == ["w1", "frag", "w2", "w3"]
    finally:
        client.close()
    assert server.store.get("wire", "f") == "fragmented"


def test_protocol_errors_close_only_that_connection(
    server: Served, raw: Callable[..., Raw]
) -> None:
    bystander = raw(server.url)
    client = RawSocket(server.url)
    try:
        assert client.json()["type"] == "workerregistered"
        client.sock.sendall(client_frame(b'{"type": "ping"}', mask=False))  # must be masked
        opcode, payload = client.frames()
        assert opcode == 0x8 and struct.unpack("!H", payload[:2])[0] == 1002
    finally:
        client.close()
    assert bystander.call("state::get", {"scope": "s", "key": "k"})["type"] == "invocationresult"


def test_size_limit_in_fragments(make_server: Callable[..., Served]) -> None:
    served = make_server(config=Config(store_method="in_memory", server_max_message_bytes=4096))
    client = RawSocket(served.url)
    try:
        assert client.json()["type"] == "workerregistered"
        client.sock.sendall(
            client_frame(b"[" + b"1," * 1500, opcode=0x1, fin=False)
            + client_frame(b"1," * 1500 + b"1]", opcode=0x0, fin=True)
        )
        opcode, payload = client.frames()
        assert opcode == 0x8 and struct.unpack("!H", payload[:2])[0] == 1009
    finally:
        client.close()


def test_keepalive_pong_is_acknowledged(server: Served, raw: Callable[..., Raw]) -> None:
    client = raw(server.url)
    conn = next(iter(server.hub.connections.values()))

    async def ping() -> float:
        pong = await conn.ws.ping()  # the server pings (keepalive does the same) ...
        return await asyncio.wait_for(pong, WAIT)  # ... and the client's pong arrives

    latency = asyncio.run_coroutine_threadsafe(ping(), server.background.loop).result(WAIT)
    assert latency >= 0
    assert client.call("state::get", {"scope": "s", "key": "k"})["type"] == "invocationresult"


def test_sdk_large_message_fragmented(server: Served, workers: Callable[..., Any]) -> None:
    # the Python SDK fragments messages over 16 MiB into 1 MiB pieces
    w = workers(server.url)
    value = "z" * (17 * 1024 * 1024)
    assert (
        w.trigger(
            {"function_id": "state::set", "payload": {"scope": "big", "key": "k", "value": value}}
        )["new_value"]
        == value
    )
    assert (
        w.trigger({"function_id": "state::get", "payload": {"scope": "big", "key": "k"}}) == value
    )


def test_abrupt_disconnect_retires_the_connection(server: Served) -> None:
    client = RawSocket(server.url)
    assert client.json()["type"] == "workerregistered"
    client.sock.sendall(call_frame(1)[:5])  # half a frame, then the socket goes away
    client.sock.close()
    wait_until(lambda: not server.hub.connections, what="the disconnect")
    assert server.store.get("wire", "k1") is None
