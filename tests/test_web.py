"""
Tests for L{imageproto.features.web.viewer} and its resources
(L{imageproto.features.web.resources}): the resources through twisted.web's
C{DummyRequest}, and MJPEG over a real loopback socket.
"""

from __future__ import annotations

import json
import os

from attrs import evolve
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, reactor
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent
from twisted.web.resource import getChildForRequest
from twisted.web.server import NOT_DONE_YET, Site
from twisted.web.test.requesthelper import DummyRequest

from imageproto.features.web.metrics import ReceiverMetrics
from imageproto.receiver.consumers import LatestFrameHub, ReceivedFrame
from imageproto.features.web.resources import BOUNDARY, Viewers, WebRoot
from imageproto.features.web.viewer import webEndpoint
from tests.helpers import makeJpeg

try:
    import cv2
    import numpy
except ImportError:  # pragma: no cover
    cv2 = None


def makeFrame(stream: str, seq: int, jpeg: bytes) -> ReceivedFrame:
    return ReceivedFrame(stream, seq, 100.0 + seq, 100.0 + seq, 100.01 + seq, jpeg, 0)


def splitParts(data: bytes) -> list[bytes]:
    """
    The JPEG bodies of a multipart/x-mixed-replace byte stream, checking each
    part's headers and Content-Length.
    """
    parts = []
    marker = b"--" + BOUNDARY + b"\r\n"
    while data:
        assert data.startswith(marker), data[:60]
        head, _, rest = data[len(marker) :].partition(b"\r\n\r\n")
        headers = dict(
            line.split(b": ", 1) for line in head.split(b"\r\n")
        )
        assert headers[b"Content-Type"] == b"image/jpeg"
        size = int(headers[b"Content-Length"])
        parts.append(rest[:size])
        assert rest[size : size + 2] == b"\r\n"
        data = rest[size + 2 :]
    return parts


class FakeSnapshot:
    """
    A stand-in for C{StreamRegistry.snapshot}, with settable streams.
    """

    def __init__(self) -> None:
        self.streams: dict = {}

    def __call__(self) -> dict:
        return {"streams": {k: dict(v) for k, v in self.streams.items()}}


class ProducerRequest(DummyRequest):
    """
    A C{DummyRequest} that keeps a registered push producer instead of
    spinning it (C{DummyRequest.registerProducer} loops over pull producers).
    """

    producer = None

    def registerProducer(self, producer, streaming) -> None:
        assert streaming
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None


class SlowRequest(ProducerRequest):
    """
    A request over a transport that never drains: like a TCP transport with
    nothing flushed, it pauses its producer as soon as anything is written.
    """

    def write(self, data: bytes) -> None:
        super().write(data)
        self.producer.pauseProducing()


def _root(hub=None, snapshot=None, **kwargs):
    hub = hub or LatestFrameHub()
    snapshot = snapshot or FakeSnapshot()
    viewers = Viewers()
    metrics = ReceiverMetrics(snapshot, viewers.counts)
    return WebRoot(hub, snapshot, metrics, viewers, **kwargs), hub, snapshot, viewers


def _render(root, path: bytes, request=None):
    """
    Resolve C{path} under C{root} like a Site would, and render it.
    """
    segments = path.lstrip(b"/").split(b"/")
    if request is None:
        request = DummyRequest(segments)
    else:
        request.postpath = segments
    resource = getChildForRequest(root, request)
    result = resource.render(request)
    if result is not NOT_DONE_YET:
        request.write(result)
        request.finish()
    return request


class ResourceTests(SynchronousTestCase):
    def setUp(self) -> None:
        if cv2 is None:
            raise self.skipTest("cv2 is needed to make test JPEGs")

    def test_indexPage(self) -> None:
        """
        C{/} is an HTML page that loads the package's own script and style
        sheet, and nothing from another host.
        """
        root = _root()[0]
        request = _render(root, b"/")
        body = b"".join(request.written)
        self.assertIn(b"text/html", request.responseHeaders.getRawHeaders(b"content-type")[0])
        self.assertIn(b'src="/static/viewer.js"', body)
        self.assertIn(b'href="/static/viewer.css"', body)
        self.assertNotIn(b"http://", body)
        self.assertNotIn(b"https://", body)

    def test_emptyPageNamesRealOptions(self) -> None:
        """
        The page's hint for starting a sender names no option that does not
        exist (there is no C{--pattern}: the pattern is the default).
        """
        from imageproto.tap.sender import Options as SenderOptions

        page = b"".join(_render(_root()[0], b"/").written).decode()
        known = {"--" + name for name in SenderOptions().synonyms}
        import re

        for option in re.findall(r"--[a-z-]+", page):
            self.assertIn(option, known)

    def test_latestJpeg(self) -> None:
        """
        C{/streams/<name>/latest.jpg} answers the newest frame's bytes exactly
        as received, with its sequence number in a header.
        """
        root, hub = _root()[:2]
        jpeg = makeJpeg(32, 24, 10)
        hub.frameReceived(makeFrame("cam 1", 4, makeJpeg(32, 24, 5)))
        hub.frameReceived(makeFrame("cam 1", 5, jpeg))
        request = _render(root, b"/streams/cam%201/latest.jpg")
        self.assertEqual(b"".join(request.written), jpeg)
        self.assertEqual(request.responseHeaders.getRawHeaders(b"content-type"), [b"image/jpeg"])
        self.assertEqual(request.responseHeaders.getRawHeaders(b"x-frame-seq"), [b"5"])

    def test_latestJpegUnknownStream(self) -> None:
        """
        C{latest.jpg} of a stream that never sent a frame is a 404 whose
        body names the stream.
        """
        root = _root()[0]
        request = _render(root, b"/streams/nosuch/latest.jpg")
        self.assertEqual(request.responseCode, 404)
        self.assertIn(b"'nosuch'", b"".join(request.written))

    def test_mjpegUnknownStream(self) -> None:
        """
        The MJPEG stream of an unknown name is a 404, and nothing subscribes.
        """
        root, hub, snapshot, viewers = _root()
        request = _render(root, b"/streams/nosuch.mjpg", ProducerRequest([]))
        self.assertEqual(request.responseCode, 404)
        self.assertIn(b"'nosuch'", b"".join(request.written))
        self.assertEqual(viewers.counts(), {})

    def test_apiStreams(self) -> None:
        """
        C{/api/streams} is the registry's snapshot as JSON, with each
        stream's viewers, latest sequence number, recording statistics and
        detections added.
        """
        detections = {"cam1": [{"label": "cat", "confidence": 0.9, "box": [1, 2, 3, 4]}]}
        root, hub, snapshot, viewers = _root(
            recorderStats=lambda: {"cam1": {"written": 3, "dropped": 0}},
            detections=detections.get,
        )
        snapshot.streams["cam1"] = {"frames": 7, "connected": True}
        hub.frameReceived(makeFrame("cam1", 6, makeJpeg(32, 24, 1)))
        viewers.add("cam1")
        request = _render(root, b"/api/streams")
        self.assertEqual(
            request.responseHeaders.getRawHeaders(b"content-type"),
            [b"application/json; charset=utf-8"],
        )
        data = json.loads(b"".join(request.written))
        self.assertEqual(
            data["streams"]["cam1"],
            {
                "frames": 7,
                "connected": True,
                "viewers": 1,
                "seq": 6,
                "recording": {"written": 3, "dropped": 0},
                "detections": detections["cam1"],
            },
        )

    def test_apiStreamsMetadata(self) -> None:
        """
        C{/api/streams} shows, per stream, the metadata of its newest frame
        (an object or a string, as the sender sent it), and no
        C{metadata} key for a stream whose newest frame has none.
        """
        root, hub, snapshot, viewers = _root()
        snapshot.streams["cam1"] = {"connected": True}
        snapshot.streams["cam2"] = {"connected": True}
        jpeg = makeJpeg(1)
        hub.frameReceived(evolve(makeFrame("cam1", 1, jpeg), metadata={"site": "old"}))
        hub.frameReceived(
            evolve(makeFrame("cam1", 2, jpeg), metadata={"site": "door", "gps": [47.5, 8.25]})
        )
        hub.frameReceived(evolve(makeFrame("cam2", 1, jpeg), metadata="just text"))
        hub.frameReceived(makeFrame("cam2", 2, jpeg))
        hub.frameReceived(evolve(makeFrame("cam3", 1, jpeg), metadata={"\N{SNOWMAN}": "</script>"}))
        data = json.loads(b"".join(_render(root, b"/api/streams").written))
        streams = data["streams"]
        self.assertEqual(streams["cam1"]["metadata"], {"site": "door", "gps": [47.5, 8.25]})
        self.assertEqual(streams["cam1"]["seq"], 2)
        self.assertNotIn("metadata", streams["cam2"])
        self.assertEqual(streams["cam3"]["metadata"], {"\N{SNOWMAN}": "</script>"})

    def test_apiStreamsIsStrictJSON(self) -> None:
        """
        C{/api/streams} is strict JSON even when a figure is not finite:
        such a number is served as null, never as Infinity or NaN (which
        the page's C{JSON.parse} refuses).
        """
        root, hub, snapshot, viewers = _root()
        snapshot.streams["cam1"] = {
            "connected": True,
            "latency_ms": {"p50": float("inf"), "p95": float("nan")},
        }
        body = b"".join(_render(root, b"/api/streams").written).decode()
        data = json.loads(body, parse_constant=self.fail)
        self.assertEqual(data["streams"]["cam1"]["latency_ms"], {"p50": None, "p95": None})

    def test_implausibleTimesKeptOutOfLatencyHistogram(self) -> None:
        """
        A frame whose capture time is absurd is not observed by the latency
        histogram, whose sum stays finite; the registry's
        C{implausible_times} count is exported as a counter.
        """
        root, hub, snapshot, viewers = _root()
        metrics = root.children[b"metrics"].metrics
        snapshot.streams["cam1"] = {"frames": 1, "implausible_times": 1, "connected": True}
        frame = ReceivedFrame("cam1", 0, -1e308, 1.0, 2.0, b"jpeg")
        metrics.frameReceived(frame)
        families = {
            f.name: f
            for f in text_string_to_metric_families(
                b"".join(_render(root, b"/metrics").written).decode()
            )
        }
        self.assertEqual(families["imageproto_implausible_times"].samples[0].value, 1)
        self.assertEqual(
            [s for s in families["imageproto_frame_latency_seconds"].samples], []
        )

    def test_metrics(self) -> None:
        """
        C{/metrics} is Prometheus text that prometheus_client parses, with
        the live viewer count.
        """
        root, hub, snapshot, viewers = _root()
        snapshot.streams["cam1"] = {"frames": 2, "connected": True}
        viewers.add("cam1")
        request = _render(root, b"/metrics")
        self.assertTrue(
            request.responseHeaders.getRawHeaders(b"content-type")[0].startswith(
                b"text/plain"
            )
        )
        families = {
            f.name: f
            for f in text_string_to_metric_families(b"".join(request.written).decode())
        }
        self.assertEqual(families["imageproto_frames"].samples[0].value, 2)
        self.assertEqual(families["imageproto_viewers"].samples[0].value, 1)


class MJPEGTests(SynchronousTestCase):
    def setUp(self) -> None:
        if cv2 is None:
            raise self.skipTest("cv2 is needed to make test JPEGs")
        self.root, self.hub, self.snapshot, self.viewers = _root()
        self.snapshot.streams["cam1"] = {"connected": True}

    def test_partsAreWholeJpegs(self) -> None:
        """
        The MJPEG response is multipart/x-mixed-replace; it starts with the
        latest frame and adds one part per new frame, each the received JPEG
        bytes untouched (FFD8 ... FFD9, decodable).
        """
        jpegs = [makeJpeg(32, 24, v) for v in (10, 80, 160, 240)]
        self.hub.frameReceived(makeFrame("cam1", 0, jpegs[0]))
        request = _render(self.root, b"/streams/cam1.mjpg", ProducerRequest([]))
        self.assertTrue(
            request.responseHeaders.getRawHeaders(b"content-type")[0].startswith(
                b"multipart/x-mixed-replace; boundary=" + BOUNDARY
            )
        )
        for seq, jpeg in enumerate(jpegs[1:], 1):
            self.hub.frameReceived(makeFrame("cam1", seq, jpeg))
        parts = splitParts(b"".join(request.written))
        self.assertEqual(parts, jpegs)
        for value, part in zip((10, 80, 160, 240), parts):
            self.assertEqual(part[:2], b"\xff\xd8")
            self.assertEqual(part[-2:], b"\xff\xd9")
            image = cv2.imdecode(numpy.frombuffer(part, numpy.uint8), cv2.IMREAD_COLOR)
            self.assertEqual(image.shape, (24, 32, 3))
            self.assertAlmostEqual(float(image.mean()), value, delta=2)

    def test_slowViewerBuffersAtMostTwoFrames(self) -> None:
        """
        A viewer whose transport never drains gets one part written and
        keeps only the newest of 100 further frames pending; when the
        transport drains it gets that newest frame, not a backlog.
        """
        request = _render(self.root, b"/streams/cam1.mjpg", SlowRequest([]))
        viewer = request.producer
        jpegs = [makeJpeg(32, 24, v) for v in range(100)]
        for seq, jpeg in enumerate(jpegs):
            self.hub.frameReceived(makeFrame("cam1", seq, jpeg))
            buffered = len(request.written) + (viewer.pending is not None)
            self.assertLessEqual(buffered, 2)
        self.assertEqual(splitParts(b"".join(request.written)), [jpegs[0]])
        self.assertEqual(viewer.pending.seq, 99)
        request.written.clear()
        viewer.resumeProducing()
        self.assertEqual(splitParts(b"".join(request.written)), [jpegs[99]])
        self.assertIsNone(viewer.pending)

    def test_viewerLeavesOnError(self) -> None:
        """
        A viewer whose connection is lost is unsubscribed and no longer
        counted; later frames are not written to it.
        """
        request = _render(self.root, b"/streams/cam1.mjpg", ProducerRequest([]))
        self.assertEqual(self.viewers.counts(), {"cam1": 1})
        request.processingFailed(Exception("connection lost"))
        self.assertEqual(self.viewers.counts(), {})
        self.hub.frameReceived(makeFrame("cam1", 1, makeJpeg(32, 24, 1)))
        self.assertEqual(request.written, [])

    def test_viewerLeavesOnFinish(self) -> None:
        """
        A viewer whose request finishes normally is unsubscribed too, and
        a later stopProducing is harmless.
        """
        request = _render(self.root, b"/streams/cam1.mjpg", ProducerRequest([]))
        viewer = request.producer
        request.finish()
        self.assertEqual(self.viewers.counts(), {})
        viewer.stopProducing()
        self.assertEqual(self.viewers.counts(), {})
        self.hub.frameReceived(makeFrame("cam1", 1, makeJpeg(32, 24, 1)))
        self.assertEqual(request.written, [])


class WebEndpointTests(SynchronousTestCase):
    def test_portNumber(self) -> None:
        """
        A bare port number means TCP on that port.
        """
        self.assertEqual(webEndpoint("8081"), "tcp:8081")

    def test_endpointString(self) -> None:
        """
        An endpoint description is used as it is.
        """
        self.assertEqual(
            webEndpoint("tcp:8081:interface=127.0.0.1"), "tcp:8081:interface=127.0.0.1"
        )


class ModuleTests(SynchronousTestCase):
    def test_viewerReexports(self) -> None:
        """
        The resources moved to L{imageproto.features.web.resources} are
        still importable from L{imageproto.features.web.viewer}, as the
        same objects.
        """
        from imageproto.features.web import resources, viewer

        for name in resources.__all__:
            self.assertIs(getattr(viewer, name), getattr(resources, name))
        for name in viewer.__all__:
            self.assertTrue(hasattr(viewer, name), name)


class _PartCollector(Protocol):
    def __init__(self, wanted: int, done: defer.Deferred) -> None:
        self.data = b""
        self.wanted = wanted
        self.done = done

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        marker = b"--" + BOUNDARY + b"\r\n"
        if self.data.count(marker) > self.wanted and not self.done.called:
            self.transport.stopProducing()
            cut = self.data.rfind(marker)
            self.done.callback(self.data[:cut])

    def connectionLost(self, reason) -> None:
        if not self.done.called:
            self.done.errback(reason)


class MJPEGOverTCPTests(TestCase):
    def setUp(self) -> None:
        if cv2 is None:
            raise self.skipTest("cv2 is needed to make test JPEGs")
        self.root, self.hub, self.snapshot, self.viewers = _root()
        self.snapshot.streams["cam1"] = {"connected": True}
        self.port = reactor.listenTCP(0, Site(self.root), interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)

    @defer.inlineCallbacks
    def test_clientReadsWholeJpegs(self) -> None:
        """
        A real HTTP client reading the MJPEG stream over loopback gets parts
        that are each a whole, decodable JPEG; when it goes away the server
        forgets it.
        """
        jpegs = [makeJpeg(320, 240, v) for v in range(0, 250, 10)]
        self.hub.frameReceived(makeFrame("cam1", 0, jpegs[0]))
        url = f"http://127.0.0.1:{self.port.getHost().port}/streams/cam1.mjpg"
        response = yield Agent(reactor).request(b"GET", url.encode())
        self.assertEqual(response.code, 200)
        done = defer.Deferred()
        response.deliverBody(_PartCollector(5, done))
        seq = 0

        def publish():
            nonlocal seq
            seq += 1
            self.hub.frameReceived(makeFrame("cam1", seq, jpegs[seq % len(jpegs)]))

        from twisted.internet.task import LoopingCall

        loop = LoopingCall(publish)
        loop.start(0.01)
        done.addTimeout(10, reactor)
        try:
            data = yield done
        finally:
            loop.stop()
        parts = splitParts(data)
        self.assertGreaterEqual(len(parts), 5)
        for part in parts:
            self.assertIn(part, jpegs)
            self.assertEqual(part[:2], b"\xff\xd8")
            self.assertEqual(part[-2:], b"\xff\xd9")
            image = cv2.imdecode(numpy.frombuffer(part, numpy.uint8), cv2.IMREAD_COLOR)
            self.assertEqual(image.shape, (240, 320, 3))
        # The client dropped the connection; the server notices on its own.
        for _ in range(500):
            if not self.viewers.counts():
                break
            yield deferLater(reactor, 0.01, lambda: None)
        self.assertEqual(self.viewers.counts(), {})


class ReceiverWiringTests(SynchronousTestCase):
    def test_webAndRecordOptions(self) -> None:
        """
        C{twistd imageproto --web 8081 --record-dir DIR --segment-seconds 60}
        adds the viewer's listening service, a recorder and the metrics sink
        to the receiver, opening nothing until started.
        """
        from twisted.internet.testing import MemoryReactorClock

        from imageproto.features.web.metrics import ReceiverMetrics as Metrics
        from imageproto.features.recording import Recorder
        from imageproto.tap.receiver import Options, makeService

        options = Options()
        options.parseOptions(
            ["--port", "0", "--web", "8081", "--record-dir", "rec", "--segment-seconds", "60"]
        )
        self.assertEqual(options["web"], "tcp:8081")
        self.assertTrue(os.path.isabs(options["record-dir"]))
        reactor = MemoryReactorClock()
        service = makeService(options, reactor=reactor)
        [recorder] = [c for c in service if isinstance(c, Recorder)]
        self.assertEqual(recorder.segmentSeconds, 60.0)
        kinds = [type(s) for s in service.pipeline.consumers]
        self.assertIn(Recorder, kinds)
        self.assertIn(Metrics, kinds)
        self.assertEqual(reactor.tcpServers, [])

    def test_withoutOptions(self) -> None:
        """
        Without C{--web} or C{--record-dir} neither is added.
        """
        from twisted.internet.testing import MemoryReactorClock

        from imageproto.tap.receiver import Options, makeService

        options = Options()
        options.parseOptions(["--port", "0"])
        service = makeService(options, reactor=MemoryReactorClock())
        self.assertEqual(
            [type(s).__name__ for s in service.pipeline.consumers], ["LatestFrameHub"]
        )

    def test_attachWeb(self) -> None:
        """
        L{attachWeb} takes a L{WebConfig}: it adds the viewer's listening
        service as a child of the receiver and its metrics and latest
        detections as consumers, opening nothing until started.
        """
        from twisted.application.internet import StreamServerEndpointService
        from twisted.internet.testing import MemoryReactorClock

        from imageproto.features.web.metrics import ReceiverMetrics as Metrics
        from imageproto.features.web.viewer import LatestDetections, WebConfig, attachWeb
        from imageproto.receiver.service import ReceiverService

        reactor = MemoryReactorClock()
        receiver = ReceiverService("tcp:0", reactor=reactor)
        service, root = attachWeb(receiver, WebConfig("tcp:8081"))
        self.assertIn(service, list(receiver))
        self.assertIsInstance(service, StreamServerEndpointService)
        self.assertIsInstance(root, WebRoot)
        kinds = [type(s) for s in receiver.pipeline.consumers]
        self.assertEqual(kinds[-2:], [LatestDetections, Metrics])
        self.assertEqual(reactor.tcpServers, [])

    def test_latestDetections(self) -> None:
        """
        L{LatestDetections} keeps each stream's newest RESULT for the page.
        """
        from imageproto import wire
        from imageproto.features.web.viewer import LatestDetections
        from imageproto.receiver.pipeline import ReceivedFrame

        latest = LatestDetections()
        self.assertIsNone(latest("cam1"))
        box = {"label": "cat", "confidence": 0.5, "box": [1, 2, 3, 4]}
        frame = ReceivedFrame("cam1", 3, 1.0, 1.0, 1.0, b"")
        latest.resultReady(frame, wire.Result(3, [box], 2500))
        self.assertEqual(
            latest("cam1"), {"seq": 3, "detections": [box], "processing_ms": 2.5}
        )
