# -*- test-case-name: tests.test_compat -*-
"""
The compatibility listeners as a feature of the receiver: extra ports
speaking the protocols of L{imageproto.protocol.compat}, whose frames join
the receiver's pipeline like any sender's.
"""

from __future__ import annotations

from attrs import frozen

from imageproto.protocol import compat

__all__ = ["CompatConfig", "attachCompat"]


@frozen
class CompatConfig:
    """
    Server endpoint descriptions to listen on, or C{None} for none.

    @ivar base64: for L{compat.Base64StreamProtocol} clients.
    @ivar le32: for L{compat.LengthPrefixedImageProtocol} clients.
    @ivar maxConnections: connections over this, per port, are closed at
        once (C{--compat-max-connections}); C{None} for no cap.
    """

    base64: str | None = None
    le32: str | None = None
    maxConnections: int | None = 64


def attachCompat(receiver, config: CompatConfig) -> list:
    """
    Add a listening child service to an
    L{imageproto.receiver.service.ReceiverService} for each endpoint of
    C{config}; a port that cannot be opened fails twistd's start.

    @return: the services added.
    """
    services = []
    for description, protocol in (
        (config.base64, compat.Base64StreamProtocol),
        (config.le32, compat.LengthPrefixedImageProtocol),
    ):
        if description is not None:
            service = compat.listen(receiver, description, protocol, config.maxConnections)
            service.setServiceParent(receiver)
            services.append(service)
    return services
