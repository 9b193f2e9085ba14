"""Would self-speculative decoding of plan tokens with the MTP head speed up sampling on a CPU?

Measures the two quantities that decide it, on the shipped model (or ``--model``):

1. acceptance: on held-out sequences of a prepared corpus (``csp`` prefixes, teacher forced),
   at every plan position where the next two positions are tokens, the probability that a
   token drafted by the MTP head is accepted by the model, ``sum_x min(p(x), q(x))`` with both
   distributions masked by the grammar (speculative sampling at temperature 1);
2. cost: CPU seconds of one decoding step of 1 position against one of 2 positions (what
   verifying a draft costs) plus the MTP module, at the sampler's batch size, same seed.

A draft saves a step only when accepted, so one verify step yields ``1 + a`` tokens for the
cost ratio ``r``; the best case for the plan is a speed-up of ``(1 + a) / r`` on its share of
the steps.

    python benchmarks/bench_mtp_speculative.py --data runs/pool_v2.h5 --limit 200 --json docs/results/mtp_speculative.json
"""

from __future__ import annotations

import json
import time
from datetime import date
from pathlib import Path

import click
import numpy as np
import torch

from crystalgen.api import PRETRAINED_DIR
from crystalgen.data.corpus import read_corpus
from crystalgen.model import CrystalModel
from crystalgen.representation import vocab as V
from crystalgen.representation.grammar import Grammar
from crystalgen.training.dataset import encode_corpus, is_validation


def _masks(tokens: np.ndarray, values: np.ndarray, cut: int, end: int) -> dict[int, np.ndarray] | None:
    """Grammar mask of every plan position (position -> mask); None where the grammar refuses
    the sequence (more atoms than the sampler's limit)."""
    try:
        state, out = Grammar.start(tokens[:cut]), {}
        for t in range(cut, end + 1):
            allowed = state.next_allowed()
            if isinstance(allowed, np.ndarray):
                out[t] = np.array(allowed)
            state.advance(int(tokens[t]), float(values[t]))
    except ValueError:
        return None
    return out


@torch.no_grad()
def acceptance(model: CrystalModel, seqs) -> tuple[float, int, int, int]:
    """Mean acceptance over plan positions; (mean, positions, plan tokens, all decoded positions),
    over the sequences the grammar accepts."""
    rates, plan_tokens, decoded = [], 0, 0
    for s in seqs:
        cut = int(np.flatnonzero(s.tokens == V.PLAN)[0]) + 1
        end = int(np.flatnonzero(s.tokens == V.END_PLAN)[0])
        masks = _masks(s.tokens, s.values, cut, end)
        if masks is None:
            continue
        batch = {k: torch.from_numpy(np.asarray(getattr(s, k)))[None] for k in ("tokens", "values")}
        kinds = torch.from_numpy(s.value_kind.astype(np.int64))[None]
        embeds = model.embed(batch["tokens"], batch["values"], kinds)
        hidden = model.backbone(embeds).hidden_states
        drafts = model.mtp(hidden[:, :-1], embeds[:, 1:])  # row t predicts position t + 2
        main = model.token_logits(hidden[0]).float()
        draft = model.token_logits(drafts[0]).float()
        plan_tokens += end + 1 - cut
        decoded += len(s.tokens) - cut
        for t in range(cut - 1, end - 1):  # draft position t + 2 from the state at t
            if t + 1 not in masks or t + 2 not in masks:
                continue
            mask = torch.from_numpy(masks[t + 2])
            p = torch.softmax(main[t + 1].masked_fill(~mask, -torch.inf), -1)
            q = torch.softmax(draft[t].masked_fill(~mask, -torch.inf), -1)
            rates.append(float(torch.minimum(p, q).sum()))
    return float(np.mean(rates)), len(rates), plan_tokens, decoded


@torch.no_grad()
def step_cost(model: CrystalModel, batch: int, repeats: int) -> tuple[float, float]:
    """CPU seconds of a 1-position step and of a 2-position step plus the MTP module, after a 16-position prefill."""
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(V.EL0, V.EL0 + 80, (batch, 16), generator=gen)
    zeros, kinds = torch.zeros(batch, 16), torch.zeros(batch, 16, dtype=torch.int64)
    out = []
    for width in (1, 2):
        total = 0.0
        for _ in range(repeats):
            cache = model.new_cache(batch, 64)
            model.step(tokens, zeros, kinds, cache)
            t0 = time.process_time()
            h = model.step(tokens[:, :width], zeros[:, :width], kinds[:, :width], cache)
            if width == 2:
                model.mtp(h[:, None], model.embed(tokens[:, :1], zeros[:, :1], kinds[:, :1]))
            total += time.process_time() - t0
        out.append(total / repeats)
    return out[0], out[1]


@click.command()
@click.option("--data", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--model", "model_dir", default=None, help="model directory (default: the shipped model)")
@click.option("--limit", type=int, default=200, show_default=True, help="held-out structures")
@click.option("--batch", type=int, default=256, show_default=True, help="sequences per decoding step")
@click.option("--repeats", type=int, default=20, show_default=True)
@click.option("--json", "json_out", default=None)
@click.option("--hardware", default="")
def main(data, model_dir, limit, batch, repeats, json_out, hardware) -> None:
    torch.set_num_threads(1)
    model = CrystalModel.from_pretrained(model_dir or PRETRAINED_DIR)
    corpus = read_corpus(data)
    held = np.flatnonzero([is_validation(str(m), 0.05, 0) for m in corpus.ids])
    rows = held[np.linspace(0, len(held) - 1, min(limit, len(held))).astype(int)]
    seqs = [v["csp"] for v in encode_corpus(corpus, progress=False, rows=rows).sequences]
    rate, positions, plan_tokens, decoded = acceptance(model, seqs)
    one, two = step_cost(model, batch, repeats)
    ratio = two / one
    plan_share = plan_tokens / decoded
    plan_speedup = (1 + rate) / ratio
    result = {
        "model": str(model_dir or "shipped"), "n_test": len(seqs), "draft_positions": positions,
        "acceptance_rate": rate, "plan_share_of_decoded_positions": plan_share,
        "step_cpu_s": {"1_position": one, "2_positions_plus_mtp": two, "ratio": ratio, "batch": batch},
        "plan_speedup_bound": plan_speedup,
        "overall_speedup_bound": 1.0 / ((1 - plan_share) + plan_share / plan_speedup),
        "hardware": hardware, "date": str(date.today()),
        "command": f"python benchmarks/bench_mtp_speculative.py --data {data} --limit {limit} --batch {batch}",
    }
    text = json.dumps(result, indent=2)
    print(text)
    if json_out:
        Path(json_out).write_text(text + "\n")


if __name__ == "__main__":
    main()
