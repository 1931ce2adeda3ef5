"""Calling the short domain's WSGI application as gunicorn does (PATH_INFO percent-decoded and
latin-1), checking what a server would put on the wire."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_to_bytes

from tests.support.templates import IPHONE


class Answer:
    def __init__(self, status: str, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status_code = int(status.split()[0])
        self.headers = {name.lower(): value for name, value in headers}
        self.header_list = headers
        self.content = body

    def __getitem__(self, name: str) -> str:
        return self.headers[name.lower()]

    def __contains__(self, name: str) -> bool:
        return name.lower() in self.headers

    def get(self, name: str, default: str = "") -> str:
        return self.headers.get(name.lower(), default)


def call(path: str, *, method: str = "GET", ua: str | None = IPHONE, host: str = "127.0.0.1") -> Answer:
    from templates.short_links.app import application

    raw_path, _, query = path.partition("?")
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": unquote_to_bytes(raw_path).decode("latin-1"),
        "QUERY_STRING": query,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8001",
        "HTTP_HOST": host,
        "wsgi.url_scheme": "http",
    }
    if ua is not None:
        environ["HTTP_USER_AGENT"] = ua
    started: list[Any] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        started.extend((status, headers))

    body = b"".join(application(environ, start_response))
    status, headers = started
    for name, value in headers:  # what a server may put on the wire
        assert name.isascii() and "\r" not in value and "\n" not in value
        value.encode("latin-1")
    answer = Answer(status, headers, body)
    assert int(answer["Content-Length"]) == (len(body) if method != "HEAD" else int(answer["Content-Length"]))
    return answer
