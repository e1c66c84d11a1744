# -*- test-case-name: tests.test_bench_peers -*-
"""
imageproto's ends in C{bench.peers}, through public entry points only:

  - the receiver: the real twistd plugin process (transport scenarios), or
    a small embedding of L{imageproto.receiver.ReceiverService} that asks
    for decoded images with C{onImage=} (S2, S3), as the README shows;
  - the sender: the embedding API, C{imageproto.sender.embed.openStream}
    and C{stream.send()} per frame (C{FrameSender} on C{SenderFactory});
  - the blocking client: C{imageproto.connect}.

L{_embedApi} is the one place naming a module below C{imageproto}.
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


def _embedApi():
    """
    The embedding API's C{openStream}: the only import of an imageproto
    module path below the package in C{bench.peers}.
    """
    from imageproto.sender.embed import openStream

    return openStream


def _connectAddress(port: int) -> str:
    return f"tcp:127.0.0.1:{port}"


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
    One imageproto sender as an application embeds it:
    C{imageproto.sender.embed.openStream} and C{stream.send(jpeg,
    captureTime)} per frame.  Back to back, a finite stream is fed while
    C{whenReady()} says a frame would go out at once; at C{--rate} a live
    stream is given one frame per tick.  With C{--encode} each frame is
    JPEG-encoded in a worker thread (as C{CaptureService} does), after its
    capture time is taken, one at a time.
    """
    from twisted.internet import reactor, threads
    from twisted.internet.task import LoopingCall

    openStream = _embedApi()
    frames = loadFrames(args.data, args.frameset, images=args.encode)
    total = args.frames
    live = bool(args.rate)
    stream = openStream(reactor, f"tcp:127.0.0.1:{args.port}", args.name, live=live)
    state = {"offered": 0, "bytes": 0, "acked": 0}
    captures = []

    def acked(_):
        state["acked"] += 1

    def produce():
        i = state["offered"]
        state["offered"] += 1
        captureTime = time.time()
        if live:
            captures.append(captureTime)
        if "start" not in state:
            state.update(start=captureTime, cpu0=cpuSeconds())
        frame = frames[i % len(frames)]
        if args.encode:
            return threads.deferToThread(encodeJpeg, frame).addCallback(
                offer, captureTime
            )
        offer(frame, captureTime)
        return None

    def offer(jpeg, captureTime):
        state["bytes"] += len(jpeg)
        stream.send(jpeg, captureTime).addCallbacks(acked, lambda f: None)
        if state["offered"] == total:
            stream.close().addCallbacks(done, failed)

    def feed(_=None):
        while state["offered"] < total:
            if not stream.sender.ready:
                stream.whenReady().addCallback(feed)
                return
            d = produce()
            if d is not None:
                # One encode at a time.
                d.addCallback(feed)
                return

    def tick():
        if state["offered"] >= total:
            loop.stop()
            return None
        return produce()

    loop = LoopingCall(tick)
    loop.clock = reactor

    def done(summary):
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
        reactor.callLater(0.05, reactor.stop)

    def failed(failure):
        emit({"error": failure.getErrorMessage()})
        reactor.stop()

    if live:
        stream.sender.whenReady().addCallback(lambda _: loop.start(1.0 / args.rate))
    else:
        stream.whenReady().addCallback(feed)
    reactor.callLater(args.deadline, _giveUp, reactor, state)
    reactor.run()


def _giveUp(reactor, state) -> None:
    emit({"error": f"deadline: {state['offered']} frames offered"})
    reactor.stop()


def runConnectSender(args) -> None:
    """
    One blocking client: C{imageproto.connect(...)} with its default window
    (16 frames for a stream that is not live) and C{send(frame, wait=False,
    captureTime=...)} per frame, which returns as soon as the frame is
    written while at most that many are unacknowledged; the
    run ends when every frame is acknowledged (C{close} waits for them).
    With C{--encode} it is handed the numpy image and encodes it itself
    (quality 90).
    """
    import imageproto

    frames = loadFrames(args.data, args.frameset, images=args.encode)
    client = imageproto.connect(
        _connectAddress(args.port), name=args.name, timeout=10.0, quality=90
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
    An application embedding C{ReceiverService}: with C{--encode} it asks
    for decoded images (C{onImage=}, decoded in the receiver's own pool, the
    ACK after the callback), otherwise for the frames' JPEG bytes
    (C{onFrame=}).  Reports once C{--expect} frames are decoded (or
    at the deadline).
    """
    from twisted.internet import reactor

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
        # Transport scenarios: the JPEG bytes are what the application wants.
        if "cpu0" not in state:
            state["cpu0"] = cpuSeconds()
        decoded(None, frame)

    def onImage(frame, image):
        # Decoded in the receiver's own pool; the ACK goes out after this.
        if "cpu0" not in state:
            state["cpu0"] = cpuSeconds()
        decoded(image, frame)

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

    if args.encode:
        service = ReceiverService(
            "tcp:0:interface=127.0.0.1", onImage=onImage, statsInterval=0
        )
    else:
        service = ReceiverService(
            "tcp:0:interface=127.0.0.1", onFrame=onFrame, statsInterval=0
        )
    service.whenListening().addCallback(lambda port: emit({"port": port.getHost().port}))
    reactor.callWhenRunning(service.startService)
    reactor.callLater(args.deadline, report)
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()
