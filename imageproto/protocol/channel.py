# -*- test-case-name: tests.test_pipeline -*-
"""
L{IFrameChannel}: what every protocol that receives frames offers the
receiver's pipeline (L{imageproto.receiver.pipeline}), so that the pipeline
can settle and answer a frame without knowing which protocol brought it.
"""

from zope.interface import Attribute, Interface

__all__ = ["IFrameChannel"]


class IFrameChannel(Interface):
    """
    Where a frame came from, as the pipeline sees it: one connection.  Called
    in the reactor thread only.
    """

    wantsImage = Attribute(
        "True when this peer's answer is a picture (a compatibility client "
        "that gets the marked-up image back), so a detector should draw one."
    )

    def acknowledge(seq):
        """
        Frame C{seq} is accepted: send ACK (if the protocol has one).
        """

    def reject(seq, reason, retry=False):
        """
        Frame C{seq} is refused for C{reason}: send REJECT.  With C{retry}
        the condition is temporary (a full disk) and the peer may send the
        frame again later.
        """

    def sendResult(result):
        """
        Send C{result} (a L{wire.Result}), if the peer takes answers.
        """

    def isOpen():
        """
        Whether the connection is still there to answer on.
        """

    def pauseReading(reason):
        """
        Stop reading from this peer until L{resumeReading} with the same
        C{reason}.
        """

    def resumeReading(reason):
        """
        Undo L{pauseReading} for C{reason}.
        """
