"""``hubtune serve --engine ray``: the same FastAPI app as N replicas of one Ray Serve deployment.

Each replica is a Ray actor that loads its own :class:`~hubtune.serve.service.Service` in its constructor
(so Ray routes to it only once the model, indexes and heads are loaded) and then serves
``create_app(config, service)``: the app ``--engine local`` serves, with its routes, limits, token,
error bodies and its own asyncio batcher. Ray's HTTP proxy listens on ``--host``/``--port`` and spreads
the requests over the replicas, each of which batches what it is given; a replica that dies is
restarted by Ray. The replicas read and fill the one store at ``--cache`` (LMDB takes concurrent
writers), so the cache must be a path every node sees.

What differs from ``--engine local``: the request goes through Ray's proxy actor and one Ray call to a
replica (on one machine this costs CPU the model would otherwise use: benchmarks/bench_serve.py measures
it); ``/healthz`` and ``/readyz`` answer per replica; Ray's own ports (GCS, raylet, object store) follow
Ray's settings, not ``--host``. ``ray.init()`` joins the cluster ``RAY_ADDRESS`` names (or ``address``),
else it starts a local one.

Importing this module imports neither Ray nor FastAPI.
"""

from __future__ import annotations

import socket
import time
from typing import Any

from hubtune.errors import ServeError
from hubtune.serve.config import ServeConfig

APP_NAME = "hubtune"


def import_serve() -> Any:
    """Ray Serve, or a ServeError saying how to install it."""
    try:
        from ray import serve
    except ImportError as exc:
        raise ServeError("--engine ray needs Ray Serve: pip install 'hubtune[ray]' (or use --engine local)") from exc
    return serve


def max_ongoing(config: ServeConfig) -> int:
    """Requests Ray hands one replica at once: its whole queue and a batch, so the app's own bounded queue
    (503 + Retry-After) is what pushes back, not Ray's default of 5 (which would cap a batch at 5 requests)."""
    return config.max_queue + config.max_batch_size


def deployment(config: ServeConfig, replicas: int, cpus_per_replica: float = 1.0) -> Any:
    """The bound Ray Serve application: ``replicas`` copies of the app, ``cpus_per_replica`` CPUs each
    (Ray gives a replica that many torch/OpenMP threads)."""
    serve = import_serve()
    if replicas < 1:
        raise ServeError(f"--replicas {replicas}: expected at least 1")

    class HubtuneReplica:
        """One replica: the service loaded in the constructor, the app built on it after."""

        def __init__(self, config: ServeConfig):
            from hubtune.serve.logs import setup_logging
            from hubtune.serve.service import Service

            setup_logging(config.json_logs)
            self.config = config
            self.service = Service(config)
            self.service.load()

        def __serve_build_asgi_app__(self) -> Any:  # Ray Serve calls it after __init__, in the replica
            from hubtune.serve.app import create_app

            return create_app(self.config, self.service)

    ingress = serve.ingress()(HubtuneReplica)
    options = {"num_cpus": cpus_per_replica}
    if config.options.device and str(config.options.device).startswith("cuda"):
        options["num_gpus"] = 1
    return serve.deployment(ingress, name="HubtuneReplica", num_replicas=replicas,
                            max_ongoing_requests=max_ongoing(config),
                            ray_actor_options=options).bind(config)


def free_port(host: str) -> int:
    """A port free now on ``host`` (Ray's proxy cannot be asked for port 0 and say which it took)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def init_ray(address: str | None = None) -> None:
    """Join the cluster at ``address``, or start a local Ray (unless this process has already)."""
    import ray

    if not ray.is_initialized():
        if address:
            ray.init(address=address)
        else:
            ray.init(include_dashboard=False)


def start(config: ServeConfig, replicas: int = 2, cpus_per_replica: float = 1.0, address: str | None = None) -> str:
    """Start (or join) Ray, start Serve's proxy on ``config.host``/``config.port`` and run the replicas;
    returns the URL once every replica has loaded the model. ``config.port`` 0: a free port."""
    serve = import_serve()
    init_ray(address)
    if config.port == 0:
        config.port = free_port(config.host)
    from hubtune.store import EmbeddingStore

    with EmbeddingStore(config.cache):  # created here, once: replicas opening a new store at the same time
        pass  # race on its format stamp (one reads the meta table before the other has written it)
    serve.start(http_options={"host": config.host, "port": config.port})
    serve.run(deployment(config, replicas, cpus_per_replica), name=APP_NAME, route_prefix="/")
    return config.url()


def stop() -> None:
    """Delete the replicas and stop Serve (Ray itself is left to its owner)."""
    serve = import_serve()
    serve.shutdown()


def replicas_running() -> int:
    """How many replicas of the app Ray reports RUNNING."""
    serve = import_serve()
    status = serve.status().applications.get(APP_NAME)
    if status is None:
        return 0
    return sum(int(d.replica_states.get("RUNNING", 0)) for d in status.deployments.values())


def serve_on_ray(config: ServeConfig, replicas: int, cpus_per_replica: float | None = None,
                 address: str | None = None) -> None:
    """``hubtune serve --engine ray`` in the foreground: serve until Ctrl-C, then stop the replicas (and
    Ray, when this call started it)."""
    import_serve()  # Ray missing: say how to install it, before anything starts
    import ray

    from hubtune.serve.logs import logger, setup_logging

    setup_logging(config.json_logs)
    started_ray = not ray.is_initialized() and not address
    if cpus_per_replica is None:  # a local cluster: share this machine's CPUs among the replicas
        import os

        cpus_per_replica = (os.cpu_count() or 1) / replicas if started_ray else 1.0
    import signal
    import threading

    def interrupt(*_: Any) -> None:
        # should Ray's failure-signal handler (abseil's) have run first, it armed a 3-second abort
        # (SIGALRM); stopping Serve's replicas and Ray takes longer
        signal.alarm(0)
        raise KeyboardInterrupt

    try:
        init_ray(address)
        if threading.current_thread() is threading.main_thread():  # after ray.init, which sets its own
            signal.signal(signal.SIGTERM, interrupt)  # SIGTERM (and a SIGINT a shell ignored) stop it too
            signal.signal(signal.SIGINT, interrupt)
        url = start(config, replicas, cpus_per_replica, address)
        logger.info("hubtune serve: %s on %d Ray Serve replicas at %s (Ctrl-C stops)", config.ref, replicas, url)
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        try:
            stop()
        finally:
            if started_ray:
                ray.shutdown()
        logger.info("hubtune serve: stopped")
