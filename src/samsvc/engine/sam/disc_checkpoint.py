"""A hand-weighted tiny SAM whose every foreground point gives sharp discs around itself.

Random weights give masks that the default thresholds (predicted IoU 0.88, stability 0.95)
all reject, so a random-weight model cannot show what the service does with a few hundred
surviving masks: filtering, NMS, encoding and sending them. No pretrained weights can be had
here, so this model is weighted by hand, through segment-anything's own builder and modules
(nothing is replaced; the checkpoint loads through the user's path like any other):

- the image encoder ignores the pixels (zero patch embedding, every block's residual branch
  zero) and its position embedding carries Fourier features of each patch's position,
  (cos, sin) of omega * (u - 1/2) along each axis, with their negatives so each pixel's features
  have mean zero and a constant norm that every LayerNorm passes unchanged up to scale;
- the prompt encoder's "random" Fourier matrix has one frequency per axis, the same omega, so a
  point's positional encoding holds the same features of the point;
- in the mask decoder's first self-attention the IoU and mask tokens attend only to the
  foreground point (marker channels, one head) and copy its features; every other attention and
  MLP adds zero, so the image tokens and the copied features reach the upscaling and the heads;
- the upscaling's transposed convolutions rotate the features by each output pixel's sub-pixel
  offset (cos(a + b) = cos a cos b - sin a sin b), so the 256 x 256 grid carries exact features
  of its own positions; biases keep the GELUs on their linear side;
- each hypernetwork turns the point's features into a vector whose product with a pixel's is
  A * (cos(omega du) + cos(omega dv) - 2 + delta): positive on a disc of radius about
  sqrt(2 delta) / omega around the point, steep at its edge (high stability);
- the IoU head answers a base per mask token plus a small smooth function of the point's
  position, so scores differ from point to point and NMS order is well defined.

Masks do not depend on the image: this is a model for measuring and testing the service with
realistic mask counts, not for segmenting anything.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from segment_anything.modeling import Sam
from segment_anything.modeling.common import LayerNorm2d

from samsvc.engine.checkpoints import TINY_ARCHITECTURE
from samsvc.engine.download import sha256_of
from samsvc.engine.registry import Architecture
from samsvc.engine.sam.family import build_sam

#: The features' angular frequency across the model's input (a full side is omega radians):
#: below 2 pi, so each pixel's features are unique and a point has one disc.
OMEGA = math.pi
#: Disc radius of each mask token (the single-mask one first), as a fraction of the input's
#: longest side (1024 pixels).
DISC_RADII = (0.09, 0.12, 0.2, 0.3)
#: Predicted IoU of each mask token at the middle of the input; it varies by +-0.03 with the
#: point's position.
IOU_BASES = (0.95, 0.91, 0.94, 0.93)
#: Relative width of a disc's edge (logits within +-1 of the threshold): stability ~ 1 - 4 x this.
EDGE = 0.004

_FEATURES = 8  # cos u, sin u, cos v, sin v and their negatives
_IOU_MARKER, _MASK_MARKER, _POINT_MARKER = 5, 6, 3  # channels zero in every point's encoding
_ATTEND = 20.0  # marker weight: the mask and IoU tokens' attention to the point is one to 1e-30
_GELU_SHIFT_1, _GELU_SHIFT_2 = 10.0, 8.0  # keep the upscaling's GELUs at x >= 6 (exactly linear)


def _features(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(..., 8): the Fourier features of normalised positions u, v (0..1 across the input)."""
    a, b = OMEGA * (u - 0.5), OMEGA * (v - 0.5)
    positive = torch.stack([a.cos(), a.sin(), b.cos(), b.sin()], dim=-1)
    return torch.cat([positive, -positive], dim=-1)


def _rotation(du: float, dv: float) -> torch.Tensor:
    """8 x 8 map taking the features at (u, v) to those at (u + du, v + dv)."""
    rotation = torch.zeros(8, 8)
    for axis, delta in ((0, du), (2, dv)):
        c, s = math.cos(OMEGA * delta), math.sin(OMEGA * delta)
        # rows: input channel, columns: output channel (x @ R)
        rotation[axis, axis], rotation[axis + 1, axis] = c, -s  # cos' = cos c - sin s
        rotation[axis, axis + 1], rotation[axis + 1, axis + 1] = s, c  # sin' = cos s + sin c
    rotation[4:, 4:] = rotation[:4, :4]
    return rotation


def _copy_positive(linear: torch.nn.Linear) -> None:
    """An MLP layer that passes the 8 feature channels through (ReLU keeps both signs' halves)."""
    linear.weight[:_FEATURES, :_FEATURES] = torch.eye(_FEATURES)


def _point_readout() -> torch.Tensor:
    """4 x 8 map from the ReLU'd features (r_j) to the point's (cos u, sin u, cos v, sin v):
    feature j is (r_j - r_(j+4)) / 8 (the tokens carry 8 x the features after LayerNorm)."""
    readout = torch.zeros(4, _FEATURES)
    readout[:, :4] = torch.eye(4) / 8
    readout[:, 4:] = -torch.eye(4) / 8
    return readout


def disc_sam(architecture: Architecture = TINY_ARCHITECTURE) -> Sam:
    """segment-anything's SAM of `architecture`, weighted by hand as the module describes."""
    sam = build_sam(architecture)
    with torch.no_grad():
        for parameter in sam.parameters():
            parameter.zero_()
        for module in sam.modules():
            if isinstance(module, torch.nn.LayerNorm | LayerNorm2d):
                module.weight.fill_(1.0)
        _weight_encoder(sam)
        _weight_prompt_encoder(sam)
        _weight_decoder(sam)
    return sam.eval()


def _weight_encoder(sam: Sam) -> None:
    encoder = sam.image_encoder
    assert encoder.pos_embed is not None, "the disc model needs the encoder's absolute position embedding"
    _, h, w, _ = encoder.pos_embed.shape
    v, u = torch.meshgrid((torch.arange(h) + 0.5) / h, (torch.arange(w) + 0.5) / w, indexing="ij")
    encoder.pos_embed[0, :, :, :_FEATURES] = _features(u, v)
    project, _, spread, _ = encoder.neck
    project.weight[:_FEATURES, :_FEATURES, 0, 0] = torch.eye(_FEATURES)  # 1x1: into the first 8 channels
    spread.weight[:_FEATURES, :_FEATURES, 1, 1] = torch.eye(_FEATURES)  # 3x3: centre tap only


def _weight_prompt_encoder(sam: Sam) -> None:
    encoder = sam.prompt_encoder
    # _pe_encoding: 2 pi (2 u - 1) g = omega (u - 1/2) when g = omega / (4 pi).
    gaussian = encoder.pe_layer.positional_encoding_gaussian_matrix
    gaussian.zero_()
    gaussian[0, 0] = gaussian[1, 1] = OMEGA / (4 * math.pi)
    encoder.point_embeddings[1].weight[0, _POINT_MARKER] = 1.0  # foreground points


def _weight_decoder(sam: Sam) -> None:
    decoder = sam.mask_decoder
    half = decoder.transformer_dim // 2  # the positional encoding's sin block, then its cos block
    decoder.iou_token.weight[0, _IOU_MARKER] = 1.0
    decoder.mask_tokens.weight[:, _MASK_MARKER] = 1.0

    attention = decoder.transformer.layers[0].self_attn
    attention.q_proj.weight[0, _IOU_MARKER] = attention.q_proj.weight[0, _MASK_MARKER] = _ATTEND
    attention.k_proj.weight[0, _POINT_MARKER] = _ATTEND
    # Head 0's values 0..3: the point's cos u, sin u, cos v, sin v (encoding channels 128, 0, 129, 1).
    for value, channel in enumerate((half, 0, half + 1, 1)):
        attention.v_proj.weight[value, channel] = 1.0
    attention.out_proj.weight[:4, :4] = torch.eye(4)
    attention.out_proj.weight[4:_FEATURES, :4] = -torch.eye(4)

    readout = _point_readout()
    for index, mlp in enumerate(decoder.output_hypernetworks_mlps):
        radius = DISC_RADII[index]
        delta = (OMEGA * radius) ** 2 / 2  # cos a + cos b > 2 - delta: a disc of this radius
        scale = 1.0 / ((OMEGA * radius) ** 2 * EDGE)  # logit slope: +-1 within EDGE * radius
        first, second, last = mlp.layers
        _copy_positive(first)
        _copy_positive(second)
        # logit = sum_j h_j (f_j + shift) + h_4 shift = scale (sum_j g_j f_j - 2 + delta)
        last.weight[:4, :_FEATURES] = scale * readout
        last.weight[4, :_FEATURES] = -scale * readout.sum(dim=0)
        last.bias[4] = scale * (delta - 2) / _GELU_SHIFT_2

    first, second, last = decoder.iou_prediction_head.layers
    _copy_positive(first)
    _copy_positive(second)
    # sin u and sin v run from -1 to 1 across the input.
    last.weight[:, :_FEATURES] = 0.03 * (0.7 * readout[1] + 0.3 * readout[3])
    last.bias[:] = torch.tensor(IOU_BASES)

    up1, norm, _, up2, _ = decoder.output_upscaling
    norm.bias[:] = _GELU_SHIFT_1  # 4 x features + 10: GELU(x) = x for x >= 6 to 1e-9
    # Level-1 pixel (2i + a, 2j + b) sits (2b - 1) / 256, (2a - 1) / 256 from its patch's centre.
    for a in range(2):
        for b in range(2):
            up1.weight[:_FEATURES, :_FEATURES, a, b] = _rotation((2 * b - 1) / 256, (2 * a - 1) / 256)
    # After the LayerNorm the features are 4 x f + 10 and channel 8 is a constant 10.
    constant = _FEATURES
    for a in range(2):
        for b in range(2):
            rotation = _rotation((2 * b - 1) / 512, (2 * a - 1) / 512)[:4, :4]
            weight = torch.zeros(_FEATURES, 4)
            weight[:4] = rotation / 4
            up2.weight[:_FEATURES, :4, a, b] = weight
            # Cancel the 10 carried by each input feature; land every output on +8.
            carried = _GELU_SHIFT_1 * weight.sum(dim=0)
            up2.weight[constant, :4, a, b] = (_GELU_SHIFT_2 - carried) / _GELU_SHIFT_1
            up2.weight[constant, 4, a, b] = _GELU_SHIFT_2 / _GELU_SHIFT_1


def build_disc_checkpoint(path: Path, architecture: Architecture = TINY_ARCHITECTURE) -> str:
    """Write the hand-weighted disc model's state dict to `path`; returns its SHA-256."""
    sam = disc_sam(architecture)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(sam.state_dict(), path)
    return sha256_of(path)
