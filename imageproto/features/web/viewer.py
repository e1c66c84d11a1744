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

from attrs import frozen

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
from imageproto.protocol.descriptors import ConnectionCap

__all__ = [
    "BOUNDARY",
    "STATIC",
    "Viewers",
    "MJPEGViewer",
    "WebRoot",
    "webEndpoint",
    "makeWebService",
    "LatestDetections",
    "WebConfig",
    "attachWeb",
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
    maxConnections: int | None = None,
    idleTimeout: float | None = None,
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
    @param maxConnections: connections over this are closed as soon as they
        are accepted (C{--web-max-connections}); C{None}: no cap.
    @param idleTimeout: seconds an HTTP connection may stay open with no
        request in progress (C{--web-idle-timeout}); an MJPEG response in
        progress is a request, so a viewer watching is never idle.
        C{None}: twisted.web's default, a minute.
    @return: C{(service, root)}: a L{StreamServerEndpointService} that
        listens when started, and the L{WebRoot} it serves; the service's
        C{connectionCap} is the L{ConnectionCap} or C{None}.
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
    site = _QuietSite(root) if idleTimeout is None else _QuietSite(root, timeout=idleTimeout)
    site.displayTracebacks = False
    factory = site
    cap = None
    if maxConnections is not None:
        factory = cap = ConnectionCap(site, maxConnections, "--web-max-connections")
    service = StreamServerEndpointService(
        serverFromString(reactor, webEndpoint(endpoint)), factory
    )
    service.connectionCap = cap
    # A viewer port that cannot be opened fails twistd's start.
    service._raiseSynchronously = True
    return service, root


@frozen
class WebConfig:
    """
    Serve the live viewer.

    @ivar endpoint: the server endpoint description to listen on.
    @ivar maxConnections: connections over this are closed at once
        (C{--web-max-connections}), or C{None} for no cap.
    @ivar idleTimeout: seconds an HTTP connection may stay open with no
        request in progress (C{--web-idle-timeout}), or C{None}.
    """

    endpoint: str
    maxConnections: int | None = None
    idleTimeout: float | None = None


def attachWeb(receiver, config: WebConfig, recorder=None):
    """
    Add the live viewer to an L{imageproto.receiver.service.ReceiverService}:
    its listening service as a child (it starts and stops with the
    receiver), and its metrics and latest detections as consumers of the
    pipeline, so the page draws each stream's newest boxes.

    @param recorder: the receiver's L{imageproto.features.recording.Recorder},
        whose statistics the page and C{/metrics} show, or C{None}.
    @return: C{(service, root)}, as L{makeWebService}.
    """
    detections = LatestDetections()
    receiver.addConsumer(detections)
    service, root = makeWebService(
        config.endpoint,
        receiver.hub,
        receiver.registry,
        receiver.pipeline,
        reactor=receiver.reactor,
        recorder=recorder,
        detections=detections,
        maxConnections=config.maxConnections,
        idleTimeout=config.idleTimeout,
    )
    service.setServiceParent(receiver)
    return service, root
