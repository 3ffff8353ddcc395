from __future__ import annotations

from pathlib import Path

import pytest

from samsvc.engine.registry import BUILTIN_ARCHITECTURES, ModelRegistry, ModelSource
from samsvc.errors import ConfigurationError

DIGEST = "ab" * 32


def registry_from(tmp_path: Path, text: str) -> ModelRegistry:
    models = tmp_path / "models.toml"
    models.write_text(text, encoding="utf-8")
    return ModelRegistry.load(tmp_path / "weights", models)


def test_builtins_have_official_urls_and_digests(tmp_path: Path) -> None:
    registry = ModelRegistry.load(tmp_path, None)
    sam2 = ["sam2.1_hiera_tiny", "sam2.1_hiera_small", "sam2.1_hiera_base_plus", "sam2.1_hiera_large"]
    assert registry.names() == ["vit_h", "vit_l", "vit_b", *sam2]
    for name in sam2:
        spec = registry.get(name)
        assert spec is not None and spec.family == "sam2" and spec.architecture is None
        assert spec.url == f"https://dl.fbaipublicfiles.com/segment_anything_2/092824/{name}.pt"
        assert (
            spec.config
            == {
                "sam2.1_hiera_tiny": "configs/sam2.1/sam2.1_hiera_t.yaml",
                "sam2.1_hiera_small": "configs/sam2.1/sam2.1_hiera_s.yaml",
                "sam2.1_hiera_base_plus": "configs/sam2.1/sam2.1_hiera_b+.yaml",
                "sam2.1_hiera_large": "configs/sam2.1/sam2.1_hiera_l.yaml",
            }[name]
        )
        assert spec.path == (tmp_path / f"{name}.pt").absolute()
    for spec in (s for s in registry if s.family == "sam"):
        assert spec.url and spec.url.startswith("https://dl.fbaipublicfiles.com/segment_anything/sam_")
        assert spec.path.parent == tmp_path.absolute()
        assert spec.architecture == BUILTIN_ARCHITECTURES[spec.name]
        assert spec.source is ModelSource.BUILTIN


def test_every_built_in_is_pinned_by_digest_and_size(tmp_path: Path) -> None:
    """A built-in without a digest was served whatever arrived: a truncated copy (public ones of
    1,310,720 bytes exist for every SAM 2.1 file) or a SAM 2.0 file under a 2.1 name."""
    builtins = [spec for spec in registry_from(tmp_path, "") if spec.source is ModelSource.BUILTIN]
    assert {spec.family for spec in builtins} == {"sam", "sam2"} and len(builtins) == 7
    for spec in builtins:
        assert spec.sha256 and len(spec.sha256) == 64 and int(spec.sha256, 16) >= 0, spec.name
        assert spec.size_bytes and spec.size_bytes > 100_000_000, spec.name
    tiny = next(spec for spec in builtins if spec.name == "sam2.1_hiera_tiny")
    assert (tiny.sha256, tiny.size_bytes) == (
        "7402e0d864fa82708a20fbd15bc84245c2f26dff0eb43a4b5b93452deb34be69", 156008466,
    )  # fmt: skip
    assert tiny.size_bytes != 155906050, "SAM 2.0's tiny (072824) is another file"


def test_registered_models_by_path_url_and_named_shape(tmp_path: Path) -> None:
    registry = registry_from(
        tmp_path,
        f"""
[models.fine]
checkpoint = "ckpt/fine.pth"
architecture = "vit_b"

[models.remote]
url = "https://example.org/path/remote_sam.pth"
sha256 = "{DIGEST.upper()}"
encoder_embed_dim = 64
encoder_depth = 2
encoder_num_heads = 2
encoder_global_attn_indexes = [1]
""",
    )
    fine, remote = registry.get("fine"), registry.get("remote")
    assert fine is not None and remote is not None
    assert fine.path == (tmp_path / "ckpt" / "fine.pth").absolute()
    assert fine.architecture == BUILTIN_ARCHITECTURES["vit_b"] and fine.url is None
    assert remote.path == (tmp_path / "weights" / "remote_sam.pth").absolute()
    assert remote.sha256 == DIGEST
    assert remote.architecture is not None and remote.architecture.encoder_global_attn_indexes == (1,)
    assert fine.family == remote.family == "sam"


def test_registered_sam2_models_name_a_config(tmp_path: Path) -> None:
    registry = registry_from(
        tmp_path,
        """
[models.tuned]
family = "sam2"
checkpoint = "ckpt/tuned.pt"
config = "configs/sam2.1/sam2.1_hiera_b+.yaml"

[models.short]
family = "sam2"
checkpoint = "ckpt/short.pt"
config = "sam2.1_hiera_t"
""",
    )
    tuned, short = registry.get("tuned"), registry.get("short")
    assert tuned is not None and short is not None
    assert (tuned.family, tuned.config, tuned.architecture) == ("sam2", "configs/sam2.1/sam2.1_hiera_b+.yaml", None)
    assert short.config == "configs/sam2.1/sam2.1_hiera_t.yaml"


@pytest.mark.parametrize(
    "text,complaint",
    [
        ('[models.vit_b]\ncheckpoint = "x.pth"\narchitecture = "vit_b"', "taken by a built-in"),
        ('[models."sam2.1_hiera_tiny"]\nfamily = "sam2"\ncheckpoint = "x.pt"', "taken by a built-in"),
        ('[models.a]\nfamily = "sam3"\ncheckpoint = "x.pt"', "family must be one of sam, sam2"),
        ('[models.a]\nfamily = "sam2"\ncheckpoint = "x.pt"\nconfig = "mine.yaml"', "config must be one of"),
        ('[models.a]\nfamily = "sam2"\ncheckpoint = "x.pt"\narchitecture = "vit_b"', "a sam2 model takes config"),
        ('[models.a]\ncheckpoint = "x.pt"\narchitecture = "vit_b"\nconfig = "x"', "config is for family sam2"),
        ('[models.a]\narchitecture = "vit_b"', "exactly one of checkpoint"),
        ('[models.a]\nurl = "https://x/y.pth"\narchitecture = "vit_b"', "needs its sha256"),
        ('[models.a]\nurl = "ftp://x/y.pth"\narchitecture = "vit_b"\nsha256 = "' + DIGEST + '"', "http(s)"),
        ('[models.a]\ncheckpoint = "x.pth"', "needs architecture"),
        ('[models.a]\ncheckpoint = "x.pth"\narchitecture = "vit_q"', "architecture must be one of"),
        ('[models.a]\ncheckpoint = "x.pth"\narchitecture = "vit_b"\nsha256 = "xyz"', "64 hex digits"),
        ('[models.a]\ncheckpoint = "x.pth"\narchitecture = "vit_b"\ncolour = 1', "unknown keys"),
        ('[models.a]\ncheckpoint = "x.pth"\narchitecture = "vit_b"\ndtype = "fp8"', "dtype must be one of"),
        (
            '[models.a]\ncheckpoint = "x.pth"\nencoder_embed_dim = 65\nencoder_depth = 2\n'
            "encoder_num_heads = 2\nencoder_global_attn_indexes = [1]",
            "multiple of encoder_num_heads",
        ),
        (
            '[models.a]\ncheckpoint = "x.pth"\nencoder_embed_dim = 64\nencoder_depth = 2\n'
            "encoder_num_heads = 2\nencoder_global_attn_indexes = [5]",
            "outside",
        ),
        ("[models.a", "not valid TOML"),
    ],
)
def test_bad_entries_name_the_model_and_the_problem(tmp_path: Path, text: str, complaint: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        registry_from(tmp_path, text)
    assert complaint in caught.value.message


def test_missing_models_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read MODELS_FILE"):
        ModelRegistry.load(tmp_path, tmp_path / "absent.toml")
