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
    ``next_position`` the position id of each row's next real token.
    """

    batch_size: int
    max_len: int
    length: int = 0
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
