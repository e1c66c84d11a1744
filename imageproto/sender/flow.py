# -*- test-case-name: tests.test_sender -*-
"""
The sender's decisions: which frames go out, which wait, which are dropped,
what is resent after a reconnect, and when the run is over.

L{FrameSender} is the C{factory.sender} collaborator of
L{imageproto.protocol.framing.FrameSenderProtocol}, and the sink of
L{imageproto.sender.service.CaptureService}.  It touches no socket and no thread: it
is driven by plain method calls and reads time from an injected clock, so
every rule below is tested without a network.

Flow control is by ACK: at most C{window} frames are unacknowledged, by
default L{wire.LIVE_WINDOW} (8) for a live source, whose frames go stale while
they wait, and L{wire.FINITE_WINDOW} (16) for a finite one, which wants
throughput: with 8, a sender on loopback sat idle waiting for ACKs and
woke for every few of them (bench/README.md, "Issue 11, round 3").

  - A B{live} source (camera, test pattern) never waits.  A frame that
    arrives while the window is full, the transport's buffer is full
    (C{protocol.pressure.paused}) or no server is connected is dropped and
    counted; the count travels in each FRAME's C{dropped} trailer.  Frames
    unacknowledged when a connection is lost are stale by the time another
    connects, so they are abandoned and counted as lost.
  - A B{finite} source (video file, image folder) is delivered whole.  The
    capture loop asks L{FrameSender.whenReady} before reading each frame,
    so it stops reading while the window is full, the buffer is full or the
    server is away; after a reconnect every unacknowledged frame is sent
    again, oldest first, under its original sequence number (the receiver
    de-duplicates by name, session and seq).

Either way at most C{window} encoded frames are held, however slow or dead
the network is.

Frames may carry metadata (PROTOCOL.md, per-frame metadata): a fixed JSON
text for every frame (C{--metadata}), or one per frame from the capture
loop.  It goes on the wire only to a receiver whose WELCOME announced
C{SCAP_METADATA}; to any other the frames go without it, which is logged
once per run.

When the source is exhausted (or C{--count} frames went out) and every frame
is settled (acknowledged or rejected), the sender says BYE, logs a
L{Summary}, and fires L{FrameSender.whenDone}.  A permanent failure (the
server refused the HELLO, reconnecting gave up, the source could not be
opened) fails that Deferred with L{SenderFailed} instead.
"""

from __future__ import annotations

import math
import random
from typing import Callable

from attrs import define
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from imageproto import wire
from imageproto.common.numbers import percentile  # re-exported
from imageproto.sender.outcome import Counts, RunOutcome, SenderFailed, Summary

__all__ = [
    "FrameSender",
    "SenderFailed",
    "Summary",
    "percentile",
    "newSession",
]


# ERROR codes that say "not now" rather than "never", even before WELCOME:
# after them a sender reconnects with backoff; every other code is permanent
# (PROTOCOL.md, "ERROR codes").
_TRANSIENT_ERRORS = frozenset(
    [wire.ERR_STREAM_LIMIT, wire.ERR_TIMEOUT, wire.ERR_SHUTDOWN, wire.ERR_BUSY]
)


def newSession() -> int:
    """
    A random u64 that names this run of the sender (see L{wire.Hello}).
    """
    return random.SystemRandom().getrandbits(64)


@define
class _Pending:
    """
    A frame sent (or waiting to be sent) and not yet settled.
    """

    jpeg: bytes
    captureTime: float
    metadata: str | None = None
    sentAt: float | None = None
    sends: int = 0
    # When the receiver first said it could not store this frame for now,
    # and the call that sends it again.
    refusedSince: float | None = None
    retryCall: object = None


class FrameSender(RunOutcome):
    """
    Decides what one sender transmits; outlives every connection.

    @param name: the stream name sent in HELLO.
    @param live: C{True} for a source that drops frames rather than wait.
    @param clock: an C{IReactorTime} for send times and round trips.
    @param window: the most frames unacknowledged at once; C{None} for
        L{wire.defaultWindow}C{(live)}.
    @param session: the HELLO session id; random by default.
    @param onResult: called with each L{wire.Result} (see L{resultReceived}).
    @param resumable: a finite source whose C{session} names its content
        (see L{imageproto.sender.resume}): HELLO says so (C{CAP_RESUME}), and
        frames the receiver already holds are skipped.
    @param retryFor: seconds a finite source keeps sending again a frame
        the receiver could not store for now (a full disk) before giving it
        up as not stored.
    @param awaitResults: for a finite source, when the server detects
        (C{SCAP_DETECT}), a frame stays in the window after its ACK until its
        RESULT arrives, the run is not done before every RESULT is in
        (C{--results}), and frames whose RESULT a lost connection took are
        resent.  A live source never waits: the server may skip its stale
        frames, which then get no RESULT.
    @param metadata: JSON text (see L{wire.encodeMetadata}) put on every
        frame that is offered without metadata of its own, or C{None}.

    @ivar protocol: the connected, welcomed protocol, or C{None}.
    @ivar welcome: the server's last L{wire.Welcome}, or C{None}.
    """

    log = Logger()

    def __init__(
        self,
        name: str,
        live: bool,
        clock,
        window: int | None = None,
        session: int | None = None,
        onResult: Callable[[wire.Result], object] | None = None,
        awaitResults: bool = False,
        resumable: bool = False,
        retryFor: float = 60.0,
        metadata: str | None = None,
    ) -> None:
        if window is None:
            window = wire.defaultWindow(live)
        if window < 1:
            raise ValueError(f"window must be at least 1, not {window}")
        if metadata is not None:
            wire.checkMetadata(metadata)
        self.name = name
        self.live = live
        self.clock = clock
        self.window = window
        self.session = newSession() if session is None else session
        self.onResult = onResult
        self.protocol = None
        self.welcome = None
        self._nextSeq = 0
        self._unacked: dict[int, _Pending] = {}
        self.awaitResults = awaitResults
        self._awaiting: dict[int, _Pending] = {}
        self._waiters: list[Deferred] = []
        self._exhausted = False
        self._outcome = None
        self._doneWaiters: list[Deferred] = []
        self._counts = Counts()
        self.resumable = resumable and not live
        self.retryFor = retryFor
        self._resumeFrom = 0
        self._lastRefusal = ""
        self.metadata = metadata
        # Whether the connected receiver takes metadata (SCAP_METADATA), and
        # whether we said that one does not.
        self._sendMetadata = False
        self._metadataWarned = False

    # -- what the protocol calls ------------------------------------------

    def hello(self) -> wire.Hello:
        # CAP_CLOCK: our PONGs carry our clock's times, so that the receiver
        # can tell true latency from our clock's offset.
        capabilities = wire.CAP_RESULTS | wire.CAP_RETRY | wire.CAP_CLOCK
        if self.live:
            capabilities |= wire.CAP_LIVE
        if self.resumable:
            capabilities |= wire.CAP_RESUME
        if self.metadata is not None:
            capabilities |= wire.CAP_METADATA
        return wire.Hello(self.name, capabilities, self.session)

    def connected(self, protocol, welcome: wire.Welcome) -> None:
        self._counts.handshakes += 1
        self.protocol = protocol
        self.welcome = welcome
        self._sendMetadata = bool(welcome.capabilities & wire.SCAP_METADATA)
        if welcome.resume and self.resumable:
            self._resume(welcome.resume)
        self.log.info(
            "streaming {name!r} to {peer} (connection {n}, {pending} frames "
            "to resend)",
            name=self.name,
            peer=protocol.peer,
            n=self._counts.handshakes,
            pending=len(self._unacked),
        )
        for seq, pending in self._unacked.items():
            self._transmit(seq, pending)
        self._settled()

    def drained(self) -> None:
        """
        The transport's send buffer has drained (it resumed our producer):
        a capture loop waiting on L{whenReady} may go on.  Twisted pauses us
        once about 64 KiB are queued, one or two frames, and only this, not
        an ACK, says when writing may resume.
        """
        self._settled()

    def acked(self, seq: int) -> None:
        self.ackedAll((seq,))

    def ackedAll(self, seqs) -> None:
        """
        The ACKs of one read, in order: settled together, then a waiting
        capture loop woken once.  Every ACK comes this way (L{acked} too),
        so a subclass that watches ACKs overrides this alone.
        """
        for seq in seqs:
            pending = self._unacked.pop(seq, None)
            if pending is None:
                self.log.debug("ACK for frame {seq}, not outstanding", seq=seq)
                continue
            self._counts.acknowledged += 1
            self._counts.roundTrips.append(self.clock.seconds() - pending.sentAt)
            if (
                self.awaitResults
                and not self.live
                and self.welcome is not None
                and self.welcome.capabilities & wire.SCAP_DETECT
            ):
                self._awaiting[seq] = pending
        self._settled()

    def rejected(self, seq: int, reason: str, retry: bool = False) -> None:
        pending = self._unacked.get(seq)
        if pending is None:
            return
        if retry and not self.live:
            self._retryLater(seq, pending, reason)
            return
        del self._unacked[seq]
        self._counts.rejected += 1
        self._lastRefusal = reason
        self.log.warn(
            "the server rejected frame {seq}: {reason}", seq=seq, reason=reason
        )
        self._settled()

    def _retryLater(self, seq: int, pending: _Pending, reason: str) -> None:
        """
        The receiver could not store frame C{seq} for now: send it again
        after a pause that doubles up to 8 s, until L{retryFor} seconds have
        passed since the first refusal; then count it as not stored.
        """
        now = self.clock.seconds()
        if pending.refusedSince is None:
            pending.refusedSince = now
            self.log.warn(
                "the server cannot store frame {seq} now: {reason}; sending it "
                "again for up to {limit} s",
                seq=seq,
                reason=reason,
                limit=self.retryFor,
            )
        waited = now - pending.refusedSince
        if waited >= self.retryFor:
            del self._unacked[seq]
            self._counts.notStored += 1
            self._lastRefusal = reason
            self.log.error(
                "gave up on frame {seq} after {waited:.0f} s: {reason}",
                seq=seq,
                waited=waited,
                reason=reason,
            )
            self._settled()
            return
        delay = min(8.0, 0.5 * 2 ** min(pending.sends, 4), self.retryFor - waited)

        def again():
            pending.retryCall = None
            if self._unacked.get(seq) is pending and self.protocol is not None:
                self._transmit(seq, pending)

        pending.retryCall = self.clock.callLater(delay, again)

    def resultReceived(self, result: wire.Result) -> None:
        """
        A detector's answer arrived.  Counted, then handed to C{onResult}
        (the hook for saving results and batch handling).
        """
        self._counts.results += 1
        self.log.debug(
            "result for frame {seq}: {n} detections",
            seq=result.seq,
            n=len(result.detections),
        )
        if self.onResult is not None:
            self.onResult(result)
        if self._awaiting.pop(result.seq, None) is not None:
            self._settled()

    def refused(self, error: wire.Error) -> None:
        if error.code in _TRANSIENT_ERRORS:
            self.log.warn(
                "the server cannot take {name!r} now ({reason}); will retry",
                name=self.name,
                reason=error.reason,
            )
            return
        self.fail(f"the server refused the stream: {error.reason} (code {error.code})")

    def failed(self, error: wire.Error) -> None:
        # The protocol has logged the ERROR and closes the connection.  After
        # a transient one the factory reconnects and unacknowledged frames
        # are resent; a permanent one (a newer sender took this name, a
        # protocol violation) would only repeat, so stop.
        if error.code not in _TRANSIENT_ERRORS:
            self.fail(f"the server ended the stream: {error.reason} (code {error.code})")

    def disconnected(self, protocol, reason) -> None:
        if protocol is not self.protocol:
            return
        self.protocol = None
        if self.live and self._unacked:
            self._counts.lost += len(self._unacked)
            self._unacked.clear()
        if not self.live:
            # Their RESULTs went with the connection: send them again.
            self._unacked.update(self._awaiting)
        self._awaiting.clear()
        self.log.info(
            "connection lost: {reason}; {pending} frames await a reconnect",
            reason=reason.getErrorMessage(),
            pending=len(self._unacked),
        )
        self._settled()

    # -- what the capture loop calls --------------------------------------

    @property
    def ready(self) -> bool:
        """
        Whether a frame offered now would be sent at once.
        """
        return (
            self.protocol is not None
            and len(self._unacked) + len(self._awaiting) < self.window
            and not self.protocol.pressure.paused
        )

    def whenReady(self) -> Deferred:
        """
        @return: a Deferred that fires (with C{None}) once L{ready} is true;
            a finite source's capture loop waits on it before each read.
        """
        if self.ready:
            return succeed(None)
        d = Deferred(self._waiters.remove)
        self._waiters.append(d)
        return d

    def frameCaptured(self, jpeg, captureTime: float, metadata: str | None = None) -> bool:
        """
        Offer one encoded frame.

        @param jpeg: the JPEG as C{bytes} or any other buffer (a
            C{bytearray}, the numpy array C{cv2.imencode} returns), which is
            sent without being copied first: do not change a buffer until its
            frame is acknowledged.
        @param metadata: this frame's metadata as JSON text (see
            L{wire.encodeMetadata}); C{None} for the sender's fixed
            C{metadata}, if any.
        @raise ValueError: if C{metadata} is not valid metadata text.
        @return: C{True} if it was taken (sent now, or held for a finite
            source), C{False} if a live source's frame was dropped.
        """
        if self._outcome is not None:
            return False
        jpeg = wire.asPayload(jpeg)
        captureTime = float(captureTime)
        if not math.isfinite(captureTime):
            raise ValueError(f"captureTime must be finite, not {captureTime!r}")
        if metadata is None:
            metadata = self.metadata
        else:
            wire.checkMetadata(metadata)
        limit = self.welcome.maxMessageBytes if self.welcome else None
        size = len(jpeg) + wire.FRAME_OVERHEAD
        if metadata is not None and self._sendMetadata:
            size += 2 + len(metadata.encode("utf-8"))
        if limit is not None and size > limit:
            self._counts.dropped += 1
            self.log.warn(
                "a {size}-byte frame exceeds the server's limit of {limit} "
                "bytes and is not sent (lower --quality or --width)",
                size=len(jpeg),
                limit=limit,
            )
            return False
        if self.live and not self.ready:
            # Counted, not logged: twistd shows debug events, and a camera
            # without a server would log one line per frame.
            self._counts.dropped += 1
            return False
        seq = self._nextSeq
        self._nextSeq += 1
        if seq < self._resumeFrom:
            # The receiver has it from an earlier run.
            self._counts.skipped += 1
            return True
        pending = _Pending(jpeg, captureTime, metadata)
        self._unacked[seq] = pending
        if self.protocol is not None:
            self._transmit(seq, pending)
        return True

    def sourceExhausted(self) -> None:
        """
        No more frames will be offered; finish once all are settled.
        """
        self._exhausted = True
        self._settled()

    # -- results -----------------------------------------------------------

    def summary(self) -> Summary:
        return self._counts.summary(
            unacknowledged=sum(1 for p in self._unacked.values() if p.sends)
            + len(self._awaiting)
        )

    # -- internals ---------------------------------------------------------

    def _resume(self, point: int) -> None:
        """
        The receiver holds every frame numbered below C{point}: settle those
        still outstanding, and skip the rest as they are captured.
        """
        if point <= self._resumeFrom:
            return
        self._resumeFrom = point
        held = [seq for seq in self._unacked if seq < point]
        for seq in held:
            pending = self._unacked.pop(seq)
            if pending.retryCall is not None and pending.retryCall.active():
                pending.retryCall.cancel()
            self._counts.acknowledged += 1
        self.log.info(
            "the receiver holds frames 0 to {last} of this source already; going on "
            "from frame {point}",
            last=point - 1,
            point=point,
        )

    def _transmit(self, seq: int, pending: _Pending) -> None:
        now = self.clock.seconds()
        if pending.sends:
            self._counts.resent += 1
        else:
            self._counts.sent += 1
        pending.sends += 1
        pending.sentAt = now
        metadata = pending.metadata
        if metadata is not None and not self._sendMetadata:
            self._withoutMetadata()
            metadata = None
        # The fields were checked when the frame was offered: no wire.Frame.
        self.protocol.sendFrameParts(
            wire.frameParts(
                seq, pending.jpeg, pending.captureTime, now, self._counts.dropped, metadata
            )
        )

    def _withoutMetadata(self) -> None:
        """
        A frame with metadata goes to a receiver that does not take it
        (no C{SCAP_METADATA}): it goes without; say so once per run.
        """
        if self._metadataWarned:
            return
        self._metadataWarned = True
        self.log.warn(
            "the receiver at {peer} does not take per-frame metadata (no "
            "SCAP_METADATA in its WELCOME); frames are sent without it",
            peer=self.protocol.peer,
        )

    def _settled(self) -> None:
        """
        Something changed the window or the connection: wake a waiting
        capture loop, and finish if everything is delivered.
        """
        if (
            self._exhausted
            and not self._unacked
            and not self._awaiting
            and self._outcome is None
        ):
            if self.protocol is not None:
                self.protocol.sayGoodbye("done")
            missing = self._counts.rejected + self._counts.notStored
            if self.live or not missing:
                self._finish(self.logSummary("done"))
                return
            # A finite source that was not delivered whole is no success.
            self.logSummary("finished")
            self.fail(
                f"{missing} of {self._nextSeq - self._counts.skipped} frames were "
                f"not stored by the receiver (last reason: {self._lastRefusal})"
            )
            return
        if self._waiters and self.ready:
            waiters, self._waiters = self._waiters, []
            for d in waiters:
                d.callback(None)
