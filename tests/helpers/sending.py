"""
Stand-ins for what the sending protocol talks to.
"""

from __future__ import annotations

from imageproto import wire

__all__ = ["FakeSender"]


class FakeSender:
    """
    A FrameSender stand-in recording what the protocol tells it.
    """

    def __init__(self, name: str = "cam-1") -> None:
        self.name = name
        self.events = []

    def hello(self) -> wire.Hello:
        return wire.Hello(self.name, wire.CAP_LIVE, 7)

    def __getattr__(self, name):
        if name in ("connected", "acked", "rejected", "resultReceived",
                    "refused", "failed", "disconnected", "fail"):
            return lambda *args: self.events.append((name,) + args)
        raise AttributeError(name)
