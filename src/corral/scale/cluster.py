"""The driver side of `corral serve --ray`: join a cluster (``--ray-address``) or start a local one
with a bounded CPU count, start Serve's HTTP proxy on the server's host and port, deploy the
replicas, and on stop take down what this process started (the application; on a local cluster,
Serve and Ray themselves, so no Ray process is left)."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from corral.errors import CorralError, UsageError
from corral.scale.plan import APP_NAME, NAMESPACE, ReplicaSpec, ScalePlan


class RayNotInstalledError(UsageError):
    pass


class ClusterError(CorralError):
    exit_code = 1
    http_status = 503


def import_ray() -> Any:
    try:
        import ray
        from ray import serve  # noqa: F401 - the extra's second half
    except ImportError:
        raise RayNotInstalledError("Ray Serve is not installed", "pip install 'corral[ray]'") from None
    return ray


@contextlib.contextmanager
def own_signals() -> Iterator[None]:
    """Keep this process's SIGTERM/SIGINT handlers: ``ray.init`` installs native ones that print a
    stack and exit, which would skip the graceful stop."""
    main = threading.current_thread() is threading.main_thread()
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)} if main else {}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def connect(address: str | None, local_cpus: int | None) -> bool:
    """Join ``address`` or start a local cluster; True when this process started the cluster."""
    with own_signals():
        return _connect(import_ray(), address, local_cpus)


def _connect(ray: Any, address: str | None, local_cpus: int | None) -> bool:
    quiet = {"namespace": NAMESPACE, "logging_level": logging.WARNING, "configure_logging": True}
    if address is not None:
        try:
            ray.init(address=address, **quiet)
        except (ConnectionError, RuntimeError) as exc:
            raise ClusterError(f"cannot join the Ray cluster at {address}: {exc}",
                               "start one with `ray start --head`, or leave out --ray-address to run a local one") \
                from None
        return False
    ray.init(num_cpus=local_cpus, include_dashboard=False, **quiet)
    return True


@dataclass
class Deployment:
    """A running `corral serve --ray`: what :meth:`stop` takes down."""

    started_cluster: bool
    started_serve: bool = False  # Serve was not running on the cluster before
    deployed: bool = False  # the application was (being) deployed: stop deletes it, and only then
    registry: Any = None

    def stop(self) -> None:
        ray = import_ray()
        serve = ray.serve
        try:
            if self.deployed:  # replicas finish what they serve (the grace period); the proxy stays meanwhile
                serve.delete(APP_NAME)
            if self.started_cluster or (self.started_serve and not serve.status().applications):
                serve.shutdown()  # the controller and proxies corral started, unless others deployed on them
            if self.registry is not None:
                ray.kill(self.registry)
        finally:
            ray.shutdown()  # a local cluster's processes end with it


def deploy(plan: ScalePlan, spec: ReplicaSpec) -> Deployment:
    """Connect, start the proxy, create the registry and deploy; returns once every replica is up.
    A deployment that fails (a replica that cannot load its models) stops everything it started
    and raises :class:`ClusterError` with Serve's reason."""
    from corral.scale.registry import create_registry

    serve = import_ray().serve
    server = spec.settings.server
    started = connect(plan.address, plan.local_cpus)
    deployment = Deployment(started_cluster=started)
    try:
        before = serve.status()  # empty when Serve is not running there yet
        if APP_NAME in before.applications:
            raise ClusterError(f"this Ray cluster already runs a corral application ({APP_NAME!r})",
                               "stop that `corral serve --ray` first, or use another cluster")
        deployment.started_serve = not (before.proxies or before.applications)
        logging.getLogger("ray.serve").setLevel(logging.WARNING)  # not a line per deploy step
        serve.start(http_options={"host": server.host, "port": server.port},
                    logging_config={"log_level": "WARNING", "enable_access_log": False})
        deployment.registry = create_registry()
        from corral.scale.replica import Replica

        replica: Any = serve.deployment(Replica)
        app = replica.options(**plan.deployment_options()).bind(spec)
        deployment.deployed = True
        try:
            serve.run(app, name=APP_NAME, route_prefix="/", logging_config={"log_level": "WARNING",
                                                                             "enable_access_log": False})
        except RuntimeError as exc:
            raise ClusterError(f"the replicas did not start: {exc}",
                               "see the replica's error above; `corral serve` without --ray shows it directly") \
                from None
    except BaseException:
        deployment.stop()
        raise
    return deployment


def cluster_status(address: str) -> dict[str, Any]:
    """What `corral ray status` shows: the application's state from Serve, and each replica's last
    report from the registry. Joins ``address`` (never starts a cluster) and leaves it again."""
    ray = import_ray()
    serve = ray.serve
    from corral.scale.registry import find_registry
    from corral.scale.replica import name_of

    connect(address, None)
    try:
        try:
            app = serve.status().applications.get(APP_NAME)
        except Exception:  # no Serve instance on this cluster: nothing of corral's runs
            app = None
        registry = find_registry()
        rows = ray.get(registry.snapshot.remote(), timeout=30) if registry is not None else []
    finally:
        ray.shutdown()
    application = None if app is None else {
        "status": name_of(app.status), "message": app.message,
        "deployments": {name: {"status": name_of(d.status),
                               "replicas": {name_of(s): n for s, n in d.replica_states.items()}}
                        for name, d in app.deployments.items()}}
    return {"address": address, "application": application, "replicas": rows}
