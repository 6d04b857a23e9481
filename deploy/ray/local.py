"""A local Ray cluster serving the app from Python, as the Ray Serve test and benchmark run it."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import ray
from ray import serve

from deploy.ray.app import Classifier
from service.settings import Settings

REPO = Path(__file__).resolve().parents[2]
APP_NAME = "tsc-snn"
PORT_TRIES = 3


@contextmanager
def local_cluster(free_port: Callable[[], int], num_cpus: int = 2) -> Iterator[str]:
    """A local Ray cluster of ``num_cpus`` CPUs with Serve's HTTP proxy on 127.0.0.1; its URL.

    The proxy's port comes from ``free_port()`` once Ray's own services hold theirs (one of them could
    take a port chosen before), and again, up to ``PORT_TRIES`` times, when another process took it first.

    No dashboard, no usage reporting, replicas' logs kept out of this process's output (they are under
    /tmp/ray/session_latest/logs); the workers import the repository's packages whatever the current
    directory. Serve and Ray are shut down on exit.
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    path = os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH"))))
    ray.init(
        num_cpus=num_cpus,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": path}},
    )
    try:
        for attempt in range(PORT_TRIES):
            port = free_port()
            try:
                serve.start(http_options={"host": "127.0.0.1", "port": port})
                break
            except (RuntimeError, ray.exceptions.RayActorError):  # the proxy could not bind or start
                serve.shutdown()
                if attempt == PORT_TRIES - 1:
                    raise
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


def deploy(settings: Settings, replicas: int, cpus_per_replica: float) -> None:
    """Deploy the app (or change the running one) with ``replicas`` replicas; return once all have loaded."""
    options = {"num_replicas": replicas, "ray_actor_options": {"num_cpus": cpus_per_replica}}
    serve.run(Classifier.options(**options).bind(settings), name=APP_NAME, route_prefix="/")


def running_replicas() -> int:
    """How many replicas of the app's deployment are running, by Serve's status API."""
    (deployment,) = serve.status().applications[APP_NAME].deployments.values()
    return deployment.replica_states.get("RUNNING", 0)
