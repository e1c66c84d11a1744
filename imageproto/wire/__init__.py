"""
The imageproto wire format, bytes in and objects out, with no Twisted and no
OpenCV: the messages (L{imageproto.wire.messages}), their encoding
(L{imageproto.wire.codec}), per-frame metadata (L{imageproto.wire.metadata}),
errors (L{imageproto.wire.errors}), the stream name rule
(L{imageproto.wire.names}), the authentication digest
(L{imageproto.wire.digest}), the sender's handshake decisions
(L{imageproto.wire.handshake}) and the clock-offset arithmetic
(L{imageproto.wire.clock}).  C{PROTOCOL.md} is the normative description.

Everything public is importable from here: C{from imageproto import wire;
wire.Frame(...)}.
"""

from imageproto.wire import clock, codec, digest, errors, handshake, messages, metadata, names, window
from imageproto.wire.clock import *  # noqa: F401,F403
from imageproto.wire.codec import *  # noqa: F401,F403
from imageproto.wire.digest import *  # noqa: F401,F403
from imageproto.wire.errors import *  # noqa: F401,F403
from imageproto.wire.handshake import *  # noqa: F401,F403
from imageproto.wire.messages import *  # noqa: F401,F403
from imageproto.wire.metadata import *  # noqa: F401,F403
from imageproto.wire.names import *  # noqa: F401,F403
from imageproto.wire.window import *  # noqa: F401,F403

__all__ = [
    *messages.__all__,
    *metadata.__all__,
    *errors.__all__,
    *codec.__all__,
    *names.__all__,
    *window.__all__,
    *digest.__all__,
    *handshake.__all__,
    *clock.__all__,
]
