"""One home for what `tent` and `ocl` run with: the node, eval and the bench read core's
MODE_PRESETS, so the settings measured for a baseline are the ones a robot runs."""
from __future__ import annotations

from dataclasses import replace

from tttkd_ros.core.config import MODE_PRESETS, AdaptConfig, with_mode_preset
from tttkd_ros.tools.evaluation import mode_configs


def test_a_preset_replaces_only_its_fields() -> None:
    mine = AdaptConfig(mode="tent", lr=5e-2, max_steps=3)
    tent = with_mode_preset(mine)
    assert (tent.params, tent.bn_prior, tent.lr) == ("backbone_bn", 0.0, 3e-4)
    assert tent.max_steps == 3  # not a preset field: kept
    assert with_mode_preset(replace(mine, mode="kd+ocl")) == replace(mine, mode="kd+ocl")


def test_eval_builds_each_mode_as_the_node_does() -> None:
    base = AdaptConfig(lr=2e-2, budget_ms=500.0)  # a robot's parameter file
    configs = mode_configs(["kd+ocl", "tent", "ocl"], base=base)
    assert configs["kd+ocl"].lr == 2e-2 and configs["kd+ocl"].budget_ms == 500.0
    for mode in ("tent", "ocl"):
        assert all(getattr(configs[mode], k) == v for k, v in MODE_PRESETS[mode].items())
        assert configs[mode].budget_ms == 500.0
    plain = mode_configs(["tent"], base=base, presets=False)["tent"]
    assert plain.lr == 2e-2 and plain.params == base.params
    flags = mode_configs(["tent"], {"lr": 1e-5}, base=base)["tent"]
    assert flags.lr == 1e-5 and flags.params == "backbone_bn"  # the command line wins
