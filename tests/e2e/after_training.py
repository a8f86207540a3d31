"""Helpers of the after-training tests (chat, serve, export, push): the configs, and a uvicorn server on a free
loopback port for tests that call nextai's HTTP routes with real clients."""

import threading
import time
from pathlib import Path

TINY_CONFIG = str(Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml")
SMOL_CONFIG = str(Path(__file__).resolve().parents[2] / "configs" / "smol.yaml")


class RunningServer:
    """uvicorn running an app on a free loopback port in a background thread."""

    def __init__(self, app) -> None:
        import uvicorn

        self.app = app
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
