"""The engine interface and one family load only what they need: the interface and the shared
types import neither family's library, SAM 2 does not import segment-anything, and each family
named in the registry has an implementation. Run in fresh interpreters (this one has loaded
everything already)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from samsvc.engine.family import IMPLEMENTATIONS, family_for
from samsvc.engine.registry import FAMILIES


def loaded_after(statement: str) -> set[str]:
    probe = f"import sys; {statement}; print(' '.join(sorted(m.split('.')[0] for m in sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, check=True)
    return set(done.stdout.split())


@pytest.mark.parametrize(
    "module",
    ["samsvc.engine.family", "samsvc.engine.amg_types", "samsvc.engine.prompt_types", "samsvc.engine.registry"],
)
def test_the_interface_and_shared_types_load_no_family(module: str) -> None:
    loaded = loaded_after(f"import {module}")
    assert not loaded & {"segment_anything", "sam2"}, module
    if module != "samsvc.engine.family":
        return
    assert "torch" not in loaded, "the interface names torch for type checking only"


def test_sam2_does_not_load_segment_anything() -> None:
    loaded = loaded_after("from samsvc.engine.family import family_for; family_for('sam2')")
    assert "sam2" in loaded and "segment_anything" not in loaded


def test_sam_does_not_load_sam2() -> None:
    loaded = loaded_after("from samsvc.engine.family import family_for; family_for('sam')")
    assert "segment_anything" in loaded and "sam2" not in loaded


def test_every_registered_family_has_an_implementation() -> None:
    assert set(IMPLEMENTATIONS) == set(FAMILIES)
    for name in FAMILIES:
        assert family_for(name).name == name
