"""A hostile stand-in for an OpenAI-compatible server on 127.0.0.1: it lists a model, then
answers each chat completion in one of the ways a broken server does (a fake is right
here: llama.cpp adds nothing to how a client copes with a 500 or a cut connection)."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODES = ("500", "garbage", "truncated", "stall", "drip")


class StandIn:
    """Serves ``GET /v1/models`` properly and fails every ``POST /v1/chat/completions``
    with ``modes`` in turn: ``500``, ``garbage`` (200 with a body that is not JSON),
    ``truncated`` (a Content-Length longer than what is sent, then the connection is
    closed), ``stall`` (the request is read, and nothing ever comes back until stopped),
    ``drip`` (a 200 whose body comes one byte every 0.2 s, never ending).
    ``posts`` counts the completions asked for, by mode."""

    def __init__(self, modes: tuple[str, ...] = MODES, model: str = "stand-in") -> None:
        self.modes, self.model = modes, model
        self.posts: list[str] = []
        self.stopping = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                body = json.dumps({"object": "list", "data": [{"id": outer.model}]}).encode()
                self._send(200, body)

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                mode = outer.modes[len(outer.posts) % len(outer.modes)]
                outer.posts.append(mode)
                if mode == "500":
                    self._send(500, b'{"error": {"message": "boom", "type": "server_error"}}')
                elif mode == "garbage":
                    self._send(200, b"<html>not json at all")
                elif mode == "truncated":
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", "5000")
                    self.end_headers()
                    self.wfile.write(b'{"choices": [{"message": {"content": "half')
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                elif mode == "drip":
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()  # no length: the body ends when the socket does
                    while not outer.stopping.wait(0.2):
                        try:
                            self.wfile.write(b" ")
                            self.wfile.flush()
                        except OSError:
                            break
                    self.close_connection = True
                else:  # stall: hold the socket open, say nothing
                    outer.stopping.wait(120)
                    self.close_connection = True

            def _send(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> StandIn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
