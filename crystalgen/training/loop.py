"""The training loop behind ``crystalgen train``.

AdamW with warm-up + cosine decay, gradient clipping, bf16 autocast on CUDA,
DistributedDataParallel under torchrun, per-head losses in the progress bar, periodic
validation NLL per head (the best model is kept in ``OUT/best/``; the held-out material ids
in ``OUT/validation_ids.txt``), an optional periodic
sample -> validate pass rate, and checkpoints (``OUT/checkpoint.pt``: state dicts and
plain numbers only, loadable with ``torch.load(weights_only=True)``) to resume from.

Batches are a pure function of (seed, epoch) and the schedule of the step count (and of
the clock only when ``max_minutes`` is set), so a resumed run continues exactly.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from crystalgen.progress import progress_bar

from crystalgen.backbone import load_weights
from crystalgen.model import HEAD_NAMES, CrystalModel
from crystalgen.representation import vocab as V
from crystalgen.training import distributed
from crystalgen.training.config import OptimConfig, TrainConfig
from crystalgen.training.dataset import (
    EncodedCorpus, EpochBatches, collate, encode_corpus, source_rows, split, validation_batches,
)

log = logging.getLogger(__name__)
CHECKPOINT, BEST, LOG = "checkpoint.pt", "best", "train_log.jsonl"
HELD_OUT = "validation_ids.txt"  # the material ids of the validation split, one per line


@dataclass
class TrainState:
    """Where a run is; saved in the checkpoint."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    elapsed: float = 0.0  # seconds spent in the loop, over all sessions
    tokens: int = 0  # real (non-pad) tokens seen, all ranks
    best_val: float = math.inf


def learning_rate(cfg: OptimConfig, step: int, progress: float) -> float:
    """Linear warm-up over ``warmup_steps``, then cosine from ``lr`` to ``min_lr_ratio * lr`` as progress goes 0 -> 1."""
    warm = min(1.0, (step + 1) / max(cfg.warmup_steps, 1))
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    return cfg.lr * warm * (cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * cosine)


def progress_of(config: TrainConfig, state: TrainState) -> float:
    """How far along the run is, by whichever budget (steps or minutes) is further along."""
    parts = [0.0]
    if config.max_steps:
        parts.append(state.step / config.max_steps)
    if config.max_minutes:
        parts.append(state.elapsed / (60.0 * config.max_minutes))
    return max(parts)


def make_optimizer(model: torch.nn.Module, cfg: OptimConfig, fused: bool = False) -> torch.optim.AdamW:
    """AdamW; weight decay only on matrices (not on norms, biases or the embedding table).
    ``fused`` (CUDA): one kernel for the whole update."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 and "embed_tokens" not in name else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), **({"fused": True} if fused else {}))


def autocast_for(device: torch.device, bf16: bool):
    if device.type == "cuda" and bf16:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@torch.no_grad()
def evaluate(model: CrystalModel, batches, ctx: distributed.DistContext, bf16: bool, ready: bool = False) -> dict[str, float]:
    """Mean validation NLL per head over all ranks' batches, and ``total`` (their sum).
    Batches are lists of sequences, or with ``ready`` tensor dicts already on the device."""
    was_training = model.training
    model.eval()
    sums = torch.zeros(2 * len(HEAD_NAMES), dtype=torch.float64, device=ctx.device)
    for seqs in batches:
        with autocast_for(ctx.device, bf16):
            terms = model.nll_sums(seqs if ready else to_device(collate(seqs), ctx.device))
        for j, name in enumerate(HEAD_NAMES):
            sums[2 * j] += terms[name][0].double()
            sums[2 * j + 1] += terms[name][1]
    ctx.all_reduce_sum(sums)
    model.train(was_training)
    out = {name: (sums[2 * j] / sums[2 * j + 1].clamp_min(1)).item() for j, name in enumerate(HEAD_NAMES)}
    out["total"] = sum(out.values())
    return out


def save_checkpoint(path: Path, model: CrystalModel, opt, state: TrainState, config: TrainConfig) -> None:
    """Atomically write state dicts + plain numbers (no pickled objects)."""
    payload = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "state": asdict(state),
        "config": json.dumps(config.to_dict()),
    }
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, device: torch.device) -> dict:
    return torch.load(path, map_location=device, weights_only=True)


def warm_start(model: CrystalModel, source: Path) -> list[str]:
    """Load the weights of ``source`` (a ``save_pretrained`` folder or a ``checkpoint.pt``) into
    ``model``. A tensor that grew along its first axis (a vocabulary with new tokens) keeps the
    saved rows and the fresh initialisation of the new ones; weights absent from ``source`` (an
    MTP head dropped at save time) keep theirs. Returns the names of the grown tensors."""
    if source.is_dir():
        saved = {k: v.float() for k, v in load_weights(source).items()}
    else:
        saved = load_checkpoint(source, torch.device("cpu"))["model"]
    own = model.state_dict()
    grown = []
    for name, tensor in saved.items():
        if name not in own:
            raise ValueError(f"{source}: weight {name} has no place in this model")
        mine = own[name]
        if tensor.shape == mine.shape:
            mine.copy_(tensor)
        elif tensor.dim() and tensor.shape[1:] == mine.shape[1:] and tensor.shape[0] < mine.shape[0]:
            mine[: tensor.shape[0]].copy_(tensor)
            grown.append(name)
        else:
            raise ValueError(f"{source}: weight {name} is {tuple(tensor.shape)}, the model's {tuple(mine.shape)}")
    return grown


def sample_prefixes(val: EncodedCorpus, count: int) -> list[np.ndarray]:
    """The ``csp`` prefixes (up to ``<plan>``) of ``count`` evenly spread validation materials."""
    if not len(val) or count <= 0:
        return []
    picks = np.linspace(0, len(val) - 1, min(count, len(val))).astype(int)
    out = []
    for i in picks:
        tokens = val.sequences[i]["csp"].tokens
        out.append(tokens[: int(np.flatnonzero(tokens == V.PLAN)[0]) + 1])
    return out


class _Logger:
    """Appends JSON lines to ``OUT/train_log.jsonl`` and echoes them above the progress bar."""

    def __init__(self, out: Path, enabled: bool) -> None:
        self.path, self.enabled = out / LOG, enabled

    def __call__(self, record: dict, echo: bool = True) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if echo:
            tqdm.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))


def train(
    config: TrainConfig,
    data_path: str | Path,
    out_dir: str | Path,
    resume: bool = False,
    device: str | None = None,
    progress: bool = True,
) -> dict[str, float]:
    """Train (or resume) a model on a prepared corpus; returns the final validation NLLs."""
    ctx = distributed.setup(device)
    try:
        return _train(config, Path(data_path), Path(out_dir), resume, ctx, progress)
    finally:
        distributed.teardown(ctx)


def _train(config: TrainConfig, data_path: Path, out: Path, resume: bool, ctx, progress: bool) -> dict[str, float]:
    from crystalgen.data.corpus import read_corpus

    if ctx.device.type == "cpu":
        torch.set_num_threads(config.num_threads)
        if config.num_threads > 1 and os.environ.get("OMP_WAIT_POLICY", "").upper() != "PASSIVE":
            log.warning("OMP_WAIT_POLICY is not PASSIVE: on a busy CPU, %d spinning threads can be "
                        "~50x slower than one (export OMP_WAIT_POLICY=PASSIVE or num_threads = 1)",
                        config.num_threads)
    out.mkdir(parents=True, exist_ok=True)
    show = progress and ctx.is_main
    emit = _Logger(out, ctx.is_main)

    forms = config.data.augment_max_variants if config.data.augment else 1
    corpus = read_corpus(data_path)
    rows = source_rows(corpus.sources, config.data.sources, config.data.source_repeats, data_path)
    encoded = encode_corpus(corpus, config.data.max_length, progress=show, max_forms=forms, rows=rows)
    train_set, val_set = split(encoded, config.data.val_fraction, config.data.split_seed)
    if not len(train_set):
        raise ValueError(f"{data_path}: no usable training structures")
    epochs = EpochBatches(train_set, config.data, config.seed, ctx.rank, ctx.world)
    val_batches = validation_batches(val_set, config.data.batch_size, ctx.rank, ctx.world)
    prefixes = sample_prefixes(val_set, config.sample_count) if ctx.is_main else []

    torch.manual_seed(config.seed)
    model = CrystalModel(config.model).to(ctx.device)
    model.source_prompts = epochs.prompted_sources  # saved with the model: what `like=` may ask for
    model.mask_heads = ctx.device.type == "cuda"
    opt = make_optimizer(model, config.optim)
    state = TrainState()
    ckpt_path = out / CHECKPOINT
    if resume and ckpt_path.exists():
        saved = load_checkpoint(ckpt_path, ctx.device)
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        state = TrainState(**saved["state"])
        emit({"event": "resume", "step": state.step, "epoch": state.epoch, "world": ctx.world,
              "device": str(ctx.device)})
    else:
        if config.init_from:
            grown = warm_start(model, Path(config.init_from))
            emit({"event": "init_from", "path": config.init_from, "grown": grown})
    if not (resume and ckpt_path.exists()) and ctx.is_main:
        (out / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
        (out / HELD_OUT).write_text("".join(f"{m}\n" for m in val_set.ids))
        emit({"event": "start", "train": len(train_set), "val": len(val_set), "skipped": encoded.skipped,
              "source_prompts": list(model.source_prompts),
              "parameters": sum(p.numel() for p in model.parameters()), "world": ctx.world,
              "device": str(ctx.device)})
    net = model
    if ctx.enabled:
        net = DistributedDataParallel(
            model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
            find_unused_parameters=True,  # MoE experts and value heads may see no rows in a batch
        )
    model.train()

    session_first_step = state.step

    def budget_left() -> bool:
        if config.max_steps and state.step >= config.max_steps:
            return False
        if config.session_steps and state.step - session_first_step >= config.session_steps:
            return False
        return not (config.max_minutes and state.elapsed >= 60.0 * config.max_minutes)

    bar = progress_bar(total=config.max_steps or None, initial=state.step, enabled=show, desc="train",
               dynamic_ncols=True)
    window: dict[str, list[torch.Tensor]] = {}
    session_start, elapsed_before = time.perf_counter(), state.elapsed
    window_start, window_tokens = session_start, 0
    last_ckpt, last_val = state.elapsed, None
    while budget_left():
        batches = epochs.plan(state.epoch)
        while state.batch_in_epoch < len(batches) and budget_left():
            cpu_batch = collate(batches[state.batch_in_epoch])
            real = int((cpu_batch["tokens"] != V.PAD).sum()) * ctx.world  # counted on the host: no sync
            batch = to_device(cpu_batch, ctx.device)
            lr = learning_rate(config.optim, state.step, progress_of(config, state))
            for group in opt.param_groups:
                group["lr"] = lr
            with autocast_for(ctx.device, config.bf16):
                losses = net(batch)
            losses["loss"].backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.optim.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)

            state.step += 1
            state.batch_in_epoch += 1
            state.tokens += real
            window_tokens += real
            now = time.perf_counter()
            state.elapsed = ctx.all_reduce_max(elapsed_before + now - session_start)
            for k, v in losses.items():  # device tensors, read once per log line
                window.setdefault(k, []).append(v.detach())
            bar.update(1)

            if state.step % config.log_every == 0 or not budget_left():
                means = {k: torch.stack(v).float().mean().item() for k, v in window.items()}
                rate = window_tokens / max(now - window_start, 1e-9)
                bar.set_postfix({"loss": f"{means['loss']:.3f}", "tok": f"{means['token']:.3f}",
                                 "len": f"{means['length']:.2f}", "ang": f"{means['angle']:.2f}",
                                 "xyz": f"{means['coordinate']:.2f}", "tok/s": f"{rate:.0f}"})
                emit({"step": state.step, "split": "train", "lr": lr, "grad_norm": float(grad_norm),
                      "tokens_per_s": rate, "elapsed": state.elapsed, **means}, echo=False)
                window, window_start, window_tokens = {}, now, 0

            finished = not budget_left()
            if state.step % config.eval_every == 0 or finished:
                val = last_val = evaluate(model, val_batches, ctx, config.bf16)
                emit({"step": state.step, "split": "val", **{f"val_{k}": v for k, v in val.items()}})
                if val["total"] < state.best_val and ctx.is_main:
                    state.best_val = val["total"]
                    model.save_pretrained(out / BEST)
                    (out / BEST / "training.json").write_text(json.dumps({"step": state.step, "val": val}, indent=2))
            if config.sample_every and (state.step % config.sample_every == 0 or finished) and ctx.is_main:
                model.eval()
                rates = sample_pass_rate(model, prefixes, seed=config.seed + state.step)
                model.train()
                if rates is not None:
                    emit({"step": state.step, "split": "sample", **rates})
            # the synchronised clock, so that every rank agrees on when to checkpoint
            timed = config.checkpoint_minutes and state.elapsed - last_ckpt >= 60.0 * config.checkpoint_minutes
            if state.step % config.checkpoint_every == 0 or finished or timed:
                if ctx.is_main:
                    save_checkpoint(ckpt_path, model, opt, state, config)
                last_ckpt = state.elapsed
                ctx.barrier()
        if state.batch_in_epoch >= len(batches):
            state.epoch += 1
            state.batch_in_epoch = 0
    bar.close()
    final = last_val if last_val is not None else evaluate(model, val_batches, ctx, config.bf16)
    if ctx.is_main:
        emit({"event": "done", "step": state.step, "tokens": state.tokens, "elapsed": state.elapsed,
              **{f"val_{k}": v for k, v in final.items()}})
    return final


def sample_pass_rate(model: CrystalModel, prefixes, seed: int):
    """Lazy import: the sampler and validators are only needed when the check is on."""
    from crystalgen.training.validity import sample_pass_rate as check

    return check(model, prefixes, seed)
