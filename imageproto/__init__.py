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
