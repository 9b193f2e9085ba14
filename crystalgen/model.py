"""The crystal model: token + value embeddings -> Intern-S2-style backbone -> heads.

One position of the sequence (docs/sequence_format.md) is either a token or a real value.
The input at position t is the embedding of its token (for a value position, the
value-kind token such as ``<v:x>``) plus, at value positions, a Fourier embedding of the
value itself. The hidden state at t predicts position t+1: a token through the token head,
or a value through the head of its kind (Gaussian mixture for lengths and angles, von
Mises mixture for coordinates). Which kind comes next is always known from the grammar,
so training and sampling pick the head by the target's kind.

Only torch, numpy and the package's pure modules are imported here: the GPU training box
has no pymatgen.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crystalgen.backbone import Backbone, BackboneConfig, MTPModule, get_config, load_weights, save_weights
from crystalgen.backbone.shards import MAX_SHARD_BYTES
from crystalgen.heads import (
    GaussianMixtureHead,
    MixtureDistribution,
    TokenHead,
    ValueEmbedding,
    VonMisesMixtureHead,
)
from crystalgen.representation.sequence import EncodedCrystal
from crystalgen.representation.vocab import VOCAB_SIZE

#: value kind code -> loss name (kinds follow representation.sequence: 0 token, 1..3 values)
VALUE_HEADS = {1: "length", 2: "angle", 3: "coordinate"}
#: where the lattice heads' mixture means start: log(L / n_atoms**(1/3)) of real cells
#: (5th to 95th percentile of the training pool) and angles of 60 to 120 degrees (/ 180)
LENGTH_VALUE_RANGE = (0.6, 1.6)
ANGLE_VALUE_RANGE = (1 / 3, 2 / 3)
HEAD_NAMES = ("token", *VALUE_HEADS.values())
CONFIG_FILE = "config.json"


@dataclass
class CrystalModelConfig:
    """What the model is: a backbone preset plus field overrides, and the heads' sizes.

    ``backbone_overrides`` may set any ``BackboneConfig`` field (``layer_types``,
    ``num_experts``, ``position_embedding``, ...) for ablations.
    """

    backbone: str = "tiny"
    backbone_overrides: dict[str, Any] = field(default_factory=dict)
    n_mixture: int = 8
    value_frequencies: int = 16
    mtp: bool = True
    mtp_loss_weight: float = 0.3

    def backbone_config(self) -> BackboneConfig:
        return get_config(self.backbone, **{"vocab_size": VOCAB_SIZE, **self.backbone_overrides})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CrystalModelConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown model config keys {sorted(unknown)}; known: {sorted(names)}")
        return cls(**d)


def collate(sequences: list[EncodedCrystal], multiple: int = 16) -> dict[str, torch.Tensor]:
    """Right-pad sequences into a batch (``<pad>`` = 0, padding is never a target).

    The length is rounded up to a ``multiple``, so that a GPU sees few distinct shapes.
    """
    n, t = len(sequences), max(len(s) for s in sequences)
    t = -(-t // multiple) * multiple
    tokens = np.zeros((n, t), np.int64)
    values = np.zeros((n, t), np.float32)
    kinds = np.zeros((n, t), np.int64)
    free = np.zeros((n, t), bool)
    loss_mask = np.zeros((n, t), bool)
    for i, s in enumerate(sequences):
        m = len(s)
        tokens[i, :m], values[i, :m], kinds[i, :m] = s.tokens, s.values, s.value_kind
        free[i, :m], loss_mask[i, :m] = s.free, s.loss_mask
    arrays = dict(tokens=tokens, values=values, value_kind=kinds, free=free, loss_mask=loss_mask)
    return {k: torch.from_numpy(v) for k, v in arrays.items()}


class CrystalModel(nn.Module):
    """Embeddings, backbone, token head, one value head per value kind, optional MTP."""

    def __init__(self, config: CrystalModelConfig | None = None) -> None:
        super().__init__()
        self.config = config or CrystalModelConfig()
        bcfg = self.config.backbone_config()
        h = bcfg.hidden_size
        self.embed_tokens = nn.Embedding(VOCAB_SIZE, h)
        nn.init.normal_(self.embed_tokens.weight, 0.0, bcfg.initializer_range)
        self.value_embedding = ValueEmbedding(h, self.config.value_frequencies)
        self.backbone = Backbone(bcfg)
        self.token_head = TokenHead(h, VOCAB_SIZE)
        #: tokens [0, trained_vocab_size) were learned; later ones (appended to the vocabulary
        #: after this model was trained) get -inf logits, so an older model behaves as it did.
        self.trained_vocab_size = VOCAB_SIZE
        #: the data sources whose source prompt (``<src:NAME>``) this model was trained to
        #: follow; empty for a model trained without them (training sets it, ``config.json`` keeps it)
        self.source_prompts: tuple[str, ...] = ()
        k = self.config.n_mixture
        self.value_heads = nn.ModuleDict(
            {
                "length": GaussianMixtureHead(h, k, LENGTH_VALUE_RANGE),
                "angle": GaussianMixtureHead(h, k, ANGLE_VALUE_RANGE),
                "coordinate": VonMisesMixtureHead(h, k),
            }
        )
        self.mtp = MTPModule(bcfg) if self.config.mtp else None
        #: heads on every position + target masks (True: no host syncs, what a GPU wants), or
        #: on the target rows only (False: less work, what a CPU wants); training sets it
        #: from its device
        self.mask_heads: bool = False

    @property
    def device(self) -> torch.device:
        return self.embed_tokens.weight.device

    def embed(self, tokens: Tensor, values: Tensor, kinds: Tensor) -> Tensor:
        """Input embeddings (B, T, H): token embedding + value embedding at value positions."""
        x = self.embed_tokens(tokens)
        return x + self.value_embedding(values, kinds).to(x.dtype)

    # --- training ---------------------------------------------------------------------
    def head_nll_sums(self, hidden: Tensor, batch: dict[str, Tensor], shift: int) -> dict[str, tuple[Tensor, Tensor]]:
        """Summed NLL and target count per head, row t of ``hidden`` predicting position t+shift.

        Token targets: loss-mask token positions (cross-entropy). Value targets: free
        loss-mask value positions (mixture NLL of the target's kind).
        """
        n = batch["tokens"].shape[1] - shift
        hidden = hidden[:, :n]
        target = {k: batch[k][:, shift:] for k in ("tokens", "values", "value_kind", "free", "loss_mask")}
        kinds, selected = target["value_kind"], target["loss_mask"]

        def total(loss_of, rows: Tensor, wanted: Tensor) -> tuple[Tensor, Tensor]:
            if self.mask_heads:
                # masks, not indexing: no host sync, so the GPU never waits on the CPU
                return torch.where(rows, loss_of(hidden, wanted), 0.0).sum(), rows.sum()
            return loss_of(hidden[rows], wanted[rows]).sum(), rows.sum()  # CPU: heads on targets only

        def token_nll(h: Tensor, t: Tensor) -> Tensor:
            logits = self.token_logits(h)
            return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), t.reshape(-1), reduction="none").view(t.shape)

        out = {"token": total(token_nll, selected & (kinds == 0), target["tokens"])}
        for kind, name in VALUE_HEADS.items():
            head = self.value_heads[name]
            out[name] = total(lambda h, t: head(h).nll(t), selected & target["free"] & (kinds == kind), target["values"])
        return out

    def nll_sums(self, batch: dict[str, Tensor]) -> dict[str, tuple[Tensor, Tensor]]:
        """Summed next-position NLL and target count per head (for exact validation means)."""
        embeds = self.embed(batch["tokens"], batch["values"], batch["value_kind"])
        return self.head_nll_sums(self.backbone(embeds).hidden_states, batch, shift=1)

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Losses of a right-padded batch (keys: tokens, values, value_kind, free, loss_mask).

        Returns the mean NLL per head (``token``, ``length``, ``angle``, ``coordinate``),
        ``aux`` (MoE balance), ``mtp`` (the same heads one position further, if enabled)
        and ``loss``, their sum with ``mtp`` weighted. Right padding needs no attention
        mask: causal layers never let a real position see the padding after it.
        """
        embeds = self.embed(batch["tokens"], batch["values"], batch["value_kind"])
        out = self.backbone(embeds)
        terms = self.head_nll_sums(out.hidden_states, batch, shift=1)
        losses = {name: s / n.clamp_min(1) for name, (s, n) in terms.items()}
        losses["aux"] = out.aux_loss
        total = sum(losses.values())
        if self.mtp is not None:
            states = self.mtp(out.hidden_states[:, :-1], embeds[:, 1:])
            mtp_terms = self.head_nll_sums(states, batch, shift=2)
            losses["mtp"] = sum(s / n.clamp_min(1) for s, n in mtp_terms.values())
            total = total + self.config.mtp_loss_weight * losses["mtp"]
        losses["loss"] = total
        return losses

    # --- incremental decoding (the sampler's API) ----------------------------------------
    def new_cache(self, batch_size: int, max_len: int, dtype: torch.dtype = torch.float32):
        """An empty decoding cache for ``batch_size`` sequences of up to ``max_len`` positions."""
        return self.backbone.new_cache(batch_size, max_len, self.device, dtype)

    def step(
        self,
        tokens: Tensor,
        values: Tensor,
        kinds: Tensor,
        cache,
        attention_mask: Tensor | None = None,
    ) -> Tensor:
        """Feed new positions (B, T) -- a whole prefix or one step -- and return the hidden
        state (B, H) of the last one. ``attention_mask`` marks real positions of a
        left-padded prefix."""
        embeds = self.embed(tokens, values, kinds)
        out = self.backbone(embeds, attention_mask=attention_mask, cache=cache)
        return out.hidden_states[:, -1]

    def token_logits(self, hidden: Tensor) -> Tensor:
        """Logits (..., vocab) of the next token; mask them with the grammar before sampling."""
        logits = self.token_head(hidden)
        if self.trained_vocab_size < VOCAB_SIZE:
            logits[..., self.trained_vocab_size :] = float("-inf")
        return logits

    def knows_token(self, token: int) -> bool:
        """Whether this model was trained with ``token`` in its vocabulary."""
        return token < self.trained_vocab_size

    def value_distribution(self, hidden: Tensor, kind: int) -> MixtureDistribution:
        """The distribution of the next value of ``kind`` (1 length, 2 angle, 3 coordinate)."""
        return self.value_heads[VALUE_HEADS[int(kind)]](hidden)

    # --- files ---------------------------------------------------------------------------
    def save_pretrained(
        self,
        directory: str | Path,
        dtype: torch.dtype = torch.float32,
        max_shard_bytes: int = MAX_SHARD_BYTES,
        drop_mtp: bool = False,
    ) -> Path:
        """Write the weights (``model.safetensors``, or shards plus an index past
        ``max_shard_bytes``; floats as ``dtype``) and ``config.json``, which records the
        stored dtype as ``torch_dtype``. No pickles anywhere.

        ``config.json`` also lists the sources the model follows (``source_prompts``).

        ``drop_mtp`` writes inference weights: sampling never runs the MTP module (it is a
        training signal only), so its ``mtp.*`` tensors are left out and the config says
        ``"mtp": false``; the model loads strictly and samples exactly as before."""
        directory = Path(directory)
        state = self.state_dict()
        config = self.config.to_dict()
        if drop_mtp:
            state = {k: v for k, v in state.items() if not k.startswith("mtp.")}
            config["mtp"] = False
        save_weights(state, directory, dtype=dtype, max_shard_bytes=max_shard_bytes)
        meta = {"model_type": "crystalgen", "vocab_size": VOCAB_SIZE, "torch_dtype": str(dtype).removeprefix("torch."),
                **config}
        if self.source_prompts:
            meta["source_prompts"] = list(self.source_prompts)
        (directory / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu") -> "CrystalModel":
        """Load a directory written by :meth:`save_pretrained`, single-file or sharded
        (safetensors only); weights stored in bf16 come back as float32. A model saved with
        a shorter vocabulary (tokens are only appended) loads with zero rows for the tokens it
        never saw, and :meth:`token_logits` keeps them at -inf."""
        directory = Path(directory)
        meta = json.loads((directory / CONFIG_FILE).read_text())
        trained = int(meta.pop("vocab_size", VOCAB_SIZE))
        if trained > VOCAB_SIZE:
            raise ValueError(f"{directory} was trained with a larger vocabulary ({trained} tokens) than "
                             f"this version of crystalgen has ({VOCAB_SIZE}); upgrade crystalgen")
        meta.pop("model_type", None)
        meta.pop("torch_dtype", None)
        sources = tuple(meta.pop("source_prompts", ()))
        model = cls(CrystalModelConfig.from_dict(meta))
        state = load_weights(directory)
        if trained < VOCAB_SIZE:
            for name in ("embed_tokens.weight", "token_head.proj.weight"):
                state[name] = torch.cat([state[name], state[name].new_zeros(VOCAB_SIZE - trained, state[name].shape[1])])
        model.load_state_dict(state)
        model.trained_vocab_size = trained
        model.source_prompts = sources
        return model.to(device).eval()
