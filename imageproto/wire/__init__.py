"""
The imageproto wire format: message classes and pure encode/decode, bytes in
and objects out, with no Twisted and no OpenCV.  See L{imageproto.wire.codec}
and C{PROTOCOL.md}.
"""

from imageproto.wire.codec import *  # noqa: F401,F403
from imageproto.wire.codec import __all__  # noqa: F401
