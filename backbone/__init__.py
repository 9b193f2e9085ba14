"""crystalgen.backbone: the Intern-S2-Preview decoder (Gated DeltaNet + gated attention
with FoPE + MoE + MTP) in plain PyTorch, from a CPU-trainable ``tiny`` preset to the
full 35B-A3B shape."""

from .cache import DecodingCache
from .checkpoint import LoadReport, load_hf_checkpoint, to_hf_state_dict
from .config import PRESETS, BackboneConfig, get_config
from .model import Backbone, BackboneOutput, CausalLM, CausalLMOutput
from .mtp import MTPModule, mtp_loss
from .params import count_parameters
from .shards import load_weights, save_weights, weight_files

__all__ = [
    "Backbone", "BackboneConfig", "BackboneOutput", "CausalLM", "CausalLMOutput", "DecodingCache", "LoadReport",
    "MTPModule", "PRESETS", "count_parameters", "get_config", "load_hf_checkpoint", "load_weights", "mtp_loss",
    "save_weights", "to_hf_state_dict", "weight_files",
]
