"""Deadlines on the socket for requests: each request gets an :class:`Expiry`, and the connections of
:class:`DeadlineAdapter` hand it their socket, which it shuts down when the deadline passes.
"""

from __future__ import annotations

import socket
import threading
import time

import requests.adapters
import urllib3
import urllib3.connection


class Expiry:
    """One request's deadline: a timer shuts its socket down when it passes.

    Why on the socket: a read timeout applies to each read, so a server sending one byte a second
    (in the headers or the body) keeps a request alive for ever; shutting the socket down makes the
    blocked read return at once, whatever urllib3 and http.client were doing.
    """

    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + max(0.0, seconds)
        self.expired = False
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(max(0.0, seconds), self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        with self._lock:
            self.expired = True
            sock = self._sock
        if sock is not None:
            shutdown(sock)

    def attach(self, sock: socket.socket | None) -> None:
        with self._lock:
            self._sock = sock
            expired = self.expired
        if expired and sock is not None:
            shutdown(sock)

    @property
    def passed(self) -> bool:
        """Whether the deadline has passed (the timer may fire a moment late)."""
        return self.expired or time.monotonic() >= self.at

    def cancel(self) -> None:
        self._timer.cancel()


def shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # closed already


CURRENT = threading.local()  # the Expiry of the request this thread is making


class _DeadlineConnectionMixin:
    def getresponse(self, *args, **kwargs):  # called once the request is sent, before the headers are read
        expiry = getattr(CURRENT, "expiry", None)
        if expiry is not None:
            expiry.attach(self.sock)
        return super().getresponse(*args, **kwargs)


class _DeadlineHTTPConnection(_DeadlineConnectionMixin, urllib3.connection.HTTPConnection):
    pass


class _DeadlineHTTPSConnection(_DeadlineConnectionMixin, urllib3.connection.HTTPSConnection):
    pass


class _DeadlineHTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _DeadlineHTTPConnection


class _DeadlineHTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _DeadlineHTTPSConnection


class DeadlineAdapter(requests.adapters.HTTPAdapter):
    """requests' adapter with connections that hand their socket to the request's :class:`Expiry`."""

    POOLS = {"http": _DeadlineHTTPPool, "https": _DeadlineHTTPSPool}

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(self.POOLS)

    def proxy_manager_for(self, *args, **kwargs):
        manager = super().proxy_manager_for(*args, **kwargs)
        manager.pool_classes_by_scheme = dict(self.POOLS)
        return manager
