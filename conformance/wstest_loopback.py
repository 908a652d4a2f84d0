"""Run Autobahn|Testsuite's ``wstest`` with its WebSocket listener on 127.0.0.1 only.

Usage (Python 2.7, inside the Autobahn virtualenv)::

    python wstest_loopback.py PORT_FILE -m fuzzingserver -s spec.json -u 0

``wstest`` binds every interface; this wrapper binds the loopback interface instead and
writes the port it bound (``ws://127.0.0.1:0`` in the spec picks a free one) to
``PORT_FILE``, so that the caller needs no guess at a free port. Every other argument
goes to ``wstest`` unchanged. This file runs under Python 2.7: no annotations, no
f-strings.
"""

import sys

from autobahn.twisted import websocket
from autobahntestsuite import fuzzing, wstest

_PORT_FILE = sys.argv.pop(1)


def _listen_on_loopback(factory, context_factory=None, backlog=50):
    """Listen as ``listenWS`` does, on 127.0.0.1, and write the bound port to the port file.

    Args:
        factory: the WebSocket server factory.
        context_factory: the TLS context factory, for ``wss://`` only.
        backlog: the listen queue length.

    Returns:
        The listening port.
    """
    listener = websocket.listenWS(factory, context_factory, backlog, "127.0.0.1")
    with open(_PORT_FILE, "w") as port_file:
        port_file.write(str(listener.getHost().port) + "\n")
    return listener


fuzzing.listenWS = _listen_on_loopback
wstest.run()
