"""One timed training run with the data resident on the GPU: the recipe for a lent H200.

    python benchmarks/gpu_train.py --config examples/train_gpu_h200.toml --data POOL.h5 --out OUT \\
        [--train-minutes 5.5] [--deadline-minutes 8.5] [--workers 16] [--no-compile] [--device cpu]

1. Encodes the prepared corpus in ``--workers`` processes (every prefix variant and, with
   ``data.augment``, every equivalent form: ``crystalgen.training.dataset``) and packs all
   sequences into flat arrays that go to the device once.
2. Each epoch is drawn exactly as ``crystalgen train`` draws it (``dataset.draw_epoch``):
   the rows of the whole epoch go to the device in one copy, and a step gathers its batch
   there (no host-side collation, no per-step copy).
3. Steps: bf16 autocast, fused AdamW, gradient clipping without a host sync. The host waits
   for the device only every ``log_every`` steps, to log losses and tokens/s. ``--compile``
   wraps the model in ``torch.compile`` (eager again if compiling fails) and pads batches to a
   multiple of 64 positions, so that at most ``max_length / 64`` shapes are compiled (the Gated
   DeltaNet's loop over 64-token chunks makes every length its own graph); it is off by default
   because one run has minutes, and compiling several shapes of fwd + bwd can take them.
4. Writes to OUT: ``model/`` (``save_pretrained``: bf16 shards of at most 15 MiB, the MTP
   module left out unless ``--keep-mtp``), ``training.json`` (settings, timings, validation
   NLL per head) and ``throughput.jsonl`` (one line per log point).

``--device cpu`` runs the same path on a CPU (a dry run with a tiny config).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np
import torch

from crystalgen.data.corpus import read_corpus
from crystalgen.model import CrystalModel
from crystalgen.training import distributed
from crystalgen.training.config import load_config
from crystalgen.training.dataset import VARIANTS, draw_epoch, encode_corpus, form_variant, is_validation
from crystalgen.training.loop import autocast_for, evaluate, learning_rate, make_optimizer

FIELDS = ("tokens", "values", "value_kind", "free", "loss_mask")
_CORPUS = None  # the corpus each forked encoding worker reads


@dataclass
class Packed:
    """Every sequence of every structure, back to back: structure i's rows start at
    ``row_base[i]``; row ``row_base[i] + 6 * form + variant`` (variant: index into VARIANTS)."""

    ids: list[str]
    lengths: np.ndarray  # (n, 6) length of each prefix variant
    form_counts: np.ndarray  # (n,) extra forms
    row_base: np.ndarray  # (n,)
    row_len: np.ndarray  # (rows,)
    arrays: dict[str, np.ndarray]  # flat per field
    skipped: int


def _encode_part(args: tuple[list[int], int, int]) -> Packed:
    rows, max_length, max_forms = args
    part = encode_corpus(_CORPUS, max_length, progress=False, max_forms=max_forms, rows=rows)
    forms = part.forms or [[] for _ in part.ids]
    seqs, lengths, counts = [], [], []
    for variants, extra in zip(part.sequences, forms):
        lengths.append([len(variants[v]) for v in VARIANTS])
        counts.append(len(extra))
        seqs += [variants[v] for v in VARIANTS]
        seqs += [form_variant(e, v) for e in extra for v in VARIANTS]
    row_len = np.array([len(s) for s in seqs], np.int64)
    arrays = {f: np.concatenate([getattr(s, f) for s in seqs]) if seqs else np.zeros(0) for f in FIELDS}
    arrays["tokens"] = arrays["tokens"].astype(np.int16)
    counts_a = np.array(counts, np.int64)
    base = np.concatenate([[0], np.cumsum(len(VARIANTS) * (counts_a + 1))])[:-1].astype(np.int64)
    return Packed(part.ids, np.array(lengths, np.int64).reshape(-1, len(VARIANTS)), counts_a, base, row_len,
                  arrays, part.skipped)


def encode_packed(data: str, max_length: int, max_forms: int, workers: int) -> Packed:
    """Encode and pack the corpus in ``workers`` forked processes (one in-process if 1)."""
    global _CORPUS
    _CORPUS = read_corpus(data)
    chunks = [list(c) for c in np.array_split(np.arange(len(_CORPUS)), max(1, workers * 4)) if len(c)]
    jobs = [(c, max_length, max_forms) for c in chunks]
    if workers > 1:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            parts = pool.map(_encode_part, jobs)
    else:
        parts = [_encode_part(j) for j in jobs]
    offsets = np.cumsum([0] + [len(p.row_len) for p in parts[:-1]])
    return Packed(
        [m for p in parts for m in p.ids],
        np.concatenate([p.lengths for p in parts]),
        np.concatenate([p.form_counts for p in parts]),
        np.concatenate([p.row_base + o for p, o in zip(parts, offsets)]),
        np.concatenate([p.row_len for p in parts]),
        {f: np.concatenate([p.arrays[f] for p in parts]) for f in FIELDS},
        sum(p.skipped for p in parts),
    )


class DeviceRows:
    """The packed sequences on the device; ``batch(rows, length)`` gathers a padded batch there."""

    def __init__(self, packed: Packed, device: torch.device) -> None:
        self.device = device
        self.flat = {f: torch.from_numpy(a).to(device) for f, a in packed.arrays.items()}
        self.row_len_host = packed.row_len
        self.row_len = torch.from_numpy(packed.row_len).to(device)
        self.row_start = torch.from_numpy(np.concatenate([[0], np.cumsum(packed.row_len)])[:-1]).to(device)

    def padded_length(self, rows: np.ndarray, multiple: int = 16) -> int:
        return int(-(-self.row_len_host[rows].max() // multiple) * multiple)

    def batch(self, rows: torch.Tensor, length: int) -> dict[str, torch.Tensor]:
        steps = torch.arange(length, device=self.device)
        valid = steps[None, :] < self.row_len[rows][:, None]
        pos = torch.where(valid, self.row_start[rows][:, None] + steps[None, :], 0)
        out = {}
        for f, flat in self.flat.items():
            v = flat[pos]
            v = v.long() if f in ("tokens", "value_kind") else v
            out[f] = torch.where(valid, v, torch.zeros((), dtype=v.dtype, device=self.device))
        return out


def _upload(rows: np.ndarray, device: torch.device) -> torch.Tensor:
    t = torch.from_numpy(rows.astype(np.int64))
    return t.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else t


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@click.command()
@click.option("--config", "config_path", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--data", required=True, type=click.Path(exists=True, dir_okay=False), help="prepared corpus (.h5)")
@click.option("--out", required=True, type=click.Path(file_okay=False))
@click.option("--set", "overrides", multiple=True, help="KEY=VALUE config override (dotted keys)")
@click.option("--device", default=None, help="cuda (default when present) or cpu")
@click.option("--train-minutes", type=float, default=5.5, show_default=True, help="training loop budget")
@click.option("--deadline-minutes", type=float, default=8.5, show_default=True,
              help="stop training so that everything, encoding and saving included, ends by then")
@click.option("--workers", type=int, default=os.cpu_count() or 1, show_default=True, help="encoding processes")
@click.option("--compile/--no-compile", "use_compile", default=False, show_default=True,
              help="torch.compile the model (batches padded to multiples of 64)")
@click.option("--keep-mtp", is_flag=True, help="save the MTP module too (default: inference weights)")
def main(config_path, data, out, overrides, device, train_minutes, deadline_minutes, workers, use_compile,
         keep_mtp) -> None:
    start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = load_config(config_path, list(overrides))
    if config.data.source_prompt_fraction > 0:
        raise click.UsageError("data.source_prompt_fraction: source prompts are drawn by `crystalgen train` only")
    forms = config.data.augment_max_variants if config.data.augment else 1
    packed = encode_packed(data, config.data.max_length, forms, workers)  # forks before CUDA is touched
    encode_s = time.perf_counter() - start
    ctx = distributed.setup(device)
    dev = ctx.device
    if dev.type == "cpu":
        torch.set_num_threads(config.num_threads)
    else:
        torch.backends.cuda.matmul.allow_tf32 = True
    held = np.array([is_validation(m, config.data.val_fraction, config.data.split_seed) for m in packed.ids], bool)
    train_idx, val_idx = np.flatnonzero(~held), np.flatnonzero(held)
    store = DeviceRows(packed, dev)
    print(f"encoded {len(packed.ids)} structures ({len(train_idx)} train, {len(val_idx)} val, {packed.skipped} "
          f"skipped), {len(packed.row_len):,} sequences, {int(packed.row_len.sum()):,} positions in {encode_s:.1f} s",
          flush=True)

    torch.manual_seed(config.seed)
    model = CrystalModel(config.model).to(dev)
    model.mask_heads = True  # no host syncs in the loss
    params = sum(p.numel() for p in model.parameters())
    opt = make_optimizer(model, config.optim, fused=dev.type == "cuda")
    net, compiled = (torch.compile(model) if use_compile else model), use_compile

    def step(batch: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        with autocast_for(dev, config.bf16):
            losses = net(batch)
        losses["loss"].backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.optim.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return losses, norm

    log_path = out / "throughput.jsonl"
    log_path.write_text("")
    steps, tokens, epoch, window, window_tokens, skipped_batches = 0, 0, 0, [], 0, 0
    train_start = time.perf_counter()
    window_start, first_step_s = train_start, None
    deadline = start + 60.0 * deadline_minutes
    stop = False
    multiple = 64 if use_compile else 16
    while not stop:
        draw = draw_epoch(packed.lengths[train_idx], packed.form_counts[train_idx], config.data, config.seed, epoch)
        rows = [packed.row_base[train_idx[b]] + len(VARIANTS) * draw.form[b] + draw.variant[b] for b in draw.batches]
        on_device = _upload(np.concatenate(rows), dev)
        offset = 0
        for r in rows:
            length = store.padded_length(r, multiple)
            batch = store.batch(on_device[offset : offset + len(r)], length)
            offset += len(r)
            progress = (time.perf_counter() - train_start) / (60.0 * train_minutes)
            lr = learning_rate(config.optim, steps, progress)
            for group in opt.param_groups:
                group["lr"] = lr
            try:
                losses, norm = step(batch)
            except torch.OutOfMemoryError:  # one oversized batch must not end the run
                opt.zero_grad(set_to_none=True)
                torch.cuda.empty_cache()
                skipped_batches += 1
                print(f"out of memory on a batch of {len(r)} x {length}; skipped", flush=True)
                continue
            except Exception as err:  # torch.compile can fail (at a first or a later shape); eager always runs
                if not compiled:
                    raise
                print(f"torch.compile failed ({type(err).__name__}: {err}); running eagerly", flush=True)
                opt.zero_grad(set_to_none=True)
                net, compiled = model, False
                losses, norm = step(batch)
            steps += 1
            real = int(packed.row_len[r].sum())  # counted on the host
            tokens += real
            window_tokens += real
            window.append(torch.stack([losses[k].detach().float() for k in ("loss", "token", "length", "angle",
                                                                           "coordinate")] + [norm.float()]))
            if first_step_s is None:
                _sync(dev)
                first_step_s = time.perf_counter() - train_start  # includes compiling
                window_start, window_tokens, window = time.perf_counter(), 0, []
                continue
            if steps % config.log_every == 0:
                _sync(dev)  # once per log_every steps, not per step
                now = time.perf_counter()
                means = torch.stack(window).mean(0).tolist()
                record = {"step": steps, "epoch": epoch, "elapsed_s": now - train_start,
                          "tokens_per_s": window_tokens / (now - window_start), "batch": len(r), "lr": lr,
                          **dict(zip(("loss", "token", "length", "angle", "coordinate", "grad_norm"), means))}
                with log_path.open("a") as f:
                    f.write(json.dumps(record) + "\n")
                print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()),
                      flush=True)
                window, window_start, window_tokens = [], now, 0
                stop = now - train_start >= 60.0 * train_minutes or now >= deadline
            if stop or (config.max_steps and steps >= config.max_steps):
                stop = True
                break
        epoch += 1
    _sync(dev)
    train_s = time.perf_counter() - train_start
    val_rows = packed.row_base[val_idx]  # the canonical form's csp variant
    val_rows = val_rows[np.argsort(packed.row_len[val_rows], kind="stable")]
    val_batches = [store.batch(_upload(v, dev), store.padded_length(v))
                   for v in np.array_split(val_rows, max(1, -(-len(val_rows) // config.data.batch_size)))
                   if len(v)]
    val = evaluate(model, val_batches, ctx, config.bf16, ready=True) if val_batches else {}
    model.save_pretrained(out / "model", dtype=torch.bfloat16, drop_mtp=not keep_mtp)
    measured = [json.loads(line) for line in log_path.read_text().splitlines()]
    summary = {
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "compiled": compiled, "parameters": params,
        "parameters_saved": sum(p.numel() for n, p in model.named_parameters() if keep_mtp or not n.startswith("mtp.")),
        "structures": {"train": int(len(train_idx)), "val": int(len(val_idx)), "skipped": packed.skipped},
        "sequences": int(len(packed.row_len)), "encode_s": encode_s, "first_step_s": first_step_s,
        "train_s": train_s, "steps": steps, "epochs": epoch, "tokens": tokens, "oom_skipped_batches": skipped_batches,
        "tokens_per_s_mean": tokens / train_s,
        "tokens_per_s_after_first_step": (float(np.mean([m["tokens_per_s"] for m in measured])) if measured else None),
        "val": val, "total_s": time.perf_counter() - start, "config": config.to_dict(),
        "command": {"train_minutes": train_minutes, "deadline_minutes": deadline_minutes, "workers": workers,
                    "compile": use_compile, "overrides": list(overrides)},
    }
    (out / "training.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "config"}, indent=1), flush=True)


if __name__ == "__main__":
    main()
