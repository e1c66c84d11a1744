# -*- test-case-name: tests.test_bus,tests.test_bus_hosted -*-
"""
What C{twistd imageproto-worker} does, as a typed config: L{WorkerConfig}
(built from its options by L{imageproto.tap.bus.workerConfig}).
"""

from __future__ import annotations

import os
import socket

from attrs import frozen

from imageproto import wire

__all__ = ["WorkerConfig", "defaultName"]


@frozen
class WorkerConfig:
    """
    What a worker does (built from C{twistd imageproto-worker}'s options by
    L{imageproto.tap.bus.workerConfig}).

    @ivar name: this worker's name (its consumers are C{name-0}, C{name-1},
        ... one per thread).
    @ivar detector: the detector's spec, or C{None}: no detection.
    @ivar saveDir: host a L{imageproto.receiver.savedir.SaveDirSink} here
        (absolute), or C{None}; C{recording} a recorder
        (L{imageproto.features.recording.RecordingConfig}), C{web} the
        viewer (L{imageproto.features.web.viewer.WebConfig}), and
        C{statsFile} the statistics file (see
        L{imageproto.features.bus.hosted}).
    @ivar consumerGroup: the one group the hosted consumers read in, or
        C{None} for one each (C{save}, C{record}, C{view-<name>}, C{stats}).
    """

    url: str
    detector: object = None
    workers: int = 1
    claimAfter: float = 30.0
    maxAge: float = 2.0
    group: str = "detect"
    name: str = ""
    saveDir: str | None = None
    recording: object = None
    web: object = None
    statsFile: str | None = None
    statsInterval: float = 5.0
    consumerGroup: str | None = None

    @property
    def hostsConsumers(self) -> bool:
        return any(x is not None for x in (self.saveDir, self.recording, self.web, self.statsFile))


def defaultName() -> str:
    host = wire.toStreamName(socket.gethostname() or "worker")
    return f"{host}-{os.getpid()}"


