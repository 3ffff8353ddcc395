"""What a model's work costs on this server, so callers are told before and after: the seconds
of one encoder pass and of one grid point, per model, measured here.

A probe measures them when the server starts (for the models it preloads): a grid of prompts
on a synthetic image (whose first encoder pass also warms the model up), then one encoder pass
alone. The calls a model serves refine them (a running mean): an embedding's encoder pass,
a grid's seconds beyond its encoder passes. A call's work is known before it runs (its encoder
passes and grid points follow from its options), so its cost is the figures times its work.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from samsvc.engine.amg_types import AmgOptions, prompt_count

if TYPE_CHECKING:
    from samsvc.engine.loader import LoadedModel, ModelManager

log = logging.getLogger(__name__)

#: Side of the probe's synthetic image, in pixels (SAM's encoders take 1024-pixel inputs).
DEFAULT_PROBE_SIDE = 1024
#: Points per side of the probe's grid (64 points: enough to time a point, few enough to be quick).
DEFAULT_PROBE_POINTS_PER_SIDE = 8
#: Weight of the newest call in the running means.
DEFAULT_EWMA_WEIGHT = 0.2


@dataclass(frozen=True)
class ModelCost:
    """Seconds of one encoder pass and of one grid point (decoding and post-processing)."""

    encode_s: float
    point_s: float


@dataclass(frozen=True)
class WorkCost:
    """The work of a call or an image: what it runs, the seconds it took (or is expected to
    take) and the seconds it waited for an inference slot."""

    encoder_passes: int
    prompts: int
    compute_s: float = 0.0
    queued_s: float = 0.0


def encoder_passes(options: AmgOptions) -> int:
    """Encoder passes of a grid: one per crop, crop layer i having (2**i)**2 crops."""
    return sum((2**layer) ** 2 for layer in range(options.crop_n_layers + 1))


def grid_work(options: AmgOptions) -> WorkCost:
    """What automatic mask generation with `options` runs, before it runs."""
    return WorkCost(encoder_passes(options), prompt_count(options))


class CostBook:
    """Each model's figures in this process; read by ListModels, SubmitBatch and the deadline
    check, written by the probe and by the calls served."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._encode: dict[str, float] = {}
        self._point: dict[str, float] = {}

    def figures(self, model: str) -> ModelCost | None:
        """The model's figures, None until both are measured."""
        with self._lock:
            encode, point = self._encode.get(model), self._point.get(model)
        return None if encode is None or point is None else ModelCost(encode, point)

    def seconds(self, model: str, work: WorkCost) -> float | None:
        """Expected seconds of `work` on an idle server; None while the model is unmeasured."""
        figures = self.figures(model)
        if figures is None:
            return None
        return work.encoder_passes * figures.encode_s + work.prompts * figures.point_s

    def estimate(self, model: str, work: WorkCost) -> WorkCost:
        """`work` with its expected seconds (0 while the model is unmeasured)."""
        return WorkCost(work.encoder_passes, work.prompts, self.seconds(model, work) or 0.0)

    def observe_encode(self, model: str, seconds: float) -> None:
        """An encoder pass of `model` took `seconds`."""
        with self._lock:
            self._encode[model] = _mean(self._encode.get(model), seconds)

    def observe_grid(self, model: str, work: WorkCost, seconds: float) -> None:
        """A grid of `work` took `seconds` in all; its encoder passes are taken at the known
        encoder figure, the rest is the points' (nothing is learnt before an encoder pass is
        measured)."""
        with self._lock:
            encode = self._encode.get(model)
            if encode is None or work.prompts <= 0:
                return
            per_point = max(seconds - work.encoder_passes * encode, 0.0) / work.prompts
            self._point[model] = _mean(self._point.get(model), per_point)

    def probe(self, loaded: LoadedModel, *, fast: bool) -> ModelCost:
        """Measure `loaded` now (blocking, inference-sized: about two encoder passes and a
        64-point grid) and record what it measured, replacing earlier figures."""
        rng = np.random.default_rng(0)
        image = rng.integers(0, 256, size=(DEFAULT_PROBE_SIDE, DEFAULT_PROBE_SIDE, 3), dtype=np.uint8)
        options = AmgOptions(points_per_side=DEFAULT_PROBE_POINTS_PER_SIDE)
        work = grid_work(options)
        started = time.perf_counter()
        loaded.generate_masks(image, options, fast=fast)
        grid_s = time.perf_counter() - started
        started = time.perf_counter()
        loaded.embed(image)
        encode_s = time.perf_counter() - started
        figures = ModelCost(encode_s, max(grid_s - encode_s, 0.0) / work.prompts)
        with self._lock:
            self._encode[loaded.spec.name] = figures.encode_s
            self._point[loaded.spec.name] = figures.point_s
        log.info(
            "model %s costs %.3f s per encoder pass and %.2f ms per grid point here",
            loaded.spec.name, figures.encode_s, figures.point_s * 1000,
        )  # fmt: skip
        return figures


def probe_costs(models: ModelManager, names: list[str], fast: bool) -> None:
    """Measure each named model (loaded already: the start-up probe after preloading)."""
    for name in names:
        models.costs.probe(models.get(name), fast=fast)


def _mean(previous: float | None, seconds: float) -> float:
    return seconds if previous is None else previous + DEFAULT_EWMA_WEIGHT * (seconds - previous)
