"""Loading checkpoints into models: lazily or at start, once per process, safely under
concurrent requests, with the load time recorded.

Every checkpoint, built-in or registered, of either family, takes the same path: the model is
built from its shape by its family's own builder (segment-anything's, or sam2's from its
config), then the state dict is read on the CPU (`weights_only`) and loaded strictly, then
moved to the device. A LoadedModel answers through its family (samsvc.engine.family).

One load per model runs at a time; calls that arrive meanwhile wait for it and share its model
or its error, and a failed load is remembered for DEFAULT_LOAD_FAILURE_TTL_S, so a checkpoint
that fails its checksum is read once, not once per call. A failure's message names the model
and what to ask the operator; the file, digests and causes are its `detail`, in the log only.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import gc
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from samsvc.engine.amg_types import AmgOptions, CancelToken, MaskRecord
from samsvc.engine.checkpoint_reader import load_checkpoint, size_mismatch
from samsvc.engine.costs import CostBook, ModelCost, WorkCost, grid_work
from samsvc.engine.download import download_model, sha256_of
from samsvc.engine.embeddings import ImageEmbedding
from samsvc.engine.encoder_batching import DEFAULT_MAX_WAIT_S
from samsvc.engine.family import EncoderChoice, ModelFamily, family_for
from samsvc.engine.options import ModelOptions
from samsvc.engine.prompt_types import PromptOutput, PromptSpec
from samsvc.engine.registry import ModelRegistry, ModelSpec
from samsvc.errors import DownloadError, FailedPrecondition, FieldViolation, NotFound, SamsvcError
from samsvc.infra.logs import redact_url

log = logging.getLogger(__name__)

#: Seconds a failed load is remembered: calls meanwhile get its error at once, without reading
#: the checkpoint again (an operator's LoadModel tries again at any time).
DEFAULT_LOAD_FAILURE_TTL_S = 30.0


def resolve_device(setting: str) -> torch.device:
    """`auto` is cuda when a GPU is visible, else cpu; anything else is taken as given."""
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to run, shared read-only by every request of the process."""

    spec: ModelSpec
    #: The network (segment-anything's Sam, or sam2's SAM2Base), read-only while served.
    model: Any
    device: torch.device
    load_time_s: float
    #: SHA-256 of the checkpoint: part of every cache key, so a cache never answers for
    #: another checkpoint.
    digest: str
    #: Inference precision: fp32, or fp16/bf16 through autocast.
    dtype: str = "fp32"
    #: Whether torch.compile wraps the encoder and decoder (results differ from eager in the
    #: last float digits, so compiled and eager answers are cached apart).
    compiled: bool = False
    #: Whether encoder passes are batched across threads (also rounding-level differences).
    batched: bool = False
    #: What runs the image encoder (registry.ENCODERS): OpenVINO's embeddings differ from torch's
    #: (fp32 at rounding level, int8 more), so each is cached apart.
    encoder: str = "torch"

    @property
    def identity(self) -> str:
        """What cache keys must carry about the model: its checkpoint, precision, compilation,
        encoder batching and encoder runtime."""
        return (
            f"{self.digest}:{self.dtype}"
            + (":compiled" if self.compiled else "")
            + (":batched" if self.batched else "")
            + ("" if self.encoder == "torch" else f":{self.encoder}")
        )

    def precision(self) -> contextlib.AbstractContextManager[Any]:
        """The context inference runs in: nothing for fp32, autocast for fp16 and bf16."""
        if self.dtype == "fp32":
            return contextlib.nullcontext()
        dtype = torch.float16 if self.dtype == "fp16" else torch.bfloat16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    @property
    def family(self) -> ModelFamily:
        return family_for(self.spec.family)

    def generate_masks(
        self, image: npt.NDArray[np.uint8], options: AmgOptions, cancel: CancelToken | None = None, *, fast: bool
    ) -> list[MaskRecord]:
        """Automatic masks, by the model's family, under its precision."""
        return self.family.generate_masks(self.model, image, options, cancel, fast=fast, precision=self.precision)

    def embed(self, image: npt.NDArray[np.uint8]) -> ImageEmbedding:
        return self.family.embed(self.model, image, self.precision)

    def predict_prompts(
        self, embedding: ImageEmbedding, prompts: list[PromptSpec], multimask: bool, *, fast: bool
    ) -> list[PromptOutput]:
        return self.family.predict_prompts(self.model, embedding, prompts, multimask, self.precision, fast=fast)

    def exportable_decoder(self) -> Any:
        """The network whose decoder segment-anything's ONNX export takes; FAILED_PRECONDITION
        (DECODER_UNAVAILABLE) for families it does not apply to."""
        if not self.family.exports_decoder:
            raise FailedPrecondition(
                f"model {self.spec.name!r} ({self.spec.family}) has no ONNX decoder here; "
                "its prompts are decoded on the server (SegmentPrompts)",
                reason="DECODER_UNAVAILABLE",
                metadata={"model": self.spec.name},
            )
        return self.model


@dataclass(frozen=True)
class ModelState:
    """What the health report and ListModels say of one model."""

    spec: ModelSpec
    weights_present: bool
    loaded: bool
    device: str
    load_time_s: float
    #: Why the model cannot be loaded here (an error reason: MODEL_WEIGHTS_MISSING,
    #: CHECKPOINT_SIZE_MISMATCH, or its last load's), "" when nothing is known against it.
    problem: str = ""
    #: What its work costs here (samsvc.engine.costs), None until measured.
    cost: ModelCost | None = None
    #: What runs its image encoder (registry.ENCODERS).
    encoder: str = "torch"
    #: A Segment call at the model's default options: its work, and its seconds when measured.
    default_work: WorkCost = field(default_factory=lambda: WorkCost(0, 0))


class ModelManager:
    """Loads each model once per process and hands the same instance to every caller.

    SAM's predictors keep per-image state, so callers wrap the shared model in their own
    predictor; the model itself is only read.
    """

    def __init__(
        self,
        registry: ModelRegistry,
        *,
        device: str = "auto",
        verify_checksums: bool = True,
        auto_download: bool = False,
        downloader: Callable[[ModelSpec], Path] = download_model,
        default_dtype: str = "fp32",
        default_encoder: str = "torch",
        encoder_cache: Path | None = None,
        compile_models: bool = False,
        encoder_batch_size: int = 1,
        encoder_batch_wait_s: float = DEFAULT_MAX_WAIT_S,
    ) -> None:
        self.registry = registry
        self.device = resolve_device(device)
        self._verify = verify_checksums
        self._auto_download = auto_download
        self._downloader = downloader
        self._default_dtype = default_dtype
        self._default_encoder = default_encoder
        #: Where OpenVINO encoders are kept once compiled, by checkpoint digest (None: beside
        #: each checkpoint).
        self._encoder_cache = encoder_cache
        self._compile = compile_models
        self._encoder_batch = (encoder_batch_size, encoder_batch_wait_s)
        self._loaded: dict[str, LoadedModel] = {}
        self._locks: dict[str, threading.Lock] = {name: threading.Lock() for name in registry.names()}
        #: Model -> (monotonic time of its last failed load, the failure).
        self._failures: dict[str, tuple[float, SamsvcError]] = {}
        #: Model -> the reason of its last failed load, until a load succeeds (for the health
        #: report; `_failures` only holds loads back for a short while).
        self._problems: dict[str, str] = {}
        self.failure_ttl_s = DEFAULT_LOAD_FAILURE_TTL_S
        #: What each model's work costs in this process (samsvc.engine.costs).
        self.costs = CostBook()

    @classmethod
    def from_options(cls, options: ModelOptions) -> ModelManager:
        registry = ModelRegistry.load(options.model_dir, options.models_file)
        downloader = download_model if options.s3 is None else functools.partial(download_model, s3=options.s3)
        return cls(
            registry,
            device=options.device,
            verify_checksums=options.verify_checksums,
            auto_download=options.auto_download,
            default_dtype=options.dtype,
            default_encoder=options.encoder,
            encoder_cache=options.model_dir / "openvino",
            compile_models=options.compile_models,
            encoder_batch_size=options.encoder_batch_size,
            encoder_batch_wait_s=options.encoder_batch_wait_s,
            downloader=downloader,
        )

    def spec(self, name: str) -> ModelSpec:
        spec = self.registry.get(name)
        if spec is None:
            raise NotFound(f"model {name!r} is not registered", reason="MODEL_NOT_FOUND", metadata={"model": name})
        return spec

    def ready(self, name: str) -> LoadedModel | None:
        """The model if it is loaded, None if a load is needed; raises the error of a load that
        failed moments ago. Never blocks: callers decide where a load may run (it is
        inference-sized work)."""
        loaded = self._loaded.get(name)
        if loaded is None:
            self.spec(name)
            self._raise_recent_failure(name)
        return loaded

    def get(self, name: str, *, retry: bool = False) -> LoadedModel:
        """The loaded model, loading it first if needed (blocking; call off the event loop).
        `retry`: try again even if a load failed moments ago (an operator's request)."""
        loaded = self._loaded.get(name)
        if loaded is not None:
            return loaded
        spec = self.spec(name)
        if retry:
            self._failures.pop(name, None)
        self._raise_recent_failure(name)
        with self._locks[name]:
            loaded = self._loaded.get(name)
            if loaded is None:
                self._raise_recent_failure(name)  # the load this call waited for failed
                try:
                    loaded = self._load(spec)
                except SamsvcError as exc:
                    self._failures[name] = (time.monotonic(), exc)
                    self._problems[name] = exc.reason
                    log.warning("model %s cannot be loaded: %s [%s]", name, exc.detail or exc.message, exc.reason)
                    raise
                self._failures.pop(name, None)
                self._problems.pop(name, None)
                self._loaded[name] = loaded
        return loaded

    def _raise_recent_failure(self, name: str) -> None:
        failure = self._failures.get(name)
        if failure is not None and time.monotonic() < failure[0] + self.failure_ttl_s:
            raise copy.copy(failure[1])  # a copy: each call's traceback is its own

    def _load(self, spec: ModelSpec) -> LoadedModel:
        if not spec.weights_present and self._auto_download and spec.url is not None:
            log.info("downloading weights of %s from %s", spec.name, redact_url(spec.url))
            try:
                self._downloader(spec)
            except DownloadError as exc:
                raise DownloadError(
                    f"the weights of model {spec.name!r} could not be downloaded on this server: ask the operator "
                    "(the server's log has the cause)",
                    reason=exc.reason,
                    metadata={"model": spec.name},
                    detail=exc.for_log(),
                ) from exc
        started = time.perf_counter()
        sam = load_checkpoint(spec, self.device, verify=self._verify)
        family = family_for(spec.family)
        digest = spec.sha256 if spec.sha256 and self._verify else sha256_of(spec.path)
        encoder = self.encoder_of(spec)
        if encoder != "torch":
            cache = self._encoder_cache or spec.path.parent / "openvino"
            choice = EncoderChoice(encoder, spec.name, digest, cache, spec.calibration_dir)
            family.use_encoder(sam, choice, self.device)
        batched = family.accelerate(
            sam, compile_model=self._compile and encoder == "torch", encoder_batch=self._encoder_batch
        )
        elapsed = time.perf_counter() - started
        log.info("loaded model %s on %s in %.2f s", spec.name, self.device, elapsed)
        dtype = spec.dtype or self._default_dtype
        return LoadedModel(
            spec=spec,
            model=sam,
            device=self.device,
            load_time_s=elapsed,
            digest=digest,
            dtype=dtype,
            compiled=self._compile and encoder == "torch",
            batched=batched,
            encoder=encoder,
        )

    def encoder_of(self, spec: ModelSpec) -> str:
        """What runs the model's image encoder: its MODELS_FILE entry's, else MODEL_ENCODER."""
        return spec.encoder or self._default_encoder

    def unload(self, name: str) -> bool:
        """Drop a loaded model; calls already holding it finish with it. Returns whether it was loaded."""
        spec = self.spec(name)
        with self._locks[spec.name]:
            dropped = self._loaded.pop(spec.name, None)
        if dropped is None:
            return False
        del dropped
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        log.info("unloaded model %s", name)
        return True

    def amg_defaults(self, name: str) -> AmgOptions:
        """The AMG options a request on model `name` gets where it sets none (its family's)."""
        return family_for(self.spec(name).family).amg_defaults()

    def option_violations(self, name: str, options: AmgOptions, prefix: str = "") -> list[FieldViolation]:
        """Options model `name`'s family cannot honour, each named."""
        return family_for(self.spec(name).family).option_violations(options, prefix)

    def preload(self, names: list[str]) -> list[str]:
        """Load the named models now; `all` loads every model whose weights are present.
        Returns the names loaded."""
        if "all" in names:
            names = [spec.name for spec in self.registry if spec.weights_present]
        for name in names:
            self.get(name)
        return names

    def states(self) -> list[ModelState]:
        return [self.state(spec.name) for spec in self.registry]

    def state(self, name: str) -> ModelState:
        spec = self.spec(name)
        loaded = self._loaded.get(name)
        return ModelState(
            spec=spec,
            weights_present=spec.weights_present,
            loaded=loaded is not None,
            device=str(self.device),
            load_time_s=loaded.load_time_s if loaded else 0.0,
            problem="" if loaded is not None else self._problem(spec),
            encoder=self.encoder_of(spec),
            cost=self.costs.figures(name),
            default_work=self.costs.estimate(name, grid_work(self.amg_defaults(name))),
        )

    def _problem(self, spec: ModelSpec) -> str:
        mismatch = size_mismatch(spec)
        if mismatch is not None:
            return mismatch.reason
        if spec.name in self._problems:
            return self._problems[spec.name]
        downloads = self._auto_download and spec.url is not None
        return "" if spec.weights_present or downloads else "MODEL_WEIGHTS_MISSING"

    def audit(self) -> None:
        """Log each present checkpoint whose size is not the recorded one (at start: a stat per
        file; digests are checked when a model loads, or by `samsvc models verify`)."""
        for spec in self.registry:
            mismatch = size_mismatch(spec)
            if mismatch is not None:
                log.warning("model %s cannot be loaded: %s [%s]", spec.name, mismatch.detail, mismatch.reason)
