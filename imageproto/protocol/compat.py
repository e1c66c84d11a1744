# -*- test-case-name: tests.test_compat -*-
"""
Protocols for hand-written socket clients that do not speak imageproto's
wire format.  Their frames join the same L{imageproto.receiver.registry.StreamRegistry}
as native senders, so they count in statistics, reach the sinks (viewer,
saving, recording) and the detector.  PROTOCOL.md, "Compatibility
protocols", is the description clients are written from.

  - L{Base64StreamProtocol} (C{--compat-base64 PORT}): a stream of frames,
    each a 64-byte space-padded ASCII decimal length, that many bytes of
    base64-encoded JPEG, then a 64-byte space-padded ASCII timestamp
    C{%Y-%m-%d %H:%M:%S.%f} in UTC.  Nothing is sent back.
  - L{LengthPrefixedImageProtocol} (C{--compat-le32 PORT}): one image per
    connection, a 4-byte little-endian length then the encoded image; the
    answer is the same framing around the marked-up JPEG (the frame itself
    when no detector runs), and then the server closes.

Bad input (a length that is not a decimal number or is too large, base64
that does not decode, a payload that is not an image, a bad timestamp) is
logged with the peer's address and drops that peer only.  The fields are
parsed by plain functions in L{imageproto.protocol.compatfields}, re-exported
here.
"""

from __future__ import annotations

import base64
import binascii
import random
import struct

from twisted.internet.protocol import Protocol, ServerFactory
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from zope.interface import implementer

from imageproto import wire
from imageproto.protocol.channel import IFrameChannel
from imageproto.protocol.compatfields import (
    FIELD_BYTES,
    TIMESTAMP_FORMAT,
    CompatError,
    parseLengthField,
    parseTimestampField,
    streamNameFor,
    toJpeg,
)
from imageproto.protocol.framing import DEFAULT_MAX_MESSAGE_BYTES, describePeer
from imageproto.protocol.limits import ReadGate
from imageproto.wire import Refused

__all__ = [
    "FIELD_BYTES",
    "TIMESTAMP_FORMAT",
    "CompatError",
    "CompatFactory",
    "Base64StreamProtocol",
    "LengthPrefixedImageProtocol",
    "streamNameFor",
    "parseLengthField",
    "parseTimestampField",
    "listen",
]

_LE32 = struct.Struct("<I")
# Unsettled frames of one base64 peer before we stop reading from it.
_HIGH_WATER = 8


class CompatFactory(ServerFactory):
    """
    Holds what a compatibility protocol reports to.

    @param streams: the receiver's L{imageproto.receiver.registry.StreamRegistry}.
    @param pipeline: the receiver's L{imageproto.receiver.pipeline.FramePipeline}.
    @param clock: an C{IReactorTime} for receive times.
    @param maxMessageBytes: the largest image accepted (decoded size).
    @param runInThread: for decoding non-JPEG images off the reactor.
    """

    def __init__(
        self,
        protocol,
        streams,
        pipeline,
        clock,
        maxMessageBytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        runInThread=deferToThread,
    ) -> None:
        self.protocol = protocol
        self.streams = streams
        self.pipeline = pipeline
        self.clock = clock
        self.maxMessageBytes = maxMessageBytes
        self.runInThread = runInThread
        # One session per listener, and sequence numbers per stream name
        # that carry on across connections, so that the registry never
        # mistakes a new connection's frame for a resent one.
        self.session = random.getrandbits(64)
        self._seqs: dict = {}

    def nextSeq(self, name: str) -> int:
        seq = self._seqs.get(name, 0)
        self._seqs[name] = seq + 1
        return seq


@implementer(IFrameChannel)
class _CompatProtocol(Protocol):
    """
    What both compatibility protocols share: a buffer, a stream attached on
    the first good frame, and dropping a peer on bad input.
    """

    log = Logger()
    prefix = "compat"
    withPort = True
    stream = None
    _closing = False

    @property
    def peer(self) -> str:
        return describePeer(self.transport)

    def connectionMade(self) -> None:
        self._buffer = bytearray()
        self._unsettled = 0
        self.gate = ReadGate(self.transport.pauseProducing, self.transport.resumeProducing)
        self.log.debug("{kind} connection from {peer}", kind=self.prefix, peer=self.peer)

    def streamName(self) -> str:
        address = self.transport.getPeer()
        host = getattr(address, "host", str(address))
        port = getattr(address, "port", None) if self.withPort else None
        return streamNameFor(self.prefix, host, port)

    def _attach(self) -> bool:
        if self.stream is not None:
            return True
        try:
            self.stream = self.factory.streams.attach(
                self.streamName(), wire.CAP_LIVE * self.live, self.factory.session, self
            )
        except Refused as e:
            self.drop(e.reason)
            return False
        self.log.info(
            "{peer} streams as {name!r} ({kind})",
            peer=self.peer,
            name=self.stream.name,
            kind=self.prefix,
        )
        return True

    def _take(self, size: int) -> bytes | None:
        if len(self._buffer) < size:
            return None
        chunk = bytes(self._buffer[:size])
        del self._buffer[:size]
        return chunk

    def drop(self, reason: str) -> None:
        """
        Log bad input from this peer and close its connection only.
        """
        if self._closing:
            return
        self._closing = True
        self._buffer = bytearray()
        self.log.warn(
            "{kind} client {peer}: {reason}; disconnecting",
            kind=self.prefix,
            peer=self.peer,
            reason=reason,
        )
        self.transport.loseConnection()

    def fail(self, code: int, reason: str) -> None:
        """
        Called by the registry at shutdown: just close.
        """
        self._closing = True
        self.transport.loseConnection()

    def replaced(self) -> None:
        """
        Another connection from the same peer took the stream name; this
        one carries on (its frames still count).
        """

    # -- IFrameChannel ------------------------------------------------------

    wantsImage = False

    def isOpen(self) -> bool:
        return not self._closing

    def pauseReading(self, reason: str) -> None:
        self.gate.hold(reason)

    def resumeReading(self, reason: str) -> None:
        if not self._closing:
            self.gate.release(reason)

    def sendResult(self, result: wire.Result) -> None:
        pass

    def connectionLost(self, reason) -> None:
        self._closing = True
        if self.stream is not None:
            self.factory.streams.detach(self.stream, self)
        self.log.debug("{kind} client {peer} disconnected", kind=self.prefix, peer=self.peer)


class Base64StreamProtocol(_CompatProtocol):
    """
    C{--compat-base64}: length field, base64 JPEG, timestamp field, again
    and again.  The stream is live: the detector may skip stale frames.
    """

    prefix = "b64"
    live = True

    def connectionMade(self) -> None:
        super().connectionMade()
        self._length = None

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        self._buffer += data
        limit = 4 * ((self.factory.maxMessageBytes + 2) // 3)
        try:
            while not self._closing:
                if self._length is None:
                    field = self._take(FIELD_BYTES)
                    if field is None:
                        return
                    self._length = parseLengthField(field, limit)
                if len(self._buffer) < self._length + FIELD_BYTES:
                    return
                encoded = self._take(self._length)
                captureTime = parseTimestampField(self._take(FIELD_BYTES))
                self._length = None
                self._frame(encoded, captureTime)
        except CompatError as e:
            self.drop(str(e))

    def _frame(self, encoded: bytes, captureTime: float) -> None:
        try:
            jpeg = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as e:
            raise CompatError(f"payload is not base64: {e}") from None
        if not wire.isJpeg(jpeg):
            raise CompatError(f"payload of {len(jpeg)} bytes is not a JPEG")
        if not self._attach():
            return
        seq = self.factory.nextSeq(self.stream.name)
        frame = wire.Frame(seq, jpeg, captureTime, captureTime)
        self.log.debug(
            "frame {seq} from {peer}: {size} bytes", seq=seq, peer=self.peer, size=len(jpeg)
        )
        self._unsettled += 1
        if self._unsettled >= _HIGH_WATER:
            # The consumers (saving to disk, say) are behind: let TCP push
            # back.
            self.pauseReading("backlog")
        self.factory.pipeline.frameReceived(self.stream, frame, self)

    def acknowledge(self, seq: int) -> None:
        self._settled()

    def reject(self, seq: int, reason: str, retry: bool = False) -> None:
        # Nothing goes back on this protocol: the pipeline has logged why.
        self._settled()

    def _settled(self) -> None:
        self._unsettled -= 1
        if self._unsettled <= _HIGH_WATER // 2:
            self.resumeReading("backlog")


class LengthPrefixedImageProtocol(_CompatProtocol):
    """
    C{--compat-le32}: one image in (4-byte little-endian length, bytes),
    one JPEG out in the same framing, then close.  Every image is processed
    (the stream is not live).
    """

    prefix = "le32"
    withPort = False
    live = False
    _length = None
    _done = False

    def dataReceived(self, data: bytes) -> None:
        if self._closing or self._done:
            return
        self._buffer += data
        if self._length is None:
            head = self._take(_LE32.size)
            if head is None:
                return
            (self._length,) = _LE32.unpack(head)
            if not 0 < self._length <= self.factory.maxMessageBytes:
                self.drop(
                    f"image length {self._length} is outside "
                    f"1..{self.factory.maxMessageBytes}"
                )
                return
        image = self._take(self._length)
        if image is None:
            return
        self._done = True
        if self._buffer:
            self.drop(f"{len(self._buffer)} bytes after the image (one image per connection)")
            return
        self.factory.runInThread(toJpeg, image).addCallbacks(
            self._converted, self._unreadable
        )

    def _unreadable(self, failure) -> None:
        failure.trap(CompatError)
        self.drop(f"image of {self._length} bytes is unreadable: {failure.value}")

    def _converted(self, jpeg: bytes) -> None:
        if self._closing or not self._attach():
            return
        seq = self.factory.nextSeq(self.stream.name)
        now = self.factory.clock.seconds()
        self._jpeg = jpeg
        self.factory.pipeline.frameReceived(self.stream, wire.Frame(seq, jpeg, now, now), self)

    # The answer is a picture: the marked-up one when a detector runs.
    wantsImage = True

    def acknowledge(self, seq: int) -> None:
        if not self.factory.pipeline.answers:
            self._answer(self._jpeg)

    def sendResult(self, result: wire.Result) -> None:
        self._answer(result.jpeg or self._jpeg)

    def reject(self, seq: int, reason: str, retry: bool = False) -> None:
        self.drop(f"the server could not accept the image: {reason}")

    def _answer(self, out: bytes) -> None:
        if self._closing:
            return
        self.transport.write(_LE32.pack(len(out)) + out)
        self.log.debug(
            "answered {peer} with {size} bytes", peer=self.peer, size=len(out)
        )
        self._closing = True
        self.transport.loseConnection()


def listen(receiver, description: str, protocol):
    """
    A service listening on C{description} with C{protocol}, feeding
    C{receiver}'s registry (an L{imageproto.receiver.service.ReceiverService}).
    A port that cannot be opened fails twistd's start.
    """
    from twisted.application.internet import StreamServerEndpointService
    from twisted.internet.endpoints import serverFromString

    factory = CompatFactory(
        protocol,
        receiver.registry,
        receiver.pipeline,
        receiver.reactor,
        maxMessageBytes=receiver.factory.maxMessageBytes,
        runInThread=receiver.runInThread,
    )
    service = StreamServerEndpointService(
        serverFromString(receiver.reactor, description), factory
    )
    service._raiseSynchronously = True
    return service
