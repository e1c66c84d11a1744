# -*- test-case-name: tests.test_web -*-
"""
The live viewer's twisted.web resources, served in the receiver's own process
and reactor.

  - C{/}: a page listing every stream with its live picture and statistics,
    updating itself (static HTML, CSS and JavaScript shipped in the package;
    no build step, nothing fetched from the internet).
  - C{/streams/<name>.mjpg}: the stream as C{multipart/x-mixed-replace}
    MJPEG, each part the JPEG bytes exactly as received.
  - C{/streams/<name>/latest.jpg}: the newest frame.
  - C{/api/streams}: statistics (and detections, when a detector runs, and
    the newest frame's metadata, when it has some) as JSON.
  - C{/metrics}: Prometheus text format.

A slow MJPEG viewer never makes the server queue frames for it: each viewer
is a push producer registered on its request, writes a part only when the
transport has flushed the previous one, and keeps at most one newer frame
pending (a newer frame replaces it).
"""

from __future__ import annotations

import os
from typing import Callable
from urllib.parse import unquote

from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.web.resource import NoResource, Resource
from twisted.web.server import NOT_DONE_YET
from twisted.web.static import File
from zope.interface import implementer

from imageproto.protocol.descriptors import unwrapTransport
from imageproto.receiver.stats import strictJSON
from imageproto.features.web.metrics import CONTENT_TYPE, ReceiverMetrics

__all__ = ["BOUNDARY", "STATIC", "Viewers", "MJPEGViewer", "WebRoot"]

BOUNDARY = b"imageprotoframe"
STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")


def _noDetections(name: str):
    return None


def _noStats() -> dict:
    return {}


class Viewers:
    """
    Counts the live MJPEG viewers of each stream, for statistics and metrics.
    """

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    def add(self, name: str) -> None:
        self._counts[name] = self._counts.get(name, 0) + 1

    def remove(self, name: str) -> None:
        left = self._counts.get(name, 0) - 1
        if left > 0:
            self._counts[name] = left
        else:
            self._counts.pop(name, None)

    def counts(self) -> dict:
        return dict(self._counts)


def _part(jpeg: bytes) -> bytes:
    return b"".join(
        [
            b"--",
            BOUNDARY,
            b"\r\nContent-Type: image/jpeg\r\nContent-Length: ",
            str(len(jpeg)).encode("ascii"),
            b"\r\n\r\n",
            jpeg,
            b"\r\n",
        ]
    )


@implementer(IPushProducer)
class MJPEGViewer:
    """
    One MJPEG response: subscribed to a stream's frames, registered as a push
    producer on its request.

    While the transport is paused the newest frame waits in L{pending} (a
    newer one replaces it); when the transport has flushed, C{resumeProducing}
    writes it.  So at most one part is in the transport's buffer and one
    frame pending, however slow the viewer.

    @ivar written: parts written so far.
    """

    log = Logger()

    def __init__(self, request, hub, name: str, viewers: Viewers) -> None:
        self.request = request
        self.hub = hub
        self.name = name
        self.viewers = viewers
        self.paused = False
        self.pending = None
        self.written = 0
        self._subscription = None

    def start(self) -> None:
        request = self.request
        request.setHeader(
            b"content-type",
            b"multipart/x-mixed-replace; boundary=" + BOUNDARY,
        )
        request.setHeader(b"cache-control", b"no-cache, no-store, must-revalidate")
        request.setHeader(b"pragma", b"no-cache")
        _flushEachWrite(request)
        request.registerProducer(self, True)
        self._subscription = self.hub.subscribe(self.name, self.frameReceived)
        self.viewers.add(self.name)
        request.notifyFinish().addBoth(self._finished)
        self.log.debug("MJPEG viewer of {stream} joined", stream=self.name)
        latest = self.hub.latest(self.name)
        if latest is not None:
            self.frameReceived(latest)

    def frameReceived(self, frame) -> None:
        if self._subscription is None:
            return
        if self.paused:
            self.pending = frame
        else:
            self._write(frame)

    def _write(self, frame) -> None:
        self.written += 1
        self.request.write(_part(frame.jpeg))

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        frame, self.pending = self.pending, None
        if frame is not None and self._subscription is not None:
            self._write(frame)

    def stopProducing(self) -> None:
        self._stop()

    def _finished(self, result) -> None:
        self._stop()
        self.log.debug("MJPEG viewer of {stream} left", stream=self.name)

    def _stop(self) -> None:
        self.paused = True
        self.pending = None
        if self._subscription is not None:
            self.hub.unsubscribe(self._subscription)
            self._subscription = None
            self.viewers.remove(self.name)


def _flushEachWrite(request) -> None:
    """
    Make the request's TCP transport pause its producer as soon as it holds
    any unsent bytes, not only past its default 64 KiB, so that a viewer
    writes its next part only once the previous one is flushed.

    The connection serves nothing else while the (endless) response runs, so
    the smaller buffer affects only this response.
    """
    transport = unwrapTransport(
        getattr(getattr(request, "channel", None), "transport", None)
    )
    if transport is not None and hasattr(transport, "bufferSize"):
        transport.bufferSize = 0


def _notFound(request, message: str) -> bytes:
    request.setResponseCode(404)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    return (message + "\n").encode("utf-8")


class _LatestJPEG(Resource):
    isLeaf = True

    def __init__(self, hub, name: str) -> None:
        super().__init__()
        self.hub = hub
        self.name = name

    def render_GET(self, request) -> bytes:
        frame = self.hub.latest(self.name)
        if frame is None:
            return _notFound(request, f"no frames from a stream named {self.name!r}")
        request.setHeader(b"content-type", b"image/jpeg")
        request.setHeader(b"cache-control", b"no-cache, no-store, must-revalidate")
        request.setHeader(b"x-frame-seq", str(frame.seq).encode("ascii"))
        return frame.jpeg


class _MJPEGStream(Resource):
    isLeaf = True

    def __init__(self, hub, name: str, viewers: Viewers, known: Callable) -> None:
        super().__init__()
        self.hub = hub
        self.name = name
        self.viewers = viewers
        self.known = known

    def render_GET(self, request):
        if not self.known(self.name):
            return _notFound(request, f"no stream named {self.name!r}")
        MJPEGViewer(request, self.hub, self.name, self.viewers).start()
        return NOT_DONE_YET


class _Streams(Resource):
    """
    C{/streams/<name>.mjpg} and C{/streams/<name>/latest.jpg}.
    """

    def __init__(self, hub, viewers: Viewers, known: Callable) -> None:
        super().__init__()
        self.hub = hub
        self.viewers = viewers
        self.known = known

    def getChild(self, path: bytes, request):
        try:
            segment = unquote(path.decode("utf-8"), errors="strict")
        except UnicodeDecodeError:
            return NoResource("stream names are UTF-8")
        rest = request.postpath
        if segment.endswith(".mjpg") and not rest:
            return _MJPEGStream(self.hub, segment[: -len(".mjpg")], self.viewers, self.known)
        if rest == [b"latest.jpg"]:
            return _LatestJPEG(self.hub, segment)
        return NoResource("try /streams/<name>.mjpg or /streams/<name>/latest.jpg")


class _JSON(Resource):
    isLeaf = True

    def __init__(self, build: Callable[[], dict]) -> None:
        super().__init__()
        self.build = build

    def render_GET(self, request) -> bytes:
        request.setHeader(b"content-type", b"application/json; charset=utf-8")
        request.setHeader(b"cache-control", b"no-cache")
        # Strict JSON: the page's JSON.parse refuses NaN and Infinity.
        return strictJSON(self.build(), sort_keys=True).encode("utf-8")


class _Metrics(Resource):
    isLeaf = True

    def __init__(self, metrics: ReceiverMetrics) -> None:
        super().__init__()
        self.metrics = metrics

    def render_GET(self, request) -> bytes:
        request.setHeader(b"content-type", CONTENT_TYPE.encode("ascii"))
        return self.metrics.render()


class WebRoot(Resource):
    """
    The viewer's resource tree.

    @param hub: the L{imageproto.receiver.consumers.LatestFrameHub} of the receiver.
    @param snapshot: a callable returning C{StreamRegistry.snapshot()}.
    @param metrics: the receiver's L{ReceiverMetrics}.
    @param viewers: the L{Viewers} counter L{metrics} reads.
    @param recorderStats: a callable returning L{imageproto.features.recording.Recorder}
        statistics per stream, when recording.
    @param detections: a callable taking a stream name and returning that
        stream's latest detections as JSON-ready data (C{None} for none).
    @param clock: an C{IReactorTime}, for the C{"time"} field of the JSON.
    """

    def __init__(
        self,
        hub,
        snapshot: Callable[[], dict],
        metrics: ReceiverMetrics,
        viewers: Viewers,
        recorderStats: Callable[[], dict] = _noStats,
        detections: Callable = _noDetections,
        clock=None,
    ) -> None:
        super().__init__()
        self.hub = hub
        self.snapshot = snapshot
        self.viewers = viewers
        self.recorderStats = recorderStats
        self.detections = detections
        self.clock = clock
        self.putChild(b"", _IndexPage())
        self.putChild(b"static", File(STATIC))
        self.putChild(b"streams", _Streams(hub, viewers, self.isKnown))
        api = Resource()
        api.putChild(b"streams", _JSON(self.streamsJSON))
        self.putChild(b"api", api)
        self.putChild(b"metrics", _Metrics(metrics))

    def isKnown(self, name: str) -> bool:
        """
        Whether C{name} is a stream the receiver has seen or has a frame of.
        """
        return name in self.snapshot().get("streams", {}) or self.hub.latest(name) is not None

    def streamsJSON(self) -> dict:
        """
        The registry's snapshot with, per stream, its viewer count, its
        recording statistics, its latest detections and the metadata of
        its newest frame (C{"metadata"}, only when that frame has some).
        """
        streams = {
            name: dict(stats) for name, stats in self.snapshot().get("streams", {}).items()
        }
        for name in self.hub.names():
            streams.setdefault(name, {})
        viewers = self.viewers.counts()
        recording = self.recorderStats()
        for name, stats in streams.items():
            stats.setdefault("connected", False)
            stats["viewers"] = viewers.get(name, 0)
            if name in recording:
                stats["recording"] = recording[name]
            latest = self.hub.latest(name)
            stats["seq"] = latest.seq if latest is not None else None
            if latest is not None and latest.metadata is not None:
                stats["metadata"] = latest.metadata
            found = self.detections(name)
            if found is not None:
                stats["detections"] = found
        result = {"streams": streams}
        if self.clock is not None:
            result["time"] = self.clock.seconds()
        return result


class _IndexPage(Resource):
    isLeaf = True

    def render_GET(self, request) -> bytes:
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        with open(os.path.join(STATIC, "index.html"), "rb") as f:
            return f.read()
