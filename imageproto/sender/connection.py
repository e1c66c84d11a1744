# -*- test-case-name: tests.test_services -*-
"""
The sender's connection to its receivers: L{EndpointConnector} tries each
C{--connect} endpoint in turn (failover), and L{SenderConnectionService}
keeps a C{ReconnectingClientFactory} connected through it.

How an endpoint string meets C{ReconnectingClientFactory}
---------------------------------------------------------

C{--connect} takes any client endpoint string (C{clientFromString}), but
C{ReconnectingClientFactory} schedules its retries by calling
C{connector.connect()}, and endpoints have no connectors.
L{EndpointConnector} is the adapter: an C{IConnector} whose C{connect()}
calls C{endpoint.connect()}, reports a failed attempt to
C{factory.clientConnectionFailed(connector, reason)} and a lost connection
(seen through a thin L{ProtocolWrapper}) to
C{factory.clientConnectionLost(connector, reason)}, exactly as
C{reactor.connectTCP}'s connector would.  The factory's own backoff,
C{maxDelay}, C{maxRetries}, C{resetDelay()} and C{stopTrying()} therefore
work unchanged, for TCP, TLS, UNIX sockets or any endpoint plugin.
(C{ClientService} would also retry an endpoint, but it has its own backoff
policy and no C{maxRetries}.)

Several receivers
-----------------

C{--connect} may be given more than once.  The connector then holds the
endpoints in a ring: after an attempt fails or an established connection
is lost, the next attempt goes to the next endpoint.  A failed attempt
moves on to the next endpoint at once while some endpoint of the round is
still untried; only when a whole round has failed does the factory hear of
it, so its backoff (and C{maxRetries}) count full rounds.  A lost
connection is reported to the factory as before (its delay was reset on
WELCOME, so the next receiver is tried after C{initialDelay}).  Nothing
else changes: the L{imageproto.sender.flow.FrameSender} resends every
unacknowledged frame of a finite source to whichever receiver answers.
"""

from __future__ import annotations


from twisted.application.service import Service
from twisted.internet import error
from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure


__all__ = ['EndpointConnector', 'SenderConnectionService']


class _LossReporter(ProtocolWrapper):
    """
    Passes everything through, and tells the connector when the connection
    is lost (endpoints, unlike connectors, tell the factory nothing).
    """

    def connectionLost(self, reason) -> None:
        super().connectionLost(reason)
        self.factory.connector._lost(reason)


class _ReportingFactory(WrappingFactory):
    protocol = _LossReporter
    noisy = False

    def __init__(self, wrappedFactory, connector) -> None:
        super().__init__(wrappedFactory)
        self.connector = connector


class EndpointConnector:
    """
    An C{IConnector} over one or more client endpoints, so that a
    C{ReconnectingClientFactory} can drive retries through any endpoint, and
    move between receivers in turn (see the module docstring).

    @param endpoint: an C{IStreamClientEndpoint}, or a sequence of them to
        be tried in turn.
    @param factory: the client factory; it hears C{clientConnectionFailed}
        (once per failed round) and C{clientConnectionLost} with this
        connector.
    @param destination: the endpoint string (or one per endpoint), for log
        lines.
    """

    log = Logger()

    def __init__(self, endpoint, factory, destination) -> None:
        if isinstance(destination, str):
            endpoints, destinations = [endpoint], [destination]
        else:
            endpoints, destinations = list(endpoint), list(destination)
        if not endpoints or len(endpoints) != len(destinations):
            raise ValueError("one destination per endpoint, at least one")
        self.endpoints = endpoints
        self.destinations = destinations
        self.factory = factory
        self._index = 0
        # Attempts failed since the round began (a connection or a call
        # from the factory begins one).
        self._failedInRound = 0
        self._wrapping = _ReportingFactory(factory, self)
        self._attempt = None
        self._connection = None
        self._lossWaiters: list[Deferred] = []

    def __repr__(self) -> str:
        return f"<EndpointConnector {self.destination}>"

    @property
    def endpoint(self):
        """
        The endpoint of the current (or next) attempt.
        """
        return self.endpoints[self._index]

    @property
    def destination(self) -> str:
        """
        The endpoint string of the current (or next) attempt.
        """
        return self.destinations[self._index]

    def connect(self) -> None:
        if self._attempt is not None or self._connection is not None:
            return
        self._failedInRound = 0
        self._connectCurrent()

    def _connectCurrent(self) -> None:
        self.factory.startedConnecting(self)
        self._attempt = self.endpoint.connect(self._wrapping)
        self._attempt.addCallbacks(self._connected, self._failed)

    def _advance(self) -> None:
        self._index = (self._index + 1) % len(self.endpoints)

    def _connected(self, wrapper) -> None:
        self._attempt = None
        self._connection = wrapper

    def _failed(self, reason: Failure) -> None:
        self._attempt = None
        failedAt = self.destination
        self._advance()
        self._failedInRound += 1
        if (
            self._failedInRound < len(self.endpoints)
            and getattr(self.factory, "continueTrying", True)
            and not reason.check(CancelledError)
        ):
            # Some receiver of this round is untried: no backoff yet.
            self.log.info(
                "{failed}: {reason}; trying {destination}",
                failed=failedAt,
                reason=reason.getErrorMessage(),
                destination=self.destination,
            )
            self._connectCurrent()
            return
        self.factory.clientConnectionFailed(self, reason)
        self._notifyLoss()

    def _lost(self, reason: Failure) -> None:
        self._connection = None
        self._advance()
        self.factory.clientConnectionLost(self, reason)
        self._notifyLoss()

    def _notifyLoss(self) -> None:
        waiters, self._lossWaiters = self._lossWaiters, []
        for d in waiters:
            d.callback(None)

    def stopConnecting(self) -> None:
        if self._attempt is None:
            raise error.NotConnectingError()
        self._attempt.cancel()

    def disconnect(self) -> None:
        """
        Cancel a connection attempt, or close the connection once its
        buffered bytes (a BYE, say) are written.
        """
        if self._attempt is not None:
            self._attempt.cancel()
        elif self._connection is not None:
            self._connection.loseConnection()

    def abort(self) -> None:
        """
        Close the connection now, discarding what is buffered.
        """
        if self._connection is not None:
            self._connection.abortConnection()

    def whenIdle(self) -> Deferred:
        """
        @return: a Deferred that fires once there is neither a connection
            nor an attempt (at once if there is none now).
        """
        d = Deferred()
        if self._attempt is None and self._connection is None:
            d.callback(None)
        else:
            self._lossWaiters.append(d)
        return d

    def getDestination(self):
        return self.endpoint


class SenderConnectionService(Service):
    """
    Keeps a L{imageproto.protocol.factories.SenderFactory} connected through an
    endpoint, or through one of several in turn.

    Stopping says BYE if a stream is up, calls C{stopTrying()} before
    disconnecting (or the disconnection would schedule a retry), and waits
    up to C{closeTimeout} seconds for buffered bytes to be written.

    @param endpoint: the client endpoint, or a sequence of them (see
        L{EndpointConnector}).
    @param factory: the L{imageproto.protocol.factories.SenderFactory}.
    @param destination: the endpoint string (or a list, one per endpoint),
        for log lines.
    @param clock: the C{IReactorTime} for the close timeout.
    """

    log = Logger()

    def __init__(self, endpoint, factory, destination, clock, closeTimeout: float = 5.0) -> None:
        self.factory = factory
        self.clock = clock
        self.closeTimeout = closeTimeout
        self.connector = EndpointConnector(endpoint, factory, destination)

    def startService(self) -> None:
        Service.startService(self)
        self.log.info(
            "connecting to {destination}",
            destination=" or ".join(self.connector.destinations),
        )
        self.connector.connect()

    def stopService(self) -> Deferred:
        Service.stopService(self)
        self.factory.stopTrying()
        sender = self.factory.sender
        if sender.protocol is not None and not sender.finished:
            sender.protocol.sayGoodbye("sender stopping")
        idle = self.connector.whenIdle()
        self.connector.disconnect()
        if idle.called:
            return idle
        timeout = self.clock.callLater(self.closeTimeout, self.connector.abort)
        idle.addBoth(lambda r: timeout.cancel() if timeout.active() else None)
        return idle
