# -*- test-case-name: tests.test_bus_redis -*-
"""
A detector for the bus's process tests: C{--detect
imageproto.features.bus.testing:SlowDetector} takes
C{$IMAGEPROTO_SLOW_SECONDS} (default 0.2) per frame, long enough to kill a
worker while it holds a frame, and reports the worker's pid.
"""

from __future__ import annotations

import os
import time

__all__ = ["SlowDetector"]


class SlowDetector:
    """
    Finds one "slow" box per frame, after a configurable pause (the stand-in
    for a detector's work).
    """

    def __init__(self) -> None:
        self.seconds = float(os.environ.get("IMAGEPROTO_SLOW_SECONDS", "0.2"))

    def detect(self, image, stream: str) -> list:
        time.sleep(self.seconds)
        return [{"label": f"pid{os.getpid()}", "confidence": 1.0, "box": [0, 0, 1, 1]}]
