"""
Tests for L{imageproto.features.web.metrics}.
"""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from twisted.trial.unittest import SynchronousTestCase

from imageproto import wire
from imageproto.features.web.metrics import LATENCY_BUCKETS, ReceiverMetrics
from imageproto.receiver.consumers import ReceivedFrame
from imageproto.receiver.pipeline import ConsumerBase, IFrameConsumer


def _snapshot(**overrides) -> dict:
    stats = {
        "frames": 12,
        "bytes": 3400,
        "fps": 9.5,
        "latency_ms": {"p50": 3.0, "p95": 5.0, "p99": 8.0},
        "gaps": 2,
        "dropped": 4,
        "connections": 3,
        "reconnects": 2,
        "rejected": 1,
        "duplicates": 5,
        "connected": True,
        "last_seen": 1000.0,
    }
    stats.update(overrides)
    return {"streams": {"cam1": stats}}


def _samples(text: bytes) -> dict:
    """
    Parse an exposition into C{{(sample name, labels...): value}}.
    """
    found = {}
    for family in text_string_to_metric_families(text.decode("utf-8")):
        for sample in family.samples:
            key = (sample.name,) + tuple(sorted(sample.labels.items()))
            found[key] = sample.value
    return found


def _frame(stream: str, latency: float) -> ReceivedFrame:
    return ReceivedFrame(stream, 1, 100.0, 100.0, 100.0 + latency, b"\xff\xd8", 0)


class _Answering(ConsumerBase):
    """
    A consumer that keeps each frame, to answer it later.
    """

    def __init__(self, frames: list) -> None:
        self.frames = frames

    def frameReceived(self, frame) -> None:
        self.frames.append(frame)


class ReceiverMetricsTests(SynchronousTestCase):
    def test_ignoresAnswers(self) -> None:
        """
        The metrics are a whole pipeline consumer: a detector's answer
        (C{resultReady}) is ignored, not logged as the consumer failing.
        """
        from twisted.internet.task import Clock
        from twisted.logger import capturedLogs
        from zope.interface.verify import verifyObject

        from tests.helpers import FAKE_JPEG, RecordingChannel, receiverStack

        clock = Clock()
        clock.advance(100)
        metrics = ReceiverMetrics(lambda: {"streams": {}})
        verifyObject(IFrameConsumer, metrics)
        answered = []
        registry, pipeline = receiverStack(clock, [metrics])
        pipeline.addConsumer(_Answering(answered))
        stream = registry.attach("cam1", 0, 1, object())
        with capturedLogs() as events:
            pipeline.frameReceived(stream, wire.Frame(0, FAKE_JPEG), RecordingChannel())
            answered[0].reply(wire.Result(0), toSender=False)
            registry.detach(stream, object())
        self.assertEqual([e for e in events if "log_failure" in e], [])

    def test_streamCountersFromSnapshot(self) -> None:
        """
        Each per-stream count of the registry's snapshot is exposed as a
        counter labelled with the stream, parseable by prometheus_client.
        """
        metrics = ReceiverMetrics(_snapshot)
        samples = _samples(metrics.render())
        label = (("stream", "cam1"),)
        self.assertEqual(samples[("imageproto_frames_total",) + label], 12)
        self.assertEqual(samples[("imageproto_bytes_total",) + label], 3400)
        self.assertEqual(
            samples[("imageproto_sender_dropped_frames_total",) + label], 4
        )
        self.assertEqual(samples[("imageproto_gaps_total",) + label], 2)
        self.assertEqual(samples[("imageproto_reconnects_total",) + label], 2)
        self.assertEqual(samples[("imageproto_connections_total",) + label], 3)
        self.assertEqual(samples[("imageproto_rejected_frames_total",) + label], 1)
        self.assertEqual(samples[("imageproto_duplicate_frames_total",) + label], 5)
        self.assertEqual(samples[("imageproto_connected_senders",) + label], 1)
        self.assertEqual(samples[("imageproto_fps",) + label], 9.5)

    def test_disconnectedStreamHasNoSender(self) -> None:
        """
        A stream whose sender is gone reports 0 connected senders.
        """
        metrics = ReceiverMetrics(lambda: _snapshot(connected=False))
        samples = _samples(metrics.render())
        self.assertEqual(
            samples[("imageproto_connected_senders", ("stream", "cam1"))], 0
        )

    def test_latencyHistogram(self) -> None:
        """
        Every frame handed to the metrics sink is observed in a latency
        histogram per stream, with the documented buckets.
        """
        metrics = ReceiverMetrics(_snapshot)
        for latency in (0.002, 0.004, 0.2):
            metrics.frameReceived(_frame("cam1", latency))
        metrics.frameReceived(_frame("cam2", 3.0))
        samples = _samples(metrics.render())
        name = "imageproto_frame_latency_seconds"
        self.assertEqual(samples[(name + "_count", ("stream", "cam1"))], 3)
        self.assertAlmostEqual(samples[(name + "_sum", ("stream", "cam1"))], 0.206)
        self.assertEqual(
            samples[(name + "_bucket", ("le", "0.005"), ("stream", "cam1"))], 2
        )
        self.assertEqual(
            samples[(name + "_bucket", ("le", "0.25"), ("stream", "cam1"))], 3
        )
        self.assertEqual(
            samples[(name + "_bucket", ("le", "2.5"), ("stream", "cam2"))], 0
        )
        buckets = {
            float(dict(k[1:])["le"])
            for k in samples
            if k[0] == name + "_bucket" and dict(k[1:])["stream"] == "cam1"
        }
        self.assertEqual(buckets, set(LATENCY_BUCKETS) | {float("inf")})

    def test_viewersAndRecorder(self) -> None:
        """
        Viewer counts and the recorder's written and dropped frames are
        exposed per stream.
        """
        metrics = ReceiverMetrics(
            _snapshot,
            viewerCounts=lambda: {"cam1": 3},
            recorderStats=lambda: {"cam1": {"written": 7, "dropped": 2}},
        )
        samples = _samples(metrics.render())
        label = (("stream", "cam1"),)
        self.assertEqual(samples[("imageproto_viewers",) + label], 3)
        self.assertEqual(samples[("imageproto_recorded_frames_total",) + label], 7)
        self.assertEqual(
            samples[("imageproto_recorder_dropped_frames_total",) + label], 2
        )

    def test_privateRegistries(self) -> None:
        """
        Two receivers' metrics live in separate registries: creating the
        second does not collide with the first, and neither sees the
        other's observations.
        """
        first = ReceiverMetrics(_snapshot)
        second = ReceiverMetrics(lambda: {"streams": {}})
        first.frameReceived(_frame("cam1", 0.01))
        self.assertIsNot(first.registry, second.registry)
        self.assertNotIn(b"cam1", second.render())
        self.assertIn(b"cam1", first.render())


class DetectorBackendMetricTests(SynchronousTestCase):
    def test_backendGauge(self):
        """
        /metrics names the detector and the runtime it runs on with a gauge
        of 1; a detector naming none is "builtin"; without a detector there
        is no such gauge.
        """
        from imageproto.features.web.metrics import ReceiverMetrics

        def render(detector):
            snapshot = {"streams": {}}
            if detector is not None:
                snapshot["detector"] = detector
            return ReceiverMetrics(lambda: snapshot).render().decode()

        text = render({"name": "onnx:/m.onnx", "backend": "onnxruntime/CPUExecutionProvider"})
        self.assertIn(
            'imageproto_detector_backend{backend="onnxruntime/CPUExecutionProvider",'
            'detector="onnx:/m.onnx"} 1.0',
            text,
        )
        self.assertIn(
            'imageproto_detector_backend{backend="builtin",detector="people"} 1.0',
            render({"name": "people", "backend": None}),
        )
        self.assertNotIn("imageproto_detector_backend", render(None))
