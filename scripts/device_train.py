"""Train the default model and the ablation set concurrently on one GPU.

Used for the shipped model (see crystalgen/pretrained/MODEL_CARD.md): one lent GPU
machine, one call. Every run is an ordinary `crystalgen.training.loop.train` with its own
config; they run as separate processes sharing the GPU, each bounded by its own
``max_minutes``, so the ablation variants get equal wall-clock time side by side.

    python scripts/device_train.py --data runs/pool.h5 --out runs/device [--minutes-scale 1.0]

Writes OUT/<run>/ (the usual run folders), OUT/summary.json (final validation NLL per
head, steps, tokens, wall time of every run) and OUT/default_fp16/ (the default model's
best weights in float16, the form that ships).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

RUNS: dict[str, tuple[str, list[str]]] = {
    "default": ("examples/train_default.toml", []),
    "ablation_hybrid_moe_fope": ("examples/ablation_base.toml", []),
    "ablation_attention_only": (
        "examples/ablation_base.toml",
        ['model.backbone_overrides.layer_types=["full_attention","full_attention","full_attention","full_attention"]'],
    ),
    "ablation_dense": (
        "examples/ablation_base.toml",
        ["model.backbone_overrides.num_experts=0", "model.backbone_overrides.intermediate_size=384"],
    ),
    "ablation_rope": ("examples/ablation_base.toml", ['model.backbone_overrides.position_embedding="rope"']),
}

_CHILD = """
import json, sys
from crystalgen.training.config import load_config
from crystalgen.training.loop import train
cfg = load_config(sys.argv[1], json.loads(sys.argv[2]))
train(cfg, sys.argv[3], sys.argv[4], resume=True, device=sys.argv[5], progress=False)
"""


def _final(run_dir: Path) -> dict:
    """The last 'done' record of a run's log (or its last validation record)."""
    records = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines() if line.strip()]
    done = [r for r in records if r.get("event") == "done"]
    val = [r for r in records if r.get("split") == "val"]
    start = next((r for r in records if r.get("event") == "start"), {})
    best = min((r["val_total"] for r in val), default=None)
    return {"final": done[-1] if done else (val[-1] if val else None), "best_val_total": best,
            "parameters": start.get("parameters"), "train": start.get("train"), "val": start.get("val")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--minutes-scale", type=float, default=1.0, help="scale every run's max_minutes (smoke tests)")
    ap.add_argument("--only", nargs="*", help="run only these runs")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    procs = {}
    for name, (config, overrides) in RUNS.items():
        if args.only and name not in args.only:
            continue
        from crystalgen.training.config import load_config

        minutes = load_config(config).max_minutes * args.minutes_scale
        sets = [*overrides, f"max_minutes={minutes}"]
        log = (out / f"{name}.log").open("w")
        # run from the output folder with absolute paths, so that a source checkout in
        # the working directory never shadows the installed package
        procs[name] = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(Path(config).resolve()), json.dumps(sets),
             str(Path(args.data).resolve()), str((out / name).resolve()), args.device],
            stdout=log, stderr=subprocess.STDOUT, cwd=out,
        )
        print(f"started {name}: {config} {sets}", flush=True)
    start = time.time()
    codes = {name: p.wait() for name, p in procs.items()}
    print(f"all runs finished in {time.time() - start:.0f} s: {codes}", flush=True)
    summary = {"exit_codes": codes, "runs": {}}
    for name in procs:
        try:
            summary["runs"][name] = _final(out / name)
        except FileNotFoundError as err:
            summary["runs"][name] = {"error": str(err)}
    try:
        import torch

        summary["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    except Exception as err:  # the summary must still be written
        summary["device"] = f"unknown ({err})"
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    best = out / "default" / "best"
    if (best / "model.safetensors").is_file():
        from safetensors.torch import load_file, save_file

        fp16 = out / "default_fp16"
        fp16.mkdir(exist_ok=True)
        state = {k: (v.half() if v.is_floating_point() else v) for k, v in load_file(str(best / "model.safetensors")).items()}
        save_file(state, str(fp16 / "model.safetensors"), metadata={"format": "pt", "dtype": "float16"})
        for extra in ("config.json", "training.json"):
            if (best / extra).is_file():
                (fp16 / extra).write_text((best / extra).read_text())
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
