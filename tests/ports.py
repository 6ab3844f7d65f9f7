"""Free loopback ports for the servers tests and benchmarks start (TorchServe, PostgreSQL, S3)."""

from __future__ import annotations

import contextlib
import socket

from handlers import serve


def free_port() -> int:
    """A port free on 127.0.0.1 now; a server that then fails to bind it is retried by its starter."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_ports() -> serve.Ports:
    """Five distinct free ports for one TorchServe: inference, management, metrics and the two gRPC ones. All five
    stay bound until each is picked: one at a time, the kernel can hand out a port twice, and TorchServe then fails
    to start (one in about 1,700 calls)."""
    with contextlib.ExitStack() as bound:
        sockets = [bound.enter_context(socket.socket()) for _ in range(5)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return serve.Ports(*(sock.getsockname()[1] for sock in sockets))
