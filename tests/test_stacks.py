"""
Thread stacks on demand (L{imageproto.common.stacks}) from real twistd
commands, and the tests' way of reporting a process that will not end
(L{tests.helpers.processes.stopWithin}).
"""

from __future__ import annotations

import os
import sys

from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from imageproto.common import stacks
from imageproto.common.stacks import DUMP_SIGNAL
from imageproto.tap import freePort, listening
from imageproto.testing import waitFor
from tests.helpers.processes import ProcessHung, TwistdProcesses, _Process, stopWithin

# faulthandler's heading for each thread of a dump.
HEADING = "(most recent call first)"


class RegistrationTests(SynchronousTestCase):
    """
    L{stacks.dumpStacksOnSignal}, and which commands call it.
    """

    def setUp(self):
        self.registered = []
        self.handlers = []
        self.patch(stacks.faulthandler, "register",
                   lambda signum, **kwargs: self.registered.append((signum, kwargs)))
        self.patch(stacks.signal, "signal", lambda signum, handler: self.handlers.append((signum, handler)))

    def test_everyThread(self):
        """
        SIGUSR2 dumps every thread, not only the one it interrupts, to the
        original standard error.
        """
        stacks.dumpStacksOnSignal()
        self.assertEqual(
            self.registered, [(DUMP_SIGNAL, {"file": sys.__stderr__, "all_threads": True})]
        )

    def test_noStandardError(self):
        """
        Started without a standard error, the process ignores SIGUSR2
        instead of failing to start (or being ended by it).
        """
        self.patch(stacks.sys, "__stderr__", None)
        stacks.dumpStacksOnSignal()
        self.assertEqual((self.registered, self.handlers), ([], [(DUMP_SIGNAL, stacks.signal.SIG_IGN)]))

    def test_closedStandardError(self):
        """
        A standard error faulthandler cannot use (closed) is the same.
        """

        def refuse(signum, **kwargs):
            raise ValueError("I/O operation on closed file")

        self.patch(stacks.faulthandler, "register", refuse)
        stacks.dumpStacksOnSignal()
        self.assertEqual(self.handlers, [(DUMP_SIGNAL, stacks.signal.SIG_IGN)])

    def calls(self) -> list:
        made = []
        self.patch(stacks, "dumpStacksOnSignal", lambda: made.append(True))
        return made

    def test_commandsRegister(self):
        """
        The sender and worker built by twistd (no reactor given) register
        the dump; built for a test (a reactor given) they do not.  (The
        receiver's is run for real in L{StackDumpTests}.)
        """
        from imageproto.tap import sender, worker

        def senderOptions():
            options = sender.Options()
            options.parseOptions([])
            return options

        def workerOptions():
            options = worker.Options()
            options.parseOptions(["--bus", "redis://127.0.0.1:1/0", "--detect", "echo"])
            return options

        for module, options in [(sender, senderOptions), (worker, workerOptions)]:
            made = self.calls()
            module.makeService(options(), Clock())
            self.assertEqual(made, [], module.__name__)
            module.makeService(options())
            self.assertEqual(made, [True], module.__name__)


class StackDumpTests(TwistdProcesses, TestCase):
    """
    C{kill -USR2} on a running receiver.
    """

    def setUp(self):
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)

    @defer.inlineCallbacks
    def test_receiverDumpsItsStacksAndGoesOn(self):
        """
        A receiver sent SIGUSR2 writes every thread's stack to standard
        error (its reactor's among them), keeps serving, and still shuts down
        cleanly on SIGTERM.
        """
        port = freePort()
        receiver = self.spawn("receiver", ["imageproto", "--port", f"tcp:{port}:interface=127.0.0.1"])
        yield waitFor(lambda: receiver.status is not None or listening(port), 30, "the receiver to listen")
        self.assertIsNone(receiver.status, receiver.text)
        self.assertNotIn(HEADING, receiver.text)
        receiver.transport.signalProcess(DUMP_SIGNAL)
        yield waitFor(lambda: "run" in receiver.text.partition(HEADING)[2], 30, "the stacks")
        self.assertIn("twisted/internet", receiver.text.partition(HEADING)[2])
        self.assertTrue(listening(port), "still serving after the dump")
        yield stopWithin(receiver.transport, receiver.ended, lambda: receiver.text)
        # twistd ends by SIGTERM itself once shut down: no exit code.
        self.assertIn(receiver.status, (0, None), receiver.text)
        self.assertIn("Server Shut Down", receiver.text)


class StopWithinTests(TestCase):
    """
    L{stopWithin} on a process that ignores SIGTERM.
    """

    @defer.inlineCallbacks
    def test_hungProcessIsReportedWithItsStacks(self):
        """
        A process still running after SIGTERM is asked for its stacks,
        killed, and reported as L{ProcessHung} with them.
        """
        script = (
            "import faulthandler, signal, sys, time\n"
            "from imageproto.common.stacks import dumpStacksOnSignal\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "dumpStacksOnSignal()\n"
            "def stuckHere():\n"
            "    print('ready', flush=True)\n"
            "    time.sleep(600)\n"
            "stuckHere()\n"
        )
        process = _Process("hung")
        reactor.spawnProcess(process, sys.executable, [sys.executable, "-c", script], env=os.environ.copy())
        self.addCleanup(lambda: process.ended.called or process.transport.signalProcess("KILL"))
        yield waitFor(lambda: "ready" in process.text, 30, "the script to start")
        failure = yield self.assertFailure(
            stopWithin(process.transport, process.ended, lambda: process.text, timeout=0.5), ProcessHung
        )
        self.assertIn("stuckHere", str(failure))
        # Killed: it has ended.
        yield process.ended
