"""Random-weight checkpoints made with the families' own builders (segment-anything's, sam2's
from its configs), for trying the service and for tests where no pretrained weights can be
had. Their masks are real SAM / SAM 2 computations on random weights: meaningless as
segmentation, exact as arithmetic."""

from __future__ import annotations

from pathlib import Path

import torch

from samsvc.engine.download import sha256_of
from samsvc.engine.registry import Architecture
from samsvc.engine.sam.family import build_sam

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


#: The smallest SAM 2.1 shape (39 M parameters, a 150 MB checkpoint).
SAM2_TINY_CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"


def build_random_sam2_checkpoint(path: Path, config: str = SAM2_TINY_CONFIG, *, seed: int = 0) -> str:
    """Write a randomly initialised SAM 2 checkpoint ({"model": state dict}, the official files'
    layout) to `path`; returns its SHA-256."""
    from samsvc.engine.sam2.family import build_sam2_model

    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = build_sam2_model(config)
    finally:
        torch.random.set_rng_state(generator_state)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict()}, path)
    return sha256_of(path)


def sam2_models_file_entry(name: str, path: Path, digest: str, config: str = SAM2_TINY_CONFIG) -> str:
    """The MODELS_FILE table registering a SAM 2 checkpoint."""
    return f'[models.{name}]\nfamily = "sam2"\ncheckpoint = "{path}"\nsha256 = "{digest}"\nconfig = "{config}"\n'


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
