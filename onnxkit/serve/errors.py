"""The server's refusals: one exception with the HTTP status it is answered with (gRPC maps it)."""

from __future__ import annotations


class RequestError(Exception):
    """A request the server refuses: an HTTP status and a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
