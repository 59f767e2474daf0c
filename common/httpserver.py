"""The HTTP/1.1 protocol both APIs are served with: uvicorn's httptools protocol with a bound on
the request line and headers.

httptools (llhttp) has no limit of its own: it buffers a header of any size until the line
ends, and uvicorn's ``h11_max_incomplete_event_size`` applies only to the slower h11 parser (and
answers 400 there). So the limit is kept here, answered with ``431`` (RFC 6585) and the
connection closed, before a request reaches the application:

- a head still incomplete is refused as soon as the bytes received for it pass the limit, so
  memory stays bounded while the client keeps sending;
- a head that arrived whole is measured (URL, names and values) only when the data it came in
  was larger than the limit, so an ordinary request pays two comparisons.

After the 431 the connection is half-closed and what the client still sends is read and thrown
away for a moment (as nginx's lingering close does): closing a socket with unread data resets
the connection, and the client would lose the answer while it is still sending.

The limit is uvicorn's own setting, ``h11_max_incomplete_event_size``, so it is one number
whichever parser runs.
"""

from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# How long a refused connection's remaining data is read and dropped before it is closed.
LINGER_SECONDS = 2.0

_BODY = (b'{"error": {"code": "headers_too_large", "message": "the request line and headers '
         b'are larger than %d bytes"}}')


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limit: int = self.config.h11_max_incomplete_event_size or 32 * 1024
        self._in_head = False  # a message has begun and its headers are not complete
        self._head_seen = 0  # bytes received for the current head, at most (an upper bound)
        self._head_sure = 0  # bytes that are surely the current head's (a lower bound)
        self._chunk = 0
        self._too_large = False
        self._refused = False

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # lingering: dropped
        self._chunk = len(data)
        if self._in_head:
            self._head_seen += self._chunk
            self._head_sure += self._chunk
        super().data_received(data)
        if self._in_head and self._head_sure > self._limit and not self._refused:
            self._refuse()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        # Where in this chunk the message began is unknown: all of it may be the head, or none.
        self._head_seen, self._head_sure = self._chunk, 0

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._head_seen > self._limit:
            size = len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers)  # ": ", CRLF
            if size > self._limit:
                self._too_large = True
                raise ValueError("request head too large")  # stops the parser: see send_400_response
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        # uvicorn answers 400 to any parser error, the one raised above included.
        if self._too_large:
            self._refuse()
        else:
            super().send_400_response(msg)

    def _refuse(self) -> None:
        self._refused = True
        body = _BODY % self._limit
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n"
            b"connection: close\r\n\r\n" + body
        )
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(LINGER_SECONDS, self.transport.close)
        else:
            self.transport.close()


def serve(app: Any, host: str, port: int, *, max_header_bytes: int, **options: Any) -> None:
    """Serve an API's ASGI app until a signal stops it: httptools with the bounded head, no
    access log (the apps log what matters), no proxy headers trusted."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, lifespan="on",
                proxy_headers=False, http=BoundedHttpToolsProtocol,
                h11_max_incomplete_event_size=max_header_bytes, **options)
