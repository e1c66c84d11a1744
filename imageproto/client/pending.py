# -*- test-case-name: tests.test_client -*-
"""
L{PendingFrame}: a frame the blocking client sent and is waiting on.
"""

from __future__ import annotations

import time

from imageproto import wire
from imageproto.client.connection import Connection
from imageproto.client.frames import Reply

__all__ = ["PendingFrame"]


class PendingFrame:
    """
    A frame sent and not yet answered, as L{Client.send} returns it with
    C{wait=False}.  L{result} waits for the answer, reconnecting and
    sending the frame again if the connection drops meanwhile.

    Its state (answered, lost) is guarded by its client's C{_state} lock,
    and L{result} waits on the client's C{_changed} condition: one lock and
    one condition for all of a client's frames, not one per frame, since
    most frames are settled without anyone waiting on them.

    @ivar seq: the frame's sequence number.
    @ivar jpeg: the frame's JPEG bytes.
    @ivar captureTime: when it was captured (C{time.time()} clock).
    @ivar metadata: its metadata as JSON text, or C{None}.
    @ivar sendTime: when it was last sent (C{time.time()} clock), C{0.0}
        before.
    """

    def __init__(
        self, client, seq: int, jpeg: bytes, captureTime: float, metadata: str | None = None
    ) -> None:
        self.seq = seq
        self.jpeg = jpeg
        self.captureTime = captureTime
        self.metadata = metadata
        # The UTF-8 that travels, encoded once for every send.
        self._metadataBytes = None if metadata is None else metadata.encode("utf-8")
        self.sendTime = 0.0
        self._client = client
        self._outcome = None
        self._lostOn = None
        self.sentOn = None

    def __repr__(self) -> str:
        state = "done" if self.done() else "pending"
        return f"<PendingFrame seq={self.seq} {state}>"

    @property
    def frame(self) -> wire.Frame:
        """
        The C{wire.Frame} as last sent (its C{sendTime} is set on each
        send), made when asked for: the client writes a frame's bytes
        without one.
        """
        return wire.Frame(
            self.seq, self.jpeg, self.captureTime, self.sendTime, metadata=self.metadata
        )

    def done(self) -> bool:
        """
        Whether the frame has been answered (or refused).
        """
        return self._outcome is not None

    def result(self, timeout: float | None = None) -> Reply:
        """
        Wait for the server's answer to this frame.

        @param timeout: seconds, reconnections included; the client's
            default when C{None}.  The frame stays in flight after a
            timeout: wait again, or close the client.
        @raise TimeoutError: if no answer came in time.
        @raise FrameRejected: if the server refused the frame.
        """
        client = self._client
        deadline = time.monotonic() + (client.timeout if timeout is None else timeout)
        while True:
            with client._state:
                while self._outcome is None and self._lostOn is None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise TimeoutError(f"no answer to frame {self.seq} in time")
                    client._changedWaiters += 1
                    try:
                        client._changed.wait(remaining)
                    finally:
                        client._changedWaiters -= 1
                outcome = self._outcome
            if outcome is not None:
                break
            # The connection dropped: reconnecting sends this frame again
            # under the same session, and the server recognises it.
            try:
                client._restore(deadline)
            except TimeoutError:
                raise TimeoutError(f"connection lost; frame {self.seq} unanswered") from None
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    # -- called by the connection and the client ----------------------------

    def _sent(self, connection: Connection) -> None:
        with self._client._state:
            self.sentOn = connection
            self._lostOn = None

    def _lost(self, connection: Connection) -> None:
        client = self._client
        with client._state:
            if connection is self.sentOn and self._outcome is None:
                self._lostOn = connection
                if client._changedWaiters:
                    client._changed.notify_all()

    def _settle(self, outcome) -> None:
        self._client._settled([(self, outcome)])
