"""Small checkpoints made with segment-anything's own builder, for trying the service and for
tests where no pretrained weights can be had. Their masks are real SAM computations on random
weights: meaningless as segmentation, exact as arithmetic."""

from __future__ import annotations

from pathlib import Path

import torch

from samsvc.engine.download import sha256_of
from samsvc.engine.loader import build_sam
from samsvc.engine.registry import Architecture

#: A 1M-parameter encoder with the full-size prompt encoder and mask decoder (20 MB).
TINY_ARCHITECTURE = Architecture(
    encoder_embed_dim=64, encoder_depth=2, encoder_num_heads=2, encoder_global_attn_indexes=(1,)
)


def build_random_checkpoint(path: Path, architecture: Architecture = TINY_ARCHITECTURE, *, seed: int = 0) -> str:
    """Write a randomly initialised SAM state dict to `path`; returns its SHA-256."""
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        sam = build_sam(architecture)
    finally:
        torch.random.set_rng_state(generator_state)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(sam.state_dict(), path)
    return sha256_of(path)


def models_file_entry(name: str, path: Path, digest: str, architecture: Architecture = TINY_ARCHITECTURE) -> str:
    """The MODELS_FILE table registering a checkpoint."""
    indexes = ", ".join(str(i) for i in architecture.encoder_global_attn_indexes)
    return (
        f"[models.{name}]\n"
        f'checkpoint = "{path}"\n'
        f'sha256 = "{digest}"\n'
        f"encoder_embed_dim = {architecture.encoder_embed_dim}\n"
        f"encoder_depth = {architecture.encoder_depth}\n"
        f"encoder_num_heads = {architecture.encoder_num_heads}\n"
        f"encoder_global_attn_indexes = [{indexes}]\n"
    )
