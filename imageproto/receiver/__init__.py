"""
The receiver: the embeddable L{ReceiverService}, its registry of named
streams, the pipeline of frame consumers, and per-stream statistics.

    from imageproto.receiver import ReceiverService
"""

__all__ = ["ReceiverService", "ReceivedFrame"]


def __getattr__(name: str):
    # Lazy, so that importing a submodule (the registry, say) does not pull
    # in the whole service.
    if name == "ReceiverService":
        from imageproto.receiver.service import ReceiverService

        return ReceiverService
    if name == "ReceivedFrame":
        from imageproto.receiver.consumers import ReceivedFrame

        return ReceivedFrame
    raise AttributeError(name)
