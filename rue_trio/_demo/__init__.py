"""The chat demo behind ``python -m rue_trio``: rooms, presence and a browser page.

Private: the public face is the command line (:mod:`rue_trio.__main__`). The app is
built by :func:`make_app`, which the tests serve too.
"""

from ._chat import MAX_CONTENT, MAX_NAME, MAX_ROOM, STATIC_DIR, ChatDemo, make_app

__all__ = ["MAX_CONTENT", "MAX_NAME", "MAX_ROOM", "STATIC_DIR", "ChatDemo", "make_app"]
