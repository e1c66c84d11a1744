"""
The FRAME codec on its own, in one process: the cost of building a
L{imageproto.wire.Frame}, encoding it behind its length prefix and decoding
it again, for a ~60 KB JPEG, with no metadata and (where the imageproto
being measured has it) with a fixed ~100-byte metadata object.

Run from the checkout's root::

    python -m bench.frame_codec [--frames 20000] [--repeat 7]

To compare two trees, run the same file against each (alternating, on a
quiet machine), for example::

    (cd /tmp/base && PYTHONPATH=. python /path/to/bench/frame_codec.py)

Each figure is the best of C{--repeat} timings of C{--frames} round trips,
in microseconds per frame (the best, not the median, because other load on
a shared machine only ever adds time).
"""

from __future__ import annotations

import argparse
import os
import time

from imageproto import wire

_JPEG = b"\xff\xd8\xff" + os.urandom(60_000) + b"\xff\xd9"
_METADATA = {"site": "door", "camera": "porch-2", "floor": 2, "gps": [47.3769, 8.5417],
             "trigger": "motion", "id": "c0ffee"}


def _roundTrips(frames: int, metadata) -> float:
    """
    Seconds for C{frames} build-encode-decode round trips.
    """
    Frame, encode, decode = wire.Frame, wire.encodeFramed, wire.decodeMessage
    extra = () if metadata is None else (metadata,)
    start = time.perf_counter()
    for seq in range(frames):
        data = encode(Frame(seq, _JPEG, 1.0, 2.0, 0, *extra))
        decode(memoryview(data)[4:])
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)
    kinds = {"no metadata": None}
    if hasattr(wire, "encodeMetadata"):
        kinds["metadata"] = wire.encodeMetadata(_METADATA)
    best = {kind: float("inf") for kind in kinds}
    for _ in range(args.repeat):
        for kind, metadata in kinds.items():
            best[kind] = min(best[kind], _roundTrips(args.frames, metadata))
    print(f"imageproto from {os.path.dirname(wire.__file__)}")
    for kind, seconds in best.items():
        print(f"  {kind:12} {seconds / args.frames * 1e6:6.2f} us per frame "
              f"(build, encode, decode; best of {args.repeat} x {args.frames})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
