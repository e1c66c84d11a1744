# -*- test-case-name: tests.test_bus -*-
"""
The bus options: C{--bus} and its companions on C{twistd imageproto}, and
the typed configs of the receiver's publisher (L{busConfig}) and of
C{twistd imageproto-worker} (L{workerConfig}).
"""

from __future__ import annotations

from twisted.python import usage

from imageproto import wire
from imageproto.features.bus.publisher import BusConfig, defaultId
from imageproto.features.bus.worker import WorkerConfig, defaultName
from imageproto.tap import checks

__all__ = ["RECEIVER_OPTIONS", "checkReceiverOptions", "busConfig", "workerConfig", "checkUrl", "busUrls"]

RECEIVER_OPTIONS = [
    ["bus", None, None,
     "Publish every accepted frame to this Redis (redis://[:PASSWORD@]HOST:PORT/DB, "
     "rediss://... for TLS) for imageproto-worker processes, and answer each "
     "frame with their RESULT.  Several URLs separated by commas spread the "
     "streams over several Redis servers by a hash of their name (give every "
     "receiver and worker the same list)."],
    ["bus-id", None, None,
     "This receiver's name on the bus (its results stream) [default: host-pid-random]."],
    ["bus-reply", None, "detections",
     "With --bus: detections (workers answer every frame with a RESULT) or none "
     "(publish only)."],
    ["bus-backlog", None, 64,
     "With --bus: finite-source frames waiting for Redis before reading from "
     "their senders pauses."],
    ["bus-live-backlog", None, 16,
     "With --bus: live frames waiting for Redis before the oldest is dropped."],
    ["bus-live-length", None, 256,
     "With --bus: entries kept per live stream in Redis (XADD MAXLEN ~)."],
    ["bus-awaiting", None, 1024,
     "With --bus: frames remembered (with their JPEG) while they wait for a "
     "worker's answer."],
    ["bus-answer-timeout", None, 30.0,
     "With --bus: seconds after which a finite-source frame still without an "
     "answer is published again (Redis may have lost it in a restart)."],
]

_CHECKS = [
    ("bus-backlog", checks.number(int, 1)),
    ("bus-live-backlog", checks.number(int, 1)),
    ("bus-live-length", checks.number(int, 1)),
    ("bus-awaiting", checks.number(int, 1)),
    ("bus-answer-timeout", checks.number(float, 0.001)),
]


def checkUrl(value: str) -> str:
    """
    A redis:// or rediss:// URL, or several separated by commas, as a usage
    error naming C{--bus} otherwise.
    """
    from imageproto.features.bus.link import checkUrl as check
    from imageproto.features.bus.shards import splitUrls

    urls = splitUrls(value)
    if not urls:
        raise usage.UsageError(f"--bus {value!r}: no URL")
    if len(set(urls)) != len(urls):
        raise usage.UsageError(f"--bus {value!r}: a server is named twice")
    try:
        for url in urls:
            check(url)
    except ValueError as e:
        raise usage.UsageError(str(e)) from None
    return value


def busUrls(options) -> list[str]:
    """
    The Redis URLs of checked options' C{--bus}, in order.
    """
    from imageproto.features.bus.shards import splitUrls

    return splitUrls(options["bus"])


def checkName(option: str, value: str | None) -> None:
    if value is not None and not wire.isStreamName(value):
        raise usage.UsageError(f"--{option} {value!r}: 1-64 characters of A-Z a-z 0-9 . _ -")


def checkReceiverOptions(options) -> None:
    """
    Check the receiver's bus options (from its tap's C{postOptions}).

    @raise usage.UsageError: naming what is wrong.
    """
    if not options.get("bus"):
        return
    checkUrl(options["bus"])
    if options.get("detect"):
        raise usage.UsageError(
            "--detect runs the detector in this receiver; with --bus run it in "
            "imageproto-worker --bus URL --detect NAME instead"
        )
    if options.get("bus-reply", "detections") not in ("detections", "none"):
        raise usage.UsageError("--bus-reply must be detections or none")
    checkName("bus-id", options.get("bus-id"))
    checks.apply(options, _CHECKS)


def busConfig(options) -> BusConfig | None:
    """
    The publisher's config from checked receiver options, or C{None} without
    C{--bus}.
    """
    if not options.get("bus"):
        return None
    urls = busUrls(options)
    return BusConfig(
        url=urls[0],
        shards=tuple(urls[1:]),
        receiverId=options.get("bus-id") or defaultId(),
        replies=options.get("bus-reply", "detections") != "none",
        maxBacklog=options["bus-backlog"],
        maxLive=options["bus-live-backlog"],
        liveLength=options["bus-live-length"],
        maxAwaiting=options["bus-awaiting"],
        answerTimeout=options["bus-answer-timeout"],
    )


def workerConfig(options, detector) -> WorkerConfig:
    """
    A worker's config from its checked options and loaded detector (or
    C{None}), for the first Redis server of C{--bus} (L{imageproto.tap.worker}
    makes one detecting service per server).  C{--group} names the
    detectors' group with C{--detect}, and otherwise the one group of the
    hosted consumers.
    """
    from imageproto.tap.config import recordingConfig, webConfig

    group = options["group"]
    recording, web = recordingConfig(options), webConfig(options)
    return WorkerConfig(
        url=busUrls(options)[0],
        detector=detector,
        workers=options["workers"],
        claimAfter=options["claim-after"],
        maxAge=options["max-age"],
        group=group or "detect",
        name=options["name"] or defaultName(),
        saveDir=options["save-dir"],
        recording=recording,
        web=web,
        statsFile=options["stats-file"],
        statsInterval=options["stats-interval"],
        consumerGroup=None if detector is not None else group,
    )
