"""
Inference benchmarks.

1. Round trip (the sender's clock, from handing a frame to the connection to
   its RESULT) at 30 fps on 640x480 frames, for C{--detect echo} and
   C{--detect faces}: real C{twistd -n imageproto} and C{twistd -n
   imageproto-sender --video clip.avi --fps 30 --results OUT} processes on
   loopback; the figures come from OUT/results.jsonl.
2. Detector throughput (frames/s) of the L{InferenceEngine} over a real
   worker pool with 1 and 2 workers, in this process, on the same frames.

Run:  /work/venv/bin/python -m bench.inference [--frames 150]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import tempfile
import time

import cv2
import numpy
from imageproto.common.numbers import percentile
from imageproto.tap import freePort, twistdCommand

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "tests", "data")
TWISTD = twistdCommand()


def frames640(count: int) -> list:
    """
    640x480 frames of the astronaut portrait (public domain, tests/data)
    drifting a few pixels per frame, so every frame differs.
    """
    face = cv2.imread(os.path.join(DATA, "astronaut.jpg"))
    face = cv2.resize(face, (360, 360))
    out = []
    for i in range(count):
        canvas = numpy.full((480, 640, 3), 90, numpy.uint8)
        x = 40 + (i * 3) % 200
        canvas[60:420, x : x + 360] = face
        out.append(canvas)
    return out


def writeClip(path: str, frames: list) -> None:
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (640, 480))
    for frame in frames:
        writer.write(frame)
    writer.release()




def waitListening(port: int, process, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("receiver exited: " + process.stdout.read().decode())
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("receiver did not listen")


def roundTrip(detector: str, source: list, workdir: str, label: str) -> dict:
    """
    Run a receiver with C{--detect detector} and a sender with C{source}
    (its arguments) at 30 fps writing C{--results}; summarise results.jsonl.
    """
    port = freePort()
    out = os.path.join(workdir, f"out-{detector}-{label}")
    receiver = subprocess.Popen(
        TWISTD + ["imageproto", "--port", f"tcp:{port}:interface=127.0.0.1",
                  "--detect", detector, "--workers", "1", "--stats-interval", "60"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=workdir,
    )
    try:
        waitListening(port, receiver)
        sender = subprocess.run(
            TWISTD + ["imageproto-sender", "--connect", f"tcp:127.0.0.1:{port}",
                      *source, "--fps", "30", "--results", out,
                      "--name", "bench"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=workdir, timeout=300,
        )
        if sender.returncode != 0:
            raise RuntimeError(sender.stdout.decode())
    finally:
        receiver.terminate()
        receiver.wait(30)
    with open(os.path.join(out, "results.jsonl")) as f:
        records = [json.loads(line) for line in f]
    trips = [r["roundTripMs"] for r in records]
    processing = [r["processingMs"] for r in records]
    return {
        "detector": detector,
        "frames": len(records),
        "rtt_p50_ms": round(percentile(trips, 0.5), 1),
        "rtt_p99_ms": round(percentile(trips, 0.99), 1),
        "detect_p50_ms": round(percentile(processing, 0.5), 1),
        "faces_found": sum(1 for r in records if r["detections"]),
    }


def throughputBoth(detector: str, jpegs: list) -> dict:
    """
    Frames per second through the engine over a real thread pool of 1 and
    then 2 workers, every frame processed (a finite stream).  One reactor
    run measures both.
    """
    from functools import partial

    from twisted.internet import reactor
    from twisted.internet.defer import gatherResults, inlineCallbacks
    from twisted.internet.threads import deferToThreadPool
    from twisted.python.threadpool import ThreadPool

    from imageproto import wire
    from imageproto.features.inference.detectors import loadDetector
    from imageproto.features.inference.processor import FrameProcessor
    from imageproto.features.inference.scheduler import InferenceEngine

    figures = {}

    @inlineCallbacks
    def run():
        try:
            for workers in (1, 2):
                pool = ThreadPool(minthreads=workers, maxthreads=workers)
                pool.start()
                processor = FrameProcessor(loadDetector(detector))
                engine = InferenceEngine(
                    processor, partial(deferToThreadPool, reactor, pool),
                    workers=workers, maxQueued=len(jpegs) + 1,
                )
                # Warm up every thread's detector outside the timing.
                yield gatherResults(
                    [engine.submit("warm", wire.Frame(i, jpegs[0])) for i in range(workers * 2)]
                )
                started = time.perf_counter()
                yield gatherResults(
                    [engine.submit("bench", wire.Frame(i, j)) for i, j in enumerate(jpegs)]
                )
                figures[workers] = round(len(jpegs) / (time.perf_counter() - started), 1)
                pool.stop()
        finally:
            reactor.stop()

    reactor.callWhenRunning(run)
    reactor.run()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=150)
    args = parser.parse_args()
    frames = frames640(args.frames)
    workdir = tempfile.mkdtemp(prefix="imageproto-bench-")
    clip = os.path.join(workdir, "clip.avi")
    writeClip(clip, frames)
    print(f"machine: {os.cpu_count()} CPUs, OpenCV {cv2.__version__}")
    runs = [
        ("echo", ["--video", clip], "video file"),
        ("faces", ["--video", clip], "video file"),
        ("faces", ["--count", str(args.frames)], "live test pattern"),
    ]
    for detector, source, label in runs:
        figures = roundTrip(detector, source, workdir, label.replace(" ", "-"))
        print(
            f"round trip at 30 fps, 640x480 {label}, --detect {detector}: "
            f"{figures['frames']} frames, p50 {figures['rtt_p50_ms']} ms, "
            f"p99 {figures['rtt_p99_ms']} ms (detector p50 {figures['detect_p50_ms']} ms, "
            f"frames with a detection: {figures['faces_found']})"
        )
    jpegs = [cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes() for f in frames]
    fps = throughputBoth("faces", jpegs)
    for workers, value in sorted(fps.items()):
        print(f"detector throughput, faces on 640x480, {workers} worker(s): {value} frames/s")


if __name__ == "__main__":
    main()
