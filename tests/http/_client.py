"""A small HTTP client for tests: h11 on the client side of a stream."""

from __future__ import annotations

from dataclasses import dataclass

import h11
import trio


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    http_version: bytes = b"1.1"


class Client:
    """Sends requests and reads replies over one stream (keep-alive aware)."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.conn = h11.Connection(h11.CLIENT)

    async def request(
        self,
        method: str,
        target: str,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> Reply:
        await self.send(method, target, headers, body)
        return await self.read()

    async def send(
        self,
        method: str,
        target: str,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> None:
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
        fields = [("host", "test")]
        if body:
            fields.append(("content-length", str(len(body))))
        fields.extend(headers or [])
        data = self.conn.send(h11.Request(method=method, target=target, headers=fields))
        if body:
            data += self.conn.send(h11.Data(data=body))
        data += self.conn.send(h11.EndOfMessage())
        await self.stream.send_all(data)

    async def read(self) -> Reply:
        await trio.lowlevel.checkpoint()
        response: h11.Response | None = None
        body = bytearray()
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                self.conn.receive_data(bytes(await self.stream.receive_some(65536)))
            elif isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.InformationalResponse):
                continue
            else:
                raise AssertionError(f"unexpected {event!r}")
        assert response is not None
        headers = {k.decode(): v.decode() for k, v in response.headers}
        return Reply(response.status_code, headers, bytes(body), response.http_version)


async def read_until_eof(stream: trio.abc.ReceiveStream) -> bytes:
    data = bytearray()
    while chunk := await stream.receive_some(65536):
        data += chunk
    return bytes(data)


def parse_reply(data: bytes | bytearray) -> Reply:
    """Parse one complete response with a Content-Length (for raw exchanges)."""
    return parse_replies(data)[0]


def parse_replies(data: bytes | bytearray) -> list[Reply]:
    """Parse consecutive responses, each with a Content-Length (or none and no body)."""
    data = bytes(data)
    replies: list[Reply] = []
    while data:
        reply, data = _parse_one(data)
        replies.append(reply)
    return replies


def _parse_one(data: bytes) -> tuple[Reply, bytes]:
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    version, status, *_ = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", len(rest)))
    reply = Reply(int(status), headers, rest[:length], version.split("/")[1].encode())
    return reply, rest[length:]
