# -*- test-case-name: tests.test_demo -*-
"""
The end-to-end demo behind C{scripts/demo}: a real receiver and a real
sender, as two C{twistd} processes on a free loopback port, streaming the
built-in test pattern for a few seconds; then the receiver's statistics.

    python -m imageproto.demo [--seconds 5] [--fps 30] [--keep DIR]

This is a command-line program, not a Twisted application: it supervises the
two processes with C{subprocess} and reads the receiver's C{--stats-file}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from imageproto.receiver.savedir import savedFrames
from imageproto.tap import freePort, listening, stopProcess, twistdCommand

__all__ = ["main", "formatStats"]


def _waitFor(predicate, timeout: float, what: str, process=None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what}: process exited with {process.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def formatStats(snapshot: dict) -> str:
    """
    Render a stats-file snapshot as a small table.
    """
    header = (
        f"{'stream':<16}{'frames':>8}{'MB':>8}{'fps':>7}{'p50 ms':>8}"
        f"{'p95 ms':>8}{'p99 ms':>8}{'gaps':>6}{'dropped':>9}{'conns':>7}"
    )
    lines = [header, "-" * len(header)]
    for name, s in sorted(snapshot.get("streams", {}).items()):
        lat = s.get("latency_ms", {})
        lines.append(
            f"{name:<16}{s['frames']:>8}{s['bytes'] / 1e6:>8.2f}{s['fps']:>7.1f}"
            f"{_ms(lat.get('p50')):>8}{_ms(lat.get('p95')):>8}{_ms(lat.get('p99')):>8}"
            f"{s['gaps']:>6}{s['dropped']:>9}{s['connections']:>7}"
        )
    return "\n".join(lines)


def _ms(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="imageproto-demo",
        description="Stream the test pattern from a real sender to a real "
        "receiver on loopback and print the receiver's statistics.",
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument(
        "--keep", metavar="DIR", help="keep the saved frames and logs in DIR"
    )
    args = parser.parse_args(argv)

    work = args.keep or tempfile.mkdtemp(prefix="imageproto-demo-")
    os.makedirs(work, exist_ok=True)
    port = freePort()
    statsFile = os.path.join(work, "stats.json")
    count = max(1, int(args.seconds * args.fps))
    receiverLog = open(os.path.join(work, "receiver.log"), "w")
    print(f"receiver: twistd -n imageproto on 127.0.0.1:{port} (logs in {work})")
    receiver = subprocess.Popen(
        twistdCommand(
            "imageproto",
            "--port", f"tcp:{port}:interface=127.0.0.1",
            "--save-dir", os.path.join(work, "frames"),
            "--stats-file", statsFile,
        ),
        stdout=receiverLog,
        stderr=subprocess.STDOUT,
        cwd=work,
    )
    try:
        _waitFor(lambda: listening(port, timeout=0.2), 30, "the receiver to listen", receiver)
        print(
            f"sender:   twistd -n imageproto-sender (test pattern, {count} frames "
            f"at {args.fps:g} fps)"
        )
        sender = subprocess.run(
            twistdCommand(
                "imageproto-sender",
                "--connect", f"tcp:127.0.0.1:{port}",
                "--name", "demo",
                "--fps", str(args.fps),
                "--count", str(count),
            ),
            capture_output=True,
            text=True,
            cwd=work,
            timeout=args.seconds + 60,
        )
        for line in sender.stdout.splitlines():
            if "acknowledged, " in line or "error" in line.lower():
                print("  " + line.split(" ", 2)[-1])
        if sender.returncode != 0:
            print(sender.stdout[-2000:], file=sys.stderr)
            print(f"the sender failed with exit code {sender.returncode}")
            return 1

        def settled() -> bool:
            try:
                with open(statsFile) as f:
                    snapshot = json.load(f)
            except (OSError, ValueError):
                return False
            return snapshot.get("streams", {}).get("demo", {}).get("frames") == count

        _waitFor(settled, 10, "the statistics file to show every frame", receiver)
    finally:
        stopProcess(receiver)
        receiverLog.close()

    with open(statsFile) as f:
        snapshot = json.load(f)
    print()
    print(formatStats(snapshot))
    saved = os.path.join(work, "frames", "demo")
    kept = "" if args.keep else " (a temporary directory; keep it with --keep DIR)"
    count = len(savedFrames(os.path.join(work, "frames"), "demo"))
    print(f"\n{count} frames saved in {saved}{kept}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
