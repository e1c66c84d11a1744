# -*- test-case-name: tests.test_tap_sender -*-
"""
What a sender sends: one small frozen spec per kind of source, made from the
command line by L{imageproto.tap.config.SenderConfig} and turned into a
source by L{imageproto.tap.sender.buildSource}.
"""

from __future__ import annotations

from attrs import frozen

__all__ = ["VideoSpec", "CameraSpec", "ImagesSpec", "PatternSpec"]


@frozen
class VideoSpec:
    """
    Send a video file, paced at its own rate unless C{--fps}.

    @ivar path: the absolute path.
    @ivar loop: start again at the end instead of stopping.
    """

    path: str
    loop: bool = False


@frozen
class CameraSpec:
    """
    Send a live camera: an C{int} device index or a URL OpenCV opens.
    """

    device: int | str


@frozen
class ImagesSpec:
    """
    Send each image in a folder (absolute path) once, sorted by name.
    """

    directory: str


@frozen
class PatternSpec:
    """
    Send the built-in moving test pattern.
    """

    width: int = 640
    height: int = 480
