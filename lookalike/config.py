"""What defines an index's vectors, in one frozen object, and how a run is carried out, in another.

An index is only meaningful if every vector in it, and every query compared with them, was made the same way. That
recipe is :class:`IndexConfig`: model, weights, pooling, resolution, PCA-whitening, VLAD vocabulary, precision,
storage type and the label rule. It is stored in ``meta.json`` (:meth:`IndexConfig.to_meta`), read back with
:meth:`IndexConfig.from_meta`, and turned into a describer in exactly one place (``lookalike.embed.Describer.
from_config``). Options a user did not give follow the stored index (:meth:`IndexConfig.merged`); a real conflict
is named field by field (:meth:`IndexConfig.differences`).

How a run is carried out (batch size, decoding threads, engine, checkpointing, progress) changes no vector, so it
travels separately as :class:`RunOptions`.

Following scikit-learn's rule for estimators, constructing either object only stores and checks values: nothing
is loaded, fitted or imported. This module imports only ``lookalike.errors``, so every layer can use it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from lookalike.errors import ConfigError

DEFAULT_MODEL = "efficientnet-lite0"
DEFAULT_POOLING = "gem"  # best room kNN accuracy and flowers mAP@R at 224 and 320 px (BENCHMARKS.md "descriptors")
POOLINGS = ("gem", "mean", "vlad")
LABEL_RULES = ("folders", "none")
VECTOR_TYPES = ("float32", "float16")
RUNTIMES = ("auto", "onnx", "torch")
ENGINES = ("local", "ray")
ANN_KINDS = ("auto", "flat", "ivf", "hnsw")
#: Long side SIFT runs at by default (lookalike.verify.FeatureConf), and what ``features=True`` means for an index.
FEATURES_RESOLUTION = 1024
PRECISIONS = ("fp32", "int8")  # int8: a statically quantized copy of the ONNX export (lookalike.models.quantize)
# int8 met every goal set for it against fp32 in one run: 2.02x the model's images/s, median cosine 0.994 to the fp32
# vectors, rooms accuracy -0.11 and flowers mAP@R +0.09 points (BENCHMARKS.md "quantize"), on a CPU with VNNI; fp32
# stays a choice, and is the default on x86 CPUs without VNNI (models.registry.default_precision says why).
DEFAULT_PRECISION = "int8"
CALIBRATION_SOURCES = ("samples", "photos")  # what a new int8 index is calibrated on (Describer.calibrate)


def folder_label(rel_path: str, rule: str = "folders") -> str | None:
    """The class of an image from its path relative to the photo root: the first folder under the root.

    ``Kitchen/a.jpg`` and ``Kitchen/2019/a.jpg`` are both ``Kitchen`` (torchvision ImageFolder's convention: nested
    folders belong to their top folder); a file directly in the root has no class. This is the one label rule that
    indexing, evaluation, training and classification share.
    """
    if rule == "none":
        return None
    parts = PurePosixPath(rel_path.replace("\\", "/")).parts
    return parts[0] if len(parts) > 1 else None


def _pooling_dict(pooling: str | dict[str, Any] | None) -> dict[str, Any] | None:
    if pooling is None:
        return None
    spec = {"name": pooling} if isinstance(pooling, str) else dict(pooling)
    if spec.get("name") not in POOLINGS:
        raise ConfigError(f"unknown pooling {spec.get('name')!r}; choose one of: {', '.join(POOLINGS)}")
    return spec


@dataclass(frozen=True)
class IndexConfig:
    """The recipe of an index's vectors. ``None`` means "the model's default" (pooling, resolution) or "none"
    (pca, vocab, weights); defaults are resolved when the describer is built and stored resolved."""

    model: str = DEFAULT_MODEL
    weights: str | None = None  # checkpoint file, for backbones that take one (hub models)
    model_options: dict[str, Any] = field(default_factory=dict)  # e.g. a hub model's layer and facet
    pooling: dict[str, Any] | None = None  # {"name": "gem", "p": 3.0}; a bare name is accepted
    resolution: int | None = None
    pca: int | None = None  # PCA-whiten to this many dimensions
    vocab: str | None = None  # a VLAD vocabulary file to use instead of fitting one
    vectors: str = "float32"
    labels: str = "folders"
    precision: str | None = None  # int8 (a quantized copy of the export) or fp32; None: int8 where the model can
    # local features made while indexing, from the same decode, at this long side (True: FEATURES_RESOLUTION).
    # The photo is then decoded at this size for the model too, so the vectors' pixels differ: part of the recipe.
    features: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "pooling", _pooling_dict(self.pooling))
        features = FEATURES_RESOLUTION if self.features is True else (self.features or None)  # False, 0: none
        if features is not None and int(features) < 64:
            raise ConfigError(
                f"features is a long side in pixels (at least 64), got {self.features}", setting="features"
            )
        object.__setattr__(self, "features", None if features is None else int(features))
        object.__setattr__(self, "model_options", dict(self.model_options))
        if not self.model:
            raise ConfigError("model must be a registered name or a model folder", setting="model")
        if self.resolution is not None and int(self.resolution) < 16:
            raise ConfigError(f"resolution must be at least 16 pixels, got {self.resolution}", setting="resolution")
        if self.pca is not None and int(self.pca) < 1:
            raise ConfigError(f"pca needs a positive dimension, got {self.pca}", setting="pca")
        if self.vectors not in VECTOR_TYPES:
            raise ConfigError(
                f"vectors must be one of {', '.join(VECTOR_TYPES)}, got {self.vectors!r}", setting="vectors"
            )
        if self.precision is not None and self.precision not in PRECISIONS:
            raise ConfigError(
                f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}", setting="precision"
            )
        if self.labels not in LABEL_RULES:
            raise ConfigError(f"labels must be one of {', '.join(LABEL_RULES)}, got {self.labels!r}", setting="labels")
        if self.vocab is not None and (self.pooling or {}).get("name", "vlad") != "vlad":
            raise ConfigError("vocab is a VLAD vocabulary: it needs pooling vlad", setting="vocab")

    # --- meta.json -----------------------------------------------------------------------------------------------

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> IndexConfig:
        """The config an index folder's ``meta.json`` records (vocabulary and PCA state live beside it)."""
        model = meta.get("model", {})
        options = {k: model[k] for k in ("layer", "facet") if k in model}
        return cls(
            model=model.get("name", DEFAULT_MODEL),
            weights=model.get("weights_file"),
            model_options=options,
            pooling=meta.get("pooling") or DEFAULT_POOLING,
            resolution=meta.get("resolution"),
            pca=meta.get("pca"),
            vectors=meta.get("vectors", "float32"),
            labels=meta.get("labels", "folders"),
            precision=meta.get("precision", "fp32"),  # indexes from before precision existed are fp32
            features=meta.get("features"),
        )

    def to_meta(self) -> dict[str, Any]:
        """The fields of ``meta.json`` this config owns (the describer adds the model's identity and dims)."""
        meta: dict[str, Any] = {"labels": self.labels, "vectors": self.vectors}
        if self.precision is not None:
            meta["precision"] = self.precision
        if self.pooling is not None:
            meta["pooling"] = dict(self.pooling)
        if self.resolution is not None:
            meta["resolution"] = int(self.resolution)
        if self.pca:
            meta["pca"] = int(self.pca)
        if self.features:
            meta["features"] = int(self.features)
        return meta

    # --- comparing and combining -----------------------------------------------------------------------------------

    def merged(self, **asked: Any) -> IndexConfig:
        """This (stored) config with what a user asked for on top; options left as ``None`` follow the stored one.

        A pooling of the same name keeps the stored parameters it was not given (``vlad`` after ``vocab fit
        --clusters 16`` stays 16 clusters); another pooling name starts from that pooling's defaults.
        """
        changes = {k: v for k, v in asked.items() if v is not None}
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ConfigError(f"unknown index setting(s): {', '.join(sorted(unknown))}")
        if "pooling" in changes:
            want = _pooling_dict(changes["pooling"]) or {}
            have = self.pooling or {}
            changes["pooling"] = {**have, **want} if want.get("name") == have.get("name") else want
        return dataclasses.replace(self, **changes)

    def differences(self, other: IndexConfig) -> list[tuple[str, Any, Any]]:
        """``(field, this, other)`` for every setting that would make different vectors, e.g.
        ``("pooling.clusters", 16, 32)``; storage type and label rule change no vector and are not listed."""
        out: list[tuple[str, Any, Any]] = []
        for name in ("model", "weights", "resolution", "pca", "vocab", "precision", "features"):
            a, b = getattr(self, name), getattr(other, name)
            if a != b and not (name in ("resolution", "vocab", "weights") and (a is None or b is None)):
                out.append((name, a, b))
        if self.model_options != other.model_options:
            for key in sorted(set(self.model_options) | set(other.model_options)):
                a, b = self.model_options.get(key), other.model_options.get(key)
                if a != b:
                    out.append((f"model.{key}", a, b))
        pa, pb = self.pooling or {}, other.pooling or {}
        if pa and pb:
            if pa.get("name") != pb.get("name"):
                out.append(("pooling", pa.get("name"), pb.get("name")))
            else:
                for key in sorted(set(pa) | set(pb)):
                    if key != "name" and key in pa and key in pb and pa[key] != pb[key]:
                        out.append((f"pooling.{key}", pa[key], pb[key]))
        return out

    @staticmethod
    def describe_differences(diffs: list[tuple[str, Any, Any]]) -> str:
        """``"pooling.clusters: 16 in the index, 32 asked"`` for each difference, joined by semicolons (an unset
        value reads "none": ``features: 1024 in the index, none asked``)."""

        def show(v: Any) -> str:
            return "none" if v is None else str(v)

        return "; ".join(f"{name}: {show(a)} in the index, {show(b)} asked" for name, a, b in diffs)


@dataclass(frozen=True)
class RunOptions:
    """How an indexing run is carried out; none of these change a vector, so none is stored with the index."""

    batch_size: int = 8  # ONNX Runtime on 2 cores: 118-126 images/s at batch 4-8 vs 101 at 32 (320 px)
    workers: int | None = None  # decoding threads (default: min(4, cores))
    progress: bool = False
    checkpoint_every: int = 256
    runtime: str = "auto"
    engine: str = "local"
    address: str | None = None  # Ray cluster to join
    num_workers: int | None = None  # Ray CPUs when starting a local Ray
    rebuild: bool = False
    ann: str | None = None  # search structure to keep: auto, flat, ivf or hnsw (None: keep what the index has)
    calibration: str = "samples"  # a new int8 index: the cached bundled-photo calibration, or "photos" (its own)

    def __post_init__(self) -> None:
        if int(self.batch_size) < 1:
            raise ConfigError(f"batch_size must be at least 1, got {self.batch_size}", setting="batch_size")
        if self.workers is not None and int(self.workers) < 1:
            raise ConfigError(f"workers must be at least 1, got {self.workers}", setting="workers")
        if int(self.checkpoint_every) < 1:
            raise ConfigError(
                f"checkpoint_every must be at least 1, got {self.checkpoint_every}", setting="checkpoint_every"
            )
        if self.runtime not in RUNTIMES:
            raise ConfigError(f"runtime must be one of {', '.join(RUNTIMES)}, got {self.runtime!r}", setting="runtime")
        if self.engine not in ENGINES:
            raise ConfigError(f"engine must be one of {', '.join(ENGINES)}, got {self.engine!r}", setting="engine")
        if self.calibration not in CALIBRATION_SOURCES:
            raise ConfigError(
                f"calibration must be one of {', '.join(CALIBRATION_SOURCES)}, got {self.calibration!r}",
                setting="calibration",
            )
        if self.ann is not None and self.ann not in ANN_KINDS:
            raise ConfigError(f"ann must be one of {', '.join(ANN_KINDS)}, got {self.ann!r}", setting="ann")


def split_settings(settings: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Keyword arguments -> (index settings, run options), refusing names that are neither."""
    index_fields = {f.name for f in dataclasses.fields(IndexConfig)}
    run_fields = {f.name for f in dataclasses.fields(RunOptions)}
    unknown = set(settings) - index_fields - run_fields
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    return (
        {k: v for k, v in settings.items() if k in index_fields},
        {k: v for k, v in settings.items() if k in run_fields},
    )
