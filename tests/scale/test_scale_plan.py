"""`corral serve --ray`'s plan, worked out without Ray: replica counts and ranges, what each replica
reserves, the refusal of a local cluster too small for the replicas, and the error without Ray."""

from __future__ import annotations

import sys

import pytest

from corral.cli.main import main
from corral.config import load_settings
from corral.errors import UsageError
from corral.scale.plan import parse_replicas, plan_scale


def test_replicas_are_a_count_or_a_range() -> None:
    assert parse_replicas("3") == (3, 3)
    assert parse_replicas(" 1 - 4 ") == (1, 4)
    assert parse_replicas("0-2") == (0, 2)  # autoscaling down to none
    for bad in ("0", "4-1", "x"):
        with pytest.raises(UsageError, match="replicas"):
            parse_replicas(bad)


def test_fixed_count_reserves_fractional_resources() -> None:
    settings = load_settings(flags={"ray": {"replicas": "3", "replica_cpus": "0.5", "replica_gpus": "0.25"},
                                    "runtime": {"parallel": "2", "max_queue": "5"}, "server": {"grace": "7s"}})
    plan = plan_scale(settings, machine_cpus=2)
    options = plan.deployment_options()
    assert options["num_replicas"] == 3 and "autoscaling_config" not in options
    assert options["ray_actor_options"] == {"num_cpus": 0.5, "num_gpus": 0.25}
    assert options["max_ongoing_requests"] == 7  # corral's own slots + queue decide past Serve's router
    assert options["graceful_shutdown_timeout_s"] == 7.0
    assert plan.local_cpus == 2  # 3 x 0.5 rounds up


def test_range_autoscales() -> None:
    settings = load_settings(flags={"ray": {"replicas": "1-4", "replica_cpus": "0.25", "target_requests": "3"}})
    options = plan_scale(settings, machine_cpus=2).deployment_options()
    assert "num_replicas" not in options
    assert options["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 3.0}


def test_a_local_cluster_too_small_is_refused_before_ray_starts() -> None:
    settings = load_settings(flags={"ray": {"replicas": "3"}})
    with pytest.raises(UsageError, match="need 3 CPUs") as err:
        plan_scale(settings, machine_cpus=2)
    assert "--replica-cpus" in (err.value.hint or "")
    explicit = load_settings(flags={"ray": {"replicas": "3", "cpus": "4"}})
    assert plan_scale(explicit, machine_cpus=2).local_cpus == 4  # the user's own bound wins
    joining = load_settings(flags={"ray": {"replicas": "3", "address": "auto"}})
    assert plan_scale(joining, machine_cpus=2).local_cpus is None  # a cluster's resources are its own


def test_bad_values_name_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--ray", "--replicas", "two"]) == 2
    assert "--replicas" in capsys.readouterr().err
    assert main(["serve", "--ray", "--replicas", "9999"]) == 2  # more CPUs than any machine here: no Ray started
    assert "need 9999 CPUs" in capsys.readouterr().err


def test_without_ray_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError, as without corral[ray]
    assert main(["serve", "--ray", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "Ray Serve is not installed" in err and "corral[ray]" in err
    assert main(["ray", "status"]) == 2
    assert "corral[ray]" in capsys.readouterr().err


def test_ready_waits_for_every_replica_of_every_deployment() -> None:
    from types import SimpleNamespace as NS

    from corral.scale.replica import waiting_reason  # imports ray.serve: the dev extra has it

    def app(status: str, deployment: str, **replicas: int) -> NS:
        return NS(status=status, deployments={"corral": NS(status=deployment, replica_states=replicas)})

    assert waiting_reason(app("RUNNING", "HEALTHY", RUNNING=3)) is None
    assert waiting_reason(None) == "the application is not deployed yet"
    assert waiting_reason(app("DEPLOYING", "UPDATING", RUNNING=2, STARTING=1)) == "the application is deploying"
    assert waiting_reason(app("RUNNING", "UNHEALTHY", RUNNING=2, STARTING=1)) == "deployment corral: 1 starting"
    assert waiting_reason(app("RUNNING", "HEALTHY", RUNNING=3, STOPPING=1)) == "deployment corral: 1 stopping"
    assert waiting_reason(app("RUNNING", "UPSCALING", RUNNING=3)) == "deployment corral: upscaling"
