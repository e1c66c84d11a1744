# -*- test-case-name: tests.test_web -*-
"""
The live viewer in a receiver: L{makeWebService} serves the resource tree
(L{imageproto.features.web.resources}, whose names are re-exported here) on
a C{--web} endpoint, L{attachToReceiver} adds it and the recorder to a
receiver, and L{LatestDetections} keeps each stream's newest detector
answer for the page.
"""

from __future__ import annotations

from typing import Callable

from twisted.application.internet import StreamServerEndpointService
from twisted.internet.endpoints import serverFromString
from twisted.web.server import Site
from zope.interface import implementer

from imageproto.common.reactor import defaultReactor
from imageproto.features.web.metrics import ReceiverMetrics
# The private defaults are shared with WebRoot's, so that "no detector" and
# "no recorder" are one object each.
from imageproto.features.web.resources import (
    BOUNDARY,
    STATIC,
    MJPEGViewer,
    Viewers,
    WebRoot,
    _noDetections,
    _noStats,
)
from imageproto.receiver.pipeline import ConsumerBase, IFrameConsumer

__all__ = [
    "BOUNDARY",
    "STATIC",
    "Viewers",
    "MJPEGViewer",
    "WebRoot",
    "webEndpoint",
    "makeWebService",
    "LatestDetections",
    "attachToReceiver",
]


def webEndpoint(description: str) -> str:
    """
    Turn a C{--web} value into a server endpoint string: a bare port number
    C{8081} means C{tcp:8081}; anything else is already an endpoint string
    (C{tcp:8081:interface=127.0.0.1}, C{ssl:...}).
    """
    description = description.strip()
    return f"tcp:{description}" if description.isdigit() else description


@implementer(IFrameConsumer)
class LatestDetections(ConsumerBase):
    """
    The newest detector answer of each stream, for the page to draw: a
    consumer of the receiver's pipeline that watches answers.  L{WebRoot}
    takes this object as its C{detections} callable.
    """

    def __init__(self) -> None:
        self._latest: dict[str, dict] = {}

    def frameReceived(self, frame) -> None:
        pass

    def resultReady(self, frame, result) -> None:
        """
        Remember C{result} (a L{imageproto.wire.Result}) as the latest of
        C{frame}'s stream.
        """
        self._latest[frame.stream] = {
            "seq": result.seq,
            "detections": list(result.detections),
            "processing_ms": result.processingMicros / 1000.0,
        }

    def __call__(self, stream: str):
        """
        C{{"seq", "detections", "processing_ms"}} of C{stream}'s latest
        result, or C{None}.
        """
        return self._latest.get(stream)


class _QuietSite(Site):
    """
    A L{Site} that writes no access log: the page polls C{/api/streams}
    every second, which would bury the receiver's own events.
    """

    def log(self, request) -> None:
        pass


def makeWebService(
    endpoint: str,
    hub,
    registry,
    pipeline,
    reactor=None,
    recorder=None,
    detections: Callable = _noDetections,
):
    """
    Build the viewer's listening service for a receiver.

    Creates the receiver's L{ReceiverMetrics}, adds it to C{pipeline} as a
    consumer (for the latency histogram), and serves L{WebRoot} on
    C{endpoint}.

    @param endpoint: a C{--web} value (see L{webEndpoint}).
    @param hub: the receiver's L{imageproto.receiver.consumers.LatestFrameHub}.
    @param registry: the receiver's L{imageproto.receiver.registry.StreamRegistry}.
    @param pipeline: the receiver's L{imageproto.receiver.pipeline.FramePipeline}.
    @param recorder: the receiver's L{imageproto.features.recording.Recorder}, or
        C{None}.
    @param detections: see L{WebRoot}.
    @return: C{(service, root)}: a L{StreamServerEndpointService} that
        listens when started, and the L{WebRoot} it serves.
    """
    reactor = defaultReactor(reactor)
    viewers = Viewers()
    recorderStats = recorder.stats if recorder is not None else _noStats
    metrics = ReceiverMetrics(registry.snapshot, viewers.counts, recorderStats)
    pipeline.addConsumer(metrics)
    root = WebRoot(
        hub,
        registry.snapshot,
        metrics,
        viewers,
        recorderStats=recorderStats,
        detections=detections,
        clock=reactor,
    )
    site = _QuietSite(root)
    site.displayTracebacks = False
    service = StreamServerEndpointService(
        serverFromString(reactor, webEndpoint(endpoint)), site
    )
    # A viewer port that cannot be opened fails twistd's start.
    service._raiseSynchronously = True
    return service, root


def attachToReceiver(
    receiver,
    web: str | None = None,
    recordDir: str | None = None,
    segmentSeconds: float | None = None,
    detections: Callable = _noDetections,
) -> dict:
    """
    Add the live viewer and the recorder to a
    L{imageproto.receiver.service.ReceiverService}, as C{--web}, C{--record-dir} and
    C{--segment-seconds} ask.

    Both are children of C{receiver}, so they start and stop with it; the
    recorder's C{stopService} waits until every queued frame is written and
    every file finished.

    @return: C{{"web": (service, root) or None, "recorder": Recorder or
        None}}.
    """
    from imageproto.features.recording import DEFAULT_SEGMENT_SECONDS, Recorder

    recorder = None
    if recordDir is not None:
        recorder = Recorder(
            recordDir,
            segmentSeconds=segmentSeconds or DEFAULT_SEGMENT_SECONDS,
        )
        receiver.addConsumer(recorder)
        recorder.setServiceParent(receiver)
    viewer = None
    if web is not None:
        viewer = makeWebService(
            web,
            receiver.hub,
            receiver.registry,
            receiver.pipeline,
            reactor=receiver.reactor,
            recorder=recorder,
            detections=detections,
        )
        viewer[0].setServiceParent(receiver)
    return {"web": viewer, "recorder": recorder}
