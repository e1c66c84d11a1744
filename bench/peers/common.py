# -*- test-case-name: tests.test_bench_peers -*-
"""
What every part of C{bench.peers} shares: the scenarios and peers, the
test frames, what a child process measures about itself, and the pure
functions that turn runs into figures and the table.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
import time

from attrs import frozen

__all__ = [
    "PEERS",
    "SCENARIOS",
    "Scenario",
    "percentile",
    "measure",
    "summarise",
    "formatTable",
]

#: Column order of the table; the first is the baseline of every ratio.
PEERS = (
    "plain",
    "imageproto",
    "imageproto.connect",
    "imagezmq REQ/REP",
    "imagezmq PUB/SUB",
    "NetGear",
)


@frozen
class Scenario:
    """
    One line of the issue's list.

    @ivar frameset: C{"640"} or C{"1280"}: which frames the sender cycles.
    @ivar encode: the sender JPEG-encodes numpy images (q90) and the
        receiver decodes every frame; otherwise pre-encoded JPEG bytes go
        through untouched.
    @ivar rate: frames per second per sender, 0 for back to back.
    @ivar senders: sender processes into the one receiver.
    @ivar framesKey: which count option sizes the run (C{frames},
        C{encode_frames}, C{latency_frames}).
    """

    name: str
    title: str
    frameset: str
    encode: bool
    rate: float
    senders: int
    framesKey: str


SCENARIOS = {
    s.name: s
    for s in [
        Scenario("S1", "transport 640x480", "640", False, 0.0, 1, "frames"),
        Scenario("S2", "encode+send+decode 640x480", "640", True, 0.0, 1, "encode_frames"),
        Scenario("S3", "30 fps capture->decoded", "640", True, 30.0, 1, "latency_frames"),
        Scenario("S4", "8 senders -> 1, transport", "640", False, 0.0, 8, "frames"),
        Scenario("S5", "transport 1280x720", "1280", False, 0.0, 1, "frames_720"),
    ]
}

_SIZES = {"640": (640, 480), "1280": (1280, 720)}
_QUALITY = 90


# -- frames --------------------------------------------------------------------


def _image(width: int, height: int, sigma: float, seed: int):
    import numpy

    y, x = numpy.mgrid[0:height, 0:width]
    base = numpy.dstack(
        [x * 255 / width, y * 255 / height, (x + y) * 255 / (width + height)]
    ).astype(numpy.float32)
    rng = numpy.random.default_rng(seed)
    return numpy.clip(base + rng.normal(0, sigma, base.shape), 0, 255).astype(numpy.uint8)


def encodeJpeg(image) -> bytes:
    """
    cv2.imencode at quality 90, as every S2/S3 sender but NetGear's does.
    """
    import cv2

    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, _QUALITY])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def decodeJpeg(data):
    """
    cv2.imdecode of JPEG bytes (or a buffer) into a BGR array.
    """
    import cv2
    import numpy

    image = cv2.imdecode(numpy.frombuffer(data, numpy.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError("not a JPEG")
    return image


def writeFrames(directory: str, count: int = 5, target: int = 63_000) -> dict:
    """
    Write C{count} noisy-gradient BGR images per size (C{<size>/N.npy}) and
    their q90 JPEGs (C{<size>/N.jpg}); the noise is chosen so that a 640x480
    frame is about C{target} bytes, and the 1280x720 frames use the same.

    @return: mean JPEG bytes per frameset.
    """
    import numpy

    lo, hi = 0.5, 20.0
    for _ in range(12):
        sigma = (lo + hi) / 2
        if len(encodeJpeg(_image(640, 480, sigma, 0))) < target:
            lo = sigma
        else:
            hi = sigma
    means = {}
    for name, (w, h) in _SIZES.items():
        os.makedirs(os.path.join(directory, name), exist_ok=True)
        sizes = []
        for i in range(count):
            image = _image(w, h, sigma, 1000 + i)
            numpy.save(os.path.join(directory, name, f"{i}.npy"), image)
            jpeg = encodeJpeg(image)
            sizes.append(len(jpeg))
            with open(os.path.join(directory, name, f"{i}.jpg"), "wb") as f:
                f.write(jpeg)
        means[name] = statistics.mean(sizes)
    return means


def warmCodecs(directory: str, netGear: bool = False) -> None:
    """
    Encode and decode one frame before a run, so that the first frame does
    not pay for the codec's set-up (NetGear's is simplejpeg).
    """
    image = loadFrames(directory, "640", images=True)[0]
    decodeJpeg(encodeJpeg(image))
    if netGear:
        import simplejpeg

        simplejpeg.decode_jpeg(simplejpeg.encode_jpeg(image, quality=90, colorspace="BGR"))


def loadFrames(directory: str, frameset: str, images: bool) -> list:
    """
    The JPEG bytes, or the numpy images, of one frameset.
    """
    import numpy

    folder = os.path.join(directory, frameset)
    ext = ".npy" if images else ".jpg"
    names = sorted(n for n in os.listdir(folder) if n.endswith(ext))
    if images:
        return [numpy.load(os.path.join(folder, n)) for n in names]
    frames = []
    for n in names:
        with open(os.path.join(folder, n), "rb") as f:
            frames.append(f.read())
    return frames


# -- what a child measures -------------------------------------------------------


def cpuSeconds() -> float:
    """
    User + system CPU of this process so far, all threads.
    """
    t = os.times()
    return t.user + t.system


def peakKiB(pid: int | str = "self") -> int:
    """
    C{VmHWM} (peak resident set) of a process, in KiB; 0 if unreadable.
    """
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def processCpu(pid: int) -> float:
    """
    User + system CPU seconds of process C{pid} so far, all threads.
    """
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # utime and stime are the 14th and 15th fields; the split begins at the 3rd.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def emit(result: dict) -> None:
    """
    One JSON line on stdout, for the parent.
    """
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


class Pacer:
    """
    Waits until frame C{n} is due at C{rate} per second (no wait at 0).
    """

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self.start = time.perf_counter()

    def wait(self, n: int) -> None:
        if self.interval:
            delay = self.start + n * self.interval - time.perf_counter()
            if delay > 0:
                time.sleep(delay)


# -- figures -----------------------------------------------------------------------


def percentile(values: list[float], fraction: float) -> float:
    """
    The C{fraction} (0..1) percentile of C{values}, by nearest rank; NaN
    for no values.
    """
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1))
    return ordered[rank]


#: Frames at the start of a paced run left out of its latencies: the first
#: ones pay for connection set-up and the first trips through each process.
LATENCY_WARMUP = 10


def measure(senders: list[dict], receiver: dict) -> dict:
    """
    One run's figures from what its processes reported.

    Each sender gives C{sent}, C{start} and C{end} (C{time.time()} of its
    first frame and of its last one delivered or handed over), C{cpu}
    (seconds over that span), C{hwm} (KiB) and, when paced, C{captures}
    (capture time per seq).  The receiver gives C{received} (distinct
    frames), C{bytes}, C{cpu}, C{hwm}, optionally C{last} (C{time.time()}
    of its last frame) and C{arrivals} (C{[seq, time]} once decoded).

    @return: C{fps} and C{mbps} (received over first send to the later of
        the last delivery and the last arrival), C{senderCpu} and
        C{receiverCpu} (CPU seconds per 1000 frames, sent resp.
        received), C{senderKiB} (the largest sender) and C{receiverKiB},
        C{lost} (sent minus received), and C{p50}/C{p99} (ms, capture to
        decoded, leaving out the first L{LATENCY_WARMUP} frames) when the
        run kept captures.
    """
    sent = sum(s["sent"] for s in senders)
    received = receiver["received"]
    start = min(s["start"] for s in senders)
    end = max([s["end"] for s in senders] + [receiver.get("last") or 0.0])
    span = max(end - start, 1e-9)
    result = {
        "fps": received / span,
        "mbps": receiver["bytes"] / span / 1e6 if receiver["bytes"] is not None else None,
        "senderCpu": sum(s["cpu"] for s in senders) * 1000 / max(sent, 1),
        "receiverCpu": receiver["cpu"] * 1000 / max(received, 1),
        "senderKiB": max(s["hwm"] for s in senders),
        "receiverKiB": receiver["hwm"],
        "lost": sent - received,
    }
    captures = senders[0].get("captures")
    if len(senders) == 1 and captures and receiver.get("arrivals"):
        latencies = [
            t - captures[seq]
            for seq, t in receiver["arrivals"]
            if LATENCY_WARMUP <= seq < len(captures)
        ]
        result["p50"] = percentile(latencies, 0.5) * 1000
        result["p99"] = percentile(latencies, 0.99) * 1000
    return result


#: Figures in table order: key, label, format, whether a difference to the
#: baseline is shown next to the ratio (latencies).
FIGURES = [
    ("fps", "frames/s", "{:,.0f}", False),
    ("mbps", "MB/s", "{:,.1f}", False),
    ("p50", "p50 ms", "{:.2f}", True),
    ("p99", "p99 ms", "{:.2f}", True),
    ("senderCpu", "send CPU s/1000f", "{:.3f}", False),
    ("receiverCpu", "recv CPU s/1000f", "{:.3f}", False),
    ("senderKiB", "send peak MiB", None, False),
    ("receiverKiB", "recv peak MiB", None, False),
    ("lost", "lost (max)", "{:.0f}", False),
]


def summarise(runs: dict, baseline: str = "plain") -> dict:
    """
    Medians over repetitions, and ratios against the baseline.

    @param runs: C{{scenario: {peer: [figures per repetition, or
        {"error": reason}]}}}.
    @return: C{{scenario: {peer: {key: (median, ratio, difference)} or
        {"error": reason}}}}; the ratio is the median of the per-repetition
        ratios to the baseline's figure of the same repetition (the pairs
        ran minutes apart at most), the difference likewise (latencies).
        C{lost} is the largest over repetitions.
    """
    out = {}
    for scenario, peers in runs.items():
        base = peers.get(baseline, [])
        out[scenario] = {}
        for peer, reps in peers.items():
            good = [r for r in reps if "error" not in r]
            if not good:
                errors = [r["error"] for r in reps if "error" in r]
                out[scenario][peer] = {"error": errors[0] if errors else "no runs"}
                continue
            figures = {}
            for key in good[0]:
                values = [r[key] for r in good if r.get(key) is not None]
                if not values:
                    continue
                if key == "lost":
                    figures[key] = (max(values), None, None)
                    continue
                ratios, diffs = [], []
                for i, r in enumerate(reps):
                    b = base[i] if i < len(base) else {}
                    if "error" in r or r.get(key) is None or b.get(key) is None:
                        continue
                    if b[key]:
                        ratios.append(r[key] / b[key])
                    diffs.append(r[key] - b[key])
                figures[key] = (
                    statistics.median(values),
                    statistics.median(ratios) if ratios else None,
                    statistics.median(diffs) if diffs else None,
                )
            out[scenario][peer] = figures
    return out


def _cell(fmt, key, figure, isBase: bool, showDiff: bool) -> str:
    value, ratio, diff = figure
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    text = f"{value / 1024:,.0f}" if fmt is None else fmt.format(value)
    if isBase or key == "lost":
        return text
    if showDiff and diff is not None:
        return f"{text} ({diff:+.2f})"
    if ratio is not None:
        return f"{text} ({ratio:.2f}x)"
    return text


def formatTable(summary: dict, peers: list[str], scenarios: list[str]) -> str:
    """
    The text table: one block of rows per scenario, one column per peer,
    each figure followed by its ratio to the first peer's (latencies: by
    the difference in ms), except in the first peer's column.
    """
    rows = [("scenario", "figure", *peers)]
    for scenario in scenarios:
        title = SCENARIOS[scenario].title if scenario in SCENARIOS else scenario
        byPeer = summary.get(scenario, {})
        first = True
        for key, label, fmt, showDiff in FIGURES:
            cells = []
            for i, peer in enumerate(peers):
                figures = byPeer.get(peer)
                if figures is None:
                    cells.append("")
                elif "error" in figures:
                    cells.append(_short(figures["error"]) if key == "fps" else "")
                elif key in figures:
                    cells.append(_cell(fmt, key, figures[key], i == 0, showDiff))
                else:
                    cells.append(None)
            if all(c is None or c == "" for c in cells):
                continue
            rows.append(
                (f"{scenario} {title}" if first else "", label, *[c or "-" for c in cells])
            )
            first = False
        rows.append(None)
    widths = [max(len(r[i]) for r in rows if r) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        if row is None:
            continue
        cells = [c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _short(reason: str, limit: int = 40) -> str:
    reason = " ".join(str(reason).split())
    return reason if len(reason) <= limit else reason[: limit - 3] + "..."
