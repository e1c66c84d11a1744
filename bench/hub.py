"""
What the blocking hub costs per frame: C{imageproto.listen} (the hub on its
private reactor thread) and the same hub on crochet's reactor thread, each
against a plain C{ReceiverService} with an C{onFrame} callback, in the same
run, in alternating order.

Each run is a fresh receiver process and a fresh sender process (the
blocking client, window 8, a finite source, pre-encoded 640x480 JPEGs) on
127.0.0.1.  The receiver counts frames; frames/s runs from its first frame
to its last, and CPU is the receiver process's user+system time over that
span, per 1000 frames.

    python -m bench.hub [--frames 10000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

VARIANTS = ("service", "hub", "hub-crochet")


def _frames(count: int = 5) -> list[bytes]:
    import cv2
    import numpy

    rng = numpy.random.default_rng(1)
    out = []
    for i in range(count):
        y, x = numpy.mgrid[0:480, 0:640]
        base = ((x + y * 2 + i * 40) % 256).astype(numpy.float32)
        noise = rng.normal(0, 12, (480, 640, 3))
        image = numpy.clip(base[..., None] + noise, 0, 255).astype(numpy.uint8)
        out.append(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
    return out


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def _emit(result: dict) -> None:
    print(json.dumps(result), flush=True)


def _receiver(variant: str, total: int) -> None:
    state = {"n": 0}

    def counted(frame) -> bool:
        if state["n"] == 0:
            state.update(start=time.time(), cpu=_cpu())
        state["n"] += 1
        return state["n"] >= total

    def report() -> None:
        _emit({"frames": state["n"], "seconds": time.time() - state["start"],
               "cpu": _cpu() - state["cpu"]})

    if variant == "service":
        from twisted.internet import reactor

        from imageproto.receiver import ReceiverService

        def onFrame(frame):
            if counted(frame):
                report()
                reactor.callLater(0.2, reactor.stop)

        service = ReceiverService("tcp:0:interface=127.0.0.1", onFrame=onFrame, statsInterval=0)
        service.whenListening().addCallback(lambda port: _emit({"port": port.getHost().port}))
        reactor.callWhenRunning(service.startService)
        reactor.run()
        return

    from imageproto.hub import Hub

    runner = None
    if variant == "hub-crochet":
        import crochet

        crochet.setup()

        class _CrochetThread:
            from twisted.internet import reactor

            def call(self, f, *args, **kwargs):
                return crochet.run_in_reactor(f)(*args, **kwargs).wait(10)

            def stop(self):
                pass

        runner = _CrochetThread()
    hub = Hub("tcp:0:interface=127.0.0.1", _reactorThread=runner)
    _emit({"port": hub.port})
    for frame in hub:
        if counted(frame):
            break
    report()
    hub.close()


def _sender(port: int, total: int) -> None:
    import imageproto

    frames = _frames()
    with imageproto.connect(f"tcp:127.0.0.1:{port}", name="bench", window=8) as client:
        for i in range(total):
            client.send(frames[i % len(frames)], wait=False)
        client.flush()


def _run(variant: str, total: int) -> dict:
    receiver = subprocess.Popen(
        [sys.executable, "-m", "bench.hub", "--child", variant, "--frames", str(total)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        port = json.loads(receiver.stdout.readline())["port"]
        sender = subprocess.Popen(
            [sys.executable, "-m", "bench.hub", "--send", str(port), "--frames", str(total)]
        )
        result = json.loads(receiver.stdout.readline())
        sender.wait(60)
        receiver.wait(30)
    finally:
        for p in (receiver,):
            if p.poll() is None:
                p.kill()
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--frames", type=int, default=10000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child", choices=VARIANTS)
    parser.add_argument("--send", type=int)
    args = parser.parse_args(argv)
    if args.child:
        return _receiver(args.child, args.frames)
    if args.send:
        return _sender(args.send, args.frames)
    results = {v: [] for v in VARIANTS}
    ratios = {v: [] for v in VARIANTS}
    for r in range(args.repeat):
        order = VARIANTS if r % 2 == 0 else tuple(reversed(VARIANTS))
        run = {}
        for variant in order:
            out = _run(variant, args.frames)
            fps = out["frames"] / out["seconds"]
            cpu = out["cpu"] / out["frames"] * 1000
            run[variant] = fps
            results[variant].append((fps, cpu))
            print(f"  run {r + 1} {variant:12} {fps:9,.0f} frames/s  receiver CPU {cpu:.3f} s/1000f",
                  flush=True)
        for variant in VARIANTS:
            ratios[variant].append(run[variant] / run["service"])
    print(f"\n{'receiver':12} {'frames/s':>9} {'CPU s/1000f':>12} {'vs service':>10}  (medians of {args.repeat})")
    for variant in VARIANTS:
        fps = statistics.median(x for x, _ in results[variant])
        cpu = statistics.median(c for _, c in results[variant])
        print(f"{variant:12} {fps:9,.0f} {cpu:12.3f} {statistics.median(ratios[variant]):9.2f}x")


if __name__ == "__main__":
    main()
