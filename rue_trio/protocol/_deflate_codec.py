"""The permessage-deflate codec (RFC 7692 section 7.2), sans-I/O.

:class:`PerMessageDeflate` compresses the frames of outgoing messages and decompresses
the frames of incoming ones, with a decompressed-size budget enforced while zlib runs, so
a zip bomb never allocates more than the budget. :func:`compress_message` compresses a
message once for every connection that shares a :attr:`PerMessageDeflate.shared_key`.
The negotiation that yields its :class:`~rue_trio.protocol.DeflateParams` is in
``_deflate.py``.

Choices worth knowing:

* A window of 8 bits is negotiated like any other, but zlib refuses ``wbits=8`` when
  compressing; we compress with 9 instead. That is safe: zlib never emits a match
  distance above ``2**wbits - 262`` (``MAX_DIST`` in ``deflate.c``), 250 bytes for 9,
  which a 256-byte window decodes. The tests check this against a zlib decoder
  created with ``wbits=-8``.
* When our side has no context takeover, the compressor is dropped after each message
  and made again for the next one, and the same goes for the decompressor when the
  peer has none. The point of those parameters is to save the memory of an idle
  connection (a 15-bit window with memory level 8 costs about 256 KiB to compress).
* Corrupt compressed data raises :class:`~rue_trio.exceptions.ProtocolError` with
  close code 1002: it breaks the framing of the extension, not the content of a
  well-formed message (1007 is for text that is not UTF-8, RFC 6455 section 7.4.1).
  The websockets library closes with 1002 too.
"""

from __future__ import annotations

import zlib

from rue_trio.exceptions import MessageTooBigError, ProtocolError
from rue_trio.protocol._deflate import DeflateConfig, DeflateParams

__all__ = ["PerMessageDeflate", "compress_message"]

# RFC 7692 section 7.2.1: a sync flush ends with an empty stored block whose last four
# octets the sender removes and the receiver appends back (section 7.2.2).
_TAIL = b"\x00\x00\xff\xff"

_DEFAULT_CONFIG = DeflateConfig()


def _compressor(window_bits: int, level: int, memory_level: int) -> zlib._Compress:
    # Negative wbits: a raw DEFLATE stream (RFC 1951), no zlib header (RFC 7692 7.2.1).
    # zlib rejects 8 when compressing; 9 keeps distances within 256 (module docstring).
    return zlib.compressobj(level, zlib.DEFLATED, -max(window_bits, 9), memory_level)


def compress_message(
    data: bytes | bytearray | memoryview, *, window_bits: int, level: int, memory_level: int
) -> bytes:
    """Compress a whole message with a fresh compressor (RFC 7692 section 7.2.1).

    The result is the payload of a message with RSV1 set for any connection whose
    :attr:`PerMessageDeflate.shareable` is true and whose
    :attr:`PerMessageDeflate.shared_key` is ``(window_bits, level, memory_level)``: it is
    byte for byte what that connection's :meth:`PerMessageDeflate.compress` would give,
    so a broadcast compresses once.

    Args:
        data: the message payload.
        window_bits: the window (8 to 15) the receiving connections compress with.
        level: the zlib compression level.
        memory_level: the zlib memory level.

    Returns:
        The compressed payload, without the trailing ``00 00 ff ff``.
    """
    compressor = _compressor(window_bits, level, memory_level)
    return (compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]


class PerMessageDeflate:
    """The permessage-deflate codec of one connection (RFC 7692 section 7.2).

    The protocol core calls :meth:`compress` for each frame of an outgoing message it
    chose to compress (it sets RSV1 on the first frame), and :meth:`decompress` for each
    frame of an incoming message whose first frame had RSV1 set. Messages shorter than
    :attr:`min_size` are best sent uncompressed: RFC 7692 section 6.1 lets a sender clear
    RSV1 on any message, and that does not touch the compression context.

    Attributes:
        min_size: the size under which the protocol core sends a message uncompressed.
    """

    __slots__ = (
        "_compressor",
        "_decompressor",
        "_level",
        "_local_no_context_takeover",
        "_local_window_bits",
        "_memory_level",
        "_remote_no_context_takeover",
        "_remote_window_bits",
        "min_size",
    )

    def __init__(
        self,
        params: DeflateParams,
        *,
        is_server: bool,
        config: DeflateConfig = _DEFAULT_CONFIG,
    ) -> None:
        """Set up the codec.

        Args:
            params: the parameters agreed on in the handshake.
            is_server: whether this side is the server, which decides whose parameters
                apply to compression ("local") and to decompression ("remote").
            config: supplies ``compress_level``, ``memory_level`` and ``min_size``.
        """
        if is_server:
            self._local_no_context_takeover = params.server_no_context_takeover
            self._remote_no_context_takeover = params.client_no_context_takeover
            self._local_window_bits = params.server_max_window_bits
            self._remote_window_bits = params.client_max_window_bits
        else:
            self._local_no_context_takeover = params.client_no_context_takeover
            self._remote_no_context_takeover = params.server_no_context_takeover
            self._local_window_bits = params.client_max_window_bits
            self._remote_window_bits = params.server_max_window_bits
        self._level = config.compress_level
        self._memory_level = config.memory_level
        self.min_size = config.min_size
        # Made on first use, so that a connection that never compresses (or never
        # receives a compressed message) never pays for zlib's buffers.
        self._compressor: zlib._Compress | None = None
        self._decompressor: zlib._Decompress | None = None

    @property
    def shareable(self) -> bool:
        """Whether a message compressed by :func:`compress_message` may be sent as is.

        True when our side has no context takeover: each of our messages is then
        compressed from a fresh state, so the same bytes suit every such connection
        with the same :attr:`shared_key`.
        """
        return self._local_no_context_takeover

    @property
    def shared_key(self) -> tuple[int, int, int]:
        """``(window_bits, level, memory_level)``: what our compressed output depends on.

        Pass these to :func:`compress_message`; a hub groups connections by this key.
        """
        return (self._local_window_bits, self._level, self._memory_level)

    def compress(self, data: bytes | bytearray | memoryview, *, fin: bool = True) -> bytes:
        """Compress one frame's worth of an outgoing message (RFC 7692 section 7.2.1).

        Each call ends with a sync flush, so the frames of a fragmented message can be
        sent as they come. On the final frame, the trailing ``00 00 ff ff`` is removed,
        and the compressor is dropped when our side has no context takeover (a new one
        starts the next message).

        Args:
            data: the next part of the message (all of it for an unfragmented message).
            fin: whether this is the final frame of the message.

        Returns:
            The frame payload.
        """
        compressor = self._compressor
        if compressor is None:
            compressor = self._compressor = _compressor(
                self._local_window_bits, self._level, self._memory_level
            )
        payload = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
        if not fin:
            return payload
        if self._local_no_context_takeover:
            self._compressor = None
        # Every sync flush ends with an empty stored block, 00 00 ff ff included, even
        # when this frame added nothing: the result is then 00, the empty fragment of
        # RFC 7692 section 7.2.3.6.
        return payload[:-4]

    def decompress(
        self, data: bytes | bytearray | memoryview, *, fin: bool, max_size: int | None
    ) -> bytes:
        """Decompress one frame of an incoming compressed message (RFC 7692 7.2.2).

        zlib never produces more than ``max_size + 1`` bytes per call, so memory stays
        bounded whatever the compression ratio. A DEFLATE block with BFINAL set ends a
        stream (RFC 7692 section 7.2.3.4); what follows it starts a new one.

        Args:
            data: the frame payload.
            fin: whether this is the final frame of the message; ``00 00 ff ff`` is
                then appended, and the decompressor is dropped when the peer has no
                context takeover.
            max_size: how many decompressed bytes this frame may still produce (what
                is left of the message's budget), or ``None`` for no limit.

        Returns:
            The decompressed bytes.

        Raises:
            MessageTooBigError: the frame would produce more than ``max_size`` bytes.
            ProtocolError: the data is not valid DEFLATE (close code 1002).
        """
        try:
            output = self._inflate(data, max_size)
            if fin:
                rest = None if max_size is None else max_size - len(output)
                output += self._inflate(_TAIL, rest)
        except zlib.error as exc:
            raise ProtocolError(f"invalid compressed data: {exc}") from exc
        if fin and self._remote_no_context_takeover:
            self._decompressor = None
        return output

    def _inflate(self, data: bytes | bytearray | memoryview, max_size: int | None) -> bytes:
        decompressor = self._decompressor
        if decompressor is None:
            decompressor = self._decompressor = zlib.decompressobj(-self._remote_window_bits)
        chunks = []
        size = 0
        while True:
            # One byte more than allowed tells "exactly max_size" from "too big"; never
            # 0 here, which zlib reads as "no limit".
            room = 0 if max_size is None else max(max_size + 1 - size, 1)
            chunk = decompressor.decompress(data, room)
            size += len(chunk)
            if max_size is not None and size > max_size:
                raise MessageTooBigError(
                    f"decompressed message exceeds the limit ({max_size} bytes left)"
                )
            chunks.append(chunk)
            if not decompressor.eof:
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)
            # BFINAL: the stream ended; anything after it is a new DEFLATE stream.
            data = decompressor.unused_data
            decompressor = self._decompressor = zlib.decompressobj(-self._remote_window_bits)
