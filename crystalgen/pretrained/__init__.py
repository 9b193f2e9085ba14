"""Shipped default model weights and model card."""
