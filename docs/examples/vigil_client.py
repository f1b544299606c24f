"""A minimal `vigil/1` client in Python, written from docs/protocol.md alone.

It checks that the page is enough to implement a client: HELLO, OPEN, a BATCH of line
protocol (ACK), a bad batch (REJECT, the stream goes on), and the first batch sent again
(ACK with duplicate=1: stored once). Not part of the test suite; run it by hand against a
local server:

    pip install aioquic
    python3 docs/examples/vigil_client.py 127.0.0.1 7071 vigil-data/tls/server.crt "$(cat vigil-data/admin.token)"
"""

import asyncio
import struct
import sys

from aioquic.asyncio import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import StreamDataReceived


def string(text):
    """A string field: u16 length, then UTF-8."""
    b = text.encode()
    return struct.pack(">H", len(b)) + b


def frame(body):
    """A frame: u32 length of what follows (type + fields), big-endian."""
    return struct.pack(">I", len(body)) + body


def decode(body):
    """The server's frames, as tuples."""
    t = body[0]
    if t == 0x02:
        return ("WELCOME",) + struct.unpack(">HIH", body[1:9])
    if t == 0x04:
        return ("RESUME",) + struct.unpack(">IQ", body[1:13])
    if t == 0x06:
        return ("ACK",) + struct.unpack(">QBI", body[1:14])
    if t == 0x07:
        seq, code, n = struct.unpack(">QHH", body[1:13])
        return ("REJECT", seq, code, body[13 : 13 + n].decode())
    if t == 0x08:
        return ("BUSY",) + struct.unpack(">QI", body[1:13])
    if t == 0x09:
        code, n = struct.unpack(">HH", body[1:5])
        return ("ERROR", code, body[5 : 5 + n].decode())
    if t == 0x0B:
        return ("REGISTERED",) + struct.unpack(">Q", body[1:9])
    raise ValueError(f"unknown frame type {t:#04x}")


class Client(QuicConnectionProtocol):
    """Keeps each stream's bytes until a whole frame is there (frames may arrive cut)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.buffers = {}
        self.waiters = {}

    def quic_event_received(self, event):
        if isinstance(event, StreamDataReceived):
            self.buffers.setdefault(event.stream_id, bytearray()).extend(event.data)
            waiter = self.waiters.pop(event.stream_id, None)
            if waiter and not waiter.done():
                waiter.set_result(None)

    async def next_frame(self, stream):
        buf = self.buffers.setdefault(stream, bytearray())
        while True:
            if len(buf) >= 4:
                n = struct.unpack(">I", buf[:4])[0]
                if len(buf) >= 4 + n:
                    body = bytes(buf[4 : 4 + n])
                    del buf[: 4 + n]
                    return decode(body)
            waiter = asyncio.get_running_loop().create_future()
            self.waiters[stream] = waiter
            await asyncio.wait_for(waiter, 10)

    def send(self, stream, data):
        self._quic.send_stream_data(stream, data)
        self.transmit()


async def main(host, port, ca, token):
    config = QuicConfiguration(is_client=True, alpn_protocols=["vigil/1"])
    config.load_verify_locations(ca)
    config.server_name = "localhost"
    async with connect(host, int(port), configuration=config, create_protocol=Client) as c:
        control = c._quic.get_next_available_stream_id()
        c.send(control, frame(b"\x01" + struct.pack(">H", 1) + string(token) + string("py-agent-1")))
        print(await c.next_frame(control))  # WELCOME version max_frame max_in_flight

        channel = c._quic.get_next_available_stream_id()
        c.send(channel, frame(b"\x03" + struct.pack(">I", 1)))  # OPEN channel 1
        _, _, stored = await c.next_frame(channel)  # RESUME channel stored_seq
        seq = stored + 1
        lines = b"pyclient,host=a v=1i 1700000000000000000\npyclient,host=b v=2i 1700000000000000000\n"
        batch = lambda s, payload: frame(b"\x05" + struct.pack(">QB", s, 1) + payload)
        c.send(channel, batch(seq, lines))
        print(await c.next_frame(channel))  # ACK seq duplicate=0 rows=2
        c.send(channel, batch(seq + 1, b"no fields here\n"))
        print(await c.next_frame(channel))  # REJECT seq+1 6 "line 1 ..."
        c.send(channel, batch(seq, lines))
        print(await c.next_frame(channel))  # ACK seq duplicate=1 rows=0


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
