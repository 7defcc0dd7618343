"""Running the app on uvicorn: in the foreground (``hubtune serve``: Ctrl-C stops it) or in a thread
(:class:`Running`, for tests and notebooks). The socket is bound here, so ``port=0`` picks a free port
and the startup line shows the real URL; a failed model load stops the server and is raised."""

from __future__ import annotations

import signal
import socket
import threading
import time
from typing import Any

from hubtune.serve.config import ServeConfig


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (``port=0``: a free one); a ServeError saying why not."""
    from hubtune.errors import ServeError

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as error:
        raise ServeError(f"cannot listen on {host}:{port}: {error.strerror or error} (--port 0 picks a free "
                         "port; --host names an address of this machine)") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def server_for(app: Any, config: ServeConfig, sock: socket.socket) -> Any:
    """A uvicorn server for ``app`` that stops when loading fails; the app's URL set to the bound port."""
    import uvicorn

    # on Ctrl-C or SIGTERM, requests already accepted get their answer (or their --request-timeout 504)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                                           timeout_graceful_shutdown=int(config.request_timeout) + 1))
    app.state.url = config.url(sock.getsockname()[1])

    def fatal(_: BaseException) -> None:
        server.should_exit = True

    app.state.on_fatal = fatal
    return server


def serve(config: ServeConfig, service: Any = None) -> None:
    """Serve until Ctrl-C; raise what stopped the model from loading."""
    from hubtune.serve.app import create_app
    from hubtune.serve.logs import logger, setup_logging

    setup_logging(config.json_logs)
    if threading.current_thread() is threading.main_thread():
        # uvicorn stops on SIGTERM, then raises it again once its own handler is gone: as KeyboardInterrupt
        # here (systemd, Docker and Kubernetes stop with SIGTERM), the store is closed and "stopped" logged
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    sock = bind(config.host, config.port)
    app = create_app(config, service)
    server = server_for(app, config, sock)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it shut down for: a clean stop here
        pass
    finally:
        sock.close()
        app.state.service.close()
    logger.info("hubtune serve: stopped")
    error = app.state.service.error
    if error is not None:
        raise error


class Running:
    """The server in a background thread: ``with Running(config) as running: running.url``."""

    def __init__(self, config: ServeConfig, service: Any = None, app: Any = None):
        from hubtune.serve.app import create_app

        self.config = config
        self.sock = bind(config.host, config.port)
        self.app = app if app is not None else create_app(config, service)
        self.server = server_for(self.app, config, self.sock)
        self.url = self.app.state.url
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True,
                                       name="hubtune-serve")

    def start(self, ready_timeout: float = 300.0) -> "Running":
        """Start, and wait until the model is loaded (or raise why it could not be)."""
        self.thread.start()
        service = self.app.state.service
        deadline = time.monotonic() + ready_timeout
        while not service.ready:
            if service.error is not None:
                self.stop()
                raise service.error
            if time.monotonic() > deadline or not self.thread.is_alive():
                self.stop()
                raise RuntimeError(f"the service did not become ready within {ready_timeout:g} s")
            time.sleep(0.02)
        while not self.server.started:
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()

    def __enter__(self) -> "Running":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
