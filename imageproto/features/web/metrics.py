# -*- test-case-name: tests.test_metrics -*-
"""
Prometheus metrics for one receiver, served as text at C{/metrics}.

Each receiver owns a private L{CollectorRegistry} (never the process-wide
default one), so several receivers in one process, and the tests, do not
collide.  Counters that the L{imageproto.receiver.registry.StreamRegistry} already
keeps are read from its C{snapshot()} at scrape time; the latency histogram
needs every observation, so L{ReceiverMetrics} is also an
L{imageproto.receiver.consumers.IFrameSink} that the registry hands each frame to.
"""

from __future__ import annotations

from typing import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram
from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from zope.interface import implementer

from imageproto.receiver.consumers import IFrameSink
from imageproto.receiver.pipeline import ConsumerBase

__all__ = ["ReceiverMetrics", "LATENCY_BUCKETS", "CONTENT_TYPE"]

CONTENT_TYPE = CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

# (metric name, snapshot key, help text) for the registry's running counts.
_STREAM_COUNTERS = (
    ("imageproto_frames", "frames", "Frames accepted."),
    ("imageproto_bytes", "bytes", "JPEG bytes accepted."),
    (
        "imageproto_sender_dropped_frames",
        "dropped",
        "Frames the sender reports it dropped before sending.",
    ),
    ("imageproto_gaps", "gaps", "Sequence numbers skipped within a session."),
    ("imageproto_connections", "connections", "Accepted sender handshakes."),
    ("imageproto_reconnects", "reconnects", "Handshakes after the first."),
    ("imageproto_rejected_frames", "rejected", "Frames refused (not JPEG, or not stored)."),
    (
        "imageproto_storage_errors",
        "storage_errors",
        "Frames refused because they could not be stored (a full disk).",
    ),
    ("imageproto_duplicate_frames", "duplicates", "Resent frames ignored."),
    (
        "imageproto_implausible_times",
        "implausible_times",
        "Frames whose capture or send time was not finite or more than a day "
        "from the receiver's clock (kept out of the latency histogram).",
    ),
)

# (metric name, recorder stats key, help text).
_RECORDER_COUNTERS = (
    ("imageproto_recorded_frames", "written", "Frames written to recordings."),
    (
        "imageproto_recorder_dropped_frames",
        "dropped",
        "Frames not recorded because the recorder's queue was full.",
    ),
)


def _clockFamilies(streams: dict):
    """
    The clock-offset estimate and the latency corrected by it, per stream
    with an estimate (PROTOCOL.md, "Clock offset"), as gauges in seconds.
    """
    offset = GaugeMetricFamily(
        "imageproto_clock_offset_seconds",
        "The sender's clock minus the receiver's, estimated from timed PONGs.",
        labels=["stream"],
    )
    error = GaugeMetricFamily(
        "imageproto_clock_error_seconds",
        "Bound on the clock offset estimate's error (half its round trip, "
        "plus drift since).",
        labels=["stream"],
    )
    corrected = GaugeMetricFamily(
        "imageproto_frame_latency_corrected_seconds",
        "Capture-to-receipt latency with the capture time moved to the "
        "receiver's clock by the offset estimate, recent quantiles.",
        labels=["stream", "quantile"],
    )
    for name, stats in streams.items():
        if stats.get("clock_offset_ms") is not None:
            offset.add_metric([name], stats["clock_offset_ms"] / 1000.0)
            error.add_metric([name], stats["clock_error_ms"] / 1000.0)
        for key, quantile in (("p50", "0.5"), ("p95", "0.95"), ("p99", "0.99")):
            value = (stats.get("latency_corrected_ms") or {}).get(key)
            if value is not None:
                corrected.add_metric([name, quantile], value / 1000.0)
    yield offset
    yield error
    yield corrected


def _noStats() -> dict:
    return {}


def _busFamilies(bus: dict):
    """
    The metric families of the stats snapshot's C{"bus"} section (see
    L{imageproto.features.bus.service.BusService.snapshot}).
    """
    up = GaugeMetricFamily("imageproto_bus_up", "1 while publishing to Redis succeeds.")
    up.add_metric([], 1 if bus.get("up") else 0)
    yield up
    published = CounterMetricFamily(
        "imageproto_bus_published_frames", "Frames published to the bus.", labels=["stream"]
    )
    dropped = CounterMetricFamily(
        "imageproto_bus_live_dropped_frames",
        "Live frames dropped because publishing fell behind.",
        labels=["stream"],
    )
    for name, counts in sorted(bus.get("per_stream", {}).items()):
        published.add_metric([name], counts.get("published", 0))
        dropped.add_metric([name], counts.get("live_dropped", 0))
    yield published
    yield dropped
    latency = GaugeMetricFamily(
        "imageproto_bus_publish_latency_seconds",
        "Seconds from a frame's arrival to its XADD's reply, recent quantiles.",
        labels=["quantile"],
    )
    for name, quantile in (("p50", "0.5"), ("p95", "0.95"), ("p99", "0.99")):
        value = bus.get("publish_latency_ms", {}).get(name)
        if value is not None:
            latency.add_metric([quantile], value / 1000.0)
    yield latency
    backlog = GaugeMetricFamily(
        "imageproto_bus_backlog_frames", "Frames waiting to be published.", labels=["kind"]
    )
    for kind, value in sorted(bus.get("backlog", {}).items()):
        backlog.add_metric([kind], value)
    yield backlog
    answers = CounterMetricFamily(
        "imageproto_bus_answers", "Workers' answers by outcome.", labels=["outcome"]
    )
    for outcome in ("answered", "skipped_by_workers", "late_duplicates", "forgotten"):
        if outcome in bus:
            answers.add_metric([outcome], bus[outcome])
    yield answers
    length = GaugeMetricFamily(
        "imageproto_bus_stream_length", "Entries in a stream's Redis Stream.", labels=["stream"]
    )
    pending = GaugeMetricFamily(
        "imageproto_bus_pending_entries",
        "Entries a consumer group's workers took and have not acknowledged.",
        labels=["stream", "group"],
    )
    oldest = GaugeMetricFamily(
        "imageproto_bus_oldest_pending_age_seconds",
        "Age of the oldest pending entry (Redis's clock).",
        labels=["stream", "group"],
    )
    streams = bus.get("redis", {}).get("streams", {}) or {}
    for name, stream in sorted(streams.items()):
        length.add_metric([name], stream.get("length", 0))
        for group, info in sorted(stream.get("groups", {}).items()):
            pending.add_metric([name, group], info.get("pending", 0))
            age = info.get("oldest_pending_age_s")
            oldest.add_metric([name, group], 0.0 if age is None else age)
    yield length
    yield pending
    yield oldest
    workers = GaugeMetricFamily(
        "imageproto_bus_workers", "Workers that sent a heartbeat in the last 10 s."
    )
    workers.add_metric([], len(bus.get("workers", {})))
    yield workers


def _detectorFamily(detector: dict):
    """
    The gauge naming the running detector and its backend (the stats
    snapshot's C{"detector"} section, from
    L{imageproto.features.inference.engine.attachInference}).
    """
    family = GaugeMetricFamily(
        "imageproto_detector_backend",
        "1 for the detector this receiver runs and the runtime it runs on "
        "(onnxruntime/<provider>, cv2.dnn, or builtin).",
        labels=["detector", "backend"],
    )
    family.add_metric([detector.get("name") or "", detector.get("backend") or "builtin"], 1)
    return family


@implementer(IFrameSink)
class ReceiverMetrics(ConsumerBase):
    """
    The metrics of one receiver and their text exposition.

    @param snapshot: a callable returning the C{StreamRegistry.snapshot()}
        dictionary, C{{"streams": {name: {...}}}}.
    @param viewerCounts: a callable returning C{{stream name: live MJPEG
        viewers}}.
    @param recorderStats: a callable returning C{{stream name: {"written",
        "dropped", ...}}} from the recorder, when one runs.

    @ivar registry: the private L{CollectorRegistry} holding every metric.
    """

    def __init__(
        self,
        snapshot: Callable[[], dict],
        viewerCounts: Callable[[], dict] = _noStats,
        recorderStats: Callable[[], dict] = _noStats,
    ) -> None:
        self._snapshot = snapshot
        self._viewerCounts = viewerCounts
        self._recorderStats = recorderStats
        self.registry = CollectorRegistry(auto_describe=True)
        self._latency = Histogram(
            "imageproto_frame_latency_seconds",
            "Seconds from capture (sender clock) to receipt (receiver clock).",
            ["stream"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(self)

    # IFrameSink

    def frameReceived(self, frame) -> None:
        if frame.plausibleTimes:
            self._latency.labels(frame.stream).observe(frame.latency)

    # prometheus_client collector protocol

    def describe(self) -> list:
        # Describing nothing keeps registration from calling collect(), and
        # therefore the snapshot, before the receiver is wired up.
        return []

    def collect(self):
        """
        Build the per-stream metric families from the current snapshot.
        """
        streams = self._snapshot().get("streams", {})
        for metric, key, text in _STREAM_COUNTERS:
            family = CounterMetricFamily(metric, text, labels=["stream"])
            for name, stats in streams.items():
                family.add_metric([name], stats.get(key, 0))
            yield family
        connected = GaugeMetricFamily(
            "imageproto_connected_senders",
            "Senders connected now (0 or 1 per stream).",
            labels=["stream"],
        )
        fps = GaugeMetricFamily(
            "imageproto_fps", "Frames per second received recently.", labels=["stream"]
        )
        for name, stats in streams.items():
            connected.add_metric([name], 1 if stats.get("connected") else 0)
            fps.add_metric([name], stats.get("fps") or 0.0)
        yield connected
        yield fps
        yield from _clockFamilies(streams)

        viewers = GaugeMetricFamily(
            "imageproto_viewers", "Live MJPEG viewers.", labels=["stream"]
        )
        counts = self._viewerCounts()
        for name in sorted(set(streams) | set(counts)):
            viewers.add_metric([name], counts.get(name, 0))
        yield viewers

        recorded = self._recorderStats()
        for metric, key, text in _RECORDER_COUNTERS:
            family = CounterMetricFamily(metric, text, labels=["stream"])
            for name, stats in sorted(recorded.items()):
                family.add_metric([name], stats.get(key, 0))
            yield family

        bus = self._snapshot().get("bus")
        if bus is not None:
            yield from _busFamilies(bus)
        detector = self._snapshot().get("detector")
        if detector is not None:
            yield _detectorFamily(detector)

    def render(self) -> bytes:
        """
        The Prometheus text exposition of every metric.
        """
        return generate_latest(self.registry)
