"""
Tests for L{imageproto.protocol.descriptors}: viewer and compatibility
connections cannot use up the file descriptors senders need.
"""

from __future__ import annotations

import os
import resource
import shutil
import socket
import subprocess
import tempfile
import time

from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger, capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from imageproto.receiver.savedir import savedFrames
from imageproto.protocol.descriptors import (
    RESERVED_FDS,
    ConnectionCap,
    DescriptorWatch,
    fitCaps,
)
from imageproto.tap import freePort, listening, stopProcess, twistdCommand


class PureTests(SynchronousTestCase):
    def test_fitCapsLeavesRoomForSenders(self) -> None:
        """
        Web and compat caps are lowered in proportion so that with
        C{--max-connections} and the reserve they fit in the limit.
        """
        self.assertEqual(fitCaps(4096, 256, [512, 64]), [512, 64])
        fitted = fitCaps(1024, 256, [2048, 512])
        self.assertLessEqual(sum(fitted) + 256 + RESERVED_FDS, 1024)
        self.assertEqual(fitCaps(10, 256, [512, 64]), [1, 1])

    def test_capRefusesOverLimit(self) -> None:
        """
        A L{ConnectionCap} builds no protocol (the port closes the socket)
        once C{limit} are open, warns once per episode, and accepts again
        once one closes.
        """
        from twisted.internet.testing import StringTransport

        cap = ConnectionCap(Factory.forProtocol(Protocol), 2, "--web-max-connections")
        opened = []
        for _ in range(2):
            p = cap.buildProtocol(None)
            p.makeConnection(StringTransport())
            opened.append(p)
        with capturedLogs() as events:
            self.assertIsNone(cap.buildProtocol(None))
            self.assertIsNone(cap.buildProtocol(None))
        self.assertEqual(len(events), 1)
        self.assertEqual(events[0]["option"], "--web-max-connections")
        opened[0].connectionLost(None)
        self.assertIsNotNone(cap.buildProtocol(None))
        self.assertEqual(cap.refused, 2)

    def test_outOfDescriptorsLoggedOncePerEpisode(self) -> None:
        """
        Twisted's line per failed accept becomes one error per episode,
        with the advice.
        """
        now = [0.0]
        watch = DescriptorWatch([], lambda: 0, "raise ulimit -n", quiet=10, now=lambda: now[0])
        log = Logger(observer=watch, namespace="twisted.internet.tcp.Port")
        with capturedLogs() as events:
            for _ in range(200):
                log.info("EMFILE encountered; releasing reserved file descriptor.")
                now[0] += 0.01
            now[0] += 60
            log.info("EMFILE encountered; releasing reserved file descriptor.")
        errors = [e for e in events if e["log_level"].name == "error"]
        self.assertEqual(len(errors), 2)
        self.assertEqual(watch.episodes, 2)
        self.assertIn("raise ulimit -n", errors[0]["advice"])


def _lowLimit(limit: int):
    def apply():
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    return apply


class ManyViewersTests(SynchronousTestCase):
    def test_idleViewersCannotStopSenders(self) -> None:
        """
        A real receiver with 200 file descriptors (soft and hard) and 400
        idle connections to its web port still accepts a sender, which
        stores every frame: the web port's cap is lowered to leave room
        and the connections over it are closed at once.
        """
        work = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, work, True)
        port, web = freePort(), freePort()
        saveDir = os.path.join(work, "frames")
        log = os.path.join(work, "receiver.log")
        receiver = subprocess.Popen(
            twistdCommand(
                f"--logfile={log}",
                "imageproto",
                "--port", f"tcp:{port}:interface=127.0.0.1",
                "--web", f"tcp:{web}:interface=127.0.0.1",
                "--max-connections", "16",
                "--save-dir", saveDir,
            ),
            cwd=work,
            preexec_fn=_lowLimit(200),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.addCleanup(stopProcess, receiver)
        deadline = time.monotonic() + 60
        while not listening(web):
            self.assertIsNone(receiver.poll(), "the receiver exited")
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.1)
        viewers = []
        self.addCleanup(lambda: [s.close() for s in viewers])
        for _ in range(400):
            try:
                viewers.append(socket.create_connection(("127.0.0.1", web), timeout=5))
            except OSError:
                pass
        sender = subprocess.run(
            twistdCommand(
                "imageproto-sender",
                "--connect", f"tcp:127.0.0.1:{port}",
                "--name", "cam",
                "--count", "30",
                "--fps", "0",
                "--width", "64",
                "--height", "48",
                "--max-retries", "5",
            ),
            cwd=work,
            capture_output=True,
            text=True,
            timeout=120,
        )
        self.assertEqual(sender.returncode, 0, sender.stdout[-2000:])
        self.assertEqual(len(savedFrames(saveDir, "cam")), 30)
        with open(log) as f:
            text = f.read()
        self.assertIn("--web-max-connections lowered", text)
        self.assertNotIn("EMFILE", text)
