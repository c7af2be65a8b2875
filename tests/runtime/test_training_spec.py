"""What a training replica reserves on Ray, from its pool's machine spec."""

from __future__ import annotations

from raydeck.core.models.training import MachineSpec
from raydeck.runtime.training.spec import ray_options


def test_ray_options_reserve_what_the_machine_spec_asks() -> None:
    assert ray_options(MachineSpec()) == {"num_cpus": 1, "num_gpus": 0}
    spec = MachineSpec(cpus=0.5, gpus=1, memory=2 * 1024**3, resources={"accel": 2})
    assert ray_options(spec) == {
        "num_cpus": 0.5,
        "num_gpus": 1,
        "memory": 2 * 1024**3,
        "resources": {"accel": 2},
    }
