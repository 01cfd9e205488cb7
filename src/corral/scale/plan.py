"""What `corral serve --ray` asks Ray for, worked out from the settings alone (no Ray import): the
replica count or autoscaling range, what each replica reserves, the CPUs of a local cluster, the
Serve deployment options, and the :class:`ReplicaSpec` every replica builds its runtime from."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

from corral.config import Settings
from corral.engines.base import LoadOptions
from corral.errors import UsageError

APP_NAME = "corral"  # the Serve application (route prefix /); one per cluster
DEPLOYMENT = "corral"
NAMESPACE = "corral"  # the Ray namespace of the registry actor
REGISTRY = "corral-registry"
REPLICA_HEADER = "x-corral-replica"


def parse_replicas(text: str) -> tuple[int, int]:
    """``"3"`` -> (3, 3); ``"1-4"`` -> (1, 4) (autoscaling; 0 allowed as the minimum)."""
    low, _, high = text.replace(" ", "").partition("-")
    try:
        lo, hi = int(low), int(high or low)
    except ValueError:
        raise UsageError(f"cannot read --replicas {text!r}", "write a count (3) or a range to autoscale in (1-4)") \
            from None
    if hi < 1 or lo > hi:
        raise UsageError(f"--replicas {text!r} asks for no replica or a range that runs backwards",
                         "write a count of at least 1 (3) or MIN-MAX with MIN <= MAX (1-4)")
    return lo, hi


@dataclass(frozen=True)
class ReplicaSpec:
    """Everything a replica needs, sent to it by Ray: the settings as resolved where `corral serve
    --ray` ran (so a node without the config file serves the same), and the load options."""

    settings: Settings
    load: LoadOptions
    app_name: str = APP_NAME


@dataclass(frozen=True)
class ScalePlan:
    min_replicas: int
    max_replicas: int
    replica_cpus: float
    replica_gpus: float
    target_requests: float
    address: str | None  # None: start a local cluster
    local_cpus: int | None  # the local cluster's CPUs (None when joining one)
    max_ongoing: int  # requests Serve sends one replica at once: corral's own queue decides past its slots
    grace: float

    @property
    def autoscaling(self) -> bool:
        return self.min_replicas != self.max_replicas

    def deployment_options(self) -> dict[str, Any]:
        """Options for ``serve.deployment(...).options(**...)``."""
        options: dict[str, Any] = {
            "name": DEPLOYMENT,
            "ray_actor_options": {"num_cpus": self.replica_cpus, "num_gpus": self.replica_gpus},
            "max_ongoing_requests": self.max_ongoing,
            "graceful_shutdown_timeout_s": max(0.0, self.grace),
            "health_check_period_s": 5.0,
        }
        if self.autoscaling:
            options["autoscaling_config"] = {"min_replicas": self.min_replicas, "max_replicas": self.max_replicas,
                                             "target_ongoing_requests": self.target_requests}
        else:
            options["num_replicas"] = self.max_replicas
        return options


def plan_scale(settings: Settings, *, machine_cpus: int | None = None) -> ScalePlan:
    """The plan for ``settings``; a local cluster that could not hold the replicas is refused here,
    before Ray starts, rather than left with replicas pending forever."""
    ray, runtime = settings.ray, settings.runtime
    lo, hi = parse_replicas(ray.replicas)
    local_cpus = None
    if ray.address is None:
        needed = max(1, math.ceil(hi * ray.replica_cpus - 1e-9))
        have = machine_cpus or os.cpu_count() or 1
        local_cpus = ray.cpus or min(needed, have)
        if local_cpus < hi * ray.replica_cpus - 1e-9:
            raise UsageError(
                f"{hi} replica(s) reserving {ray.replica_cpus:g} CPU each need {needed} CPUs; the local Ray "
                f"cluster has {local_cpus}",
                "pass --replica-cpus with a fraction (e.g. 0.5), fewer --replicas, or --ray-cpus N")
    return ScalePlan(min_replicas=lo, max_replicas=hi, replica_cpus=ray.replica_cpus, replica_gpus=ray.replica_gpus,
                     target_requests=ray.target_requests, address=ray.address, local_cpus=local_cpus,
                     max_ongoing=runtime.parallel + runtime.max_queue, grace=settings.server.grace)


def replica_spec(settings: Settings, load: LoadOptions) -> ReplicaSpec:
    return ReplicaSpec(settings=settings, load=load)
