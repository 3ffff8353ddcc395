"""Reading a checkpoint into its family's model: the file is present, of its recorded size and
digest, and loads strictly into the model its family's builder makes (weights only, on the CPU,
then moved to the device). A failure names the model and what to ask the operator; the file and
the cause are its `detail`, in the log only."""

from __future__ import annotations

import pickle
import zipfile

import torch

from samsvc.engine.download import sha256_of
from samsvc.engine.family import family_for
from samsvc.engine.registry import ModelSpec
from samsvc.errors import FailedPrecondition


def load_checkpoint(spec: ModelSpec, device: torch.device, *, verify: bool = True) -> torch.nn.Module:
    """Build the model for `spec` and load its checkpoint; FailedPrecondition if it cannot be used."""
    path = spec.path
    if not path.is_file():
        raise _weights_missing(spec)
    size_problem = size_mismatch(spec)
    if size_problem is not None:  # checked first and always: a stat, where the digest reads it all
        raise size_problem
    if verify and spec.sha256 is not None:
        digest = sha256_of(path)
        if digest != spec.sha256:
            raise FailedPrecondition(
                f"the checkpoint of model {spec.name!r} failed its integrity check on this server: "
                f"ask the operator to {_fetch_hint(spec)} (the server's log names the file)",
                reason="CHECKSUM_MISMATCH",
                metadata={"model": spec.name},
                detail=f"{path} has sha256 {digest}, expected {spec.sha256}",
            )
    sam = family_for(spec.family).build(spec)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
            state = state["model"]
        sam.load_state_dict(state, strict=True)
    except (
        RuntimeError, ValueError, TypeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile,
    ) as exc:  # fmt: skip
        raise FailedPrecondition(
            f"the checkpoint of model {spec.name!r} cannot be loaded on this server: ask the operator "
            f"(the server's log has the cause)",
            reason="CHECKPOINT_INVALID",
            metadata={"model": spec.name},
            detail=f"{path}: {str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__}",
        ) from exc
    return sam.to(device).eval()


def size_mismatch(spec: ModelSpec) -> FailedPrecondition | None:
    """The error for a present checkpoint whose size is not the recorded one (a truncated
    download, another release's file under this name), else None."""
    if spec.size_bytes is None or not spec.path.is_file():
        return None
    size = spec.path.stat().st_size
    if size == spec.size_bytes:
        return None
    return FailedPrecondition(
        f"the checkpoint of model {spec.name!r} is not the file it should be (its size differs): ask the operator "
        f"to {_fetch_hint(spec)} (the server's log names the file)",
        reason="CHECKPOINT_SIZE_MISMATCH",
        metadata={"model": spec.name},
        detail=f"{spec.path} has {size} bytes, expected {spec.size_bytes}",
    )


def _fetch_hint(spec: ModelSpec) -> str:
    if spec.url is not None:
        return f"run `samsvc models download {spec.name} --force`"
    return "put its checkpoint in place (MODELS_FILE)"


def _weights_missing(spec: ModelSpec) -> FailedPrecondition:
    hint = f"run `samsvc models download {spec.name}`" if spec.url is not None else _fetch_hint(spec)
    return FailedPrecondition(
        f"the weights of model {spec.name!r} are not on this server: ask the operator to {hint}",
        reason="MODEL_WEIGHTS_MISSING",
        metadata={"model": spec.name},
        detail=f"{spec.path} is absent",
    )
