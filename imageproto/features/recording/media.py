# -*- test-case-name: tests.test_recorder -*-
"""
What the recorder's worker thread writes with: a JPEG header reader, the
timeline that turns capture times into presentation timestamps, and the
PyAV writers for each C{--record-format}.

Nothing here touches Twisted.  PyAV is imported only when a file is opened,
so importing this module (from the receiver's tap) stays cheap.

Timestamps are integers in L{TIME_BASE} (milliseconds), counted from the
first frame of the file.
"""

from __future__ import annotations

import math
from fractions import Fraction

from attrs import define, field

__all__ = [
    "FORMATS",
    "TIME_BASE",
    "UndecodableFrame",
    "jpegSize",
    "Timeline",
    "MatroskaWriter",
    "H264Writer",
    "openWriter",
]

TIME_BASE = Fraction(1, 1000)

# A capture step may be this much longer than the receive step before the
# sender's clock is taken to have jumped: room for frames that queued on
# the sender (or in a window of unacknowledged frames) and then arrived
# together.
_MAX_CAPTURE_LEAD = 5.0

# H.264 only: the longest span of media time between keyframes.  A
# fragmented MP4 is written out one fragment per keyframe, so this bounds
# what a SIGKILL can lose.
_KEYFRAME_MS = 1000

# Start-of-frame markers that carry the frame's size: SOF0-SOF15 except
# DHT (C4), JPG (C8) and DAC (CC).
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers that stand alone, without a length field.
_STANDALONE = frozenset(range(0xD0, 0xD8)) | {0x01}


class UndecodableFrame(ValueError):
    """
    A frame's bytes are not a JPEG the recorder can store.
    """


def jpegSize(data: bytes) -> tuple[int, int]:
    """
    The C{(width, height)} a JPEG's frame header declares, read without
    decoding the picture.

    @raise UndecodableFrame: if C{data} does not start with SOI, has no
        frame header before its scan, or has no end-of-image marker.
    """
    if data[:2] != b"\xff\xd8":
        raise UndecodableFrame("no JPEG start-of-image marker")
    i, size = 2, None
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            raise UndecodableFrame(f"no JPEG marker at byte {i}")
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1  # fill byte
            continue
        if marker in _STANDALONE:
            i += 2
            continue
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if marker in _SOF and i + 9 <= len(data):
            height = int.from_bytes(data[i + 5 : i + 7], "big")
            width = int.from_bytes(data[i + 7 : i + 9], "big")
            size = (width, height)
        elif marker == 0xDA:  # start of scan: entropy-coded data follows
            break
        i += 2 + length
    else:
        raise UndecodableFrame("the JPEG ends before its scan")
    if size is None or 0 in size:
        raise UndecodableFrame("no JPEG frame header before the scan")
    if data.rfind(b"\xff\xd9") < i:
        raise UndecodableFrame("no JPEG end-of-image marker")
    return size


def _finite(x: float) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


@define
class Timeline:
    """
    Presentation timestamps for one file, from capture times.

    A frame's timestamp is its capture time less the first frame's, so the
    file replays at the speed it was captured, pauses included.  The
    sender's clock is trusted only while it behaves: when a capture time
    goes backwards, repeats, is not a number, or leaps ahead of the
    receive time by more than L{_MAX_CAPTURE_LEAD} seconds, the step since
    the previous frame is taken from our receive times instead, and later
    frames count on from there.  Timestamps always increase.

    @ivar fallbacks: frames placed by receive time instead of capture time.
    """

    _origin: float | None = None
    _lastCapture: float | None = None
    _lastReceive: float | None = None
    _lastMedia: float = 0.0
    _lastPts: int = -1
    fallbacks: int = 0

    def place(self, captureTime: float, receiveTime: float) -> int:
        """
        The timestamp, in L{TIME_BASE} units, of the next frame.
        """
        if self._lastPts < 0:
            media = 0.0
            self._origin = captureTime if _finite(captureTime) else None
        else:
            step = (
                captureTime - self._lastCapture
                if _finite(captureTime) and _finite(self._lastCapture)
                else None
            )
            receiveStep = max(0.0, receiveTime - self._lastReceive)
            if (
                self._origin is not None
                and step is not None
                and 0 < step <= receiveStep + _MAX_CAPTURE_LEAD
            ):
                media = captureTime - self._origin
            else:
                media = self._lastMedia + receiveStep
                # Count on from here: later capture steps are measured
                # from this frame.
                self._origin = captureTime - media if _finite(captureTime) else None
                self.fallbacks += 1
        pts = max(round(media / TIME_BASE), self._lastPts + 1)
        self._lastCapture, self._lastReceive = captureTime, receiveTime
        self._lastMedia, self._lastPts = media, pts
        return pts


def _open(path: str, format: str, options: dict):
    import av

    # flush_packets: every packet reaches the OS as it is written, so a
    # SIGKILL of the receiver loses no more than what the muxer holds.
    return av.open(
        path, "w", format=format, container_options={"flush_packets": "1", **options}
    )


@define
class MatroskaWriter:
    """
    Writes the JPEG bytes as received, one Matroska block each (codec
    V_MJPEG), with no decoding.

    Matroska needs no index to be read: a file cut short by a SIGKILL
    holds every block written before it, and C{cluster_time_limit} closes
    a cluster at least every second.
    """

    extension = "mkv"

    path: str
    size: tuple[int, int]
    _container: object = field(init=False, default=None)
    _stream: object = field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        self._container = _open(self.path, "matroska", {"cluster_time_limit": "1000"})
        width, height = self.size
        self._stream = self._container.add_mux_stream(
            "mjpeg", width=width, height=height, time_base=TIME_BASE
        )

    def write(self, jpeg: bytes, pts: int) -> None:
        import av

        packet = av.Packet(jpeg)
        packet.stream = self._stream
        packet.pts = packet.dts = pts
        packet.time_base = TIME_BASE
        packet.is_keyframe = True
        self._container.mux(packet)

    def close(self) -> None:
        self._container.close()


@define
class H264Writer:
    """
    Decodes each JPEG and encodes it with libx264 (yuv420p, both sides
    rounded down to even numbers, as H.264 in 4:2:0 needs) into a
    fragmented MP4 that browsers play.

    The fragments (C{frag_keyframe+empty_moov+default_base_moof}) make the
    file readable up to its last whole fragment if the receiver is killed;
    a keyframe every L{_KEYFRAME_MS} of media time keeps fragments short.

    @raise UndecodableFrame: from L{write}, for a JPEG FFmpeg cannot decode.
    """

    extension = "mp4"

    path: str
    size: tuple[int, int]
    _container: object = field(init=False, default=None)
    _stream: object = field(init=False, default=None)
    _decoder: object = field(init=False, default=None)
    _lastKey: int | None = field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        import av

        width, height = self.size
        self._container = _open(
            self.path, "mp4", {"movflags": "frag_keyframe+empty_moov+default_base_moof"}
        )
        stream = self._container.add_stream(
            "libx264",
            # zerolatency: no B-frames and no lookahead, so each frame is
            # written as it arrives instead of being held by the encoder.
            options={"preset": "veryfast", "tune": "zerolatency", "crf": "23"},
        )
        stream.width, stream.height = max(2, width & ~1), max(2, height & ~1)
        stream.pix_fmt = "yuv420p"
        stream.time_base = stream.codec_context.time_base = TIME_BASE
        # Keyframes are forced by time in write(), not by frame count.
        stream.codec_context.gop_size = 1 << 16
        self._stream = stream
        self._decoder = av.CodecContext.create("mjpeg", "r")

    def write(self, jpeg: bytes, pts: int) -> None:
        import av
        from av.video.frame import PictureType

        try:
            frames = self._decoder.decode(av.Packet(jpeg))
        except av.FFmpegError as e:
            raise UndecodableFrame(str(e)) from e
        if not frames:
            raise UndecodableFrame("FFmpeg's MJPEG decoder returned no picture")
        stream = self._stream
        frame = frames[-1].reformat(
            width=stream.width, height=stream.height, format="yuv420p"
        )
        frame.pts, frame.time_base = pts, TIME_BASE
        if self._lastKey is None or pts - self._lastKey >= _KEYFRAME_MS:
            frame.pict_type, self._lastKey = PictureType.I, pts
        else:
            # A decoded JPEG is an intra picture; left so, x264 would make
            # every frame a keyframe.
            frame.pict_type = PictureType.NONE
        for packet in stream.encode(frame):
            self._container.mux(packet)

    def close(self) -> None:
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
        finally:
            self._container.close()


FORMATS = {"mkv": MatroskaWriter, "mp4": H264Writer}


def openWriter(format: str, path: str, size: tuple[int, int]):
    """
    Open a writer for C{format} (a key of L{FORMATS}); runs in the worker
    thread.

    @return: an object with C{write(jpeg, pts)} and C{close()}.
    """
    return FORMATS[format](path, size)
