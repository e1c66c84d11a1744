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

from imageproto.common.stacks import DUMP_SIGNAL
from imageproto.tap import twistdCommand

__all__ = ["SUMMARY", "TwistdProcesses", "stopWithin"]

# The sender's closing summary line, as it logs it.
SUMMARY = re.compile(
    r"done: (?P<sent>\d+) sent, (?P<acknowledged>\d+) acknowledged, .*?"
    r"(?P<resent>\d+) resent, (?P<reconnects>\d+) reconnects"
)


class ProcessHung(AssertionError):
    """
    A process did not end within its time after SIGTERM.
    """


def stopWithin(transport, ended: defer.Deferred, output, timeout: float = 60.0):
    """
    Send SIGTERM and fire with C{ended}'s result once the process ends.

    A process still running C{timeout} seconds later is asked for its
    thread stacks (L{DUMP_SIGNAL}, which every twistd command answers on
    standard error), given two seconds to write them, SIGKILLed, and the
    returned Deferred fails with L{ProcessHung} quoting C{output()}: a hang
    is reported with what the process was doing, not as a test timeout.

    @param output: returns the process's output so far, as text.
    """
    result = defer.Deferred()
    ended.addBoth(lambda r: (result.called or result.callback(r), r)[1])
    calls = []

    def signal(name) -> None:
        # Reaped already, its output pipes perhaps still open: nothing to do.
        try:
            transport.signalProcess(name)
        except error.ProcessExitedAlready:
            pass

    def stuck():
        if result.called:
            return
        signal(DUMP_SIGNAL)
        calls.append(reactor.callLater(2, kill))

    def kill():
        signal("KILL")
        if not result.called:
            result.errback(ProcessHung(
                f"still running {timeout} s after SIGTERM; its stacks and output:\n{output()}"
            ))

    def cancelCalls(passed):
        for call in calls:
            if call.active():
                call.cancel()
        return passed

    signal("TERM")
    calls.append(reactor.callLater(timeout, stuck))
    result.addBoth(cancelCalls)
    return result


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
