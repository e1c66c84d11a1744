"""
Faults survived, and load, measured against real processes on loopback.

Run from the checkout's root::

    /work/venv/bin/python -m bench.faults [--only NAME ...] [--senders 100]
        [--load-seconds 10]

(C{fulldisk} mounts a tmpfs: run as root, or leave it out with C{--only}.)

Each scenario starts real C{twistd -n imageproto} and
C{twistd -n imageproto-sender} processes on free loopback ports and prints
what was sent, what arrived, what was dropped on purpose, how long
reconnecting or noticing took, and each process's peak memory (C{VmHWM}
from C{/proc/<pid>/status}, sampled every 0.1 s while it runs):

  - C{restart}: the receiver is killed (SIGKILL) mid-stream and started
    again on the same port; the sender (a finite image folder) reconnects
    and every frame is stored exactly once.
  - C{stall}: a TCP proxy between a live sender and the receiver stops
    carrying traffic for a while; both ends notice through heartbeats and
    idle timeouts, the sender's memory stays flat and live frames are
    dropped and counted; when traffic flows again the stream resumes.
  - C{slow}: two finite senders, one whose frames a detector takes 0.1 s
    each over (a slow consumer); the other finishes at its own pace.
  - C{fuzz}: while a good sender streams, other connections send mutated
    messages (from L{tests.test_fuzz}); every one is closed, and the good
    sender's frames all arrive.
  - C{load}: N senders (in this process, each its own TCP connection,
    L{FrameSender} and protocol) at 10 fps each into one receiver process;
    every frame is accounted for.
  - C{sessions}: a camera restarted: two sender runs under one name; both
    runs' frames are on disk, each in its own session folder, and the
    first run's files are untouched by the second.
  - C{fulldisk}: C{--save-dir} on a tmpfs of a few hundred KiB (mounted by
    the scenario, so it needs root): the frames that fit are stored, the
    rest rejected with storage errors, and the sender exits non-zero
    saying how many were not stored.
  - C{declared}: 50 peers that never say HELLO declare 16 MiB messages and
    push bytes at them: each is refused at once, and the receiver's peak
    memory hardly moves.
  - C{viewers}: 1,100 idle connections to the C{--web} port of a receiver
    limited to 512 file descriptors, then a sender: every frame stored.
  - C{timestamp}: a raw client sends a frame captured "at" 1e308 beside a
    normal sender; C{/api/streams} stays strict JSON and lists both.

The scenario functions return L{Figures}; L{tests.test_faults} and
L{tests.test_load} run them with smaller settings and assert on them.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import tempfile
import time

from attrs import asdict, field, frozen
from twisted.internet import defer, protocol, reactor, task
from twisted.internet.protocol import ProcessProtocol

from imageproto.receiver.savedir import savedFrames
from imageproto.tap import freePort, listening, twistdCommand
from imageproto.testing import waitFor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TWISTD = twistdCommand()
SUMMARY = re.compile(
    r"(?P<sent>\d+) sent, (?P<acknowledged>\d+) acknowledged, (?P<rejected>\d+) "
    r"rejected, (?P<dropped>\d+) dropped, (?P<lost>\d+) lost, (?P<resent>\d+) "
    r"resent, (?P<reconnects>\d+) reconnects, round trip p50 (?P<p50>\S+) s, "
    r"p95 (?P<p95>\S+) s; (?P<skipped>\d+) skipped \(already on the receiver\), "
    r"(?P<notStored>\d+) not stored, (?P<unacknowledged>\d+) unacknowledged"
)
# Heartbeat and idle timeout the scenarios give the receiver: a dead peer is
# noticed within IDLE seconds, and the sender waits three heartbeats.
HEARTBEAT = 1
IDLE = 3


@frozen
class Figures:
    """
    What one scenario measured.  C{None} where a figure does not apply.

    @ivar sent: frames the senders sent (their own summaries).
    @ivar arrived: frames the receiver stored or counted.
    @ivar dropped: live frames the senders dropped on purpose.
    @ivar reconnectSeconds: from the receiver listening again (or traffic
        flowing again) to the stream's next frame arriving.
    @ivar noticeSeconds: from the fault to the receiver dropping the peer.
    @ivar senderNoticeSeconds: from the fault to the sender dropping the
        connection.
    """

    scenario: str
    sent: int
    arrived: int
    dropped: int = 0
    lost: int = 0
    resent: int = 0
    reconnects: int = 0
    reconnectSeconds: float | None = None
    noticeSeconds: float | None = None
    senderNoticeSeconds: float | None = None
    receiverPeakKiB: int | None = None
    senderPeakKiB: int | None = None
    seconds: float | None = None
    notes: dict = field(factory=dict)




def peakKiB(pid: int) -> int | None:
    """
    The process's peak resident set size so far (C{VmHWM}), in KiB.
    """
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None




class Process(ProcessProtocol):
    """
    A child C{twistd}: collects its output and samples its peak memory.
    """

    def __init__(self, name: str, args: list[str], nofile: int | None = None) -> None:
        self.name = name
        self.output = bytearray()
        self.ended = defer.Deferred()
        self.status = None
        self.peak = None
        argv = TWISTD + args
        if nofile is not None:
            # spawnProcess has no preexec_fn: set RLIMIT_NOFILE (soft and
            # hard, so the receiver cannot raise it) in a small interpreter
            # that then execs twistd, as preexec_fn would between fork and
            # exec.
            argv = [sys.executable, "-c", _LIMITED, str(nofile), *argv]
        self.transport = reactor.spawnProcess(
            self, argv[0], argv, env=os.environ.copy(), path=ROOT
        )
        self.pid = self.transport.pid
        self._sampler = task.LoopingCall(self._sample)
        self._sampler.start(0.1)

    def _sample(self) -> None:
        value = peakKiB(self.pid)
        if value is not None:
            self.peak = max(self.peak or 0, value)

    def outReceived(self, data: bytes) -> None:
        self.output += data

    errReceived = outReceived

    @property
    def text(self) -> str:
        return self.output.decode("utf-8", "replace")

    def processEnded(self, reason) -> None:
        if self._sampler.running:
            self._sampler.stop()
        self.status = reason.value.exitCode
        self.ended.callback(self.status)

    @property
    def running(self) -> bool:
        return self.status is None and not self.ended.called

    def signal(self, name: str) -> None:
        if self.running:
            self.transport.signalProcess(name)

    def summary(self) -> dict:
        """
        The sender's final counts (its last summary line), as ints.
        """
        matches = list(SUMMARY.finditer(self.text))
        if not matches:
            raise AssertionError(f"{self.name}: no summary in output:\n{self.text[-3000:]}")
        found = matches[-1].groupdict()
        return {k: (v if k in ("p50", "p95") else int(v)) for k, v in found.items()}

    def when(self, pattern: str) -> float | None:
        """
        Twisted's own log timestamp is only to the second, so callers poll
        the output instead; this says whether C{pattern} appeared yet.
        """
        return pattern in self.text


_LIMITED = (
    "import os, resource, sys; n = int(sys.argv[1]); "
    "resource.setrlimit(resource.RLIMIT_NOFILE, (n, n)); "
    "os.execv(sys.argv[2], sys.argv[2:])"
)


def receiverArgs(port: int, workdir: str, stats: str, *extra: str) -> list[str]:
    return [
        "imageproto",
        "--port",
        f"tcp:{port}:interface=127.0.0.1",
        "--stats-file",
        os.path.join(workdir, stats),
        "--heartbeat",
        str(HEARTBEAT),
        "--idle-timeout",
        str(IDLE),
        *extra,
    ]


def senderArgs(port: int, name: str, *extra: str) -> list[str]:
    return [
        "imageproto-sender",
        "--connect",
        f"tcp:127.0.0.1:{port}",
        "--name",
        name,
        "--max-delay",
        "1",
        *extra,
    ]


def prepare(workdir: str) -> str:
    """
    C{workdir} as an absolute path (the children run in the checkout's
    root), created if need be.
    """
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    return workdir


def readStats(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f).get("streams", {})
    except (OSError, ValueError):
        return {}


def writeImages(directory: str, count: int, size=(160, 120), noise: bool = False) -> str:
    """
    C{count} distinct small JPEG files, named in order; with C{noise},
    random pixels (JPEG compresses them little: about 20 KB at 160x120).
    """
    import cv2
    import numpy

    os.makedirs(directory, exist_ok=True)
    width, height = size
    rng = numpy.random.default_rng(7)
    for i in range(count):
        if noise:
            image = rng.integers(0, 256, (height, width, 3), numpy.uint8)
        else:
            image = numpy.full((height, width, 3), (i * 7) % 256, numpy.uint8)
        cv2.putText(image, str(i), (10, height - 20), cv2.FONT_HERSHEY_SIMPLEX, 1.5, (255, 255, 255), 2)
        cv2.imwrite(os.path.join(directory, f"{i:05d}.jpg"), image)
    return directory


@defer.inlineCallbacks
def startReceiver(port: int, workdir: str, stats: str, *extra: str, nofile: int | None = None):
    receiver = Process("receiver", receiverArgs(port, workdir, stats, *extra), nofile=nofile)
    yield waitFor(lambda: listening(port) or not receiver.running, 30, "the receiver")
    if not receiver.running:
        raise AssertionError(f"receiver exited:\n{receiver.text[-3000:]}")
    return receiver


@defer.inlineCallbacks
def finish(*processes: Process, timeout: float = 30):
    """
    Wait for C{processes} to exit, interrupting any still running after
    C{timeout}; return their statuses.
    """
    try:
        yield waitFor(lambda: not any(p.running for p in processes), timeout, "exit")
    finally:
        for p in processes:
            p.signal("TERM")
        yield defer.DeferredList([p.ended for p in processes])
    return [p.status for p in processes]


# -- restart -----------------------------------------------------------------


@defer.inlineCallbacks
def restart(workdir: str, frames: int = 120, fps: float = 20.0):
    """
    Kill the receiver once a third of C{frames} are stored, start it again
    on the same port, and let the sender finish.
    """
    workdir = prepare(workdir)
    images = writeImages(os.path.join(workdir, "images"), frames)
    saved = os.path.join(workdir, "saved")
    port = freePort()
    first = yield startReceiver(port, workdir, "stats1.json", "--save-dir", saved)
    sender = Process(
        "sender", senderArgs(port, "cam", "--images", images, "--fps", str(fps))
    )
    stored = lambda: len(savedFrames(saved, "cam"))  # noqa: E731
    yield waitFor(lambda: stored() >= frames // 3, 60, "a third of the frames")
    first.transport.signalProcess("KILL")
    killed = time.monotonic()
    yield first.ended
    beforeRestart = stored()
    second = yield startReceiver(port, workdir, "stats2.json", "--save-dir", saved)
    up = time.monotonic()
    stats2 = os.path.join(workdir, "stats2.json")
    yield waitFor(
        lambda: readStats(stats2).get("cam", {}).get("frames", 0) > 0
        or stored() > beforeRestart,
        60,
        "the sender to reconnect",
    )
    back = time.monotonic()
    yield waitFor(lambda: not sender.running, 120, "the sender to finish")
    second.signal("TERM")
    yield second.ended
    return _afterMove(
        "restart", saved, frames, sender, (first, second), back - killed,
        reconnectSeconds=round(back - up, 2),
    )


# -- failover ----------------------------------------------------------------


@defer.inlineCallbacks
def failover(workdir: str, frames: int = 120, fps: float = 20.0):
    """
    Two receivers sharing one C{--save-dir}, a sender given both
    (C{--connect} twice): kill the first once a third of C{frames} are
    stored, do not restart it, and let the sender finish on the second.
    """
    workdir = prepare(workdir)
    images = writeImages(os.path.join(workdir, "images"), frames)
    saved = os.path.join(workdir, "saved")
    port, otherPort = freePort(), freePort()
    first = yield startReceiver(port, workdir, "stats1.json", "--save-dir", saved)
    second = yield startReceiver(otherPort, workdir, "stats2.json", "--save-dir", saved)
    sender = Process(
        "sender",
        senderArgs(port, "cam", "--connect", f"tcp:127.0.0.1:{otherPort}",
                   "--images", images, "--fps", str(fps)),
    )
    stored = lambda: len(savedFrames(saved, "cam"))  # noqa: E731
    yield waitFor(lambda: stored() >= frames // 3, 60, "a third of the frames")
    first.transport.signalProcess("KILL")
    killed = time.monotonic()
    yield first.ended
    beforeKill = stored()
    yield waitFor(lambda: stored() > beforeKill, 60, "the sender to move to the second receiver")
    back = time.monotonic()
    yield waitFor(lambda: not sender.running, 120, "the sender to finish")
    second.signal("TERM")
    yield second.ended
    return _afterMove(
        "failover", saved, frames, sender, (first, second), back - killed, perSeq=True
    )


def _afterMove(
    scenario, saved, frames, sender, receivers, outage, perSeq=False, **figures
) -> Figures:
    """
    The figures of a scenario whose sender moved from one receiver to
    another (C{restart}, C{failover}): its summary, the files both stored,
    the receivers' peak memory and the outage.
    """
    summary = sender.summary()
    files = savedFrames(saved, "cam")
    notes = {
        "frames": frames,
        "sender exit": sender.status,
        "outage s": round(outage, 2),
        "distinct files": len(set(files)),
    }
    if perSeq:
        notes["frames (seq) stored"] = len({os.path.basename(f) for f in files})
    notes["acknowledged"] = summary["acknowledged"]
    return Figures(
        scenario=scenario,
        sent=summary["sent"],
        arrived=len(files),
        dropped=summary["dropped"],
        lost=summary["lost"],
        resent=summary["resent"],
        reconnects=summary["reconnects"],
        receiverPeakKiB=max(r.peak or 0 for r in receivers),
        senderPeakKiB=sender.peak,
        notes=notes,
        **figures,
    )


# -- stall -------------------------------------------------------------------


class _Pipe(protocol.Protocol):
    """
    One direction-pair of the stalling proxy.
    """

    peer = None

    def connectionMade(self) -> None:
        self.factory.proxy.pipes.append(self)
        if self.factory.proxy.stalled:
            self.transport.pauseProducing()

    def dataReceived(self, data: bytes) -> None:
        if self.peer is not None:
            self.peer.transport.write(data)
        else:
            self.pending = getattr(self, "pending", b"") + data

    def connectionLost(self, reason) -> None:
        self.factory.proxy.pipes.remove(self)
        if self.peer is not None:
            self.peer.transport.loseConnection()


class StallingProxy:
    """
    A TCP proxy whose L{stall} stops it carrying bytes in either direction
    (it stops reading both sockets, so kernel buffers fill and TCP flow
    control stalls both ends, as on a network that went quiet), and whose
    L{flow} starts it again.
    """

    def __init__(self, target: int) -> None:
        self.target = target
        self.stalled = False
        self.pipes: list[_Pipe] = []
        self.accepted = 0

    def listen(self) -> int:
        proxy = self

        class Inbound(_Pipe):
            def connectionMade(self) -> None:
                proxy.accepted += 1
                super().connectionMade()
                outFactory = protocol.ClientFactory()
                outFactory.protocol = _Pipe
                outFactory.proxy = proxy
                inbound = self

                class Outbound(_Pipe):
                    factory = outFactory

                    def connectionMade(self) -> None:
                        super().connectionMade()
                        self.peer = inbound
                        inbound.peer = self
                        if getattr(inbound, "pending", b""):
                            self.transport.write(inbound.pending)
                            inbound.pending = b""

                outFactory.protocol = Outbound
                reactor.connectTCP("127.0.0.1", proxy.target, outFactory)

        factory = protocol.ServerFactory()
        factory.protocol = Inbound
        factory.proxy = self
        self.port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        return self.port.getHost().port

    def stall(self) -> None:
        self.stalled = True
        for pipe in self.pipes:
            pipe.transport.pauseProducing()

    def flow(self) -> None:
        self.stalled = False
        for pipe in self.pipes:
            pipe.transport.resumeProducing()

    def close(self) -> defer.Deferred:
        for pipe in list(self.pipes):
            pipe.transport.abortConnection()
        return defer.maybeDeferred(self.port.stopListening)


@defer.inlineCallbacks
def stall(workdir: str, stallSeconds: float = 8.0, fps: float = 30.0):
    """
    Stream a live 640x480 test pattern through a proxy, stall the proxy for
    C{stallSeconds}, then let traffic flow again.
    """
    workdir = prepare(workdir)
    port = freePort()
    receiver = yield startReceiver(port, workdir, "stats.json")
    stats = os.path.join(workdir, "stats.json")
    proxy = StallingProxy(port)
    proxyPort = proxy.listen()
    sender = Process(
        "sender",
        senderArgs(proxyPort, "live", "--fps", str(fps), "--idle-timeout", str(IDLE)),
    )
    try:
        yield waitFor(
            lambda: readStats(stats).get("live", {}).get("frames", 0) >= fps * 2,
            60,
            "two seconds of frames",
        )
        steadyPeak = sender.peak
        proxy.stall()
        stalled = time.monotonic()
        notice = {}

        def noticed():
            now = time.monotonic() - stalled
            if "receiver" not in notice and "no data within" in receiver.text:
                notice["receiver"] = now
            if "sender" not in notice and "no data within" in sender.text:
                notice["sender"] = now
            return len(notice) == 2

        yield waitFor(noticed, IDLE * 4 + 10, "both ends to notice")
        remaining = stallSeconds - (time.monotonic() - stalled)
        if remaining > 0:
            yield task.deferLater(reactor, remaining, lambda: None)
        stalledPeak = sender.peak
        before = readStats(stats).get("live", {}).get("frames", 0)
        proxy.flow()
        flowing = time.monotonic()
        yield waitFor(
            lambda: readStats(stats).get("live", {}).get("frames", 0) > before + fps,
            60,
            "the stream to resume",
        )
        # The stats file is rewritten every second; it lags the first new
        # frame by up to that much, so this figure is an upper bound.
        back = time.monotonic()
        sender.signal("INT")
        yield sender.ended
        # The receiver writes its stats file once more as it stops: the
        # final count, not a snapshot up to a second old.
        receiver.signal("TERM")
        yield receiver.ended
        arrived = readStats(stats).get("live", {}).get("frames", 0)
    finally:
        sender.signal("KILL")
        receiver.signal("TERM")
        yield defer.DeferredList([sender.ended, receiver.ended])
        yield proxy.close()
    summary = sender.summary()
    return Figures(
        scenario="stall",
        sent=summary["sent"],
        arrived=arrived,
        dropped=summary["dropped"],
        lost=summary["lost"],
        reconnects=summary["reconnects"],
        reconnectSeconds=round(back - flowing, 2),
        noticeSeconds=round(notice["receiver"], 2),
        senderNoticeSeconds=round(notice["sender"], 2),
        receiverPeakKiB=receiver.peak,
        senderPeakKiB=sender.peak,
        notes={
            "stall s": stallSeconds,
            "sender peak before stall KiB": steadyPeak,
            "sender peak at end of stall KiB": stalledPeak,
            "acknowledged": summary["acknowledged"],
            "unacknowledged": summary["unacknowledged"],
            "proxy connections": proxy.accepted,
        },
    )


# -- slow consumer -------------------------------------------------------------


class SlowDetector:
    """
    A detector that takes 0.1 s over each frame of streams whose name starts
    with C{slow} and no time over others (C{--detect
    bench.faults:SlowDetector}).  Serial, so one stream never holds more
    than one worker.
    """

    serial = True

    def detect(self, image, stream: str) -> list:
        if stream.startswith("slow"):
            time.sleep(0.1)
        return []


@defer.inlineCallbacks
def slow(workdir: str, frames: int = 60, fps: float = 30.0):
    """
    Two finite senders at C{fps}; the detector is slow on one stream only.
    The fast one must finish in about C{frames / fps} seconds.
    """
    workdir = prepare(workdir)
    images = writeImages(os.path.join(workdir, "images"), frames)
    port = freePort()
    receiver = yield startReceiver(
        port, workdir, "stats.json",
        "--detect", "bench.faults:SlowDetector", "--workers", "2", "--reply", "none",
    )
    started = time.monotonic()
    args = ("--images", images, "--fps", str(fps))
    fastSender = Process("fast", senderArgs(port, "fast", *args))
    slowSender = Process("slow", senderArgs(port, "slow", *args))
    ended = {}
    fastSender.ended.addCallback(lambda _: ended.setdefault("fast", time.monotonic()))
    slowSender.ended.addCallback(lambda _: ended.setdefault("slow", time.monotonic()))
    try:
        yield waitFor(lambda: not fastSender.running and not slowSender.running, 120, "both senders")
    finally:
        receiver.signal("TERM")
        yield receiver.ended
    stats = readStats(os.path.join(workdir, "stats.json"))
    fast, slowSummary = fastSender.summary(), slowSender.summary()
    return Figures(
        scenario="slow",
        sent=fast["sent"] + slowSummary["sent"],
        arrived=stats["fast"]["frames"] + stats["slow"]["frames"],
        dropped=fast["dropped"] + slowSummary["dropped"],
        receiverPeakKiB=receiver.peak,
        senderPeakKiB=max(fastSender.peak or 0, slowSender.peak or 0),
        seconds=round(ended["fast"] - started, 2),
        notes={
            "frames per stream": frames,
            "fast s": round(ended["fast"] - started, 2),
            "slow s": round(ended["slow"] - started, 2),
            "fast rtt p95 s": fast["p95"],
            "slow rtt p95 s": slowSummary["p95"],
            "fast arrived": stats["fast"]["frames"],
            "slow arrived": stats["slow"]["frames"],
            "exit": (fastSender.status, slowSender.status),
        },
    )


# -- fuzz while serving ----------------------------------------------------------


class _Garbage(protocol.Protocol):
    def connectionMade(self) -> None:
        self.transport.write(self.factory.payload)
        self.factory.opened.append(self)

    def connectionLost(self, reason) -> None:
        self.factory.closed.callback(None)


@defer.inlineCallbacks
def fuzz(workdir: str, frames: int = 240, connections: int = 300, fps: float = 30.0):
    """
    While a good sender streams C{frames}, open C{connections} connections
    that each send a mutated message stream; the server must close each and
    store every good frame.
    """
    workdir = prepare(workdir)
    from tests.test_fuzz import mutatedStream
    from imageproto import wire

    images = writeImages(os.path.join(workdir, "images"), frames)
    saved = os.path.join(workdir, "saved")
    port = freePort()
    receiver = yield startReceiver(
        port, workdir, "stats.json", "--save-dir", saved, "--handshake-timeout", "1"
    )
    sender = Process("sender", senderArgs(port, "good", "--images", images, "--fps", str(fps)))
    rng = random.Random(5)
    hello = wire.encodeMessage(wire.Hello("bad", 0))
    hello = len(hello).to_bytes(4, "big") + hello
    closedByServer = 0
    good = lambda: len(savedFrames(saved, "good"))  # noqa: E731
    try:
        yield waitFor(lambda: good() > 0, 60, "the good stream")
        storedBefore = good()
        for batch in range(0, connections, 50):
            closings = []
            for n in range(batch, min(batch + 50, connections)):
                factory = protocol.ClientFactory()
                factory.protocol = _Garbage
                factory.payload = mutatedStream(rng, [hello] if n % 2 else [])
                factory.opened = []
                factory.closed = defer.Deferred()
                reactor.connectTCP("127.0.0.1", port, factory)
                closings.append(factory.closed)
            # The client never closes: every connection ends because the
            # server closed it (bad input, or the 1 s handshake timeout for
            # a stream that stops mid-message or never says HELLO).
            yield defer.gatherResults(closings)
            closedByServer += len(closings)
        storedDuring = good() - storedBefore
        overlapped = sender.running
        yield waitFor(lambda: not sender.running, 120, "the good sender")
    finally:
        receiver.signal("TERM")
        yield receiver.ended
    summary = sender.summary()
    return Figures(
        scenario="fuzz",
        sent=summary["sent"],
        arrived=len(savedFrames(saved, "good")),
        dropped=summary["dropped"],
        receiverPeakKiB=receiver.peak,
        senderPeakKiB=sender.peak,
        notes={
            "garbage connections": connections,
            "closed by server": closedByServer,
            "good frames stored during the garbage": storedDuring,
            "sender still streaming after the garbage": overlapped,
            "sender exit": sender.status,
            "acknowledged": summary["acknowledged"],
        },
    )


# -- load ------------------------------------------------------------------------


@defer.inlineCallbacks
def load(workdir: str, senders: int = 100, fps: float = 10.0, seconds: float = 10.0):
    """
    C{senders} connections from this process, each its own L{FrameSender}
    offering a ~15 KB JPEG at C{fps} for C{seconds}, into one receiver.
    """
    workdir = prepare(workdir)
    import cv2
    import numpy

    from imageproto.protocol.factories import SenderFactory
    from imageproto.sender.flow import FrameSender

    image = numpy.random.default_rng(1).integers(0, 255, (240, 320, 3), numpy.uint8)
    image = cv2.GaussianBlur(image, (9, 9), 0)
    jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes()
    port = freePort()
    receiver = yield startReceiver(port, workdir, "stats.json", "--max-streams", str(senders + 10))
    frameSenders, done, loops = [], [], []
    count = int(fps * seconds)
    started = time.monotonic()
    for n in range(senders):
        sender = FrameSender(f"load-{n:03d}", True, reactor, window=8)
        factory = SenderFactory(sender, reactor, maxDelay=1)
        reactor.connectTCP("127.0.0.1", port, factory)
        frameSenders.append((sender, factory))
        done.append(sender.whenDone())

    def offer(sender, state):
        if state["n"] >= count:
            state["loop"].stop()
            sender.sourceExhausted()
            return
        state["n"] += 1
        sender.frameCaptured(jpeg, time.time())

    def startLoop(sender, delay):
        state = {"n": 0}
        state["loop"] = loop = task.LoopingCall(offer, sender, state)
        loops.append(loop)
        loop.start(1.0 / fps, now=True)

    # Wait for every stream to be welcomed, then start each loop at a
    # different phase so frames do not all leave in the same instant.
    yield waitFor(lambda: all(s.protocol is not None for s, _ in frameSenders), 60, "all connections")
    for n, (sender, _) in enumerate(frameSenders):
        reactor.callLater((n / senders) / fps, startLoop, sender, 0)
    try:
        summaries = yield defer.gatherResults(done)
    finally:
        for _, factory in frameSenders:
            factory.stopTrying()
        for sender, _ in frameSenders:
            if sender.protocol is not None:
                sender.protocol.transport.loseConnection()
        elapsed = time.monotonic() - started
        yield task.deferLater(reactor, 1.5, lambda: None)
        receiver.signal("TERM")
        yield receiver.ended
    stats = readStats(os.path.join(workdir, "stats.json"))
    arrived = sum(s["frames"] for n, s in stats.items() if n.startswith("load-"))
    p95 = sorted(s["latency_ms"]["p95"] or 0 for s in stats.values())
    return Figures(
        scenario="load",
        sent=sum(s.sent for s in summaries),
        arrived=arrived,
        dropped=sum(s.dropped for s in summaries),
        lost=sum(s.lost for s in summaries),
        receiverPeakKiB=receiver.peak,
        senderPeakKiB=peakKiB(os.getpid()),
        seconds=round(elapsed, 2),
        notes={
            "senders": senders,
            "fps each": fps,
            "offered": senders * count,
            "acknowledged": sum(s.acknowledged for s in summaries),
            "streams seen": len(stats),
            "worst stream latency p95 ms": p95[-1] if p95 else None,
            "jpeg bytes": len(jpeg),
        },
    )


# -- two sessions under one name (a camera restarted) ------------------------------


def _fileIdentities(paths: list[str]) -> dict[str, tuple[int, int]]:
    """
    Each file's inode and modification time: a file rewritten in place or
    replaced keeps its path but not both of these.
    """
    identities = {}
    for path in paths:
        st = os.stat(path)
        identities[path] = (st.st_ino, st.st_mtime_ns)
    return identities


@defer.inlineCallbacks
def twoSessions(workdir: str, frames: int = 60, fps: float = 30.0):
    """
    A live camera (the test pattern) sends C{frames}, stops, and is started
    again under the same name: both runs' frames are on disk, each run in
    its own session folder, none overwritten.
    """
    workdir = prepare(workdir)
    saved = os.path.join(workdir, "saved")
    port = freePort()
    receiver = yield startReceiver(port, workdir, "stats.json", "--save-dir", saved)
    args = ("--count", str(frames), "--fps", str(fps), "--width", "160", "--height", "120")
    try:
        first = Process("first", senderArgs(port, "cam", *args))
        yield finish(first, timeout=120)
        afterFirst = _fileIdentities(savedFrames(saved, "cam"))
        second = Process("second", senderArgs(port, "cam", *args))
        yield finish(second, timeout=120)
    finally:
        receiver.signal("TERM")
        yield receiver.ended
    files = savedFrames(saved, "cam")
    now = _fileIdentities(files)
    kept = sum(1 for path, identity in afterFirst.items() if now.get(path) == identity)
    one, two = first.summary(), second.summary()
    return Figures(
        scenario="sessions",
        sent=one["sent"] + two["sent"],
        arrived=len(files),
        dropped=one["dropped"] + two["dropped"],
        receiverPeakKiB=receiver.peak,
        senderPeakKiB=max(first.peak or 0, second.peak or 0),
        notes={
            "acknowledged": one["acknowledged"] + two["acknowledged"],
            "acknowledged per run": (one["acknowledged"], two["acknowledged"]),
            "session folders": len(os.listdir(os.path.join(saved, "cam"))),
            "files after run 1": len(afterFirst),
            "run 1 files untouched by run 2": kept,
            "distinct files": len(set(files)),
            "sender exits": (first.status, second.status),
        },
    )


# -- a full disk ---------------------------------------------------------------------


@defer.inlineCallbacks
def fullDisk(workdir: str, frames: int = 40, diskKiB: int = 256, retryFor: float = 2.0):
    """
    C{--save-dir} on a tmpfs of C{diskKiB} KiB (mounted here; needs root)
    and a finite sender of C{frames} images larger in total: the frames
    that fit are stored and acknowledged, the rest rejected with storage
    errors, and the sender, after C{retryFor} seconds of retrying each,
    exits non-zero saying how many were not stored.
    """
    workdir = prepare(workdir)
    if os.geteuid() != 0:
        raise PermissionError("the full-disk scenario mounts a tmpfs: run it as root")
    images = writeImages(os.path.join(workdir, "images"), frames, noise=True)
    imageBytes = sum(os.path.getsize(os.path.join(images, n)) for n in os.listdir(images))
    disk = os.path.join(workdir, "disk")
    os.makedirs(disk, exist_ok=True)
    mount = yield _run("mount", "-t", "tmpfs", "-o", f"size={diskKiB}k", "tmpfs", disk)
    if mount != 0:
        raise OSError(f"mount -t tmpfs {disk} failed ({mount})")
    port = freePort()
    try:
        receiver = yield startReceiver(port, workdir, "stats.json", "--save-dir", disk)
        sender = Process(
            "sender",
            senderArgs(port, "cam", "--images", images, "--fps", "0", "--retry-for", str(retryFor)),
        )
        try:
            yield finish(sender, timeout=120)
        finally:
            receiver.signal("TERM")
            yield receiver.ended
        stored = len(savedFrames(disk, "cam"))
    finally:
        yield _run("umount", "-l", disk)
    stats = readStats(os.path.join(workdir, "stats.json")).get("cam", {})
    summary = sender.summary()
    notStored = re.search(r"(\d+ of \d+ frames were not stored)", sender.text)
    return Figures(
        scenario="fulldisk",
        sent=summary["sent"],
        arrived=stored,
        receiverPeakKiB=receiver.peak,
        senderPeakKiB=sender.peak,
        notes={
            "frames": frames,
            "image bytes": imageBytes,
            "disk KiB": diskKiB,
            "acknowledged": summary["acknowledged"],
            "not stored": summary["notStored"],
            "receiver frames": stats.get("frames"),
            "receiver rejected": stats.get("rejected"),
            "storage errors": stats.get("storage_errors"),
            "sender exit": sender.status,
            "sender says": notStored.group(1) if notStored else None,
            "receiver logged full once": receiver.text.count("No space left on device"),
        },
    )


def _run(*argv: str):
    """
    Run a short command; a Deferred firing with its exit status.
    """
    from twisted.internet.utils import getProcessValue

    return getProcessValue(argv[0], argv[1:], env=os.environ)


# -- unauthenticated peers declaring large messages -----------------------------------


class _Pusher(protocol.Protocol):
    """
    Declares a C{factory.declared}-byte message and pushes zeros at it
    until the server closes the connection.
    """

    def connectionMade(self) -> None:
        self.factory.opened += 1
        self.transport.write(self.factory.declared.to_bytes(4, "big"))
        self._push = task.LoopingCall(self.transport.write, b"\0" * 65536)
        self._push.start(0.001)

    def connectionLost(self, reason) -> None:
        if self._push.running:
            self._push.stop()
        self.factory.closed += 1


@defer.inlineCallbacks
def bigDeclared(workdir: str, peers: int = 50, declared: int = 16 * 1024 * 1024 - 16):
    """
    C{peers} connections that never say HELLO, each declaring a
    C{declared}-byte message and pushing bytes at it: the receiver refuses
    each at once (over 4 KiB before WELCOME) and its peak memory stays
    where it was.
    """
    workdir = prepare(workdir)
    port = freePort()
    receiver = yield startReceiver(port, workdir, "stats.json")
    # Let the receiver finish starting, so its baseline peak is settled.
    yield task.deferLater(reactor, 1.0, lambda: None)
    receiver._sample()
    baseline = receiver.peak
    factory = protocol.ClientFactory()
    factory.protocol = _Pusher
    factory.declared = declared
    factory.opened = factory.closed = 0
    started = time.monotonic()
    try:
        for _ in range(peers):
            reactor.connectTCP("127.0.0.1", port, factory)
        yield waitFor(lambda: factory.closed >= peers, 60, "every peer to be closed")
        seconds = time.monotonic() - started
        yield task.deferLater(reactor, 0.5, lambda: None)
        receiver._sample()
    finally:
        receiver.signal("TERM")
        yield receiver.ended
    refusals = receiver.text.count("before its handshake finished")
    return Figures(
        scenario="declared",
        sent=peers,
        arrived=0,
        receiverPeakKiB=receiver.peak,
        seconds=round(seconds, 2),
        notes={
            "peers": peers,
            "declared bytes each": declared,
            "closed by server": factory.closed,
            "refusals logged": refusals,
            "receiver peak before KiB": baseline,
            "receiver peak growth KiB": (receiver.peak or 0) - (baseline or 0),
        },
    )


# -- idle viewers while a sender streams ------------------------------------------------


class _Viewer(protocol.Protocol):
    def connectionMade(self) -> None:
        self.factory.opened += 1

    def connectionLost(self, reason) -> None:
        self.factory.closed += 1


@defer.inlineCallbacks
def viewers(workdir: str, viewerCount: int = 1100, nofile: int = 512, frames: int = 60):
    """
    A receiver limited to C{nofile} file descriptors, C{viewerCount} idle
    connections to its C{--web} port, then a sender of C{frames}: the web
    port's cap keeps descriptors for senders, and every frame is stored.

    "Still open" counts connections this end has not seen closed: those the
    receiver accepted under its cap, and those still waiting in the
    kernel's accept queue.
    """
    import resource

    workdir = prepare(workdir)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < viewerCount + 256 and hard > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    saved = os.path.join(workdir, "saved")
    port, web = freePort(), freePort()
    receiver = yield startReceiver(
        port, workdir, "stats.json", "--save-dir", saved,
        "--web", f"tcp:{web}:interface=127.0.0.1",
        nofile=nofile,
    )
    factory = protocol.ClientFactory()
    factory.protocol = _Viewer
    factory.opened = factory.closed = 0
    connectors = []
    try:
        for _ in range(viewerCount):
            connectors.append(reactor.connectTCP("127.0.0.1", web, factory))
        yield waitFor(lambda: factory.opened >= viewerCount, 60, "the viewers to connect")
        # Connections over the web port's cap are closed at once: wait for
        # the receiver to start (a loaded machine takes a while to accept
        # 1,100 connections), then give it a second to close the rest.
        yield waitFor(lambda: factory.closed > 0, 60, "the receiver to close viewers over its cap")
        yield task.deferLater(reactor, 1.0, lambda: None)
        closedAtOnce = factory.closed
        started = time.monotonic()
        sender = Process(
            "sender",
            senderArgs(port, "cam", "--count", str(frames), "--fps", "30",
                       "--width", "160", "--height", "120", "--max-retries", "5"),
        )
        yield finish(sender, timeout=120)
        seconds = time.monotonic() - started
        openDuring = factory.opened - factory.closed
    finally:
        for connector in connectors:
            connector.disconnect()
        receiver.signal("TERM")
        yield receiver.ended
        yield waitFor(lambda: factory.closed >= factory.opened, 30, "the viewers to close")
    summary = sender.summary()
    cap = re.search(r"--web-max-connections lowered from \d+ to (\d+)", receiver.text)
    return Figures(
        scenario="viewers",
        sent=summary["sent"],
        arrived=len(savedFrames(saved, "cam")),
        receiverPeakKiB=receiver.peak,
        senderPeakKiB=sender.peak,
        seconds=round(seconds, 2),
        notes={
            "receiver RLIMIT_NOFILE": nofile,
            "viewer connections": viewerCount,
            "viewers accepted": factory.opened,
            "closed at once by the receiver": closedAtOnce,
            "viewers still open while streaming": openDuring,
            "acknowledged": summary["acknowledged"],
            "sender exit": sender.status,
            "web cap (lowered to)": int(cap.group(1)) if cap else None,
        },
    )


# -- an absurd capture time ---------------------------------------------------------------


def _sendAbsurdFrame(port: int, jpeg: bytes, captureTime: float) :
    """
    A raw client (a blocking socket, in a thread): HELLO, then one FRAME
    with C{captureTime}, and its answer.
    """
    import socket

    from imageproto import wire
    from imageproto.client.connection import handshake, readMessage

    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        handshake(sock, wire.Hello("absurd", 0, 0), None)
        sock.sendall(wire.encodeFramed(wire.Frame(0, jpeg, captureTime, time.time())))
        answer = readMessage(sock)
        sock.sendall(wire.encodeFramed(wire.Bye("done")))
        return answer


@defer.inlineCallbacks
def absurdTimestamp(workdir: str, frames: int = 30, captureTime: float = 1e308):
    """
    One frame captured "at" C{captureTime} from a raw client, beside a
    normal sender: the viewer's C{/api/streams} stays strict JSON and lists
    both streams.
    """
    import cv2
    import numpy
    import urllib.request

    from twisted.internet.threads import deferToThread

    workdir = prepare(workdir)
    port, web = freePort(), freePort()
    receiver = yield startReceiver(
        port, workdir, "stats.json", "--web", f"tcp:{web}:interface=127.0.0.1"
    )
    jpeg = cv2.imencode(".jpg", numpy.zeros((48, 64, 3), numpy.uint8))[1].tobytes()
    try:
        sender = Process(
            "sender",
            senderArgs(port, "good", "--count", str(frames), "--fps", "30",
                       "--width", "160", "--height", "120"),
        )
        answer = yield deferToThread(_sendAbsurdFrame, port, jpeg, captureTime)
        yield finish(sender, timeout=120)
        url = f"http://127.0.0.1:{web}/api/streams"

        def get():
            with urllib.request.urlopen(url, timeout=10) as response:
                return response.status, response.read()

        status, body = yield deferToThread(get)
    finally:
        receiver.signal("TERM")
        yield receiver.ended

    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")

    try:
        streams = json.loads(body, parse_constant=refuse)
        strict = True
    except ValueError:
        streams, strict = {}, False
    listed = streams.get("streams", streams)
    absurd = listed.get("absurd", {}) if isinstance(listed, dict) else {}
    return Figures(
        scenario="timestamp",
        sent=sender.summary()["sent"] + 1,
        arrived=sum(s.get("frames", 0) for s in listed.values()) if isinstance(listed, dict) else 0,
        receiverPeakKiB=receiver.peak,
        notes={
            "captureTime": captureTime,
            "raw client's answer": type(answer).__name__.upper(),
            "HTTP status": status,
            "strict JSON": strict,
            "streams listed": sorted(listed) if isinstance(listed, dict) else None,
            "absurd latency_ms": absurd.get("latency_ms"),
            "absurd implausible_times": absurd.get("implausible_times"),
            "sender exit": sender.status,
        },
    )


# -- command line ------------------------------------------------------------------

SCENARIOS = {
    "restart": restart,
    "failover": failover,
    "stall": stall,
    "slow": slow,
    "fuzz": fuzz,
    "load": load,
    "sessions": twoSessions,
    "fulldisk": fullDisk,
    "declared": bigDeclared,
    "viewers": viewers,
    "timestamp": absurdTimestamp,
}


def formatFigures(figures: Figures) -> str:
    row = asdict(figures)
    notes = row.pop("notes")
    head = ", ".join(f"{k}={v}" for k, v in row.items() if v is not None and k != "scenario")
    extra = ", ".join(f"{k}={v}" for k, v in notes.items())
    return f"{figures.scenario:8} {head}\n{'':8} {extra}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", choices=sorted(SCENARIOS), default=None)
    parser.add_argument("--senders", type=int, default=100)
    parser.add_argument("--load-seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    names = args.only or list(SCENARIOS)

    @defer.inlineCallbacks
    def run(_reactor):
        for name in names:
            workdir = tempfile.mkdtemp(prefix=f"imageproto-{name}-")
            kwargs = {}
            if name == "load":
                kwargs = {"senders": args.senders, "seconds": args.load_seconds}
            figures = yield SCENARIOS[name](workdir, **kwargs)
            print(formatFigures(figures), flush=True)

    task.react(run)


if __name__ == "__main__":
    main()
