"""The sans-I/O WebSocket state machine (RFC 6455 sections 5 to 7, RFC 7692 section 6).

Theory of operation
-------------------
A :class:`WebSocketProtocol` is one side of one connection after the opening handshake.
It does no I/O: the caller feeds it the bytes that arrived
(:meth:`WebSocketProtocol.receive_data`, :meth:`WebSocketProtocol.receive_eof`), collects
what happened (:meth:`WebSocketProtocol.events_received`) and writes out what it produced
(:meth:`WebSocketProtocol.data_to_send`).

Receiving. ``receive_data`` appends to one buffer and parses everything it holds;
``buffer_data`` only appends, and ``next_event`` parses on demand, one event per call, so
that an I/O layer parses (and inflates) only while it has room for the result and reads
again only once the buffer is consumed. A frame's header is validated as soon as its header
bytes are there, before the payload is awaited: reserved bits and opcodes, the masking rule
for this role, the control frame rules, and the message size limit, which is counted
against what the message has assembled so far, so an oversized message is refused before
it is buffered (section 10.4); each continuation frame costs 64 bytes more, so empty or tiny
fragments reach the limit too. A control frame is parsed whole; a data frame's payload is
consumed as it arrives, into one growing buffer per message (not a part per frame). Text
is validated as it arrives, so invalid UTF-8 fails the connection at the read where it
becomes certain (section 8.1), and a text message may not take more than the limit as a
``str``. A compressed message (RSV1 on its first frame, RFC 7692 section 6) is
decompressed as it arrives under the remaining size budget.

Answering. The core answers for itself what the RFC makes automatic: every ping gets its
pong (section 5.5.2), a close frame gets its echo (section 5.5.1), and a violation fails the
connection (section 7.1.7): a close frame with the RFC's code is queued, then the "close the
transport" marker, ``b""``, and later input is ignored. The violation itself is kept in
:attr:`WebSocketProtocol.parser_exc` (without its traceback, which would make a reference
cycle) and becomes the ``__cause__`` of :attr:`WebSocketProtocol.close_exc`.
``receive_data`` fails at once; ``next_event`` stops parsing and leaves the failure to
:meth:`WebSocketProtocol.fail_on_violation`, so that the events before the violation can
be answered first. Neither raises for anything the peer sends.

Closing. ``OPEN`` lasts until a close frame is sent or received, then ``CLOSING``. When the
closing handshake completes the server asks to close TCP at once; the client waits for the
server to do so (section 7.1.1). ``receive_eof`` makes the state ``CLOSED``; without a
completed handshake that is an abnormal closure, 1006 (section 7.1.5).

Sending. ``send_*`` serialize frames into the outgoing list; a client masks with a fresh
key from the operating system's CSPRNG (section 10.3). :meth:`WebSocketProtocol.encode` returns one
message's bytes without queueing them, for an I/O layer that keeps its own bounded queue.

Where it lives: the fields, the state and the report of how the connection ended are in
``_state.py``; parsing and the automatic answers in ``_receiving.py``; serializing and
closing in ``_sending.py``. Each is a class that the next one extends, up to
:class:`WebSocketProtocol`.
"""

from __future__ import annotations

from ._receiving import _ProtocolReceiving
from ._state import Role, State, detach_traceback

__all__ = ["WebSocketProtocol", "Role", "State", "detach_traceback"]


class WebSocketProtocol(_ProtocolReceiving):
    """One side of a WebSocket connection, as a sans-I/O state machine.

    Args:
        role: :attr:`Role.SERVER` or :attr:`Role.CLIENT`; it decides the masking rules.
        max_message_size: the largest message accepted, in bytes after decompression,
            counted while the message is assembled; ``None`` for no limit (not advised on
            a server: section 10.4).
        deflate: the permessage-deflate codec when the handshake negotiated it.

    Attributes:
        state: the :class:`State`.
        close_rcvd: the close frame the peer sent, once it has.
        close_sent: the close frame we sent, once we have.
        parser_exc: the violation that failed the connection, if the peer broke the protocol.
    """

    __slots__ = ()
