"""Batched image-encoder passes for threads that encode at the same time (a worker with several
threads holding a backlog, or a server with several inference slots).

`BatchingEncoder` replaces a model's `image_encoder`. A thread calling it with one image joins
the open batch; the first thread of a batch (the leader) waits up to `max_wait_s` for others,
or until `max_batch` images are in, then runs the wrapped encoder once on all of them and hands
each thread its own row. Everything that calls the encoder (segment-anything's predictor, both
mask generators, prompts) batches without knowing it. Off unless ENCODER_BATCH_SIZE > 1: a
batched pass equals single passes only to float rounding, and on a CPU it rarely pays; on a GPU
it fills the device when several images wait.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

#: Seconds a batch's first image waits for others.
DEFAULT_MAX_WAIT_S = 0.01


@dataclass
class _Batch:
    inputs: list[torch.Tensor] = field(default_factory=list)
    outputs: torch.Tensor | None = None
    error: BaseException | None = None
    full: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)


class BatchingEncoder(nn.Module):
    def __init__(self, encoder: nn.Module, max_batch: int, max_wait_s: float = DEFAULT_MAX_WAIT_S) -> None:
        super().__init__()
        if max_batch < 2:
            raise ValueError("max_batch must be at least 2")
        self.encoder = encoder
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._lock = threading.Lock()
        self._open: _Batch | None = None
        #: Encoder passes run and images encoded, for tests and metrics.
        self.passes = 0
        self.images = 0

    def __getattr__(self, name: str) -> Any:
        # segment-anything reads the encoder's `img_size`; pass such attributes through.
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("encoder"), name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] != 1:
            return self._run([x])
        with self._lock:
            batch = self._open
            leader = batch is None
            if batch is None:
                batch = self._open = _Batch()
            position = len(batch.inputs)
            batch.inputs.append(x)
            if len(batch.inputs) >= self.max_batch:
                self._open = None
                batch.full.set()
        if not leader:
            batch.done.wait()
            if batch.error is not None:
                raise batch.error
            if batch.outputs is None:
                raise RuntimeError("the batched encoder pass ended without outputs")
            return batch.outputs[position : position + 1]
        batch.full.wait(self.max_wait_s)
        with self._lock:
            if self._open is batch:
                self._open = None
        try:
            batch.outputs = self._run(batch.inputs)
        except BaseException as exc:
            batch.error = exc
            raise
        finally:
            batch.done.set()
        return batch.outputs[0:1]

    def _run(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        stacked = torch.cat(inputs) if len(inputs) > 1 else inputs[0]
        with torch.no_grad():
            outputs: torch.Tensor = self.encoder(stacked)
        with self._lock:
            self.passes += 1
            self.images += len(inputs)
        return outputs
