"""Free loopback ports for the servers tests and benchmarks start (TorchServe, PostgreSQL, S3)."""

from __future__ import annotations

import socket

from handlers import serve


def free_port() -> int:
    """A port free on 127.0.0.1 now; a server that then fails to bind it is retried by its starter."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_ports() -> serve.Ports:
    """Five free ports for one TorchServe: inference, management, metrics and the two gRPC ones."""
    return serve.Ports(*(free_port() for _ in range(5)))
