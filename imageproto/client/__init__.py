# -*- test-case-name: tests.test_client -*-
"""
A blocking Python API for scripts: no reactor, plain sockets and threads.

    import imageproto

    with imageproto.connect("localhost:8080", name="cam1") as stream:
        reply = stream.send(image)        # numpy BGR array or JPEG bytes
        for d in reply.detections:        # [] when the server does not detect
            print(d["label"], d["confidence"], d["box"])

L{Client.send} blocks until the server answers that frame: with its RESULT
when the server runs a detector (C{--detect}, replying), otherwise with its
ACK.  Either way the answer is a L{Reply}.  It reconnects under the hood
(the same session, so a resent frame is recognised) and raises
C{TimeoutError} when no answer came within C{timeout} seconds.

For a live loop, L{Client.sendLatest} never blocks: it keeps only the newest
frame offered, a background thread sends it when the previous one has been
answered, and L{Client.latest} (or an C{onReply} callback) gives the newest
answer::

    with imageproto.connect("localhost:8080", name="cam1", live=True) as s:
        while True:
            ok, frame = camera.read()
            s.sendLatest(frame)
            reply = s.latest()            # None until the first answer

The package's modules: L{blocking} (L{Client}, L{connect}), L{connection}
(one socket: the handshake, shared with the Twisted sender through
L{imageproto.wire.answerServer}, the reader thread, and L{sendParts}, which
writes a FRAME in one C{sendmsg}), L{pending} (L{PendingFrame}), L{frames}
(L{Reply}, L{encodeFrame}, and L{framedParts}, a FRAME's bytes), L{transport}
and L{errors}.
"""

from imageproto.client.blocking import Client, PendingFrame, connect
from imageproto.client.errors import (
    ClientError,
    FrameRejected,
    MetadataUnsupported,
    ServerRefused,
)
from imageproto.client.frames import Reply, encodeFrame

__all__ = [
    "connect",
    "Client",
    "PendingFrame",
    "Reply",
    "ClientError",
    "FrameRejected",
    "ServerRefused",
    "MetadataUnsupported",
    "encodeFrame",
]
