"""
Real C{twistd} processes for tests that run the commands end to end, and
the sender's closing summary line they read.
"""

from __future__ import annotations

import os
import re
import sys

from twisted.internet import defer, error, reactor
from twisted.internet.protocol import ProcessProtocol

from imageproto.tap import twistdCommand

__all__ = ["SUMMARY", "TwistdProcesses"]

# The sender's closing summary line, as it logs it.
SUMMARY = re.compile(
    r"done: (?P<sent>\d+) sent, (?P<acknowledged>\d+) acknowledged, .*?"
    r"(?P<resent>\d+) resent, (?P<reconnects>\d+) reconnects"
)


class _Process(ProcessProtocol):
    def __init__(self, name: str) -> None:
        self.name = name
        self.output = bytearray()
        self.ended = defer.Deferred()
        self.status = None

    def outReceived(self, data: bytes) -> None:
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason) -> None:
        self.status = reason.value.exitCode
        self.ended.callback(self.status)

    @property
    def text(self) -> str:
        return self.output.decode("utf-8", "replace")


class TwistdProcesses:
    """
    A TestCase mixin: C{spawn} runs C{twistd -n ARGS} in C{self.directory}/NAME
    and kills it at cleanup if the test has not ended it.
    """

    def spawn(self, name: str, args, env=None) -> _Process:
        process = _Process(name)
        cwd = os.path.join(self.directory, name)
        os.makedirs(cwd, exist_ok=True)
        transport = reactor.spawnProcess(
            process, sys.executable, twistdCommand() + list(args), env=env or os.environ.copy(), path=cwd
        )

        def cleanup():
            if process.status is None:
                try:
                    transport.signalProcess("KILL")
                except error.ProcessExitedAlready:
                    return None
                return process.ended
            return None

        self.addCleanup(cleanup)
        return process
