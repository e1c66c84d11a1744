"""
twistd plugins for imageproto: C{twistd imageproto} (the receiver),
C{twistd imageproto-sender} and C{twistd imageproto-worker} (a bus worker).

Only L{ServiceMaker}s live here; the tap modules are named as strings so that
plugin discovery imports neither OpenCV nor the rest of the package.
"""

from twisted.application.service import ServiceMaker

imageprotoReceiver = ServiceMaker(
    "imageproto receiver",
    "imageproto.tap.receiver",
    "Receive named frame streams; record, view, detect and report statistics.",
    "imageproto",
)

imageprotoSender = ServiceMaker(
    "imageproto sender",
    "imageproto.tap.sender",
    "Capture frames from a video, camera, image folder or test pattern and "
    "stream them to an imageproto receiver.",
    "imageproto-sender",
)

imageprotoWorker = ServiceMaker(
    "imageproto worker",
    "imageproto.tap.worker",
    "Run a detector on frames from an imageproto Redis bus, as one of a fleet.",
    "imageproto-worker",
)
