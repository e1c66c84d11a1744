"""
Helpers several test modules share; import them from here
(C{from tests.helpers import framed}), never from another test module.

  - L{tests.helpers.wirebytes}: JPEG stand-ins, framed messages and
    decoding what a protocol wrote, PROTOCOL.md's worked examples.
  - L{tests.helpers.jpegs}: real JPEGs, made with OpenCV or read from
    tests/data.
  - L{tests.helpers.receiving}: the receiver's registry and pipeline without
    sockets, a recording frame channel, a stub registry, received frames.
  - L{tests.helpers.sending}: a FrameSender stand-in.
  - L{tests.helpers.threads}: fake C{runInThread}s.
  - L{tests.helpers.certificates}: a CA and certificates for TLS tests.
  - L{tests.helpers.processes}: real C{twistd} processes.
"""

from tests.helpers.certificates import makeCertificates, sslPort
from tests.helpers.jpegs import DATA, makeJpeg, readJpeg
from tests.helpers.processes import SUMMARY, TwistdProcesses
from tests.helpers.receiving import (
    FakeStreams,
    RecordingChannel,
    RecordingConsumer,
    Rejected,
    StubRegistry,
    deliver,
    receivedFrame,
    receiverStack,
    savedFrame,
    savedFrames,
)
from tests.helpers.sending import FakeSender
from tests.helpers.threads import FakeThreads, InferenceThreads
from tests.helpers.wirebytes import (
    FAKE_JPEG,
    TINY_JPEG,
    framed,
    lengthPrefixed,
    messages,
    protocolBlocks,
    takeMessages,
    wireBytes,
)

__all__ = [
    "DATA",
    "FAKE_JPEG",
    "FakeSender",
    "FakeStreams",
    "FakeThreads",
    "InferenceThreads",
    "RecordingChannel",
    "RecordingConsumer",
    "Rejected",
    "SUMMARY",
    "StubRegistry",
    "TINY_JPEG",
    "TwistdProcesses",
    "deliver",
    "framed",
    "lengthPrefixed",
    "makeCertificates",
    "makeJpeg",
    "messages",
    "protocolBlocks",
    "readJpeg",
    "receivedFrame",
    "receiverStack",
    "savedFrame",
    "savedFrames",
    "sslPort",
    "takeMessages",
    "wireBytes",
]
