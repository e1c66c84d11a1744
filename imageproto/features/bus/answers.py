# -*- test-case-name: tests.test_bus -*-
"""
Matching workers' answers to frames: L{AwaitingAnswers} remembers, within a
bound, which frames wait for an answer; L{AnswerReader} reads this
receiver's results stream and replies to each such frame once; a late
duplicate (two workers answered the same frame after a claim) finds nothing
to answer and is counted.
"""

from __future__ import annotations

from collections import OrderedDict

from twisted.logger import Logger

from imageproto.features.bus import keys

__all__ = ["AwaitingAnswers", "AnswerReader"]


class AwaitingAnswers:
    """
    Frames waiting for a worker's answer, by C{(stream, session, seq)}, at
    most C{limit}: beyond it the oldest is forgotten (and counted), so a
    fleet that never answers costs bounded memory (each holds its JPEG).
    """

    def __init__(self, limit: int = 1024) -> None:
        self.limit = limit
        self._frames: OrderedDict = OrderedDict()
        self.forgotten = 0

    def __len__(self) -> int:
        return len(self._frames)

    def add(self, frame, now: float = 0.0) -> None:
        key = (frame.stream, frame.session, frame.seq)
        if key in self._frames:
            return
        self._frames[key] = [frame, now, 0]
        while len(self._frames) > self.limit:
            self._frames.popitem(last=False)
            self.forgotten += 1

    def take(self, key: tuple):
        """
        The frame waiting under C{key}, no longer waiting; C{None} if none
        is (answered already, or never asked).
        """
        entry = self._frames.pop(key, None)
        return None if entry is None else entry[0]

    def overdue(self, now: float, timeout: float, attempts: int = 3) -> list:
        """
        The finite-source frames that have waited C{timeout} seconds or more;
        each starts waiting anew from C{now}.  A frame overdue C{attempts}
        times is forgotten (and counted) instead: no worker is answering.
        """
        late = []
        for key, entry in list(self._frames.items()):
            frame, since, tries = entry
            if frame.live or now - since < timeout:
                continue
            if tries >= attempts:
                del self._frames[key]
                self.forgotten += 1
                continue
            late.append(frame)
            entry[1], entry[2] = now, tries + 1
        return late

    def discard(self, frame) -> None:
        self._frames.pop((frame.stream, frame.session, frame.seq), None)


class AnswerReader:
    """
    Routes workers' answers to the frames waiting for them.

    @param awaiting: the L{AwaitingAnswers} the publisher fills.
    """

    log = Logger()

    def __init__(self, awaiting: AwaitingAnswers) -> None:
        self.awaiting = awaiting
        self.answered = 0
        self.skipped = 0
        self.unmatched = 0
        self.malformed = 0

    def entriesReceived(self, entries) -> None:
        """
        Answer the frames C{entries} (C{[(id, fields), ...]} of the results
        stream) are about.
        """
        for entryId, fields in entries:
            try:
                answer = keys.decodeAnswer(fields)
            except ValueError as e:
                self.malformed += 1
                self.log.warn("bus: malformed results entry {id}: {error}", id=entryId, error=str(e))
                continue
            frame = self.awaiting.take(answer.key)
            if frame is None:
                # Answered already (a claimed frame done twice), or forgotten.
                self.unmatched += 1
                self.log.debug(
                    "bus: late answer to frame {seq} of {stream} from {worker} dropped",
                    seq=answer.seq,
                    stream=answer.stream,
                    worker=answer.worker,
                )
                continue
            if answer.result is None:
                self.skipped += 1
                continue
            self.answered += 1
            frame.reply(answer.result)

    def snapshot(self) -> dict:
        return {
            "answered": self.answered,
            "skipped_by_workers": self.skipped,
            "late_duplicates": self.unmatched,
            "awaiting": len(self.awaiting),
            "forgotten": self.awaiting.forgotten,
        }
