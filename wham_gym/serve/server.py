"""Running the dream server: in the foreground (``wham-gym serve``) or in a background thread (tests, benchmarks).

uvicorn serves the Starlette app; the app's lifespan starts and stops the scheduler thread, so
stopping the server leaves nothing running.
"""

from __future__ import annotations

import threading
import time

import uvicorn


def run(app, host: str = "127.0.0.1", port: int = 5000, log_level: str = "info") -> None:
    """Serve until interrupted (Ctrl-C)."""
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)


class ServerThread:
    """``with ServerThread(app) as url:`` serves ``app`` on a free loopback port for the block, then stops it."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"):
        config = uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on",
                                timeout_graceful_shutdown=5)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="wham-gym-http", daemon=True)
        self.url = None

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the dream server did not start (see the log above)")
            time.sleep(0.01)
        host, port = self.server.servers[0].sockets[0].getsockname()[:2]
        self.url = f"http://{host}:{port}"
        return self.url

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        if self.thread.is_alive():
            raise RuntimeError("the dream server did not stop within 30 s")
