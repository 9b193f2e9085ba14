"""Screening with the optional extras: CHGNet energies (`crystalgen[chgnet]`) and the Ray
executor (`crystalgen[ray]`). Each test is skipped when its extra is not installed."""

from __future__ import annotations

import pytest
from test_screening import assert_same_run, reference_structures, write_config

from crystalgen.screening.config import RankConfig, ScreenConfig
from crystalgen.screening.pipeline import run_screen
from crystalgen.screening.ranking import energy_score, load_calculator

CHGNET = "chgnet.model.dynamics:CHGNetCalculator"


def test_chgnet_energy_and_relaxation_of_rock_salt():
    pytest.importorskip("chgnet")
    calc = load_calculator(CHGNET, {"use_device": "cpu"})
    nacl = reference_structures()["mp-22862"]  # rock-salt NaCl, MP (PBE) energy about -3.4 eV/atom
    static = energy_score(nacl, calc, RankConfig(by="energy", calculator=CHGNET))
    assert -3.8 < static.energy_per_atom < -3.0 and static.relaxed is None

    stretched = nacl.copy()
    stretched.scale_lattice(nacl.volume * 1.25)
    relaxed = energy_score(stretched, calc, RankConfig(by="energy", calculator=CHGNET, relax=True, steps=40))
    assert relaxed.relax_steps is not None and relaxed.relax_steps > 0
    # relaxing the stretched cell lowers its energy and brings the volume back towards the known one
    unrelaxed = energy_score(stretched, calc, RankConfig(by="energy", calculator=CHGNET))
    assert relaxed.energy_per_atom < unrelaxed.energy_per_atom
    assert abs(relaxed.relaxed.volume - nacl.volume) < abs(stretched.volume - nacl.volume)


def test_chgnet_ranked_run(tmp_path):
    pytest.importorskip("chgnet")
    rank = f'by = "energy"\ncalculator = "{CHGNET}"\ncalculator_kwargs = {{ use_device = "cpu" }}\nrelax = true\nsteps = 3'
    cfg = ScreenConfig.from_toml(write_config(tmp_path / "c.toml", nacl=1, lio=1, rank=rank))
    result = run_screen(cfg, tmp_path / "run", progress=False)
    ranked = result.ranked()
    assert ranked and all(-8.0 < c["energy_per_atom"] < 0.0 for c in ranked)
    assert all(c["relaxed"] is not None and 0 < c["relax_steps"] <= 3 for c in ranked)


def test_ray_executor_matches_local_run(tmp_path):
    pytest.importorskip("ray")
    config = write_config(tmp_path / "c.toml", shard_size=2, nacl=4, lio=2)
    run_screen(ScreenConfig.from_toml(config), tmp_path / "local", workers=1, progress=False)
    result = run_screen(ScreenConfig.from_toml(config), tmp_path / "ray", executor="ray", workers=2, progress=False)
    assert result.shards_run == 3
    assert_same_run(tmp_path / "local", tmp_path / "ray")
