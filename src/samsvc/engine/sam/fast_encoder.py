"""SAM's image encoder with its attention computed a slice of queries at a time.

segment-anything's ViT attention materialises every head's full logits before its softmax: in a
global-attention block of vit_b that is 12 x 4096 x 4096 floats (800 MB, 1 GB for vit_h's 16
heads), written once by the product and twice more by the two broadcast additions of the
decomposed relative positions, then read by the softmax and by the product with the values.
On a CPU this traffic, not the arithmetic, dominated the encoder (35% of its time in those
additions alone). Here the same operations run on slices of query rows (or groups of windows)
whose logits fit in the cache, the relative positions added in place: each logit is computed
by the same products, sums and softmax in the same order, so the embeddings are the
reference's (bit for bit on this project's CPUs), in about half the time and a fraction of the
memory. Everything around attention (patch embedding, norms, MLPs, windows, neck) is
segment-anything's own modules.
"""

from __future__ import annotations

import torch
from segment_anything.modeling.image_encoder import (
    Attention,
    Block,
    ImageEncoderViT,
    get_rel_pos,
    window_partition,
    window_unpartition,
)
from segment_anything.predictor import SamPredictor
from torch import Tensor

#: Logits (floats) computed at once per slice: 4 MB, which stays in this project's CPUs' caches.
#: One windowed and one global vit_b block on a 1024-pixel image (`uv run python -m
#: bench.cpu_defaults --only logits_budget`, 2026-12): 2^18 to 2^22 within 7% of one another (2^20:
#: 1.36 s), 2^24 1.35x slower (it spills); bench.encoder_speed compares with unsliced attention.
DEFAULT_LOGITS_BUDGET = 1 << 20
#: On a GPU, where each slice is a kernel launch and memory bandwidth is plentiful: a whole
#: head's global logits (4096 x 4096) per slice, a dozen or so launches per block.
DEFAULT_GPU_LOGITS_BUDGET = 1 << 26


def attention(attn: Attention, x: Tensor, budget: int = DEFAULT_LOGITS_BUDGET) -> Tensor:
    """`Attention.forward` (B x H x W x C -> B x H x W x C) with its logits a slice at a time."""
    b, h, w, _ = x.shape
    heads = attn.num_heads
    qkv = attn.qkv(x).reshape(b, h * w, 3, heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.reshape(3, b * heads, h * w, -1).unbind(0)
    n, d = h * w, q.shape[-1]
    rel_h = rel_w = None
    if attn.use_rel_pos:
        # add_decomposed_rel_pos's two terms, before they are broadcast over the logits
        r_q = q.reshape(b * heads, h, w, d)
        rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, get_rel_pos(h, h, attn.rel_pos_h))
        rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, get_rel_pos(w, w, attn.rel_pos_w))
    scaled_q = q * attn.scale
    keys_t = k.transpose(-2, -1)
    parts: list[Tensor] = []
    if n * n <= budget:  # windows: several (window, head) pairs per slice
        group = max(1, budget // (n * n))
        for g0 in range(0, b * heads, group):
            g1 = min(b * heads, g0 + group)
            logits = scaled_q[g0:g1] @ keys_t[g0:g1]
            if rel_h is not None and rel_w is not None:
                grid = logits.view(g1 - g0, h, w, h, w)
                grid.add_(rel_h[g0:g1, :, :, :, None]).add_(rel_w[g0:g1, :, :, None, :])
            parts.append(logits.softmax(dim=-1) @ v[g0:g1])
        out = torch.cat(parts)
    else:  # global attention: rows of queries of one head per slice
        rows = max(1, budget // (w * n))
        for i in range(b * heads):
            for r0 in range(0, h, rows):
                r1 = min(h, r0 + rows)
                logits = scaled_q[i, r0 * w : r1 * w] @ keys_t[i]
                if rel_h is not None and rel_w is not None:
                    grid = logits.view(r1 - r0, w, h, w)
                    grid.add_(rel_h[i, r0:r1, :, :, None]).add_(rel_w[i, r0:r1, :, None, :])
                parts.append(logits.softmax(dim=-1) @ v[i])
        out = torch.cat(parts).view(b * heads, n, -1)
    merged = out.view(b, heads, h, w, -1).permute(0, 2, 3, 1, 4).reshape(b, h, w, -1)
    result: Tensor = attn.proj(merged)
    return result


def _block(block: Block, x: Tensor, budget: int) -> Tensor:
    """`Block.forward` with the sliced attention."""
    shortcut = x
    x = block.norm1(x)
    if block.window_size > 0:
        height, width = x.shape[1], x.shape[2]
        x, pad_hw = window_partition(x, block.window_size)
    x = attention(block.attn, x, budget)
    if block.window_size > 0:
        x = window_unpartition(x, block.window_size, pad_hw, (height, width))
    x = shortcut + x
    out: Tensor = x + block.mlp(block.norm2(x))
    return out


def encode(encoder: ImageEncoderViT, x: Tensor, budget: int | None = None) -> Tensor:
    """`ImageEncoderViT.forward` with the sliced attention (`budget`: logits per slice; by
    default the CPU's or the GPU's)."""
    if budget is None:
        budget = DEFAULT_LOGITS_BUDGET if x.device.type == "cpu" else DEFAULT_GPU_LOGITS_BUDGET
    x = encoder.patch_embed(x)
    if encoder.pos_embed is not None:
        x = x + encoder.pos_embed
    for block in encoder.blocks:
        x = _block(block, x, budget)
    features: Tensor = encoder.neck(x.permute(0, 3, 1, 2))
    return features


class FastPredictor(SamPredictor):  # type: ignore[misc]
    """A SamPredictor whose `set_image` runs the sliced encoder. A wrapped encoder (compiled, or
    batching images of several threads) is called as it is."""

    @torch.no_grad()
    def set_torch_image(self, transformed_image: Tensor, original_image_size: tuple[int, ...]) -> None:
        encoder = self.model.image_encoder
        if not isinstance(encoder, ImageEncoderViT):
            super().set_torch_image(transformed_image, original_image_size)
            return
        self.reset_image()
        self.original_size = original_image_size
        self.input_size = tuple(transformed_image.shape[-2:])
        self.features = encode(encoder, self.model.preprocess(transformed_image))
        self.is_image_set = True
