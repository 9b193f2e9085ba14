"""Architecture ablation on CPU: one backbone field changed at a time, several seeds each.

Every run trains the ``tiny`` preset from scratch (``examples/ablation_cpu.toml``) for the same
wall-clock budget on one pinned core (``--jobs`` runs at a time, each on a core of its own),
so "equal time" is the run itself. With ``--steps N`` every run is bounded by N optimizer steps
instead (its learning-rate schedule then follows the step count, not the clock), and the runs
compare at equal steps; the summary also compares the validation NLL logged every ``eval_every``
steps at the largest step every run reached. The criterion is the CSP match rate
of each run's final model alone (``crystalgen evaluate csp --strategy model``, K=1) on held-out
pool structures: rows of the training split's validation part (``data.split_seed`` 0), which no
run trains on whatever its ``seed``. A run folder that already holds its CSP result is skipped,
so the script resumes.

    python benchmarks/ablation_cpu.py --data runs/pool_v2.h5 --heldout runs/pool_val500.csv.gz \\
        --out runs/ablation --minutes 10 --seeds 0,1,2 --json docs/results/ablation_cpu.json
    python benchmarks/ablation_cpu.py ... --steps 330 --variants attention --out runs/ablation_steps ...
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from queue import Queue
from pathlib import Path

import click

from crystalgen.evaluation.report import provenance, write_json

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "examples" / "ablation_cpu.toml"
ALL_ATTENTION = '["full_attention","full_attention","full_attention","full_attention"]'
VARIANTS: dict[str, list[str]] = {
    "hybrid": [],  # the tiny preset: 3 Gated DeltaNet layers : 1 gated attention, MoE, FoPE
    "attention": [f"model.backbone_overrides.layer_types={ALL_ATTENTION}"],
    "dense": ["model.backbone_overrides.num_experts=0", "model.backbone_overrides.intermediate_size=384"],
    "rope": ['model.backbone_overrides.position_embedding="rope"'],
}


def _pinned(core: int):
    def pin() -> None:
        if hasattr(os, "sched_setaffinity") and core < os.cpu_count():
            os.sched_setaffinity(0, {core})
    return pin


def _run(cmd: list[str], log: Path, core: int) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    with log.open("w") as fh:
        subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, check=True, preexec_fn=_pinned(core))


@dataclass(frozen=True)
class Budget:
    """What every run of one ablation shares: data, held-out set, output folder and budget."""

    data: Path
    heldout: Path
    out: Path
    minutes: float
    steps: int  # 0: bounded by minutes
    eval_every: int


def train_and_score(variant: str, seed: int, core: int, a: Budget) -> dict:
    run = a.out / f"{variant}_s{seed}"
    csp = run / "csp.json"
    if not csp.exists():
        run.mkdir(parents=True, exist_ok=True)
        budget = [f"max_steps={a.steps}", "max_minutes=0"] if a.steps else [f"max_minutes={a.minutes}"]
        sets = [f"seed={seed}", *budget, f"eval_every={a.eval_every}", *VARIANTS[variant]]
        cmd = [sys.executable, "-m", "crystalgen", "train", "--config", str(BASE), "--data", str(a.data),
               "--out", str(run), "--quiet", *[x for s in sets for x in ("--set", s)]]
        if not (run / "best").exists():
            _run(cmd, run / "train.log", core)
        _run([sys.executable, "-m", "crystalgen", "evaluate", "csp", "--test", str(a.heldout), "--samples", "1",
              "--no-compare", "--strategy", "model", "--model", str(run / "best"), "--seed", "0",
              "--workers", "1", "--json", str(csp), "--overwrite"], run / "csp.log", core)
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    done = next(r for r in log if r.get("event") == "done")
    start = next(r for r in log if r.get("event") == "start")
    result = json.loads(csp.read_text())
    return {
        "variant": variant, "seed": seed, "parameters": start["parameters"], "steps": done["step"],
        "elapsed_s": done["elapsed"], "tokens": done["tokens"], "tokens_per_s": done["tokens"] / done["elapsed"],
        "val_final": {k[4:]: v for k, v in done.items() if k.startswith("val_")},
        "val_curve": [{"step": r["step"], "total": r["val_total"]} for r in log if r.get("split") == "val"],
        "csp_match_rate": result["match_rate"], "csp_rmse": result["rmse"], "csp_n_test": result["n_test"],
        "spacegroup_agreement": result.get("spacegroup_agreement"),
    }


def summarise(runs: list[dict], eval_every: int) -> dict:
    common_step = min(r["steps"] for r in runs) // eval_every * eval_every
    out = {"equal_steps_at": common_step, "variants": {}}
    for v in VARIANTS:
        rs = [r for r in runs if r["variant"] == v]
        if not rs:
            continue
        at = [next(p["total"] for p in r["val_curve"] if p["step"] == common_step) for r in rs
              if any(p["step"] == common_step for p in r["val_curve"])]
        def stats(xs: list[float]) -> dict:
            return {"mean": statistics.fmean(xs), "sd": statistics.stdev(xs) if len(xs) > 1 else None,
                    "values": xs}
        out["variants"][v] = {
            "seeds": [r["seed"] for r in rs],
            "equal_time_csp_match_rate": stats([r["csp_match_rate"] for r in rs]),
            "equal_time_val_total": stats([r["val_final"]["total"] for r in rs]),
            "equal_time_val_coordinate": stats([r["val_final"]["coordinate"] for r in rs]),
            "equal_time_val_token": stats([r["val_final"]["token"] for r in rs]),
            "steps": stats([float(r["steps"]) for r in rs]),
            "tokens_per_s": stats([r["tokens_per_s"] for r in rs]),
            f"equal_steps_val_total_at_{common_step}": stats(at) if at and len(at) == len(rs) else None,
        }
    return out


@click.command()
@click.option("--data", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="prepared training corpus (crystalgen data prepare)")
@click.option("--heldout", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="CSV of held-out pool structures (the split's validation rows) for the CSP criterion")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--minutes", default=10.0, show_default=True, help="training budget per run")
@click.option("--steps", default=0, show_default=True, help="bound each run by this many steps instead (0: by --minutes)")
@click.option("--seeds", default="0,1,2", show_default=True)
@click.option("--variants", default=",".join(VARIANTS), show_default=True)
@click.option("--eval-every", default=150, show_default=True)
@click.option("--jobs", default=2, show_default=True, help="runs at a time, each pinned to its own core")
@click.option("--json", "json_out", required=True, type=click.Path(dir_okay=False, path_type=Path))
def main(data, heldout, out, minutes, steps, seeds, variants, eval_every, jobs, json_out) -> None:
    a = Budget(data, heldout, out, minutes, steps, eval_every)
    plan = [(v, int(s)) for s in seeds.split(",") for v in variants.split(",")]
    cores: Queue[int] = Queue()
    for core in range(jobs):
        cores.put(core)

    def on_free_core(variant_seed: tuple[str, int]) -> dict:
        core = cores.get()
        try:
            return train_and_score(*variant_seed, core, a)
        finally:
            cores.put(core)

    with ThreadPoolExecutor(jobs) as pool:
        runs = list(pool.map(on_free_core, plan))
    report = {
        **provenance("ablation_cpu"),
        "base_config": str(BASE.relative_to(ROOT)), "minutes_per_run": None if steps else minutes, "steps_per_run": steps or None, "jobs": jobs,
        "variants": {v: VARIANTS[v] for v in variants.split(",")},
        "summary": summarise(runs, eval_every), "runs": runs,
    }
    write_json(json_out, report)
    print(json.dumps(report["summary"], indent=2))


if __name__ == "__main__":
    main()
