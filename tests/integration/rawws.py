"""A WebSocket client by hand, for the tests that need what a well-behaved library will not do: stop
reading, vanish in the middle of a frame, or look at the close frame. Only what those tests need."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
from dataclasses import dataclass

import msgpack

OP_TEXT, OP_BINARY, OP_CLOSE = 0x1, 0x2, 0x8


def client_frame(payload: bytes | str, *, fin: bool = True, opcode: int | None = None) -> bytes:
    """One masked frame (text for ``str``, binary for ``bytes``, or ``opcode`` as given), as a client
    must send it."""
    if opcode is None:
        opcode = OP_TEXT if isinstance(payload, str) else OP_BINARY
    data = payload.encode() if isinstance(payload, str) else payload
    header = bytes([(0x80 if fin else 0) | opcode])
    if len(data) < 126:
        header += bytes([0x80 | len(data)])
    elif len(data) < 1 << 16:
        header += bytes([0x80 | 126]) + struct.pack("!H", len(data))
    else:
        header += bytes([0x80 | 127]) + struct.pack("!Q", len(data))
    mask = os.urandom(4)
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data))


@dataclass
class RawSocket:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    async def send(self, payload: bytes | str) -> None:
        self.writer.write(client_frame(payload))
        await self.writer.drain()

    async def send_msg(self, message: dict[str, object]) -> None:
        await self.send(msgpack.packb(message, use_bin_type=True))

    async def read_frame(self) -> tuple[int, bytes]:
        """``(opcode, payload)`` of the next server frame (unmasked, unfragmented)."""
        first, second = await self.reader.readexactly(2)
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
        return first & 0x0F, await self.reader.readexactly(length)

    async def read_until_close(self) -> tuple[list[dict[str, object]], int | None, str]:
        """Every message up to the close frame, and the close code and reason (``None``: no close frame)."""
        messages: list[dict[str, object]] = []
        while True:
            try:
                opcode, payload = await self.read_frame()
            except (asyncio.IncompleteReadError, ConnectionError):
                return messages, None, ""
            if opcode == OP_CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                return messages, code, payload[2:].decode()
            messages.append(msgpack.unpackb(payload, raw=False))

    def close(self) -> None:
        self.writer.close()


async def open_raw(
    port: int, *, headers: dict[str, str] | None = None, rcvbuf: int | None = None
) -> RawSocket:
    """Connect to the server on loopback and complete the WebSocket handshake."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock)
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        "GET / HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        *(f"{name}: {value}" for name, value in (headers or {}).items()),
    ]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    await writer.drain()
    response = await reader.readuntil(b"\r\n\r\n")
    if not response.startswith(b"HTTP/1.1 101"):
        writer.close()
        raise ConnectionRefusedError(response.decode(errors="replace").splitlines()[0])
    return RawSocket(reader, writer)
