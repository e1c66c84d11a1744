# -*- test-case-name: tests.test_imagezmq -*-
"""
A drop-in for imagezmq's C{ImageSender} and C{ImageHub} that runs over
imageproto's protocol: change C{import imagezmq} to
C{from imageproto import imagezmq} and keep the rest of the script.

    sender = imagezmq.ImageSender(connect_to="tcp://hub:5555")
    reply = sender.send_image(socket.gethostname(), image)   # b"OK"

    hub = imagezmq.ImageHub(open_port="tcp://*:5555")
    msg, image = hub.recv_image()
    hub.send_reply(b"OK")

The sender is L{imageproto.client.Client} (reconnection, resending, flow
control, TLS and tokens through extra keyword arguments); the hub is
L{imageproto.hub.Hub}, the real receiver (statistics, limits, C{saveDir}).

What differs from imagezmq, on purpose:

  - Images travel as JPEG: C{send_image} encodes at C{quality} (95 unless
    given), so C{recv_image} returns a decoded, not bit-identical, array.
  - C{msg} travels with each frame as frame metadata (C{{"msg": msg}},
    PROTOCOL.md, Per-frame metadata); a C{msg} that is a valid stream name
    and the same on every call is also the stream's name.  A hub that does
    not take metadata (an old receiver) can only get such a constant name,
    and a C{msg} that cannot travel raises
    L{imageproto.client.MetadataUnsupported}.
  - A sender given a specific address with C{REQ_REP=False} binds it
    only if it can: when a hub already listens there (the drop-in's own
    direction, below) or the address is not this machine's, it dials it.
    Binding takes plain TCP: with TLS options (C{ca}, C{cert}) the sender
    dials, and C{tcp://*:PORT} with them raises C{ValueError}.  A REQ_REP
    sender always dials the hub.

PUB/SUB (C{REQ_REP=False}) goes as in imagezmq: the sender binds and each
hub connects to it, reconnecting with backoff while the sender is not up
and whenever it restarts; C{hub.connect(...)} subscribes to more senders.

    sender = imagezmq.ImageSender(connect_to="tcp://*:5555", REQ_REP=False)
    sender.send_image(name, image)                           # None, at once

    hub = imagezmq.ImageHub(open_port="tcp://SENDER:5555", REQ_REP=False)
    msg, image = hub.recv_image()

The protocol's roles do not change with the TCP direction: on each
connection it accepted the sender is still the imageproto sender (it says
HELLO: L{imageproto.client.Client} on the accepted socket), and the hub the
receiver (the real C{FrameReceiverProtocol} of the hub's C{ReceiverService},
so statistics, limits, tokens and C{saveDir} apply).  As with a PUB socket,
a hub gets the frames sent after it connected, and a hub that falls behind
loses frames rather than slowing the sender or the other hubs (counted in
the sender's C{dropped}): C{send_image} never blocks.  The drop-in's own
direction also works: a hub listening on C{tcp://*:5555} gets the frames of
a C{REQ_REP=False} sender given its address, the newest frame being sent
once the previous one is acknowledged.
"""

from imageproto.imagezmq.hub import ImageHub
from imageproto.imagezmq.messages import metadataFor, msgFrom
from imageproto.imagezmq.sender import ImageSender

__all__ = ["ImageSender", "ImageHub", "metadataFor", "msgFrom"]
