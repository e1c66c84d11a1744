# -*- test-case-name: tests.test_bench_peers -*-
"""
Runs every (scenario, peer) pair as fresh processes on 127.0.0.1 and prints
the table; C{python -m bench.peers --help} for the options.

For each repetition and scenario the peers run one after another, in an
order reversed on every other repetition.  A pair that fails (or a peer
that cannot be imported) is shown with its reason and the rest goes on.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from bench.peers.common import (
    PEERS,
    SCENARIOS,
    formatTable,
    measure,
    peakKiB,
    processCpu,
    summarise,
    writeFrames,
)

__all__ = ["main", "runPair", "availability"]

#: What each peer needs to import, beyond this checkout.
_NEEDS = {
    "imagezmq REQ/REP": ("zmq", "imagezmq"),
    "imagezmq PUB/SUB": ("zmq", "imagezmq"),
    "NetGear": ("zmq", "simplejpeg", "vidgear.gears"),
}


def availability(peers) -> dict:
    """
    C{{peer: None or "unavailable: reason"}}.
    """
    out = {}
    for peer in peers:
        out[peer] = None
        for module in _NEEDS.get(peer, ()):
            try:
                importlib.import_module(module)
            except Exception as e:  # an ImportError, or a broken install
                out[peer] = f"unavailable: {module}: {e}"
                break
    return out


# -- processes ---------------------------------------------------------------------


class _Child:
    """
    A child process whose stdout JSON lines are read by a thread, so the
    parent can wait for one with a timeout.
    """

    def __init__(self, command: list[str], log: str) -> None:
        self.logPath = log
        with open(log, "a") as f:
            self.process = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=f, text=True,
                start_new_session=True,
            )  # fmt: skip
        self.lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def result(self, timeout: float) -> dict:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"no answer in {timeout:.0f} s; see {self.logPath}") from None
        if line is None:
            self.process.wait(5)
            raise RuntimeError(f"exited with {self.process.returncode}: {self._tail()}")
        result = json.loads(line)
        if "error" in result and "sent" not in result:
            raise RuntimeError(result["error"])
        return result

    def _tail(self) -> str:
        with open(self.logPath) as f:
            lines = [l for l in f.read().splitlines() if l.strip()]
        return " | ".join(lines[-2:]) or f"see {self.logPath}"

    def stop(self) -> None:
        """
        SIGTERM, then SIGKILL after 5 s; always reaped.
        """
        stopProcess(self.process)


def stopProcess(process: subprocess.Popen, timeout: float = 5.0) -> None:
    """
    End a child we started (and its session: zmq and thread pools leave no
    grandchildren, but a twistd could): SIGTERM, then SIGKILL; reaped.
    """
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()


def _freePorts(count: int) -> list[int]:
    socks = []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


class _Twistd:
    """
    The real receiver, C{twistd -n imageproto}; its figures come from its
    C{--stats-file}, its CPU and peak memory from C{/proc}.
    """

    def __init__(self, workDir: str, log: str, deadline: float) -> None:
        from bench.peers.imageproto_side import twistdCommand

        self.port = _freePorts(1)[0]
        self.statsFile = os.path.join(workDir, f"stats-{self.port}.json")
        with open(log, "a") as f:
            self.process = subprocess.Popen(
                twistdCommand(self.port, self.statsFile), stdout=f, stderr=subprocess.STDOUT,
                cwd=workDir, start_new_session=True,
            )  # fmt: skip
        end = time.monotonic() + deadline
        while not _listening(self.port):
            if self.process.poll() is not None or time.monotonic() > end:
                raise RuntimeError(f"twistd -n imageproto did not listen; see {log}")
            time.sleep(0.05)
        self.cpu0 = processCpu(self.process.pid)

    def finish(self) -> dict:
        cpu = processCpu(self.process.pid) - self.cpu0
        hwm = peakKiB(self.process.pid)
        stopProcess(self.process, 30)
        with open(self.statsFile) as f:
            streams = json.load(f)["streams"]
        return {
            "received": sum(s["frames"] for s in streams.values()),
            "bytes": sum(s["bytes"] for s in streams.values()),
            "cpu": cpu,
            "hwm": hwm,
            "gaps": sum(s["gaps"] + s["duplicates"] + s["rejected"] for s in streams.values()),
        }

    def stop(self) -> None:
        stopProcess(self.process)


def runPair(peer: str, scenario, frames: int, workDir: str, profileDir: str | None = None,
            deadline: float = 120.0) -> dict:
    """
    One run of C{peer} in C{scenario}: a receiver and C{scenario.senders}
    senders, C{frames} frames in all, fresh processes.

    @return: the figures of L{bench.peers.common.measure}.
    """
    perSender = max(1, frames // scenario.senders)
    total = perSender * scenario.senders
    readyDir = tempfile.mkdtemp(dir=workDir, prefix="ready-")
    log = os.path.join(workDir, "children.log")
    tag = f"{peer.replace(' ', '_').replace('/', '-')}-{scenario.name}"

    def command(side: str, **extra) -> list[str]:
        argv = [
            sys.executable, "-m", "bench.peers.child", "--peer", peer, "--side", side,
            "--data", os.path.join(workDir, "frames"), "--frameset", scenario.frameset,
            "--rate", str(scenario.rate), "--senders", str(scenario.senders),
            "--ready-dir", readyDir, "--deadline", str(deadline),
        ]  # fmt: skip
        if scenario.encode:
            argv.append("--encode")
        if profileDir:
            argv += ["--profile", os.path.join(profileDir, f"{tag}-{side}{extra.get('name', '')}.prof")]
        for key, value in extra.items():
            argv += [f"--{key.replace('_', '-')}", str(value)]
        return argv

    names = [f"bench{i}" for i in range(scenario.senders)]
    started = []
    try:
        if peer in ("imageproto", "imageproto.connect") and not scenario.encode:
            receiver = _Twistd(workDir, log, 30)
            started.append(receiver)
            port = receiver.port
        elif peer == "imagezmq PUB/SUB":
            receiver = None
        else:
            extra = {"expect": total}
            if peer == "NetGear":
                netGearPorts = _freePorts(scenario.senders)
                extra["ports"] = ",".join(map(str, netGearPorts))
            receiver = _Child(command("receiver", **extra), log)
            started.append(receiver)
            port = receiver.result(30)["port"]

        senders = []
        for i, name in enumerate(names):
            senderPort = port if receiver is not None else None
            if peer == "NetGear":
                senderPort = netGearPorts[i]
            extra = dict(frames=perSender, name=name)
            if senderPort is not None:
                extra["port"] = senderPort
            senders.append(_Child(command("sender", **extra), log))
        started.extend(senders)
        if receiver is None:
            ports = [s.result(30)["port"] for s in senders]
            receiver = _Child(command("receiver", expect=total, ports=",".join(map(str, ports))), log)
            started.append(receiver)

        sent = [s.result(deadline + 15) for s in senders]
        errors = [s["error"] for s in sent if "error" in s]
        if isinstance(receiver, _Twistd):
            for s in senders:
                s.process.wait(15)
            got = receiver.finish()
        else:
            got = receiver.result(deadline + 15)
        figures = measure(sent, got)
        if errors:
            figures["note"] = errors[0]
        return figures
    finally:
        for child in started:
            child.stop()
        shutil.rmtree(readyDir, ignore_errors=True)


# -- the command ---------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.peers",
        description="imageproto against a plain socket, imagezmq and NetGear on "
        "127.0.0.1 (pip install -r bench/requirements.txt for the peers).",
    )
    add = parser.add_argument
    add("--repeat", type=int, default=3, help="repetitions; the table shows medians")
    add("--frames", type=int, default=20_000,
        help="frames per run of S1 and S4 (S4: in all, split among the senders)")
    add("--frames-720", type=int, default=6000, help="frames per run of S5")
    add("--encode-frames", type=int, default=1000, help="frames per run of S2")
    add("--latency-frames", type=int, default=150, help="frames per run of S3 (at 30 fps)")
    add("--scenarios", default=",".join(SCENARIOS), help="comma-separated, e.g. S1,S2")
    add("--peers", default=",".join(PEERS),
        help="comma-separated, from: " + ", ".join(PEERS) + " (plain is always run)")
    add("--json", help="write every run and the medians here")
    add("--profile", help="directory for cProfile files of the children (not the twistd receiver)")
    add("--deadline", type=float, default=120.0, help="seconds any one run may take")
    return parser


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    for s in scenarios:
        if s not in SCENARIOS:
            raise SystemExit(f"unknown scenario {s!r}; known: {', '.join(SCENARIOS)}")
    asked = [p.strip() for p in args.peers.split(",") if p.strip()]
    for p in asked:
        if p not in PEERS:
            raise SystemExit(f"unknown peer {p!r}; known: {', '.join(PEERS)}")
    peers = [p for p in PEERS if p == "plain" or p in asked]
    available = availability(peers)
    runnable = [p for p in peers if available[p] is None]
    if args.profile:
        os.makedirs(args.profile, exist_ok=True)

    started = time.monotonic()
    runs = {s: {p: [] for p in peers} for s in scenarios}
    with tempfile.TemporaryDirectory(prefix="imageproto-peers-") as workDir:
        means = writeFrames(os.path.join(workDir, "frames"))
        print(
            f"{datetime.datetime.now():%Y-%m-%d %H:%M}, {os.cpu_count()} CPUs; frames: "
            f"5 noisy-gradient images, JPEG q90, mean {means['640']:,.0f} bytes at 640x480, "
            f"{means['1280']:,.0f} at 1280x720; medians of {args.repeat} repetitions",
            flush=True,
        )
        for peer in peers:
            if available[peer]:
                print(f"  {peer}: {available[peer]}", flush=True)
        for rep in range(args.repeat):
            order = runnable if rep % 2 == 0 else runnable[::-1]
            for s in scenarios:
                scenario = SCENARIOS[s]
                frames = getattr(args, scenario.framesKey)
                for peer in order:
                    t0 = time.monotonic()
                    try:
                        r = runPair(peer, scenario, frames, workDir, args.profile, args.deadline)
                    except Exception as e:
                        r = {"error": f"failed: {e}"}
                    runs[s][peer].append(r)
                    print(f"  run {rep + 1} {s} {peer:20} {_brief(r)} "
                          f"[{time.monotonic() - t0:.1f} s]", flush=True)
    for s in scenarios:
        for peer in peers:
            if available[peer]:
                runs[s][peer] = [{"error": available[peer]}]

    summary = summarise(runs)
    print()
    print(formatTable(summary, peers, scenarios))
    print()
    print("In brackets: ratio to plain (median of the per-repetition ratios); "
          "for p50/p99 the difference to plain in ms. MiB = peak RSS (VmHWM). "
          f"Total time {time.monotonic() - started:.0f} s.")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"runs": runs, "summary": summary, "argv": sys.argv}, f, indent=1)
    return 0


def _brief(r: dict) -> str:
    if "error" in r:
        return r["error"]
    text = f"{r['fps']:9,.0f} frames/s  lost {r['lost']}"
    if "p50" in r:
        text += f"  p50 {r['p50']:.2f} ms p99 {r['p99']:.2f} ms"
    if "note" in r:
        text += f"  ({r['note']})"
    return text
