"""The two export models of a SAM prompt decoder, with segment-anything's ONNX interface
(inputs image_embeddings, point_coords, point_labels, mask_input, has_mask_input, orig_im_size;
outputs masks, iou_predictions, low_res_masks; the best mask only, as the demo and CVAT run it):

- `ReferenceOnnxModel`: segment-anything's own `SamOnnxModel`, with the one fix its repository
  made after the 1.0 release on PyPI (its PR #58): the crop of the padded masks is read from
  `orig_im_size` in the graph, not traced as the dummy input's constant (without it every image
  of another aspect ratio than the dummy's 1500 x 2250 gets shifted, cut masks).
- `FoldedOnnxModel`: the same function in fewer operations for one image and a few clicks, as the
  server's own decoder (`fast_decoder`) computes it:
  - each attention between the prompt's tokens and the 4096 image tokens folds the image-side
    projections into the prompt side (W_k^T q instead of W_k x, W_o v instead of W_o of every
    output token), so image tokens meet two thin matrix products per attention instead of being
    projected into new tensors (about 0.6 of the reference's multiply-adds, no head transposes
    of image-sized tensors);
  - image tokens stay channels-last (tokens x channels) from the start: the LayerNorms are
    ONNX LayerNormalization over the contiguous last axis instead of LayerNorm2d's reductions
    over channels, and the 2x2 stride-2 transposed convolutions of the upscaling (and the
    stride-2 convolutions of the mask input) are matrix products per pixel block;
  - only the selected mask is multiplied out of the upscaled features (the choice depends on
    the predicted IoUs alone), and the mask input's downscaling runs only when
    `has_mask_input` is not 0 (an ONNX If: it is multiplied by 0 otherwise);
  - the masks' upsampling to the encoder's input size is two products with the bilinear taps
    over the rows and columns the crop keeps, not a Resize of the whole square cropped after;
  - the image-to-prompt attention's softmax reduces along the image tokens of its transposed
    logits (onnxruntime's Softmax over rows of a few prompt tokens is slow).
  These reorder floating-point sums: outputs agree with the reference graph's to float rounding
  (tests: logits within 1e-4, masks IoU >= 0.999).
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F  # noqa: N812 (PyTorch's convention)
from segment_anything.modeling import Sam
from segment_anything.modeling.common import LayerNorm2d
from segment_anything.modeling.transformer import Attention
from segment_anything.utils.onnx import SamOnnxModel
from torch import Tensor, nn


class ReferenceOnnxModel(SamOnnxModel):  # type: ignore[misc]
    """SamOnnxModel whose mask postprocessing crops by tensors, so the crop stays a function of
    `orig_im_size` in the exported graph (the PyPI release's `int(...)` is traced as a constant)."""

    def mask_postprocessing(self, masks: Tensor, orig_im_size: Tensor) -> Tensor:
        masks = F.interpolate(masks, size=(self.img_size, self.img_size), mode="bilinear", align_corners=False)
        resized = self.resize_longest_image_size(orig_im_size, self.img_size).to(torch.int64)
        masks = masks[..., : resized[0], : resized[1]]
        size = orig_im_size.to(torch.int64)
        # Tensor sizes, not ints: traced as graph values, they follow each call's orig_im_size.
        return F.interpolate(masks, size=(size[0], size[1]), mode="bilinear", align_corners=False)  # type: ignore[arg-type]


def _is_block(conv: nn.Module, kind: type[nn.Module]) -> bool:
    """A 2x2 stride-2 convolution (or transposed one) without padding, groups or dilation."""
    return bool(
        isinstance(conv, kind)
        and conv.kernel_size == (2, 2)
        and conv.stride == (2, 2)
        and conv.padding == (0, 0)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and getattr(conv, "output_padding", (0, 0)) == (0, 0)
        and conv.bias is not None
    )


def foldable(sam: Sam) -> bool:
    """Whether `sam`'s decoder has the layout `FoldedOnnxModel` rewrites (every SAM checkpoint's)."""
    up = list(sam.mask_decoder.output_upscaling)
    down = list(sam.prompt_encoder.mask_downscaling)
    return (
        len(up) == 5
        and _is_block(up[0], nn.ConvTranspose2d)
        and isinstance(up[1], LayerNorm2d)
        and _is_block(up[3], nn.ConvTranspose2d)
        and len(down) == 7
        and _is_block(down[0], nn.Conv2d)
        and isinstance(down[1], LayerNorm2d)
        and all(isinstance(down[i], nn.GELU) and down[i].approximate == "none" for i in (2, 5))
        and down[0].in_channels == 1
        and _is_block(down[3], nn.Conv2d)
        and isinstance(down[4], LayerNorm2d)
        and isinstance(down[6], nn.Conv2d)
        and down[6].kernel_size == (1, 1)
        and down[6].bias is not None
    )


def _head_shape(attn: Attention) -> tuple[int, int, int]:
    """(heads, head dimension, channels) of an attention."""
    internal, channels = attn.q_proj.weight.shape
    return attn.num_heads, internal // attn.num_heads, channels


class _TokensToImage(nn.Module):
    """Prompt tokens (N x C) attending to image tokens (T x C), the key and value projections
    folded into the queries: q.(W_k x + b_k) = (W_k^T q).x + q.b_k, the second term the same for
    every key (softmax drops it); each query's weights sum to one, so sum_t a_t (W_v x_t + b_v)
    = W_v (sum_t a_t x_t) + b_v."""

    key_weight: Tensor
    value_weight: Tensor
    value_bias: Tensor

    def __init__(self, attn: Attention) -> None:
        super().__init__()
        h, d, channels = _head_shape(attn)
        self.heads, self.head_dim = h, d
        self.q_proj, self.out_proj = attn.q_proj, attn.out_proj
        with torch.no_grad():
            self.register_buffer("key_weight", (attn.k_proj.weight.view(h, d, channels) / math.sqrt(d)).clone())
            self.register_buffer("value_weight", attn.v_proj.weight.view(h, d, channels).transpose(1, 2).contiguous())
            self.register_buffer("value_bias", attn.v_proj.bias.view(h, 1, d).clone())

    def forward(self, queries: Tensor, keys: Tensor, values: Tensor) -> Tensor:
        qh = self.q_proj(queries).view(-1, self.heads, self.head_dim).transpose(0, 1)  # H x N x d
        folded = (qh @ self.key_weight).flatten(0, 1)  # H N x C
        weights = torch.softmax(folded @ keys.t(), dim=-1)  # H N x T
        context = (weights @ values).view(self.heads, -1, values.shape[-1])  # H x N x C
        out = context @ self.value_weight + self.value_bias  # H x N x d
        result: Tensor = self.out_proj(out.transpose(0, 1).flatten(1))
        return result


class _ImageToTokens(nn.Module):
    """`image` (T x C) plus the attention of image tokens (queries `image_queries`) to the
    prompt's tokens, the query and output projections folded into the tokens:
    (W_q x + b_q).k = x.(W_q^T k) + b_q.k, and W_o (sum_n a_n v_n) = sum_n a_n (W_o v_n); each
    head's weights sum to one, so the output bias enters as bias / H on every folded value."""

    query_weight: Tensor
    query_bias: Tensor
    out_weight: Tensor
    out_bias: Tensor

    def __init__(self, attn: Attention) -> None:
        super().__init__()
        h, d, channels = _head_shape(attn)
        self.heads, self.head_dim = h, d
        self.k_proj, self.v_proj = attn.k_proj, attn.v_proj
        scale = 1 / math.sqrt(d)
        with torch.no_grad():
            self.register_buffer("query_weight", (attn.q_proj.weight.view(h, d, channels) * scale).clone())
            self.register_buffer("query_bias", (attn.q_proj.bias.view(h, d, 1) * scale).clone())
            self.register_buffer("out_weight", attn.out_proj.weight.view(channels, h, d).permute(1, 2, 0).contiguous())
            self.register_buffer("out_bias", (attn.out_proj.bias / h).clone())

    def forward(self, image: Tensor, image_queries: Tensor, keys: Tensor, values: Tensor) -> Tensor:
        kh = self.k_proj(keys).view(-1, self.heads, self.head_dim).transpose(0, 1)  # H x N x d
        vh = self.v_proj(values).view(-1, self.heads, self.head_dim).transpose(0, 1)
        folded_keys = (kh @ self.query_weight).flatten(0, 1)  # H N x C
        key_bias = (kh @ self.query_bias).view(1, -1)  # 1 x H N
        logits = torch.addmm(key_bias, image_queries, folded_keys.t())  # T x H N
        # The softmax over each head's few prompt tokens, on the logits turned heads x prompt
        # tokens x image tokens: it reduces along the contiguous image-token axis (a softmax over
        # rows of 7 values is several times slower in onnxruntime than the two transposes).
        heads = logits.t().reshape(self.heads, -1, logits.shape[0])
        exp = torch.exp(heads - heads.amax(dim=1, keepdim=True))
        weights = (exp / exp.sum(dim=1, keepdim=True)).flatten(0, 1).t()  # T x H N
        folded_values = (vh @ self.out_weight + self.out_bias).flatten(0, 1)  # H N x C
        return torch.addmm(image, weights, folded_values)


def _upsampling_taps(factor: int) -> Tensor:
    """Bilinear upsampling by an integer `factor` along one axis (half-pixel centres, edges
    clamped: `F.interpolate(..., mode="bilinear", align_corners=False)`) as factor x 3 weights on
    the edge-padded input: output `factor i + k` sits at input `i + (k + 1/2) / factor - 1/2`,
    between padded inputs i and i + 1 (offset < 0) or i + 1 and i + 2. For factor 4 the weights
    are 1/8, 3/8, 5/8 and 7/8, exact in float."""
    taps = torch.zeros(factor, 3, dtype=torch.float64)
    for k in range(factor):
        offset = (k + 0.5) / factor - 0.5  # in [-1/2, 1/2)
        if offset < 0:
            taps[k, 0], taps[k, 1] = -offset, 1 + offset
        else:
            taps[k, 1], taps[k, 2] = 1 - offset, offset
    return taps.float()


def _block_weight(conv: nn.ConvTranspose2d) -> tuple[Tensor, Tensor]:
    """A 2x2 stride-2 transposed convolution as (C_in x 4 C_out, 4 C_out): each input pixel's
    2x2 output block, row-major."""
    c_in, c_out = conv.weight.shape[:2]
    assert conv.bias is not None  # foldable() checked
    return conv.weight.permute(0, 2, 3, 1).reshape(c_in, 4 * c_out).contiguous(), conv.bias.repeat(4).contiguous()


def _dense_embedding(
    mask_input: Tensor,
    has_mask_input: Tensor,
    no_mask: Tensor,
    weights: list[Tensor],
    eps: list[float],
    mask_size: list[int],
) -> Tensor:
    """The prompt encoder's dense embedding (T x C): the mask input downscaled when
    `has_mask_input` is not 0, blended as `SamOnnxModel._embed_masks` does; otherwise the "no
    mask" embedding (1 x C, broadcast). Scripted, so the branch is an ONNX If; `weights` are
    `_DenseEmbedding`'s."""
    if bool(has_mask_input[0] == 0):
        return no_mask
    w1, b1, g1, n1, w2, b2, g2, n2, w3, b3 = weights
    h, w = mask_size[0], mask_size[1]
    m = mask_input.reshape(h // 2, 2, w // 2, 2).permute(0, 2, 1, 3).reshape(h // 2, w // 2, 4)
    m = F.gelu(F.layer_norm(m @ w1 + b1, [g1.shape[0]], g1, n1, eps[0]))
    c = m.shape[-1]
    m = m.reshape(h // 4, 2, w // 4, 2, c).permute(0, 2, 1, 3, 4).reshape(h // 4, w // 4, 4 * c)
    m = F.gelu(F.layer_norm(m @ w2 + b2, [g2.shape[0]], g2, n2, eps[1]))
    m = m.reshape((h // 4) * (w // 4), -1) @ w3 + b3
    return has_mask_input * m + (1 - has_mask_input) * no_mask


with warnings.catch_warnings():
    warnings.filterwarnings("ignore", category=FutureWarning)  # torch.jit's deprecation note
    _scripted_dense_embedding = torch.jit.script(_dense_embedding)


class _DenseEmbedding(nn.Module):
    """The mask downscaling's weights as channels-last matrices, and the call of
    `_dense_embedding` on them."""

    def __init__(self, sam: Sam) -> None:
        super().__init__()
        encoder = sam.prompt_encoder
        first, norm1, _, second, norm2, _, last = list(encoder.mask_downscaling)
        self.mask_size = [4 * encoder.image_embedding_size[0], 4 * encoder.image_embedding_size[1]]
        self.eps = [float(norm1.eps), float(norm2.eps)]
        with torch.no_grad():
            self.weights = nn.ParameterList(
                nn.Parameter(t.detach().clone().contiguous(), requires_grad=False)
                for t in (
                    first.weight.permute(2, 3, 1, 0).reshape(-1, first.out_channels),
                    first.bias,
                    norm1.weight,
                    norm1.bias,
                    second.weight.permute(2, 3, 1, 0).reshape(-1, second.out_channels),
                    second.bias,
                    norm2.weight,
                    norm2.bias,
                    last.weight[:, :, 0, 0].t(),
                    last.bias,
                )
            )
            self.register_buffer("no_mask", encoder.no_mask_embed.weight.clone())

    def forward(self, mask_input: Tensor, has_mask_input: Tensor) -> Tensor:
        result: Tensor = _scripted_dense_embedding(
            mask_input, has_mask_input, self.no_mask, list(self.weights), self.eps, self.mask_size
        )
        return result


class FoldedOnnxModel(ReferenceOnnxModel):
    """The reference export model's function for batch 1, with the decoder rewritten as the
    module docstring says. Requires `foldable(sam)`."""

    def __init__(self, model: Sam) -> None:
        super().__init__(model=model, return_single_mask=True)
        if not foldable(model):
            raise ValueError("the decoder's layout is not SAM's: export the reference graph")
        decoder, encoder = model.mask_decoder, model.prompt_encoder
        transformer = decoder.transformer
        self.grid = tuple(encoder.image_embedding_size)
        self.token_to_image = nn.ModuleList(_TokensToImage(x.cross_attn_token_to_image) for x in transformer.layers)
        self.image_to_token = nn.ModuleList(_ImageToTokens(x.cross_attn_image_to_token) for x in transformer.layers)
        self.final_token_to_image = _TokensToImage(transformer.final_attn_token_to_image)
        self.dense = _DenseEmbedding(model)
        first, norm, self.act1, second, self.act2 = list(decoder.output_upscaling)
        self.norm = norm
        with torch.no_grad():
            channels = encoder.embed_dim
            self.register_buffer("key_pe", encoder.get_dense_pe()[0].reshape(channels, -1).t().contiguous())
            w, b = _block_weight(first)
            self.register_buffer("up1_weight", w)
            self.register_buffer("up1_bias", b)
            w, b = _block_weight(second)
            self.register_buffer("up2_weight", w)
            self.register_buffer("up2_bias", b)
            output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
            self.register_buffer("output_tokens", output_tokens.clone())
            reweight = [1000.0] + [0.0] * (decoder.num_mask_tokens - 1)
            self.register_buffer("score_reweight", torch.tensor(reweight))
            self.upsampling = self.img_size // (4 * self.grid[0])
            self.register_buffer("taps", _upsampling_taps(self.upsampling))

    def mask_postprocessing(self, masks: Tensor, orig_im_size: Tensor) -> Tensor:
        """The reference's postprocessing (low-res logits upsampled to the encoder's input size,
        cropped to the resized image, resized to the image's size), the upsampling separable
        (`_upsampling_taps`, columns then rows, each as a product with the taps) and run only
        over the low-res rows and columns the crop keeps."""
        r = self.upsampling
        resized = self.resize_longest_image_size(orig_im_size, self.img_size).to(torch.int64)
        # Output r i + k reads padded inputs i .. i + 2; outputs up to resized - 1 are kept.
        rows, columns = (resized[0] - 1) // r + 1, (resized[1] - 1) // r + 1
        padded = F.pad(masks, (1, 1, 1, 1), mode="replicate")[0, 0, : rows + 2, : columns + 2]
        windows = torch.stack([padded[:, i : i + columns] for i in range(3)], dim=-1)  # rows + 2 x columns x 3
        wide = (windows @ self.taps.t()).reshape(rows + 2, columns * r)[:, : resized[1]]
        windows = torch.stack([wide[i : i + rows] for i in range(3)], dim=1)  # rows x 3 x width
        upsampled = (self.taps @ windows).reshape(1, 1, rows * r, -1)[:, :, : resized[0]]
        size = orig_im_size.to(torch.int64)
        # Tensor sizes, not ints: traced as graph values, they follow each call's orig_im_size.
        return F.interpolate(upsampled, size=(size[0], size[1]), mode="bilinear", align_corners=False)  # type: ignore[arg-type]

    def _transformer(self, keys: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """segment-anything's TwoWayTransformer on channels-last image tokens (T x C) and the
        prompt's tokens (N x C)."""
        transformer = self.model.mask_decoder.transformer
        queries = tokens
        layers = zip(transformer.layers, self.token_to_image, self.image_to_token, strict=True)
        for layer, token_to_image, image_to_token in layers:
            if layer.skip_first_layer_pe:
                queries = layer.self_attn(q=queries[None], k=queries[None], v=queries[None])[0]
            else:
                q = (queries + tokens)[None]
                queries = queries + layer.self_attn(q=q, k=q, v=queries[None])[0]
            queries = layer.norm1(queries)
            k = keys + self.key_pe
            queries = layer.norm2(queries + token_to_image(queries + tokens, k, keys))
            queries = layer.norm3(queries + layer.mlp(queries))
            keys = layer.norm4(image_to_token(keys, k, queries + tokens, queries))
        final = self.final_token_to_image(queries + tokens, keys + self.key_pe, keys)
        return transformer.norm_final_attn(queries + final), keys

    def _low_res_mask(self, keys: Tensor, hyper: Tensor) -> Tensor:
        """The upscaling of image tokens (T x C) channels-last and the product with one mask's
        hypernetwork output (C'): 1 x 1 x 4h x 4w logits."""
        h, w = self.grid
        x = (keys @ self.up1_weight + self.up1_bias).view(h * w, 4, -1)
        x = self.act1(F.layer_norm(x, [self.norm.weight.shape[0]], self.norm.weight, self.norm.bias, self.norm.eps))
        x = self.act2(x.view(h * w * 4, -1) @ self.up2_weight + self.up2_bias)  # T 4 x 4 C'
        logits = x.view(h * w * 16, -1) @ hyper.view(-1, 1)
        # (i, j, ky1, kx1, ky2, kx2) -> row 4i + 2 ky1 + ky2, column 4j + 2 kx1 + kx2
        logits = logits.view(h, w, 2, 2, 2, 2).permute(0, 2, 4, 1, 3, 5)
        result: Tensor = logits.reshape(1, 1, 4 * h, 4 * w)
        return result

    @torch.no_grad()
    def forward(
        self,
        image_embeddings: Tensor,
        point_coords: Tensor,
        point_labels: Tensor,
        mask_input: Tensor,
        has_mask_input: Tensor,
        orig_im_size: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor]:
        decoder = self.model.mask_decoder
        sparse = self._embed_points(point_coords, point_labels)[0]  # P x C
        channels = self.key_pe.shape[1]
        keys = image_embeddings.reshape(channels, -1).t() + self.dense(mask_input, has_mask_input)
        tokens = torch.cat([self.output_tokens, sparse], dim=0)
        queries, keys = self._transformer(keys, tokens)
        iou = decoder.iou_prediction_head(queries[0])
        # SamOnnxModel.select_masks: the multimask outputs for one point (plus padding), else the first.
        best = torch.argmax(iou + (point_coords.shape[1] - 2.5) * self.score_reweight)
        mlps = decoder.output_hypernetworks_mlps
        hyper = torch.stack([mlps[i](queries[1 + i]) for i in range(decoder.num_mask_tokens)])[best]
        low_res = self._low_res_mask(keys, hyper)
        return self.mask_postprocessing(low_res, orig_im_size), iou[best].view(1, 1), low_res
