"""Free loopback ports for the servers tests and benchmarks start (TorchServe, PostgreSQL, S3)."""

from __future__ import annotations

import contextlib
import socket

from handlers import serve


def distinct_free_ports(count: int) -> list[int]:
    """`count` distinct ports free on 127.0.0.1 now. All stay bound until each is picked: picked one at a time, the
    kernel can hand out a port twice (one in about 1,700 calls of five), and the second server then fails to bind.
    A server that fails to bind a port taken since is retried by its starter."""
    with contextlib.ExitStack() as bound:
        sockets = [bound.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def free_port() -> int:
    """One port free on 127.0.0.1 now."""
    return distinct_free_ports(1)[0]


def free_ports() -> serve.Ports:
    """The five distinct ports of one TorchServe: inference, management, metrics and the two gRPC ones."""
    return serve.Ports(*distinct_free_ports(5))
