"""
Throughput and latency of imageproto against a plain blocking socket.

Run from the checkout's root::

    /work/venv/bin/python -m bench.throughput [--frames 20000] [--window 16]
        [--latency-frames 300] [--fps 30] [--repeat 5]

The parent process encodes a few ~60 KB 640x480 JPEGs with OpenCV, writes
them to a temporary directory, and then, for each repetition, runs four
pairs of child processes on loopback, one pair at a time:

  - plain socket, throughput: L{bench.plain_socket.send} and C{receive},
    C{--frames} frames back to back;
  - imageproto, throughput: the same frames through C{FrameSenderProtocol}
    and C{FrameReceiverProtocol}, at most C{--window} frames unacknowledged;
  - both again at C{--fps} for C{--latency-frames} frames, for latency.

Each child measures its own wall time and CPU (C{os.times}, user + system,
all threads) from its first frame to its last, and prints one JSON line.
Latency is one way: the receiver's C{time.time()} when a frame has been
read and decoded minus the capture time the sender stamped with
C{time.time()}; both processes read the same machine clock.

The imageproto ends are the library's real code path (L{ReceiverFactory},
L{SenderFactory}, the protocols, L{imageproto.wire}) with small
collaborators standing in for the stream registry and the frame sender; see
L{_BenchStreams} and L{_BenchSender}.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial

from bench import plain_socket
from imageproto.common.numbers import percentile as _percentile
from imageproto.tap import stopProcess

__all__ = ["makeJpegs", "percentile", "main"]

_WIDTH, _HEIGHT = 640, 480


def percentile(values: list[float], fraction: float) -> float:
    """
    The C{fraction} (0..1) percentile of C{values}, by nearest rank (see
    L{imageproto.common.numbers.percentile}); NaN for no values, so that a
    run that measured nothing still prints as JSON numbers.
    """
    value = _percentile(values, fraction)
    return float("nan") if value is None else value


def makeJpegs(count: int = 5, target: int = 60_000) -> list[bytes]:
    """
    Encode C{count} different noisy-gradient 640x480 JPEGs, each at the
    quality whose size lands nearest C{target} bytes.
    """
    import cv2
    import numpy

    y, x = numpy.mgrid[0:_HEIGHT, 0:_WIDTH]
    base = numpy.dstack(
        [x * 255 / _WIDTH, y * 255 / _HEIGHT, (x + y) * 255 / (_WIDTH + _HEIGHT)]
    ).astype(numpy.float32)
    rng = numpy.random.default_rng(20240601)
    jpegs = []
    for _ in range(count):
        noisy = base + rng.normal(0, 20, base.shape)
        image = numpy.clip(noisy, 0, 255).astype(numpy.uint8)
        best = None
        for quality in range(30, 96):
            ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
            data = data.tobytes()
            if best is None or abs(len(data) - target) < abs(len(best) - target):
                best = data
        jpegs.append(best)
    return jpegs


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def _emit(result: dict) -> None:
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


def _loadJpegs(directory: str) -> list[bytes]:
    names = sorted(os.listdir(directory))
    jpegs = []
    for name in names:
        with open(os.path.join(directory, name), "rb") as f:
            jpegs.append(f.read())
    return jpegs


# The imageproto ends.  Twisted and imageproto are imported inside the
# functions so that the plain-socket children never load them.


class _Counter:
    """
    Counts how often each seq is acknowledged, for the exactly-once check.
    """

    def __init__(self, frames: int) -> None:
        self.counts = bytearray(frames)

    def count(self, seq: int) -> None:
        if seq < len(self.counts):
            self.counts[seq] = min(255, self.counts[seq] + 1)

    def exactlyOnce(self) -> bool:
        return self.counts.count(1) == len(self.counts)


class _MinimalStreams:
    """
    Stands in for the receiver's stream registry and frame pipeline
    (C{--imageproto minimal}): accepts every stream, records each frame's seq
    and one-way latency, acknowledges at once, and reports when the sender
    leaves.
    """

    def __init__(self, reactor) -> None:
        self.reactor = reactor
        self.seqs = []
        self.latencies = []
        self.start = self.cpu0 = None

    def attach(self, name, capabilities, session, protocol):
        return _Stream(name)

    def frameReceived(self, stream, frame, channel):
        if self.start is None:
            self.start, self.cpu0 = time.perf_counter(), _cpu()
        self.seqs.append(frame.seq)
        self.latencies.append(self.reactor.seconds() - frame.captureTime)
        channel.acknowledge(frame.seq)

    def detach(self, stream, protocol):
        cpu1 = _cpu()
        _emit(
            {
                "frames": len(self.seqs),
                "lossless": self.seqs == list(range(len(self.seqs))),
                "p50": percentile(self.latencies, 0.5),
                "p99": percentile(self.latencies, 0.99),
                "cpu": cpu1 - self.cpu0 if self.start else 0.0,
            }
        )
        self.reactor.stop()


class _Stream:
    def __init__(self, name: str) -> None:
        self.name = name


class _MinimalSender:
    """
    Stands in for L{imageproto.sender.flow.FrameSender} (C{--imageproto
    minimal}): keeps at most C{window} frames unacknowledged, sending the
    next as each ACK arrives, or sends at C{rate} frames per second.
    """

    def __init__(self, reactor, jpegs, frames, window, rate) -> None:
        self.reactor = reactor
        self.jpegs = jpegs
        self.frames = frames
        self.window = window
        self.rate = rate
        self.nextSeq = 0
        self.acks = _Counter(frames)
        self.settled = 0
        self.rejectedCount = 0
        self.protocol = None
        self.result = None

    def hello(self):
        from imageproto import wire

        return wire.Hello("bench", 0, random.getrandbits(63))

    def connected(self, protocol, welcome):
        from twisted.internet.task import LoopingCall

        self.protocol = protocol
        self.start, self.cpu0 = time.perf_counter(), _cpu()
        if self.rate:
            self.loop = LoopingCall(self._tick)
            self.loop.clock = self.reactor
            self.loop.start(1.0 / self.rate)
        else:
            self._fill()

    def _send(self):
        from imageproto import wire

        seq = self.nextSeq
        self.nextSeq += 1
        now = time.time()
        jpeg = self.jpegs[seq % len(self.jpegs)]
        self.protocol.sendFrame(wire.Frame(seq, jpeg, now, now))

    def _fill(self):
        limit = min(self.frames, self.settled + self.window)
        while self.nextSeq < limit:
            self._send()

    def _tick(self):
        if self.nextSeq >= self.frames:
            self.loop.stop()
        elif self.nextSeq - self.settled < self.window:
            self._send()

    def acked(self, seq):
        self.acks.count(seq)
        self._settle()

    def rejected(self, seq, reason):
        self.rejectedCount += 1
        self._settle()

    def _settle(self):
        self.settled += 1
        if self.settled < self.frames:
            if not self.rate:
                self._fill()
            return
        end, cpu1 = time.perf_counter(), _cpu()
        self.result = {
            "delivered": self.settled - self.rejectedCount,
            "lossless": self.acks.exactlyOnce() and not self.rejectedCount,
            "elapsed": end - self.start,
            "cpu": cpu1 - self.cpu0,
        }
        self.protocol.factory.stopTrying()
        self.protocol.sayGoodbye("done")

    def resultReceived(self, result):
        pass

    def refused(self, error):
        self.result = {"error": error.reason}

    failed = refused

    def disconnected(self, protocol, reason):
        _emit(self.result or {"error": str(reason.value)})
        self.reactor.stop()


def _runMinimalReceiver(args) -> None:
    from twisted.internet import reactor

    from imageproto.protocol.factories import ReceiverFactory

    streams = _MinimalStreams(reactor)
    factory = ReceiverFactory(streams, reactor, pipeline=streams)
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    _emit({"port": port.getHost().port})
    reactor.run()


def _runMinimalSender(args) -> None:
    from twisted.internet import reactor

    from imageproto.protocol.factories import SenderFactory

    sender = _MinimalSender(
        reactor, _loadJpegs(args.jpegs), args.frames, args.window, args.rate
    )
    reactor.connectTCP("127.0.0.1", args.port, SenderFactory(sender, reactor))
    reactor.run()


def _runSender(args) -> None:
    """
    The real sender path: L{FrameSender} and L{SenderFactory}, fed the
    pre-encoded JPEGs the way C{CaptureService} feeds it captured ones (a
    finite source waits on C{whenReady}; at C{--rate} a live source offers
    one frame per tick and never waits).
    """
    from twisted.internet import reactor
    from twisted.internet.task import LoopingCall

    from imageproto.protocol.factories import SenderFactory
    from imageproto.sender.flow import FrameSender

    jpegs = _loadJpegs(args.jpegs)
    frames = args.frames
    sender = FrameSender("bench", bool(args.rate), reactor, window=args.window)
    acks = _Counter(frames)
    realAckedAll = sender.ackedAll

    def ackedAll(seqs):
        # Every ACK comes this way (FrameSender.acked too).
        for seq in seqs:
            acks.count(seq)
        realAckedAll(seqs)

    sender.ackedAll = ackedAll
    offered = 0
    began = {}

    def offer():
        nonlocal offered
        if not began:
            began.update(start=time.perf_counter(), cpu0=_cpu())
        sender.frameCaptured(jpegs[offered % len(jpegs)], time.time())
        offered += 1
        if offered == frames:
            sender.sourceExhausted()

    def feed(_=None):
        while offered < frames and sender.ready:
            offer()
        if offered < frames:
            sender.whenReady().addCallback(feed)

    def tick():
        offer()
        if offered == frames:
            loop.stop()

    loop = LoopingCall(tick)
    loop.clock = reactor
    factory = SenderFactory(sender, reactor)

    def done(summary):
        end, cpu1 = time.perf_counter(), _cpu()
        factory.stopTrying()
        _emit(
            {
                "delivered": summary.acknowledged,
                "lossless": acks.exactlyOnce()
                and summary.acknowledged == frames
                and not (summary.rejected or summary.dropped or summary.lost),
                "elapsed": end - began["start"],
                "cpu": cpu1 - began["cpu0"],
            }
        )

    def failed(failure):
        _emit({"error": failure.getErrorMessage()})

    d = sender.whenDone().addCallbacks(done, failed)
    # Let the BYE reach the receiver before the process goes.
    d.addCallback(lambda _: reactor.callLater(0.05, reactor.stop))
    if args.rate:
        sender.whenReady().addCallback(lambda _: loop.start(1.0 / args.rate))
    else:
        sender.whenReady().addCallback(feed)
    reactor.connectTCP("127.0.0.1", args.port, factory)
    reactor.run()


def _runPlainReceiver(args) -> None:
    server = plain_socket.listen()
    _emit({"port": server.getsockname()[1]})
    r = plain_socket.receive(server)
    _emit(
        {
            "frames": r["frames"],
            "lossless": r["inOrder"],
            "p50": percentile(r["latencies"], 0.5),
            "p99": percentile(r["latencies"], 0.99),
            "cpu": r["cpu"],
        }
    )


def _runPlainSender(args) -> None:
    r = plain_socket.send(args.port, _loadJpegs(args.jpegs), args.frames, args.rate)
    r["lossless"] = r["delivered"] == args.frames
    _emit(r)


_ROLES = {
    "sender": _runSender,
    "minimal-receiver": _runMinimalReceiver,
    "minimal-sender": _runMinimalSender,
    "plain-receiver": _runPlainReceiver,
    "plain-sender": _runPlainSender,
}


def _child(role: str, *argv: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "bench.throughput", "--role", role, *argv],
        stdout=subprocess.PIPE,
        text=True,
    )


def _readResult(process: subprocess.Popen) -> dict:
    line = process.stdout.readline()
    if not line:
        process.wait()
        raise RuntimeError(f"{process.args[3:6]} exited with {process.returncode}")
    result = json.loads(line)
    if "error" in result:
        raise RuntimeError(f"{process.args[3:6]}: {result['error']}")
    return result


def _processCpu(pid: int) -> float:
    """
    User + system CPU seconds of process C{pid} so far, all threads.
    """
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # utime and stime are the 14th and 15th fields; the split begins at
    # the 3rd.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _senderArgs(port, jpegDir, frames, window, rate) -> list[str]:
    return [
        "--port", str(port), "--jpegs", jpegDir, "--frames", str(frames),
        "--window", str(window), "--rate", str(rate),
    ]  # fmt: skip


def _runChildren(prefix: str, jpegDir, frames, window, rate):
    """
    Run a C{prefix}C{receiver} child and a C{prefix}C{sender} child.
    """
    receiver = _child(prefix + "receiver")
    try:
        port = _readResult(receiver)["port"]
        sender = _child(prefix + "sender", *_senderArgs(port, jpegDir, frames, window, rate))
        sent = _readResult(sender)
        received = _readResult(receiver)
        sender.wait(30)
    finally:
        stopProcess(receiver)
    return sent, received


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def _runTwistd(workDir, jpegDir, frames, window, rate):
    """
    Run the real receiver, C{twistd -n imageproto}, and a C{sender} child.
    The receiver's figures come from its C{--stats-file}, written at
    shutdown; its CPU from C{/proc} over the sender's lifetime.
    """
    from imageproto.demo import freePort
    from imageproto.tap import twistdCommand

    port = freePort()
    statsFile = os.path.join(workDir, f"stats-{port}.json")
    with open(os.path.join(workDir, "receiver.log"), "a") as log:
        receiver = subprocess.Popen(
            twistdCommand(
                "imageproto", "--port", f"tcp:{port}:interface=127.0.0.1",
                "--stats-file", statsFile,
            ),  # fmt: skip
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workDir,
        )
    try:
        deadline = time.monotonic() + 30
        while not _listening(port):
            if receiver.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"twistd -n imageproto did not listen; see {workDir}")
            time.sleep(0.05)
        cpu0 = _processCpu(receiver.pid)
        sender = _child("sender", *_senderArgs(port, jpegDir, frames, window, rate))
        sent = _readResult(sender)
        sender.wait(30)
        cpu1 = _processCpu(receiver.pid)
    finally:
        stopProcess(receiver)
    with open(statsFile) as f:
        stats = json.load(f)["streams"]["bench"]
    latency = stats["latency_ms"]
    received = {
        "frames": stats["frames"],
        "lossless": stats["frames"] == frames
        and not (stats["gaps"] or stats["duplicates"] or stats["rejected"]),
        "p50": latency["p50"] / 1000,
        "p99": latency["p99"] / 1000,
        "cpu": cpu1 - cpu0,
    }
    return sent, received


def _run(kind, mode, workDir, jpegDir, frames, window, rate) -> dict:
    """
    One run of C{kind} (C{"plain"} or C{"imageproto"}): C{frames} frames,
    back to back when C{rate} is 0.

    @return: C{fps}, C{cpuMsPer1000}, C{p50} and C{p99} (milliseconds),
        and C{lossless}: every frame arrived exactly once and in order.
    """
    if kind == "plain":
        sent, received = _runChildren("plain-", jpegDir, frames, window, rate)
    elif mode == "minimal":
        sent, received = _runChildren("minimal-", jpegDir, frames, window, rate)
    else:
        sent, received = _runTwistd(workDir, jpegDir, frames, window, rate)
    return {
        "fps": frames / sent["elapsed"],
        "cpuMsPer1000": (sent["cpu"] + received["cpu"]) * 1e6 / frames,
        "p50": received["p50"] * 1000,
        "p99": received["p99"] * 1000,
        "lossless": sent["lossless"]
        and received["lossless"]
        and received["frames"] == frames,
    }


def _table(rows: list[tuple]) -> str:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        cells = [
            str(c).rjust(w) if i else str(c).ljust(w)
            for i, (c, w) in enumerate(zip(row, widths))
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.throughput",
        description="imageproto against a plain blocking socket on loopback: "
        "frames/s, MB/s, CPU per 1000 frames, latency at a steady rate.",
    )
    add = parser.add_argument
    add("--frames", type=int, default=20_000, help="frames per throughput run")
    add("--window", type=int, default=8,
        help="imageproto's most unacknowledged frames (the sender's default)")
    add("--latency-frames", type=int, default=300, help="frames per latency run")
    add("--fps", type=float, default=30.0, help="frame rate of the latency runs")
    add("--repeat", type=int, default=5, help="repetitions; tables show medians")
    add("--imageproto", choices=("real", "minimal"), default="real",
        help="real: twistd -n imageproto and FrameSender; minimal: the "
        "protocols with stand-in collaborators (wire + framing + Twisted)")
    add("--no-latency", action="store_true", help="skip the latency runs")
    # The children's arguments.
    add("--role", choices=sorted(_ROLES), help=argparse.SUPPRESS)
    add("--port", type=int, help=argparse.SUPPRESS)
    add("--jpegs", help=argparse.SUPPRESS)
    add("--rate", type=float, default=0.0, help=argparse.SUPPRESS)
    return parser


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.role:
        _ROLES[args.role](args)
        return 0

    jpegs = makeJpegs()
    meanSize = statistics.mean(len(j) for j in jpegs)
    print(
        f"{len(jpegs)} JPEGs, {_WIDTH}x{_HEIGHT}, mean {meanSize:,.0f} bytes; "
        f"throughput: {args.frames} frames, imageproto window {args.window}; "
        f"latency: {args.latency_frames} frames at {args.fps:g} fps; "
        f"imageproto side: {args.imageproto}"
        "; "
        f"medians of {args.repeat} runs"
    )
    kinds = ("plain", "imageproto")
    tput = {k: [] for k in kinds}
    lat = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory(prefix="imageproto-bench-") as workDir:
        jpegDir = os.path.join(workDir, "jpegs")
        os.mkdir(jpegDir)
        for i, jpeg in enumerate(jpegs):
            with open(os.path.join(jpegDir, f"{i}.jpg"), "wb") as f:
                f.write(jpeg)
        run = partial(_run, mode=args.imageproto, workDir=workDir, jpegDir=jpegDir,
                      window=args.window)
        for rep in range(1, args.repeat + 1):
            # Alternate the order so that neither side always goes first.
            order = kinds if rep % 2 else kinds[::-1]
            for kind in order:
                r = run(kind, frames=args.frames, rate=0.0)
                tput[kind].append(r)
                print(
                    f"  run {rep} {kind:10} {r['fps']:8,.0f} frames/s "
                    f"{r['cpuMsPer1000']:6.0f} CPU ms/1000 frames "
                    f"{'' if r['lossless'] else 'LOSS'}",
                    flush=True,
                )
            for kind in () if args.no_latency else order:
                r = run(kind, frames=args.latency_frames, rate=args.fps)
                lat[kind].append(r)
                print(
                    f"  run {rep} {kind:10} latency p50 {r['p50']:.3f} ms, "
                    f"p99 {r['p99']:.3f} ms "
                    f"{'' if r['lossless'] else 'LOSS'}",
                    flush=True,
                )

    print()
    print(_report(tput, lat, meanSize))
    return 0


def _report(tput, lat, meanSize) -> str:
    rows = [("", "frames/s", "MB/s", "CPU ms/1000 frames", "p50 ms", "p99 ms", "loss")]
    for kind in tput:
        fps = _median(tput[kind], "fps")
        rows.append(
            (
                kind,
                f"{fps:,.0f}",
                f"{fps * meanSize / 1e6:,.0f}",
                f"{_median(tput[kind], 'cpuMsPer1000'):.0f}",
                f"{_median(lat[kind], 'p50'):.3f}" if lat[kind] else "-",
                f"{_median(lat[kind], 'p99'):.3f}" if lat[kind] else "-",
                "none" if all(r["lossless"] for r in tput[kind] + lat[kind]) else "LOSS",
            )
        )
    ours, plain = tput["imageproto"], tput["plain"]
    ratio = _median(ours, "fps") / _median(plain, "fps")
    lossless = all(r["lossless"] for r in ours + lat["imageproto"])
    met = ratio >= 0.5 and lossless
    lines = [
        _table(rows),
        "",
        f"throughput imageproto/plain: {ratio:.2f}x "
        f"(target >= 0.5x with zero loss: {'met' if met else 'NOT met'})",
    ]
    if lat["imageproto"]:
        gap = _median(lat["imageproto"], "p50") - _median(lat["plain"], "p50")
        lines.append(
            f"latency p50 imageproto - plain: {gap:+.3f} ms "
            f"(target <= +0.5 ms: {'met' if gap <= 0.5 else 'NOT met'})"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
