"""The WebSocket side of a worker connection: websockets' server connection, made cheaper.

``websockets`` (its asyncio server) does the opening handshake, keepalive pings, the close
handshake and protocol errors. Its general-purpose message path costs, per message, a
generator-based frame parser, a hand-off through its reader queue to a coroutine in a later
event-loop turn, and one socket write per message sent; at tens of thousands of calls per
second that was most of the server's time. :class:`WireConnection` (given to ``serve`` as
``create_connection``, websockets' hook for this) keeps websockets for everything above and
shortens the message path once the connection is open and ``sink`` is set:

- **Reading ("fast mode").** ``data_received`` parses the client's frames itself: whole
  (unfragmented) text and binary frames go straight to ``sink(payload)`` in this loop turn;
  pings are answered and pongs acknowledged through websockets. At the first frame it does
  not handle (close, a fragmented message, a frame over the size limit, anything invalid),
  it hands that frame and every byte after it to websockets for good ("slow mode"):
  websockets' parser then sees a stream that starts at a frame boundary with no message in
  progress, and closes, reassembles or fails the connection exactly as it would have.
  In slow mode, whole data frames still go to ``sink`` (``process_event``); fragmented ones
  through websockets' reader, which the caller drains with ``recv`` (``slow_pending``
  counts them, and keeps the order: while one is pending, every message takes that path).
- **Writing.** :meth:`queue` collects text messages and writes them framed (server
  frames are not masked) with one ``transport.write`` per loop turn, or at once.
- **Back-pressure.** Reading pauses while the engine side is ``busy`` (too many calls
  running) or the transport's write buffer is over its high-water mark (the peer does not
  read), and resumes when both clear.

Tested with websockets 17.4. Beyond websockets' public API it relies on
``process_event`` (the hook its own server connection overrides), ``protocol`` (the Sans-I/O
state: ``state``, ``max_message_size``, ``send_pong``) and ``transport``; the byte-level
tests in tests/server/test_wire.py pin that behaviour.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.frames import Frame, Opcode
from websockets.protocol import State

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - a websockets build without its C extension
    from websockets.utils import apply_mask

from evstate.server.protocol import Message

__all__ = ["WireConnection"]

log = logging.getLogger("evstate.server.app")

_DATA = (Opcode.TEXT, Opcode.BINARY)
_TEXT, _BINARY, _PING, _PONG = 0x1, 0x2, 0x9, 0xA
_U16 = struct.Struct("!H")
_U64 = struct.Struct("!Q")


def _frame_header(length: int) -> bytes:
    """The header of an unmasked, final text frame of ``length`` bytes (RFC 6455 §5.2)."""
    if length < 126:
        return bytes((0x81, length))
    if length < 65536:
        return b"\x81\x7e" + _U16.pack(length)
    return b"\x81\x7f" + _U64.pack(length)


class WireConnection(ServerConnection):
    """A :class:`websockets.asyncio.server.ServerConnection` with a direct message path.

    Until ``sink`` is set, it behaves exactly like its base class.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sink: Callable[[Message], None] | None = None
        self.slow_pending = 0  # messages in websockets' reader not yet taken with recv()
        self._request_read = False  # websockets has the whole HTTP request
        self._tail = b""  # the last bytes of the request so far (its end may be split)
        self._fast = True  # parse frames here (until a frame we leave to websockets)
        # Bytes after the request not parsed yet (a frame's start), kept as chunks and
        # joined once there are ``_need`` of them: a large frame trickling in is copied once,
        # not once per chunk.
        self._partial: list[bytes] = []
        self._partial_len = 0
        self._need = 0
        self._assembling = False  # slow mode: a fragmented message is arriving
        self._outbox: list[bytes] = []
        self._busy = False
        self._write_paused = False
        self._read_paused = False
        self._limit: int | None = None  # the largest message accepted (set by start)

    # ---- reading -----------------------------------------------------------------------

    def start(self, sink: Callable[[Message], None]) -> None:
        """Deliver messages to ``sink`` from now on (call once, when the handler starts)."""
        self.sink = sink
        # max_message_size in websockets 17; fall back to the constructor's name, max_size.
        protocol: Any = self.protocol
        self._limit = getattr(protocol, "max_message_size", getattr(protocol, "max_size", None))
        if self._partial:
            self._need = 0
            self.data_received(b"")

    def _keep(self, rest: bytes, need: int = 0) -> None:
        """Keep ``rest`` (the start of a frame) until ``need`` bytes of it are here."""
        self._partial = [rest] if rest else []
        self._partial_len = len(rest)
        self._need = need

    def _take(self, data: bytes) -> bytes | None:
        """``data`` after what was kept, or None when the kept frame is still short."""
        if not self._partial:
            return data
        self._partial.append(data)
        self._partial_len += len(data)
        if self._partial_len < self._need:
            return None
        joined = b"".join(self._partial)
        self._keep(b"")
        return joined

    def data_received(self, data: bytes) -> None:
        """Parse whole frames here while in fast mode; give the rest to websockets."""
        if not self._request_read:
            # websockets gets exactly the HTTP request, so its frame parser has seen
            # nothing when (and if) fast mode starts: it is idle at a frame boundary.
            joined = self._tail + data
            end = joined.find(b"\r\n\r\n")
            if end < 0:
                self._tail = joined[-3:]
                super().data_received(data)
                return
            cut = end + 4 - len(self._tail)
            self._request_read = True
            super().data_received(data[:cut])
            data = data[cut:]
        taken = self._take(data)
        if not taken:
            return
        data = taken
        if not self._fast:
            super().data_received(data)
            return
        state = self.protocol.state
        if state is not State.OPEN:
            if state is State.CONNECTING:  # the handshake response is not sent yet
                self._keep(data)
            else:  # closing: websockets reads the rest (the peer's close frame)
                self._leave_to_websockets(data)
            return
        sink = self.sink
        if sink is None:  # the handler has not started yet: keep the bytes for it
            self._keep(data)
            if len(data) > 2**20:  # a client that floods before that: the ordinary path
                self._leave_to_websockets(b"")
            return
        self._parse(data, sink)

    def _parse(self, data: bytes, sink: Callable[[Message], None]) -> None:
        end = len(data)
        limit = self._limit
        i = 0
        while i < end:
            if end - i < 2:
                self._keep(data[i:])
                return
            first, second = data[i], data[i + 1]
            opcode, length = first & 0x0F, second & 0x7F
            head = i + 6  # 2 header bytes + 4 mask bytes
            if length == 126:
                head += 2
                if end >= head:
                    length = _U16.unpack_from(data, i + 2)[0]
            elif length == 127:
                head += 8
                if end >= head:
                    length = _U64.unpack_from(data, i + 2)[0]
            if end < head:
                self._keep(data[i:])
                return
            if (
                first & 0xF0 != 0x80  # not final, or reserved bits (no extensions here)
                or not second & 0x80  # client frames must be masked
                or opcode not in (_TEXT, _BINARY, _PING, _PONG)
                or (opcode >= 0x8 and length > 125)
                or (limit is not None and length > limit)
            ):
                self._leave_to_websockets(data[i:])
                return
            stop = head + length
            if stop > end:
                self._keep(data[i:], need=stop - i)
                return
            payload = apply_mask(data[head:stop], data[head - 4 : head])
            i = stop
            if opcode <= _BINARY:
                sink(payload)
                if self.protocol.state is not State.OPEN or not self._fast:
                    if i < end:  # the sink closed the connection: websockets takes over
                        self._leave_to_websockets(data[i:])
                    return
            elif opcode == _PING:
                self.protocol.send_pong(payload)
                self.send_data()
            else:  # a pong: websockets acknowledges its keepalive ping
                super().process_event(Frame(Opcode.PONG, payload))

    def _leave_to_websockets(self, rest: bytes) -> None:
        # `rest` (with anything kept in _partial before it) starts at a frame boundary and
        # no message is half-read: websockets' parser, which has seen nothing since the
        # request, takes the stream over from here, for good.
        self._fast = False
        rest = b"".join([*self._partial, rest])
        self._keep(b"")
        if rest:
            super().data_received(rest)

    def process_event(self, event: Any) -> None:
        """Slow mode: whole data frames to ``sink``, everything else to websockets."""
        sink = self.sink
        if sink is not None and isinstance(event, Frame):
            opcode = event.opcode
            if opcode in _DATA:
                if event.fin and not self._assembling and not self.slow_pending:
                    sink(event.data)
                    return
                self._assembling = not event.fin
                self.slow_pending += event.fin
            elif opcode is Opcode.CONT and event.fin:
                self._assembling = False
                self.slow_pending += 1
        super().process_event(event)

    def set_busy(self, busy: bool) -> None:
        """Pause reading while the engine side cannot take more (and resume after)."""
        self._busy = busy
        self._update_reading()

    def pause_writing(self) -> None:
        """The socket's write buffer is over its high-water mark: stop reading too."""
        super().pause_writing()
        self._write_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        """The write buffer drained: read again (unless the engine side is busy)."""
        super().resume_writing()
        self._write_paused = False
        self._update_reading()

    def _update_reading(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        want_pause = self._busy or self._write_paused
        if want_pause and not self._read_paused:
            self._read_paused = True
            transport.pause_reading()
        elif not want_pause and self._read_paused:
            self._read_paused = False
            transport.resume_reading()

    # ---- writing -----------------------------------------------------------------------

    def queue(self, data: bytes, *, flush: bool = False) -> None:
        """Send text message ``data`` (UTF-8 JSON) with the outbox.

        The outbox is written at the end of this loop turn, or now with ``flush``.
        Messages for a connection that is not open are dropped.
        """
        if not self._outbox and not flush:
            asyncio.get_running_loop().call_soon(self.flush)
        self._outbox.append(data)
        if flush:
            self.flush()

    def flush(self) -> None:
        """Write the outbox in one system call."""
        messages, self._outbox = self._outbox, []
        if not messages or self.protocol.state is not State.OPEN:
            return
        chunks: list[bytes] = []
        for data in messages:
            chunks.append(_frame_header(len(data)))
            chunks.append(data)
        try:
            self.transport.write(b"".join(chunks))
        except Exception as exc:  # the transport broke: the connection is closing anyway
            log.debug("evstate serve: write failed: %s", exc)
