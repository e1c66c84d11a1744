"""
imageproto: stream camera and video frames from edge devices to Twisted
servers that view, record and run inference on them.
"""

__version__ = "0.1.0"
