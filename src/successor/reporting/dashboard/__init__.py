"""`successor dashboard DIR`: a live view of a run on 127.0.0.1, with approve, reject and stop behind a token."""
from __future__ import annotations

import secrets
import socket
import sys
import threading
from pathlib import Path

from .app import create_app

__all__ = ["create_app", "serve"]


def serve(run_dir: Path, port: int = 8765, exit_after: float | None = None, token: str | None = None) -> None:
    """Serve until interrupted (or for `exit_after` seconds). The socket listens before anything is printed, so
    the URL printed is one that answers at once; port 0 picks a free port."""
    import uvicorn

    token = token or secrets.token_urlsafe(24)
    app = create_app(Path(run_dir), token)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)  # connections made from here on wait in the backlog until uvicorn accepts them
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
    print(f"dashboard of {Path(run_dir).resolve()}: http://127.0.0.1:{port}/#token={token}", flush=True)
    print(f"token (approve, reject, stop): {token}", flush=True)
    if exit_after is not None:
        timer = threading.Timer(exit_after, lambda: setattr(server, "should_exit", True))
        timer.daemon = True
        timer.start()
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    print("dashboard stopped", file=sys.stderr, flush=True)
