"""SAM's mask decoder for many point prompts on one image, computing once what all prompts
share.

In segment-anything's decoder every prompt gets its own copy of the image embedding (and of
its positional encoding and the dense "no mask" embedding), and the first transformer layer
projects those identical image tokens once per prompt. Here the image side of the first layer
is computed once and broadcast: the image tokens plus their encoding, their key and value
projections for the token-to-image attention, and their query projection for the
image-to-token attention. From the first layer's output on, the image tokens differ per
prompt and the computation is the reference's, with the `keys + key_pe` sum shared between
the two cross attentions of a layer. Attention runs through PyTorch's fused scaled-dot-product kernel instead of
separate matmul, scale, softmax and matmul passes over copied head layouts, and the
upscaling's channel LayerNorm runs as one fused layer norm. These reorder floating-point
sums, so scores may differ from the reference in the last digits (the parity tests bound
this: masks IoU >= 0.999, scores within 1e-4).
"""

from __future__ import annotations

import math

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


def _tokens_to_shared_image(attn: Attention, q: Tensor, k_shared: Tensor, v_shared: Tensor) -> Tensor:
    """Token queries (B prompts) attending to image keys and values shared by all prompts (batch 1)."""
    qh = _heads(attn.q_proj(q), attn.num_heads)  # B x H x N x d
    kh = _heads(attn.k_proj(k_shared), attn.num_heads)  # 1 x H x T x d
    vh = _heads(attn.v_proj(v_shared), attn.num_heads)  # 1 x H x T x d
    b, h, n, d = qh.shape
    flat_q = qh.permute(1, 0, 2, 3).reshape(1, h, b * n, d)  # every prompt's tokens as one query set
    out = F.scaled_dot_product_attention(flat_q, kh, vh)  # 1 x H x (B N) x d
    out = out.reshape(h, b, n, d).permute(1, 0, 2, 3)  # B x H x N x d
    result: Tensor = attn.out_proj(_combine(out))
    return result


def _shared_image_to_tokens(attn: Attention, q_shared: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Image queries shared by all prompts (batch 1) attending to each prompt's tokens."""
    qh = _heads(attn.q_proj(q_shared), attn.num_heads)  # 1 x H x T x d
    kh = _heads(attn.k_proj(k), attn.num_heads)  # B x H x N x d
    vh = _heads(attn.v_proj(v), attn.num_heads)  # B x H x N x d
    b, h, n, d = kh.shape
    flat_k = kh.permute(1, 3, 0, 2).reshape(h, d, b * n)  # H x d x (B N)
    logits = (qh[0] @ flat_k).reshape(h, -1, b, n).permute(2, 0, 1, 3)  # B x H x T x N
    logits = logits / math.sqrt(d)
    weights = torch.softmax(logits, dim=-1)
    out = weights @ vh  # B x H x T x d
    result: Tensor = attn.out_proj(_combine(out))
    return result


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
    layer: TwoWayAttentionBlock, queries: Tensor, keys: Tensor, query_pe: Tensor, key_pe: Tensor
) -> tuple[Tensor, Tensor]:
    """The reference block with `keys` (and `key_pe`) of batch 1 shared by every prompt."""
    queries = _self_attention(layer, queries, query_pe)

    k = keys + key_pe
    queries = queries + _tokens_to_shared_image(layer.cross_attn_token_to_image, queries + query_pe, k, keys)
    queries = layer.norm2(queries)

    queries = layer.norm3(queries + layer.mlp(queries))

    attn_out = _shared_image_to_tokens(layer.cross_attn_image_to_token, k, queries + query_pe, queries)
    keys = layer.norm4(keys + attn_out)
    return queries, keys


def _later_layer(
    layer: TwoWayAttentionBlock, queries: Tensor, keys: Tensor, query_pe: Tensor, key_pe: Tensor
) -> tuple[Tensor, Tensor]:
    """The reference block, computing `keys + key_pe` once for both cross attentions."""
    queries = _self_attention(layer, queries, query_pe)

    k = keys + key_pe
    queries = layer.norm2(queries + _attention(layer.cross_attn_token_to_image, queries + query_pe, k, keys))
    queries = layer.norm3(queries + layer.mlp(queries))

    q = queries + query_pe
    keys = layer.norm4(keys + _attention(layer.cross_attn_image_to_token, k, q, queries))
    return queries, keys


def _upscale(decoder: MaskDecoder, x: Tensor) -> Tensor:
    """decoder.output_upscaling with its channel LayerNorm2d as one fused layer norm over a
    channels-last view (no copies between the transposed convolutions)."""
    for module in decoder.output_upscaling:
        if isinstance(module, LayerNorm2d):
            channels_last = x.permute(0, 2, 3, 1)
            normed = F.layer_norm(channels_last, (x.shape[1],), module.weight, module.bias, module.eps)
            x = normed.permute(0, 3, 1, 2)
        else:
            x = module(x)
    return x


def predict_masks(
    decoder: MaskDecoder, image_embedding: Tensor, image_pe: Tensor, sparse: Tensor, dense: Tensor
) -> tuple[Tensor, Tensor]:
    """Low-resolution mask logits (B x 4 x 256 x 256) and IoU predictions (B x 4), as the
    reference `MaskDecoder.predict_masks`, for B point prompts on one image.

    `image_embedding` and `image_pe` have batch 1; `dense` must be the same for every prompt
    (point prompts carry the "no mask" embedding), so only its first entry is used.
    """
    output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
    output_tokens = output_tokens.unsqueeze(0).expand(sparse.size(0), -1, -1)
    tokens = torch.cat((output_tokens, sparse), dim=1)
    b = tokens.shape[0]

    src = image_embedding + dense[:1]
    _, c, h, w = src.shape
    transformer = decoder.transformer
    keys = src.flatten(2).permute(0, 2, 1)  # 1 x T x C
    key_pe = image_pe.flatten(2).permute(0, 2, 1)  # 1 x T x C
    queries = tokens
    for index, layer in enumerate(transformer.layers):
        step = _first_layer if index == 0 else _later_layer
        queries, keys = step(layer, queries, keys, tokens, key_pe)
    if keys.shape[0] != b:  # a transformer without layers never made per-prompt keys
        keys = keys.expand(b, -1, -1)
    q = queries + tokens
    k = keys + key_pe
    queries = transformer.norm_final_attn(queries + _attention(transformer.final_attn_token_to_image, q, k, keys))
    hs = queries

    iou_token_out = hs[:, 0, :]
    mask_tokens_out = hs[:, 1 : (1 + decoder.num_mask_tokens), :]
    src_out = keys.transpose(1, 2).reshape(b, c, h, w)
    upscaled = _upscale(decoder, src_out)
    hyper_in = torch.stack(
        [decoder.output_hypernetworks_mlps[i](mask_tokens_out[:, i, :]) for i in range(decoder.num_mask_tokens)], dim=1
    )
    _, uc, uh, uw = upscaled.shape
    masks = (hyper_in @ upscaled.view(b, uc, uh * uw)).view(b, -1, uh, uw)
    iou_pred = decoder.iou_prediction_head(iou_token_out)
    return masks, iou_pred
