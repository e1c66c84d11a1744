# -*- test-case-name: tests.test_imagezmq -*-
"""
L{ImageHub}: imagezmq's hub over imageproto's blocking hub.
"""

from __future__ import annotations


from imageproto.client.transport import parseAddress
from imageproto.imagezmq.messages import msgFrom

class ImageHub:
    """
    imagezmq's C{ImageHub} over imageproto: the receiver.

    @param open_port: C{"tcp://*:port"}: listen on every interface for
        senders that dial the hub; with C{REQ_REP=True},
        C{"tcp://ADDRESS:port"} listens on that interface.  With
        C{REQ_REP=False}, C{"tcp://HOST:port"} connects to the publishing
        sender there (imagezmq's SUB socket), reconnecting while it is not
        up and whenever it restarts.
    @param REQ_REP: C{True}: each sender waits for L{send_reply};
        C{False}: senders never wait.
    @param options: more L{imageproto.listen} keywords (C{saveDir},
        C{statsFile}, C{tokens}, C{queueSize}, ...).
    """

    def __init__(self, open_port="tcp://*:5555", REQ_REP=True, **options) -> None:
        from imageproto.hub import listen

        self.REQ_REP = REQ_REP
        self._frame = None
        if not REQ_REP and not self._wildcard(open_port):
            # imagezmq's SUB socket: connect to the publisher.
            self.hub = listen(None, replies=False, **options)
            try:
                self.hub.connect(open_port)
            except BaseException:
                self.hub.close()
                raise
            return
        endpoint = self._endpoint(open_port)
        self.hub = listen(endpoint, replies=bool(REQ_REP), **options)

    @staticmethod
    def _wildcard(open_port) -> bool:
        return parseAddress(open_port).host in ("*", "", "0.0.0.0")

    @staticmethod
    def _endpoint(open_port) -> str:
        text = str(open_port)
        if text.startswith("tcp://"):
            text = text[len("tcp://"):]
        host, _, port = text.rpartition(":")
        if host in ("*", "", "0.0.0.0"):
            return f"tcp:{int(port)}"
        return f"tcp:{int(port)}:interface={host.strip('[]')}"

    def connect(self, open_port) -> None:
        """
        With C{REQ_REP=False}, also receive from the publishing sender at
        C{open_port} (C{"tcp://HOST:port"}), as imagezmq's SUB hub
        subscribes to several PUB senders.  With C{REQ_REP} senders connect
        to the hub themselves, so there is nothing to do.
        """
        if not self.REQ_REP:
            self.hub.connect(open_port)

    def _next(self):
        if self.REQ_REP and self._frame is not None:
            # A REP socket must answer before it receives again.
            raise RuntimeError("send_reply() must answer the previous frame first (REQ_REP)")
        frame = self.hub.get()
        if self.REQ_REP:
            self._frame = frame
        return msgFrom(frame.metadata, frame.stream), frame

    def recv_image(self, copy=False):
        """
        The next frame, decoded: C{(msg, image)}.
        """
        msg, frame = self._next()
        return msg, frame.image()

    def recv_jpg(self, copy=False):
        """
        The next frame as sent: C{(msg, jpg_buffer)}.
        """
        msg, frame = self._next()
        return msg, frame.jpeg

    def send_reply(self, reply_message=b"OK") -> None:
        """
        Answer the last frame received (C{REQ_REP}): its sender's
        C{send_image}/C{send_jpg} returns C{reply_message}.
        """
        frame, self._frame = self._frame, None
        if frame is None:
            return
        if isinstance(reply_message, str):
            reply_message = reply_message.encode("utf-8")
        text = bytes(reply_message).decode("utf-8", "surrogateescape")
        frame.reply([{"reply": text}])

    def close(self) -> None:
        """
        Stop the receiver.
        """
        self.hub.close()

    def __enter__(self) -> "ImageHub":
        return self

    def __exit__(self, exc_type, exc_val, exc_tb) -> None:
        self.close()
