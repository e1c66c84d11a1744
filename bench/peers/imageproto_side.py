# -*- test-case-name: tests.test_bench_peers -*-
"""
imageproto's ends in C{bench.peers}, through public entry points only:

  - the receiver: the real twistd plugin process (transport scenarios), or
    a small embedding of L{imageproto.receiver.ReceiverService} that decodes
    every frame in C{deferToThread} and holds the ACK until it is decoded
    (S2, S3), as the README shows;
  - the sender: the real C{FrameSender} on C{SenderFactory}, fed the way
    C{CaptureService} feeds it (the approach of C{bench.throughput});
  - the blocking client: C{imageproto.connect}.

C{FrameSender} and C{SenderFactory} live in modules that are about to move:
L{_senderClasses} is the one place naming them.
"""

from __future__ import annotations

import sys
import time

from bench.peers.common import (
    Pacer,
    cpuSeconds,
    emit,
    encodeJpeg,
    loadFrames,
    peakKiB,
)

__all__ = ["twistdCommand", "runSender", "runConnectSender", "runDecodingReceiver"]


def _senderClasses():
    """
    The adapter: C{(FrameSender, SenderFactory)} wherever imageproto keeps
    them.  The only import of imageproto's internal module paths in
    C{bench.peers}.
    """
    from imageproto.protocol.factories import SenderFactory
    from imageproto.sender.flow import FrameSender

    return FrameSender, SenderFactory


def _connectAddress(port: int) -> str:
    return f"tcp:127.0.0.1:{port}"


#: Frames the blocking client keeps in flight (C{connect(..., window=)}).
CONNECT_WINDOW = 8


def twistdCommand(port: int, statsFile: str) -> list[str]:
    """
    The real receiver: C{twistd -n imageproto} on loopback, default options.
    """
    return [
        sys.executable,
        "-c",
        "import sys; sys.argv[0] = 'twistd'; "
        "from twisted.scripts.twistd import run; run()",
        "-n", "--pidfile=", "imageproto",
        "--port", f"tcp:{port}:interface=127.0.0.1",
        "--stats-file", statsFile,
    ]  # fmt: skip


def runSender(args) -> None:
    """
    One imageproto sender: C{FrameSender} + C{SenderFactory} on the reactor.
    Back to back, a finite source waits on C{whenReady()}; at C{--rate} a
    live source offers one frame per tick.  With C{--encode} each frame is
    JPEG-encoded in a worker thread (C{CaptureService} does it there too),
    after its capture time is taken.
    """
    from twisted.internet import reactor, threads
    from twisted.internet.defer import succeed
    from twisted.internet.task import LoopingCall

    FrameSender, SenderFactory = _senderClasses()
    frames = loadFrames(args.data, args.frameset, images=args.encode)
    total = args.frames
    sender = FrameSender(args.name, bool(args.rate), reactor)
    state = {"offered": 0, "bytes": 0}
    captures = []

    def produce():
        i = state["offered"]
        captureTime = time.time()
        if args.rate:
            captures.append(captureTime)
        if not state.get("start"):
            state.update(start=captureTime, cpu0=cpuSeconds())
        frame = frames[i % len(frames)]
        if args.encode:
            d = threads.deferToThread(encodeJpeg, frame)
        else:
            d = succeed(frame)
        return d.addCallback(lambda jpeg: offer(jpeg, captureTime))

    def offer(jpeg, captureTime):
        state["offered"] += 1
        state["bytes"] += len(jpeg)
        sender.frameCaptured(jpeg, captureTime)
        if state["offered"] == total:
            sender.sourceExhausted()

    def feed(_=None):
        if args.encode:
            # One encode at a time, as CaptureService's LoopingCall does.
            if state["offered"] < total:
                if sender.ready:
                    produce().addCallback(feed)
                else:
                    sender.whenReady().addCallback(feed)
            return
        while state["offered"] < total and sender.ready:
            produce()
        if state["offered"] < total:
            sender.whenReady().addCallback(feed)

    def tick():
        if state["offered"] >= total:
            loop.stop()
            return None
        return produce()

    loop = LoopingCall(tick)
    loop.clock = reactor
    factory = SenderFactory(sender, reactor)

    def done(summary):
        factory.stopTrying()
        emit(
            {
                "sent": state["offered"],
                "delivered": summary.acknowledged,
                "start": state["start"],
                "end": time.time(),
                "cpu": cpuSeconds() - state["cpu0"],
                "hwm": peakKiB(),
                "bytes": state["bytes"],
                "captures": captures,
            }
        )

    def failed(failure):
        emit({"error": failure.getErrorMessage()})

    d = sender.whenDone().addCallbacks(done, failed)
    # Let the BYE reach the receiver before the process goes.
    d.addCallback(lambda _: reactor.callLater(0.05, reactor.stop))
    if args.rate:
        sender.whenReady().addCallback(lambda _: loop.start(1.0 / args.rate))
    else:
        sender.whenReady().addCallback(feed)
    reactor.callLater(args.deadline, _giveUp, reactor, state)
    reactor.connectTCP("127.0.0.1", args.port, factory)
    reactor.run()


def _giveUp(reactor, state) -> None:
    emit({"error": f"deadline: {state['offered']} frames offered"})
    reactor.stop()


def runConnectSender(args) -> None:
    """
    One blocking client: C{imageproto.connect(..., window=8)} and
    C{send(frame, wait=False, captureTime=...)} per frame, which returns as
    soon as the frame is written while at most 8 are unacknowledged; the
    run ends when every frame is acknowledged (C{close} waits for them).
    With C{--encode} it is handed the numpy image and encodes it itself
    (quality 90).
    """
    import imageproto

    frames = loadFrames(args.data, args.frameset, images=args.encode)
    client = imageproto.connect(
        _connectAddress(args.port), name=args.name, timeout=10.0, quality=90,
        window=CONNECT_WINDOW,
    )
    captures = []
    total = 0
    pacer = Pacer(args.rate)
    deadline = time.monotonic() + args.deadline
    start, cpu0 = time.time(), cpuSeconds()
    sent = 0
    for seq in range(args.frames):
        if time.monotonic() > deadline:
            break
        pacer.wait(seq)
        captureTime = time.time()
        captures.append(captureTime)
        frame = frames[seq % len(frames)]
        client.send(frame, wait=False, captureTime=captureTime)
        total += 0 if args.encode else len(frame)
        sent += 1
    client.flush()
    end = time.time()
    cpu = cpuSeconds() - cpu0
    client.close()
    emit(
        {
            "sent": sent,
            "start": start,
            "end": end,
            "cpu": cpu,
            "hwm": peakKiB(),
            "bytes": total,
            "captures": captures if args.rate else [],
        }
    )


def runDecodingReceiver(args) -> None:
    """
    An application embedding C{ReceiverService}: every frame is decoded in
    C{deferToThread(frame.decode)}, and the Deferred is returned so the ACK
    waits for the decode.  Reports once C{--expect} frames are decoded (or
    at the deadline).
    """
    from twisted.internet import reactor, threads

    from imageproto.receiver import ReceiverService

    state = {"received": 0, "bytes": 0, "last": 0.0, "reported": False}
    seen = set()
    arrivals = []

    def decoded(image, frame):
        now = time.time()
        state["last"] = now
        arrivals.append((frame.seq, now))
        key = (frame.stream, frame.seq)
        if key not in seen:
            seen.add(key)
            state["received"] += 1
            state["bytes"] += len(frame.jpeg)
        if state["received"] >= args.expect:
            # After this callback the ACK goes out; give it a moment.
            reactor.callLater(0.2, report)

    def onFrame(frame):
        if "cpu0" not in state:
            state["cpu0"] = cpuSeconds()
        if not args.encode:
            decoded(None, frame)
            return None
        return threads.deferToThread(frame.decode).addCallback(decoded, frame)

    def report():
        if state["reported"]:
            return
        state["reported"] = True
        emit(
            {
                "received": state["received"],
                "bytes": state["bytes"],
                "last": state["last"],
                "cpu": cpuSeconds() - state.get("cpu0", cpuSeconds()),
                "hwm": peakKiB(),
                "arrivals": arrivals,
            }
        )
        reactor.stop()

    service = ReceiverService("tcp:0:interface=127.0.0.1", onFrame=onFrame, statsInterval=0)
    service.whenListening().addCallback(lambda port: emit({"port": port.getHost().port}))
    reactor.callWhenRunning(service.startService)
    reactor.callLater(args.deadline, report)
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()
