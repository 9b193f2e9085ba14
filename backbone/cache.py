"""State carried between decoding steps: attention KV cache and DeltaNet states."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class DecodingCache:
    """Per-layer decoding state, updated in place by ``Backbone.forward``.

    Attention layers keep pre-allocated keys/values of ``max_len`` positions; DeltaNet
    layers keep their last ``kernel - 1`` conv inputs and the (d_k x d_v) recurrent state.
    ``key_mask`` says which cached positions are real tokens (left padding), and
    ``next_position`` the position id of each row's next real token. ``padded`` stays False
    while every cached position is real, so one-token steps attend without any mask.
    """

    batch_size: int
    max_len: int
    length: int = 0
    padded: bool = False  # some cached position is padding: attention needs its key mask
    key_mask: torch.Tensor | None = None  # (B, max_len) bool
    next_position: torch.Tensor | None = None  # (B,) long
    keys: dict[int, torch.Tensor] = field(default_factory=dict)  # (B, H_kv, max_len, d)
    values: dict[int, torch.Tensor] = field(default_factory=dict)
    conv_states: dict[int, torch.Tensor] = field(default_factory=dict)  # (B, conv_dim, K-1)
    recurrent_states: dict[int, torch.Tensor] = field(default_factory=dict)  # (B, H, d_k, d_v)

    def append_attention(
        self, layer_idx: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Write the new keys/values at ``[length, length+T)``; return all keys, values
        and the key mask seen so far (the new positions included)."""
        end = self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"cache full: {end} positions > max_len {self.max_len}")
        self.keys[layer_idx][:, :, self.length:end] = k
        self.values[layer_idx][:, :, self.length:end] = v
        return self.keys[layer_idx][:, :, :end], self.values[layer_idx][:, :, :end], self.key_mask[:, :end]

    def reserve(self, total: int) -> None:
        """Make room for ``total`` positions, doubling the allocation when it grows, so a
        sampler can start small instead of allocating its worst case up front."""
        if total <= self.max_len:
            return
        new_len = max(total, 2 * self.max_len)

        def grown(t: torch.Tensor, dim: int) -> torch.Tensor:
            shape = list(t.shape)
            shape[dim] = new_len
            out = t.new_zeros(shape)
            out.narrow(dim, 0, self.length).copy_(t.narrow(dim, 0, self.length))
            return out

        self.keys = {i: grown(t, 2) for i, t in self.keys.items()}
        self.values = {i: grown(t, 2) for i, t in self.values.items()}
        if self.key_mask is not None:
            self.key_mask = grown(self.key_mask, 1)
        self.max_len = new_len

    def select(self, rows: torch.Tensor) -> None:
        """Keep only these batch rows (in this order): a sampler drops finished sequences
        so later steps compute nothing for them. Copies only the filled positions."""
        end = self.length

        def pick(t: torch.Tensor, dim_len: int | None = None) -> torch.Tensor:
            if dim_len is None:
                return t.index_select(0, rows)
            out = t.new_zeros((len(rows), *t.shape[1:]))
            out.narrow(dim_len, 0, end).copy_(t.narrow(dim_len, 0, end).index_select(0, rows))
            return out

        self.keys = {i: pick(t, 2) for i, t in self.keys.items()}
        self.values = {i: pick(t, 2) for i, t in self.values.items()}
        self.conv_states = {i: pick(t) for i, t in self.conv_states.items()}
        self.recurrent_states = {i: pick(t) for i, t in self.recurrent_states.items()}
        if self.key_mask is not None:
            self.key_mask = pick(self.key_mask, 1)
        if self.next_position is not None:
            self.next_position = pick(self.next_position)
        self.batch_size = len(rows)

    def keep_last(self, n: int) -> None:
        """Keep only the last ``n`` positions (moved to the front). A sampler whose rows are
        all right-aligned drops leading positions that are padding for every row."""
        if n >= self.length:
            return
        start, self.length = self.length - n, n
        for store in (self.keys, self.values):
            for t in store.values():
                t[:, :, :n] = t[:, :, start:start + n].clone()
        if self.key_mask is not None:
            self.key_mask[:, :n] = self.key_mask[:, start:start + n].clone()

    def insert(self, rows: torch.Tensor, part: "DecodingCache") -> None:
        """Put the sequences of ``part`` (a freshly prefilled cache, one per row of ``rows``)
        into these rows, right-aligned with the current length; whatever the rows held
        before is masked out. Continuous batching refills finished rows with this."""
        width = part.length
        if self.length < width:
            self._pad_front(width - self.length)
        start, end = self.length - width, self.length
        for i, t in part.keys.items():
            self.keys[i][rows, :, start:end] = t[:, :, :width]
            self.values[i][rows, :, start:end] = part.values[i][:, :, :width]
        for store, new in ((self.conv_states, part.conv_states), (self.recurrent_states, part.recurrent_states)):
            for i, t in new.items():
                store[i][rows] = t
        self.key_mask[rows] = False
        self.key_mask[rows, start:end] = part.key_mask[:, :width]
        self.next_position[rows] = part.next_position
        self.padded = True

    def _pad_front(self, extra: int) -> None:
        """Shift every row right by ``extra`` masked positions."""
        self.reserve(self.length + extra)
        end = self.length
        for store in (self.keys, self.values):
            for t in store.values():
                t[:, :, extra:extra + end] = t[:, :, :end].clone()
                t[:, :, :extra] = 0
        self.key_mask[:, extra:extra + end] = self.key_mask[:, :end].clone()
        self.key_mask[:, :extra] = False
        self.length += extra
        self.padded = True
