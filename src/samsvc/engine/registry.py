"""Which models exist: the official SAM and SAM 2.1 checkpoints plus those an operator
registers in a TOML file (MODELS_FILE).

A MODELS_FILE looks like::

    [models.my_sam]
    checkpoint = "checkpoints/my_sam.pth"   # a path (relative to this file) ...
    # url = "https://example.org/my_sam.pth" # ... or a URL (or s3://bucket/key) downloaded into MODEL_DIR
    sha256 = "9f2c..."                       # required with url, checked on load when given
    architecture = "vit_b"                   # a built-in shape, or the four fields below
    # encoder_embed_dim = 768
    # encoder_depth = 12
    # encoder_num_heads = 12
    # encoder_global_attn_indexes = [2, 5, 8, 11]

    [models.my_sam2]
    family = "sam2"                          # SAM 2 / 2.1 (default "sam")
    checkpoint = "checkpoints/my_sam2.pt"
    config = "configs/sam2.1/sam2.1_hiera_t.yaml"  # the sam2 package's config of its shape

Registered models are served exactly like the built-ins.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from samsvc.errors import ConfigurationError


@dataclass(frozen=True)
class Architecture:
    """The image encoder's shape; `segment_anything.build_sam._build_sam` takes exactly these."""

    encoder_embed_dim: int
    encoder_depth: int
    encoder_num_heads: int
    encoder_global_attn_indexes: tuple[int, ...]

    def check(self) -> None:
        """Raise ConfigurationError for a shape the builder cannot make."""
        if self.encoder_embed_dim <= 0 or self.encoder_depth <= 0 or self.encoder_num_heads <= 0:
            raise ConfigurationError("encoder_embed_dim, encoder_depth and encoder_num_heads must be positive")
        if self.encoder_embed_dim % self.encoder_num_heads:
            raise ConfigurationError("encoder_embed_dim must be a multiple of encoder_num_heads")
        bad = [i for i in self.encoder_global_attn_indexes if not 0 <= i < self.encoder_depth]
        if bad:
            raise ConfigurationError(f"encoder_global_attn_indexes {bad} are outside 0..{self.encoder_depth - 1}")


#: The encoder shapes of the official checkpoints (segment_anything/build_sam.py).
BUILTIN_ARCHITECTURES: Mapping[str, Architecture] = {
    "vit_h": Architecture(1280, 32, 16, (7, 15, 23, 31)),
    "vit_l": Architecture(1024, 24, 16, (5, 11, 17, 23)),
    "vit_b": Architecture(768, 12, 12, (2, 5, 8, 11)),
}

#: Model families: "sam" (segment-anything) and "sam2" (SAM 2 and 2.1, the sam2 package).
FAMILIES = ("sam", "sam2")

#: The sam2 package's configs of the official SAM 2.1 and SAM 2 image models, by shape.
SAM2_CONFIGS: Mapping[str, str] = {
    "sam2.1_hiera_t": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "sam2.1_hiera_s": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "sam2.1_hiera_b+": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "sam2.1_hiera_l": "configs/sam2.1/sam2.1_hiera_l.yaml",
    "sam2_hiera_t": "configs/sam2/sam2_hiera_t.yaml",
    "sam2_hiera_s": "configs/sam2/sam2_hiera_s.yaml",
    "sam2_hiera_b+": "configs/sam2/sam2_hiera_b+.yaml",
    "sam2_hiera_l": "configs/sam2/sam2_hiera_l.yaml",
}

#: Inference precisions a model may run in.
DTYPES = ("fp32", "fp16", "bf16")
#: What runs a model's image encoder: torch (exact), OpenVINO in fp32 (the same masks,
#: faster on CPUs) or OpenVINO int8 (post-training quantized: faster still, approximate).
ENCODERS = ("torch", "openvino", "openvino-int8")
_OFFICIAL_BASE = "https://dl.fbaipublicfiles.com/segment_anything/"
_OFFICIAL_SAM2_BASE = "https://dl.fbaipublicfiles.com/segment_anything_2/092824/"
#: The SAM 2.1 built-ins (each downloaded as NAME.pt): their configs' short names, SHA-256 and
#: size. The digests are the `oid sha256` of the files' Git LFS pointers on Hugging Face, where at
#: least two separate uploads of each agree (the small one is also on Meta's own
#: facebook/sam2.1-hiera-small); no published source hashes the dl.fbaipublicfiles.com files
#: directly. SAM 2.0 files (the 072824 release) differ in both, so one saved under a SAM 2.1 name
#: is refused rather than served with the wrong config.
_SAM2_OFFICIAL = {
    "sam2.1_hiera_tiny": (
        "sam2.1_hiera_t", "7402e0d864fa82708a20fbd15bc84245c2f26dff0eb43a4b5b93452deb34be69", 156008466,
    ),
    "sam2.1_hiera_small": (
        "sam2.1_hiera_s", "6d1aa6f30de5c92224f8172114de081d104bbd23dd9dc5c58996f0cad5dc4d38", 184416285,
    ),
    "sam2.1_hiera_base_plus": (
        "sam2.1_hiera_b+", "a2345aede8715ab1d5d31b4a509fb160c5a4af1970f199d9054ccfb746c004c5", 323606802,
    ),
    "sam2.1_hiera_large": (
        "sam2.1_hiera_l", "2647878d5dfa5098f2f8649825738a9345572bae2d4350a2468587ece47dd318", 898083611,
    ),
}  # fmt: skip
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ModelSource(Enum):
    BUILTIN = "builtin"
    REGISTERED = "registered"


@dataclass(frozen=True)
class ModelSpec:
    """A servable model: where its weights are and what shape it has."""

    name: str
    #: The SAM image encoder's shape; None for SAM 2 models (their shape is `config`).
    architecture: Architecture | None
    source: ModelSource
    #: Absolute path of the checkpoint on this machine (inside MODEL_DIR for downloads).
    path: Path
    #: Download address, or None for local-only checkpoints.
    url: str | None = None
    #: Expected SHA-256 (lower-case hex), or None when the operator gave none.
    sha256: str | None = None
    #: Expected size in bytes, or None.
    size_bytes: int | None = None
    #: Inference precision (fp32, fp16, bf16), or None for the server's default.
    dtype: str | None = None
    #: "sam" or "sam2".
    family: str = "sam"
    #: For SAM 2 models, the sam2 package's config name (e.g. configs/sam2.1/sam2.1_hiera_t.yaml).
    config: str | None = None
    #: What runs the image encoder (ENCODERS), or None for the server's default (MODEL_ENCODER).
    encoder: str | None = None
    #: Images int8 encoders calibrate on (at most 64 are read); None: synthetic pictures.
    calibration_dir: Path | None = None

    @property
    def weights_present(self) -> bool:
        return self.path.is_file()


def builtin_specs(model_dir: Path) -> list[ModelSpec]:
    """The official checkpoints, in MODEL_DIR."""
    return _sam_specs(model_dir) + _sam2_specs(model_dir)


def _sam_specs(model_dir: Path) -> list[ModelSpec]:
    official = [
        (
            "vit_h",
            "sam_vit_h_4b8939.pth",
            "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
            2564550879,
        ),
        (
            "vit_l",
            "sam_vit_l_0b3195.pth",
            "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
            1249524607,
        ),
        (
            "vit_b",
            "sam_vit_b_01ec64.pth",
            "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
            375042383,
        ),
    ]
    return [
        ModelSpec(
            name=name,
            architecture=BUILTIN_ARCHITECTURES[name],
            source=ModelSource.BUILTIN,
            path=(model_dir / filename).absolute(),
            url=_OFFICIAL_BASE + filename,
            sha256=digest,
            size_bytes=size,
        )
        for name, filename, digest, size in official
    ]


def _sam2_specs(model_dir: Path) -> list[ModelSpec]:
    """Meta's SAM 2.1 image models (the 092824 release) with the sam2 package's configs, pinned
    by digest and size like SAM's."""
    return [
        ModelSpec(
            name=name,
            architecture=None,
            source=ModelSource.BUILTIN,
            path=(model_dir / filename).absolute(),
            url=_OFFICIAL_SAM2_BASE + filename,
            sha256=digest,
            size_bytes=size,
            family="sam2",
            config=SAM2_CONFIGS[shape],
        )
        for name, (shape, digest, size) in _SAM2_OFFICIAL.items()
        for filename in [name + ".pt"]
    ]


class ModelRegistry:
    """Every model this process may serve, by name, in a stable order (built-ins first)."""

    def __init__(self, specs: list[ModelSpec]) -> None:
        self._specs: dict[str, ModelSpec] = {}
        for spec in specs:
            if spec.name in self._specs:
                raise ConfigurationError(f"model {spec.name!r} is registered twice")
            self._specs[spec.name] = spec

    @classmethod
    def load(cls, model_dir: Path, models_file: Path | None) -> ModelRegistry:
        specs = builtin_specs(model_dir)
        if models_file is not None:
            specs += load_models_file(models_file, model_dir)
        return cls(specs)

    def get(self, name: str) -> ModelSpec | None:
        return self._specs.get(name)

    def names(self) -> list[str]:
        return list(self._specs)

    def __iter__(self) -> Iterator[ModelSpec]:
        return iter(self._specs.values())

    def __len__(self) -> int:
        return len(self._specs)


def load_models_file(path: Path, model_dir: Path) -> list[ModelSpec]:
    """Parse MODELS_FILE into specs; every mistake is a ConfigurationError naming the model and key."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigurationError(f"cannot read MODELS_FILE {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"MODELS_FILE {path} is not valid TOML: {exc}") from exc
    models = document.get("models", {})
    if not isinstance(models, dict):
        raise ConfigurationError(f"MODELS_FILE {path}: [models] must be a table")
    return [_parse_entry(name, entry, path.parent, model_dir) for name, entry in models.items()]


def _parse_entry(name: str, entry: Any, base: Path, model_dir: Path) -> ModelSpec:
    where = f"MODELS_FILE model {name!r}"
    if not _NAME.match(name):
        raise ConfigurationError(f"{where}: names are 1-64 letters, digits, '_', '-' or '.'")
    if name in BUILTIN_ARCHITECTURES or name in _SAM2_OFFICIAL:
        raise ConfigurationError(f"{where}: the name is taken by a built-in model")
    if not isinstance(entry, dict):
        raise ConfigurationError(f"{where}: must be a table")
    known = {
        "checkpoint", "url", "filename", "sha256", "size_bytes", "architecture",
        "encoder_embed_dim", "encoder_depth", "encoder_num_heads", "encoder_global_attn_indexes", "dtype",
        "family", "config", "encoder", "calibration_dir",
    }  # fmt: skip
    unknown = sorted(set(entry) - known)
    if unknown:
        raise ConfigurationError(f"{where}: unknown keys {unknown}")

    sha256 = entry.get("sha256")
    if sha256 is not None:
        if not isinstance(sha256, str) or not _SHA256.match(sha256.lower()):
            raise ConfigurationError(f"{where}: sha256 must be 64 hex digits")
        sha256 = sha256.lower()

    url = entry.get("url")
    checkpoint = entry.get("checkpoint")
    if (url is None) == (checkpoint is None):
        raise ConfigurationError(f"{where}: give exactly one of checkpoint (a path) or url")
    if url is not None:
        if not isinstance(url, str) or urlparse(url).scheme not in {"http", "https", "s3"}:
            raise ConfigurationError(f"{where}: url must be http(s) or s3://bucket/key")
        if sha256 is None:
            raise ConfigurationError(f"{where}: a url needs its sha256")
        filename = entry.get("filename") or Path(urlparse(url).path).name
        if not isinstance(filename, str) or not filename or "/" in filename or filename.startswith("."):
            raise ConfigurationError(f"{where}: filename must be a plain file name")
        path = (model_dir / filename).absolute()
    else:
        if not isinstance(checkpoint, str) or not checkpoint:
            raise ConfigurationError(f"{where}: checkpoint must be a path")
        path = (base / Path(checkpoint).expanduser()).absolute()

    dtype = entry.get("dtype")
    if dtype is not None and dtype not in DTYPES:
        raise ConfigurationError(f"{where}: dtype must be one of {', '.join(DTYPES)}")

    size = entry.get("size_bytes")
    if size is not None and (not isinstance(size, int) or size <= 0):
        raise ConfigurationError(f"{where}: size_bytes must be a positive integer")

    family = entry.get("family", "sam")
    if family not in FAMILIES:
        raise ConfigurationError(f"{where}: family must be one of {', '.join(FAMILIES)}")
    encoder = entry.get("encoder")
    if encoder is not None and encoder not in ENCODERS:
        raise ConfigurationError(f"{where}: encoder must be one of {', '.join(ENCODERS)}")
    calibration = entry.get("calibration_dir")
    if calibration is not None:
        if not isinstance(calibration, str) or not calibration:
            raise ConfigurationError(f"{where}: calibration_dir must be a folder of images")
        calibration = (base / Path(calibration).expanduser()).absolute()
        if not calibration.is_dir():
            raise ConfigurationError(f"{where}: calibration_dir {calibration} is not a folder")
    architecture, config = None, None
    if family == "sam":
        if "config" in entry:
            raise ConfigurationError(f"{where}: config is for family sam2; SAM models take architecture")
        architecture = _parse_architecture(where, entry)
    else:
        config = _parse_sam2_config(where, entry)

    return ModelSpec(
        name=name,
        architecture=architecture,
        source=ModelSource.REGISTERED,
        path=path,
        url=url,
        sha256=sha256,
        size_bytes=size,
        dtype=dtype,
        family=family,
        config=config,
        encoder=encoder,
        calibration_dir=calibration,
    )


def _parse_sam2_config(where: str, entry: Mapping[str, Any]) -> str:
    """A SAM 2 model's shape: one of the sam2 package's image model configs, by path or short name."""
    fields = ("architecture", "encoder_embed_dim", "encoder_depth", "encoder_num_heads", "encoder_global_attn_indexes")
    given = [f for f in fields if f in entry]
    if given:
        raise ConfigurationError(f"{where}: {', '.join(given)} describe SAM encoders; a sam2 model takes config")
    config = entry.get("config")
    known = sorted(SAM2_CONFIGS.values())
    if isinstance(config, str) and config in SAM2_CONFIGS:
        return SAM2_CONFIGS[config]
    if config not in known:
        raise ConfigurationError(f"{where}: config must be one of {', '.join(known)}")
    return str(config)


def _parse_architecture(where: str, entry: Mapping[str, Any]) -> Architecture:
    fields = ("encoder_embed_dim", "encoder_depth", "encoder_num_heads", "encoder_global_attn_indexes")
    named = entry.get("architecture")
    given = [f for f in fields if f in entry]
    if named is not None:
        if given:
            raise ConfigurationError(f"{where}: give architecture or its fields, not both")
        if named not in BUILTIN_ARCHITECTURES:
            raise ConfigurationError(f"{where}: architecture must be one of {sorted(BUILTIN_ARCHITECTURES)}")
        return BUILTIN_ARCHITECTURES[named]
    if len(given) != len(fields):
        raise ConfigurationError(f"{where}: needs architecture, or all of {', '.join(fields)}")
    ints = [entry[f] for f in fields[:3]]
    indexes = entry["encoder_global_attn_indexes"]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in ints):
        raise ConfigurationError(f"{where}: encoder sizes must be integers")
    if not isinstance(indexes, list) or not all(isinstance(i, int) for i in indexes):
        raise ConfigurationError(f"{where}: encoder_global_attn_indexes must be a list of integers")
    arch = Architecture(ints[0], ints[1], ints[2], tuple(indexes))
    try:
        arch.check()
    except ConfigurationError as exc:
        raise ConfigurationError(f"{where}: {exc.message}") from exc
    return arch
