"""SAM's mask decoder for many point prompts on one image, computing once what all prompts
share and never projecting image tokens per prompt.

In segment-anything's decoder every prompt gets its own copy of the image embedding (and of
its positional encoding and the dense "no mask" embedding), and every attention projects the
4096 image tokens (256 channels) into new per-prompt tensors. Here:
- the image side of the first layer is computed once and broadcast: the image tokens plus
  their encoding, their key and value projections for the token-to-image attention, and their
  query projection for the image-to-token attention (`ImageSide`: kept by the caller across
  calls on the same image, as clicks on an image session are);
- from the first layer's output on, where image tokens differ per prompt, each attention
  between a prompt's 7 tokens and the image tokens folds the image-side projections into the
  prompt side (W_k^T q instead of W_k x; W_o v instead of W_o of every output token; biases
  where softmax or weights summing to one carry them exactly), so the image tokens only meet
  two thin matrix products per attention;
- the output upscaling's 2x2 stride-2 transposed convolutions run as matrix products on
  channels-last pixels, with the channel LayerNorm on the contiguous last dimension and pixels
  put in image order only for the final masks; on a CPU a few hundred image tokens at a time,
  so no intermediate is allocated whole (see DEFAULT_UPSCALE_CHUNK).
These reorder floating-point sums, so logits and scores may differ from the reference in the
last digits (the parity tests bound this: masks IoU >= 0.999, scores within 1e-4).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 (PyTorch's convention)
from segment_anything.modeling import MaskDecoder
from segment_anything.modeling.common import LayerNorm2d
from segment_anything.modeling.transformer import Attention, TwoWayAttentionBlock
from torch import Tensor


def _heads(x: Tensor, num_heads: int) -> Tensor:
    b, n, c = x.shape
    return x.reshape(b, n, num_heads, c // num_heads).transpose(1, 2)


def _combine(x: Tensor) -> Tensor:
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


def _attention(attn: Attention, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """The reference Attention.forward through the fused kernel."""
    qh = _heads(attn.q_proj(q), attn.num_heads)
    kh = _heads(attn.k_proj(k), attn.num_heads)
    vh = _heads(attn.v_proj(v), attn.num_heads)
    out = F.scaled_dot_product_attention(qh, kh, vh)
    result: Tensor = attn.out_proj(_combine(out))
    return result


def _head_weights(linear: torch.nn.Linear, num_heads: int) -> Tensor:
    """A projection's weight (I x C) as H x d x C: head h's rows of the internal dimension."""
    internal, channels = linear.weight.shape
    return linear.weight.view(num_heads, internal // num_heads, channels)


def _tokens_to_image(attn: Attention, q: Tensor, k_in: Tensor, v_in: Tensor) -> Tensor:
    """Prompt tokens (B x N x C) attending to image tokens (B or 1 x T x C, T >> N), with the key
    and value projections folded into the queries instead of applied to every image token.

    q.(W_k x + b_k) = (W_k^T q).x + q.b_k, and the second term is the same for every key, so
    softmax drops it; the weights of each query sum to one, so sum_t a_t (W_v x_t + b_v) =
    W_v (sum_t a_t x_t) + b_v. The image tokens are read twice (logits, weighted sum) instead of
    being projected twice into new per-prompt tensors.
    """
    h = attn.num_heads
    qh = _heads(attn.q_proj(q), h)  # B x H x N x d
    b, _, n, d = qh.shape
    folded_q = torch.einsum("bhnd,hdc->bhnc", qh, _head_weights(attn.k_proj, h)) / math.sqrt(d)
    logits = folded_q.reshape(b, h * n, -1) @ k_in.transpose(1, 2)  # B x (H N) x T
    weights = torch.softmax(logits, dim=-1)
    context = (weights @ v_in).view(b, h, n, -1)  # B x H x N x C
    out = torch.einsum("bhnc,hdc->bhnd", context, _head_weights(attn.v_proj, h)) + attn.v_proj.bias.view(h, 1, d)
    result: Tensor = attn.out_proj(_combine(out))
    return result


def _image_to_tokens(
    attn: Attention, keys: Tensor, q_in: Tensor, k: Tensor, v: Tensor, shared_q: Tensor | None = None
) -> Tensor:
    """`keys` plus the attention of image tokens (queries `q_in`, B or 1 x T x C) to each
    prompt's tokens (B x N x C), with the query and output projections folded into the
    prompt tokens instead of applied to every image token. Per-prompt `keys` are updated in
    place (the caller's next step replaces them anyway) unless autocast computes in another dtype;
    shared ones are copied per prompt.

    (W_q x + b_q).k = x.(W_q^T k) + b_q.k, and W_o (sum_n a_n v_n) = sum_n a_n (W_o v_n), so the
    image tokens meet one B x (H N) x C matrix on each side of the softmax. The logits are kept
    transposed (B x H x N x T) so the softmax over a head's N tokens runs along the long,
    contiguous T. Each head's weights sum to one, so the output bias enters as bias / H on every
    folded value. `shared_q`, the already projected queries of image tokens shared by every
    prompt (1 x H x T x d), computes the logits from them instead (cheaper when one projection
    serves every prompt).
    """
    h = attn.num_heads
    kh = _heads(attn.k_proj(k), h)  # B x H x N x d
    vh = _heads(attn.v_proj(v), h)
    b, _, n, d = kh.shape
    if shared_q is None:
        folded_k = torch.einsum("bhnd,hdc->bhnc", kh, _head_weights(attn.q_proj, h)) / math.sqrt(d)
        key_bias = torch.einsum("bhnd,hd->bhn", kh, attn.q_proj.bias.view(h, d)) / math.sqrt(d)
        logits = torch.baddbmm(key_bias.reshape(b, h * n, 1), folded_k.reshape(b, h * n, -1), q_in.transpose(1, 2))
    else:
        per_head = kh.permute(1, 0, 2, 3).reshape(h, b * n, d) @ shared_q[0].transpose(1, 2)  # H x (B N) x T
        logits = (per_head / math.sqrt(d)).view(h, b, n, -1).transpose(0, 1)
    weights = torch.softmax(logits.reshape(b, h, n, -1), dim=2).view(b, h * n, -1)  # B x (H N) x T
    out_weight = attn.out_proj.weight.view(-1, h, d)  # C x H x d
    folded_v = torch.einsum("bhnd,chd->bhnc", vh, out_weight) + attn.out_proj.bias / h
    folded_v = folded_v.reshape(b, h * n, -1)  # B x (H N) x C
    if keys.shape[0] == b and keys.dtype == weights.dtype == folded_v.dtype:  # not under autocast
        return keys.baddbmm_(weights.transpose(1, 2), folded_v)
    return torch.baddbmm(keys, weights.transpose(1, 2), folded_v)


def _self_attention(layer: TwoWayAttentionBlock, queries: Tensor, query_pe: Tensor) -> Tensor:
    """The block's token self-attention and first norm, as the reference runs them."""
    if layer.skip_first_layer_pe:
        queries = _attention(layer.self_attn, queries, queries, queries)
    else:
        q = queries + query_pe
        queries = queries + _attention(layer.self_attn, q, q, queries)
    normed: Tensor = layer.norm1(queries)
    return normed


def _first_layer(
    layer: TwoWayAttentionBlock,
    queries: Tensor,
    keys: Tensor,
    query_pe: Tensor,
    key_pe: Tensor,
    side: ImageSide | None = None,
) -> tuple[Tensor, Tensor]:
    """The reference block with `keys` (and `key_pe`) of batch 1 shared by every prompt; with
    `side`, the image's projections computed before."""
    queries = _self_attention(layer, queries, query_pe)

    k = keys + key_pe
    t2i = layer.cross_attn_token_to_image
    if side is None:
        queries = queries + _tokens_to_image(t2i, queries + query_pe, k, keys)
    else:
        qh = _heads(t2i.q_proj(queries + query_pe), t2i.num_heads)
        b = qh.shape[0]
        context = F.scaled_dot_product_attention(
            qh, side.t2i_keys.expand(b, -1, -1, -1), side.t2i_values.expand(b, -1, -1, -1)
        )
        queries = queries + t2i.out_proj(_combine(context))
    queries = layer.norm2(queries)

    queries = layer.norm3(queries + layer.mlp(queries))

    i2t = layer.cross_attn_image_to_token
    if side is not None:
        shared_q: Tensor | None = side.i2t_queries
    else:
        # Projected once for every prompt; for a single prompt, folding into its tokens is cheaper.
        shared_q = _heads(i2t.q_proj(k), i2t.num_heads) if queries.shape[0] > 1 else None
    keys = layer.norm4(_image_to_tokens(i2t, keys, k, queries + query_pe, queries, shared_q))
    return queries, keys


@dataclass(frozen=True)
class ImageSide:
    """What the first layer computes from the image alone for point and box prompts (whose dense
    embedding is the "no mask" one): the same for every such prompt on the image, so a client
    clicking on one image pays for it once. About 6 MiB for SAM's decoder."""

    #: 1 x H x T x d: the token-to-image attention's projected keys and values.
    t2i_keys: Tensor
    t2i_values: Tensor
    #: 1 x H x T x d: the image-to-token attention's projected image queries.
    i2t_queries: Tensor


def image_side(decoder: MaskDecoder, image_embedding: Tensor, image_pe: Tensor, dense: Tensor) -> ImageSide | None:
    """The first layer's image side of one image (batch 1), or None for a transformer without
    layers."""
    if not decoder.transformer.layers:
        return None
    layer = decoder.transformer.layers[0]
    keys = (image_embedding + dense[:1]).flatten(2).permute(0, 2, 1)
    k = keys + image_pe.flatten(2).permute(0, 2, 1)
    t2i, i2t = layer.cross_attn_token_to_image, layer.cross_attn_image_to_token
    return ImageSide(
        t2i_keys=_heads(t2i.k_proj(k), t2i.num_heads),
        t2i_values=_heads(t2i.v_proj(keys), t2i.num_heads),
        i2t_queries=_heads(i2t.q_proj(k), i2t.num_heads),
    )


def _later_layer(
    layer: TwoWayAttentionBlock, queries: Tensor, keys: Tensor, query_pe: Tensor, key_pe: Tensor
) -> tuple[Tensor, Tensor]:
    """The reference block on per-prompt `keys`, computing `keys + key_pe` once for both cross
    attentions."""
    queries = _self_attention(layer, queries, query_pe)

    k = keys + key_pe
    queries = layer.norm2(queries + _tokens_to_image(layer.cross_attn_token_to_image, queries + query_pe, k, keys))
    queries = layer.norm3(queries + layer.mlp(queries))

    q = queries + query_pe
    keys = layer.norm4(_image_to_tokens(layer.cross_attn_image_to_token, keys, k, q, queries))
    return queries, keys


def _pixel_linear(conv: torch.nn.ConvTranspose2d, x: Tensor) -> Tensor:
    """A 2x2, stride-2 transposed convolution on channels-last pixels, as one matrix product:
    (..., C_in) -> (..., 4, C_out), the 4 being each input pixel's 2x2 output block (row-major)."""
    c_in, c_out = conv.weight.shape[:2]
    weight = conv.weight.permute(0, 2, 3, 1).reshape(c_in, 4 * c_out)
    bias = conv.bias.repeat(4) if conv.bias is not None else torch.zeros(4 * c_out, dtype=x.dtype, device=x.device)
    out = torch.addmm(bias, x.reshape(-1, c_in), weight)
    return out.view(*x.shape[:-1], 4, c_out)


def _is_pixel_block(module: torch.nn.Module) -> bool:
    return (
        isinstance(module, torch.nn.ConvTranspose2d)
        and module.kernel_size == (2, 2)
        and module.stride == (2, 2)
        and module.padding == (0, 0)
        and module.output_padding == (0, 0)
        and module.dilation == (1, 1)
        and module.groups == 1
    )


def _upscaled_masks(layers: list[Any], keys: Tensor, hyper_in: Tensor) -> Tensor:
    """The pixel-block upscaling of image tokens (... x n x C) and their hypernetwork product with
    `hyper_in` (... x M x C'): ... x M x 16 n mask logits, in block order."""
    first, norm, act1, second, act2 = layers
    x = _pixel_linear(first, keys)  # ... x n x 4 x C1
    x = act1(F.layer_norm(x, (x.shape[-1],), norm.weight, norm.bias, norm.eps))
    x = act2(_pixel_linear(second, x))  # ... x n x 4 x 4 x C2
    masks: Tensor = hyper_in @ x.flatten(-4, -2).transpose(-1, -2)
    return masks


#: Image tokens upscaled at a time on a CPU (each becomes 16 low-resolution mask pixels): 512
#: keeps a chunk's intermediates near 1.5 MiB. The upscaling of 4 prompts on this project's 2-core
#: CPUs (`uv run python -m bench.cpu_defaults --only upscale_chunk`, 2026-12): 256 to 2048 within
#: 13% of one another (512: 37 ms, 1024-2048: 0.93x of it), all 4096 at once 1.08x, 128 1.53x.
#: The results are the same numbers: every step is per pixel.
DEFAULT_UPSCALE_CHUNK = 512


def _masks_from_tokens(decoder: MaskDecoder, keys: Tensor, hyper_in: Tensor, h: int, w: int) -> Tensor:
    """decoder.output_upscaling on the image tokens (B x h w x C) and the hypernetwork product
    with `hyper_in` (B x M x C'): B x M x 4h x 4w mask logits.

    segment-anything's upscaling (2x2 transposed convolution, channel LayerNorm, activation,
    2x2 transposed convolution, activation) runs here on channels-last pixels: each transposed
    convolution is one matrix product per pixel (a stride-2 2x2 kernel never overlaps), the
    LayerNorm normalises the contiguous last dimension, and pixels stay in block order until the
    masks (M channels instead of C') are put in image order at the end. An upscaling of any
    other shape runs module by module on the usual layout.
    """
    b = keys.shape[0]
    layers = list(decoder.output_upscaling)
    blocks = len(layers) == 5 and _is_pixel_block(layers[0]) and _is_pixel_block(layers[3])
    if not (blocks and isinstance(layers[1], LayerNorm2d)):
        upscaled = keys.transpose(1, 2).reshape(b, keys.shape[2], h, w)
        for module in layers:
            upscaled = module(upscaled)
        _, uc, uh, uw = upscaled.shape
        plain: Tensor = (hyper_in @ upscaled.view(b, uc, uh * uw)).view(b, hyper_in.shape[1], uh, uw)
        return plain
    m = hyper_in.shape[1]
    if keys.device.type != "cpu" or b == 0:
        masks = _upscaled_masks(layers, keys, hyper_in)
    else:
        # A chunk's intermediates (16 output pixels per token, C1 and C2 channels) stay in cache
        # and are never allocated whole: whole-batch ones are tens of MiB, and a fresh allocation
        # of that size costs more in page faults than the arithmetic it holds.
        chunk = DEFAULT_UPSCALE_CHUNK
        starts = range(0, h * w, chunk)
        masks = torch.stack(
            [
                torch.cat([_upscaled_masks(layers, keys[i, t : t + chunk], hyper_in[i]) for t in starts], dim=-1)
                for i in range(b)
            ]
        )  # fmt: skip
    # (i, j, ky1, kx1, ky2, kx2) -> row 4i + 2 ky1 + ky2, column 4j + 2 kx1 + kx2
    masks = masks.view(b, m, h, w, 2, 2, 2, 2).permute(0, 1, 2, 4, 6, 3, 5, 7)
    return masks.reshape(b, m, 4 * h, 4 * w)


@dataclass(frozen=True)
class DecodedPrompts:
    """The mask decoder's transformer output for B point prompts, before the upscaling that
    turns it into mask logits (about half of the decoder's work)."""

    #: B x T x C image tokens after the transformer.
    keys: Tensor
    #: B x M x C' hypernetwork outputs, one per mask token.
    hyper_in: Tensor
    #: B x M predicted IoUs.
    iou_pred: Tensor
    #: (h, w) of the image-token grid.
    grid: tuple[int, int]

    def masks(self, decoder: MaskDecoder, prompts: Tensor | None = None) -> Tensor:
        """Low-resolution mask logits (B x M x 4h x 4w), or only for the prompts selected by the
        boolean vector `prompts` (K x M x 4h x 4w, in order)."""
        keys, hyper_in = self.keys, self.hyper_in
        if prompts is not None and not bool(prompts.all()):
            keys, hyper_in = keys[prompts], hyper_in[prompts]
        return _masks_from_tokens(decoder, keys, hyper_in, *self.grid)


def decode_prompts(
    decoder: MaskDecoder,
    image_embedding: Tensor,
    image_pe: Tensor,
    sparse: Tensor,
    dense: Tensor,
    side: ImageSide | None = None,
) -> DecodedPrompts:
    """The reference `MaskDecoder.predict_masks` up to its upscaling, for B point prompts on one
    image; `DecodedPrompts.masks` finishes it.

    `image_embedding` and `image_pe` have batch 1; `dense` must be the same for every prompt
    (point prompts carry the "no mask" embedding), so only its first entry is used. `side`, the
    image's `image_side` for that same `dense`, saves recomputing it.
    """
    output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
    output_tokens = output_tokens.unsqueeze(0).expand(sparse.size(0), -1, -1)
    tokens = torch.cat((output_tokens, sparse), dim=1)
    b = tokens.shape[0]

    src = image_embedding + dense[:1]
    _, _, h, w = src.shape
    transformer = decoder.transformer
    keys = src.flatten(2).permute(0, 2, 1)  # 1 x T x C
    key_pe = image_pe.flatten(2).permute(0, 2, 1)  # 1 x T x C
    queries = tokens
    for index, layer in enumerate(transformer.layers):
        if index == 0:
            queries, keys = _first_layer(layer, queries, keys, tokens, key_pe, side)
        else:
            queries, keys = _later_layer(layer, queries, keys, tokens, key_pe)
    if keys.shape[0] != b:  # a transformer without layers never made per-prompt keys
        keys = keys.expand(b, -1, -1)
    final = _tokens_to_image(transformer.final_attn_token_to_image, queries + tokens, keys + key_pe, keys)
    hs = transformer.norm_final_attn(queries + final)

    mask_tokens_out = hs[:, 1 : (1 + decoder.num_mask_tokens), :]
    hyper_in = torch.stack(
        [decoder.output_hypernetworks_mlps[i](mask_tokens_out[:, i, :]) for i in range(decoder.num_mask_tokens)], dim=1
    )
    iou_pred = decoder.iou_prediction_head(hs[:, 0, :])
    return DecodedPrompts(keys, hyper_in, iou_pred, (h, w))


def predict_masks(
    decoder: MaskDecoder, image_embedding: Tensor, image_pe: Tensor, sparse: Tensor, dense: Tensor
) -> tuple[Tensor, Tensor]:
    """Low-resolution mask logits (B x 4 x 256 x 256) and IoU predictions (B x 4), as the
    reference `MaskDecoder.predict_masks`, for B point prompts on one image (see
    `decode_prompts`)."""
    decoded = decode_prompts(decoder, image_embedding, image_pe, sparse, dense)
    return decoded.masks(decoder), decoded.iou_pred
