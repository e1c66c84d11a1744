"""
imageproto: stream camera and video frames from edge devices to Twisted
servers that view, record and run inference on them.
"""

__version__ = "0.1.0"


def connect(*args, **kwargs):
    """
    Open a named stream to a receiver from a plain script: see
    L{imageproto.client.connect}.
    """
    from imageproto.client import connect as _connect

    return _connect(*args, **kwargs)


def listen(*args, **kwargs):
    """
    Receive frames in a plain script: a receiver runs in a background
    thread and the returned hub yields its frames; see
    L{imageproto.hub.listen}.
    """
    from imageproto.hub import listen as _listen

    return _listen(*args, **kwargs)
