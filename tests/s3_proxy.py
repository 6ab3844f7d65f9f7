"""A real HTTP proxy on loopback in front of the test S3 server: it forwards every request unchanged,
counts them per method and key, and can act on the store right after a request it forwarded (a fault
that a test injects, e.g. a copy that lands short).

Point the job at it with ``AWS_ENDPOINT_URL=proxy.endpoint``. The Host header is passed through, so the
client's SigV4 signature, made for the proxy's address, still verifies at the server.
"""

from __future__ import annotations

import contextlib
import http.client
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

from tests.servers import S3Server

# Called after a request was answered by the server and before the client gets the answer:
# (method, key, request headers).
AfterRequest = Callable[[str, str, dict[str, str]], None]
# What the client gets instead of the server's answer body: (method, request path and query, body) -> body.
RewriteAnswer = Callable[[str, str, bytes], bytes]
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length"}


@dataclass
class S3Proxy:
    endpoint: str
    requests: Counter = field(default_factory=Counter)  # (method, key) -> how many were forwarded

    def count(self, method: str, key: str) -> int:
        return self.requests[(method, key)]


@contextlib.contextmanager
def s3_proxy(
    server: S3Server, after: AfterRequest | None = None, rewrite: RewriteAnswer | None = None
) -> Iterator[S3Proxy]:
    upstream = urlsplit(server.endpoint)
    lock = threading.Lock()
    proxy = S3Proxy("")

    class Forward(BaseHTTPRequestHandler):
        def forward(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            body = self.rfile.read(length) if length else None
            headers = dict(self.headers.items())
            path = urlsplit(self.path).path
            key = unquote(path.split("/", 2)[2]) if path.count("/") >= 2 else ""  # path-style: /bucket/key
            with lock:
                proxy.requests[(self.command, key)] += 1
            connection = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=30)
            try:
                connection.request(self.command, self.path, body=body, headers=headers)
                answer = connection.getresponse()
                payload = answer.read()
            finally:
                connection.close()
            if after is not None:
                after(self.command, key, headers)
            if rewrite is not None:
                payload = rewrite(self.command, self.path, payload)
            self.send_response(answer.status)
            for name, value in answer.getheaders():
                if name.lower() not in HOP_BY_HOP:
                    self.send_header(name, value)
            # HEAD answers carry the object's length without its body.
            self.send_header(
                "Content-Length",
                answer.getheader("Content-Length", "0") if self.command == "HEAD" else str(len(payload)),
            )
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = forward

        def log_message(self, *args) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Forward)
    proxy.endpoint = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        httpd.shutdown()
        httpd.server_close()
