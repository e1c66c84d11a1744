"""
Frames through the Redis bus against the in-process detector, with 1, 2
and 4 worker processes, and Redis's memory per live stream.

Run from the checkout's root (with the C{bus} extra)::

    .venv/bin/python -m bench.bus_fleet [--detect echo,faces] [--fleet 1,2,4]
        [--frames 240] [--repeat 1]

For each detector and repetition, alternating the order, real processes on
loopback (C{twistd -n}, via L{imageproto.tap.twistdCommand}): a receiver
with C{--detect D} (in-process, the baseline), then for each fleet size N a
receiver with C{--bus} and N C{imageproto-worker --detect D} processes, on
one C{redis-server} this script starts (persistence off).  The sender sends
a 640x480 MJPG clip (the astronaut drifting, ~30-40 KB JPEGs) with
C{--results}:

  - throughput: C{--fps 0} (as fast as its window of 8 lets it), all
    C{--frames}: frames / (last RESULT's time - first send time);
  - latency: C{--fps 30} for 90 frames: RESULT round trip p50 and p99.

CPU seconds per 1000 frames of each process kind (receiver, workers,
redis-server) come from C{/proc/PID/stat} at the end of the throughput
run.  Every figure is also printed as a ratio to the in-process baseline
of the same repetition.

Then Redis's C{used_memory} with one live 640x480 pattern stream at 30 fps
for 12 s and no worker (the stream is trimmed at C{--bus-live-length},
default 256), against the same Redis before the stream.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from bench.inference import frames640, writeClip
from imageproto.common.numbers import percentile
from imageproto.features.bus.redisserver import RedisServer
from imageproto.tap import freePort, listening, stopProcess, twistdCommand

TWISTD = twistdCommand()
_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICKS
    except OSError:
        return float("nan")



def _spawn(args, cwd, log):
    return subprocess.Popen(TWISTD + args, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)


def _waitPort(port, process):
    deadline = time.monotonic() + 30
    while not listening(port):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("receiver did not listen")
        time.sleep(0.05)


def run(detect, fleet, clip, frames, workdir, redis, label):
    """
    One configuration: fleet 0 is the in-process baseline.
    """
    port = freePort()
    directory = os.path.join(workdir, label)
    os.makedirs(directory)
    log = open(os.path.join(directory, "log.txt"), "wb")
    recvArgs = ["imageproto", "--port", f"tcp:{port}:interface=127.0.0.1", "--stats-interval", "60"]
    if fleet == 0:
        recvArgs += ["--detect", detect]
    else:
        redis.stop()
        redis.start()
        recvArgs += ["--bus", redis.url]
    receiver = _spawn(recvArgs, directory, log)
    workers = [
        _spawn(["imageproto-worker", "--bus", redis.url, "--detect", detect, "--name", f"w{i}"], directory, log)
        for i in range(fleet)
    ]
    figures = {}
    try:
        _waitPort(port, receiver)
        cpu0 = {"receiver": _cpu(receiver.pid), "workers": sum(_cpu(w.pid) for w in workers),
                "redis": _cpu(redis.process.pid) if fleet else 0.0}
        for mode, fps, count in (("throughput", "0", frames), ("latency", "30", 90)):
            out = os.path.join(directory, f"results-{mode}")
            sender = subprocess.run(
                TWISTD + ["imageproto-sender", "--connect", f"tcp:127.0.0.1:{port}", "--video", clip,
                          "--fps", fps, "--count", str(count), "--results", out, "--name", mode],
                cwd=directory, stdout=log, stderr=subprocess.STDOUT, timeout=600,
            )
            if sender.returncode != 0:
                raise RuntimeError(f"{label} {mode}: sender exited {sender.returncode}")
            with open(os.path.join(out, "results.jsonl")) as f:
                records = [json.loads(line) for line in f]
            if len(records) != count:
                raise RuntimeError(f"{label} {mode}: {len(records)} results of {count}")
            if mode == "throughput":
                span = max(r["resultTime"] for r in records) - min(r["sendTime"] for r in records)
                figures["fps"] = count / span
                for kind, before in cpu0.items():
                    now = {"receiver": _cpu(receiver.pid),
                           "workers": sum(_cpu(w.pid) for w in workers),
                           "redis": _cpu(redis.process.pid) if fleet else 0.0}[kind]
                    figures[f"cpu_{kind}_s_per_1000"] = 1000 * (now - before) / count
            else:
                trips = [r["roundTripMs"] for r in records]
                figures["rtt_p50_ms"] = percentile(trips, 0.5)
                figures["rtt_p99_ms"] = percentile(trips, 0.99)
    finally:
        for process in workers + [receiver]:
            stopProcess(process)
        log.close()
    return figures


def liveMemory(workdir, redis):
    redis.stop()
    redis.start()
    import redis as redispy

    client = redispy.Redis.from_url(redis.url)
    before = client.info("memory")["used_memory"]
    port = freePort()
    directory = os.path.join(workdir, "memory")
    os.makedirs(directory)
    log = open(os.path.join(directory, "log.txt"), "wb")
    receiver = _spawn(["imageproto", "--port", f"tcp:{port}:interface=127.0.0.1", "--bus", redis.url], directory, log)
    try:
        _waitPort(port, receiver)
        sender = _spawn(["imageproto-sender", "--connect", f"tcp:127.0.0.1:{port}", "--fps", "30",
                         "--width", "640", "--height", "480", "--name", "live"], directory, log)
        time.sleep(12)
        stopProcess(sender)
        after = client.info("memory")["used_memory"]
        length = client.xlen("imageproto:frames:{live}")
        sizes = [len(f[b"jpeg"]) for _, f in client.xrange("imageproto:frames:{live}", count=20)]
    finally:
        stopProcess(receiver)
        log.close()
    return {"entries": length, "used_memory_mb": (after - before) / 1e6,
            "mean_jpeg_kb": statistics.mean(sizes) / 1e3 if sizes else None}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--detect", default="echo,faces")
    parser.add_argument("--fleet", default="1,2,4")
    parser.add_argument("--frames", type=int, default=240)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args(argv)
    fleets = [int(n) for n in args.fleet.split(",")]
    workdir = tempfile.mkdtemp(prefix="bench-bus-")
    clip = os.path.join(workdir, "clip.avi")
    writeClip(clip, frames640(args.frames))
    redis = RedisServer()
    redis.start()
    try:
        for detect in args.detect.split(","):
            table = {}
            for repetition in range(args.repeat):
                configs = [0] + fleets
                if repetition % 2:
                    configs.reverse()
                for fleet in configs:
                    label = f"{detect}-{'inprocess' if fleet == 0 else f'bus{fleet}'}-{repetition}"
                    figures = run(detect, fleet, clip, args.frames, workdir, redis, label)
                    print(json.dumps({"run": label, **{k: round(v, 3) for k, v in figures.items()}}), flush=True)
                    table.setdefault(fleet, []).append(figures)
            base = {k: statistics.median(f[k] for f in table[0]) for k in table[0][0]}
            print(f"{detect}: median of {args.repeat}; ratio to in-process in brackets")
            for fleet, runs in table.items():
                med = {k: statistics.median(f[k] for f in runs) for k in runs[0]}
                name = "in-process" if fleet == 0 else f"bus, {fleet} worker{'s' if fleet > 1 else ''}"
                cells = []
                for k, v in med.items():
                    ratio = f" ({v / base[k]:.2f}x)" if base.get(k) else ""
                    cells.append(f"{k} {v:.2f}{ratio}")
                print(f"  {name:18s} " + "  ".join(cells), flush=True)
        print("live stream memory:", json.dumps(liveMemory(workdir, redis)))
    finally:
        redis.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
