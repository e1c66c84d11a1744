"""
Clock-offset benchmark: how close the corrected latency of a sender whose
clock is minutes off comes to the true latency, on loopback.

One real C{twistd -n imageproto} receiver and two real C{twistd -n
imageproto-sender} processes streaming the test pattern at the same time:
one with a correct clock (its measured latency is the true latency, the
baseline) and one with C{IMAGEPROTO_CLOCK_SKEW} set (a clock SKEW seconds
off).  The figures come from the receiver's C{--stats-file}: the skewed
stream's measured latency, its corrected latency against the baseline's
measured one, and the offset estimate against the true skew with its bound.

Run:  .venv/bin/python -m bench.clock [--skew -300] [--seconds 5] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import tempfile
import time

from imageproto.tap import freePort, twistdCommand

TWISTD = twistdCommand()


def _waitListening(port: int, process, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the receiver exited")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("the receiver did not listen")


def run(directory: str, skew: float, seconds: float, fps: int = 30) -> dict:
    """
    One run; returns the receiver's final statistics of both streams,
    C{{"true": {...}, "skewed": {...}}}.
    """
    port = freePort()
    stats = os.path.join(directory, "stats.json")
    receiver = subprocess.Popen(
        TWISTD + ["-n", "--logfile", os.path.join(directory, "receiver.log"),
                  "--pidfile", "", "imageproto", "--port",
                  f"tcp:{port}:interface=127.0.0.1", "--stats-file", stats],
        cwd=directory,
    )
    try:
        _waitListening(port, receiver)
        senders = []
        for name, offset in (("true", 0.0), ("skewed", skew)):
            env = dict(os.environ, IMAGEPROTO_CLOCK_SKEW=str(offset))
            senders.append(subprocess.Popen(
                TWISTD + ["-n", "--logfile", os.path.join(directory, f"{name}.log"),
                          "--pidfile", "", "imageproto-sender",
                          "--connect", f"tcp:127.0.0.1:{port}", "--name", name,
                          "--width", "160", "--height", "120",
                          "--fps", str(fps), "--count", str(int(seconds * fps))],
                cwd=directory, env=env,
            ))
        for sender in senders:
            if sender.wait(timeout=seconds + 60) != 0:
                raise RuntimeError("a sender failed")
    finally:
        receiver.terminate()
        receiver.wait(timeout=30)
    with open(stats) as f:
        return json.load(f)["streams"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skew", type=float, default=-300.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"sender clock skew {args.skew:+.0f} s; {args.seconds:.0f} s at 30 fps per run")
    print("run  measured p50 ms  corrected p50 ms  true p50 ms  |corr-true| p50/p95 ms"
          "  offset error ms  bound ms")
    for i in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="imageproto-clock-") as directory:
            streams = run(directory, args.skew, args.seconds)
        true, skewed = streams["true"], streams["skewed"]
        measured = skewed["latency_ms"]["p50"]
        corrected = skewed["latency_corrected_ms"]
        baseline = true["latency_ms"]
        offsetError = abs(skewed["clock_offset_ms"] - args.skew * 1000.0)
        print(
            f"{i + 1:>3}  {measured:>15.3f}  {corrected['p50']:>16.3f}  {baseline['p50']:>11.3f}"
            f"  {abs(corrected['p50'] - baseline['p50']):>9.3f} / {abs(corrected['p95'] - baseline['p95']):.3f}"
            f"  {offsetError:>15.3f}  {skewed['clock_error_ms']:>8.3f}"
        )


if __name__ == "__main__":
    main()
