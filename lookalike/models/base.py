"""Common machinery for torch backbones: in-graph normalisation, a cached ONNX export and the runtime choice.

ONNX Runtime ran EfficientNet-Lite0 about 3-4× faster than eager torch on this class of 2-core CPU, so every
backbone is exported once (keyed by its weights' hash, so new weights mean a new export) and run there; eager torch
remains the fallback when export or the runtime fails.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import warnings
from pathlib import Path
from typing import Any, Protocol

import numpy as np

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    """Where exported models live: $LOOKALIKE_CACHE, else $XDG_CACHE_HOME/lookalike, else ~/.cache/lookalike."""
    if os.environ.get("LOOKALIKE_CACHE"):
        return Path(os.environ["LOOKALIKE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lookalike"


def file_hash(path: str | os.PathLike[str]) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class Backbone(Protocol):
    """What indexing and search need of a model."""

    name: str
    feature_dim: int
    stride: int
    default_resolution: int

    def config(self) -> dict[str, Any]:
        """What identifies this model's features: an index refuses queries from a model with another config."""
        ...

    def features(self, batch: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 RGB -> (N, C, H/stride, W/stride) float32 dense features."""
        ...


class _Normalised:
    """Wraps a feature extractor so the exported graph takes raw NHWC pixels: one normalisation, in one place."""

    def __new__(cls, module: Any, mean: tuple[float, float, float], std: tuple[float, float, float]) -> Any:
        import torch

        class Normalised(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.module = module
                self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
                self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                x = x.permute(0, 3, 1, 2)
                return self.module((x - self.mean) / self.std)

        return Normalised().eval()


class TorchBackbone:
    """A torch feature extractor run through ONNX Runtime when possible.

    ``runtime``: "auto" (ONNX Runtime, falling back to torch), "onnx" (fail if export fails) or "torch".
    """

    def __init__(
        self,
        name: str,
        module: Any,
        *,
        feature_dim: int,
        stride: int,
        weights_id: str,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        default_resolution: int = 224,
        runtime: str = "auto",
        threads: int | None = None,
        extra_config: dict[str, Any] | None = None,
    ) -> None:
        if runtime not in ("auto", "onnx", "torch"):
            from lookalike.errors import LookalikeError

            raise LookalikeError(f"unknown runtime {runtime!r}; use auto, onnx or torch")
        self.name = name
        self.feature_dim = feature_dim
        self.stride = stride
        self.default_resolution = default_resolution
        self.weights_id = weights_id
        self.module = _Normalised(module, mean, std)
        self.threads = threads or os.cpu_count() or 1
        self._extra = dict(extra_config or {})
        self._session: Any = None
        self._lock = threading.Lock()
        self.runtime = runtime
        if runtime in ("auto", "onnx"):
            try:
                self._session = self._onnx_session()
                self.runtime = "onnx"
            except Exception as exc:
                if runtime == "onnx":
                    from lookalike.errors import ModelUnavailableError

                    raise ModelUnavailableError(f"{name}: ONNX export failed ({exc})") from None
                log.warning("%s: ONNX Runtime unavailable (%s); using eager torch", name, exc)
                self.runtime = "torch"

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "weights": self.weights_id, "feature_dim": self.feature_dim, **self._extra}

    @property
    def onnx_path(self) -> Path:
        return cache_dir() / "onnx" / f"{self.name.replace('/', '_')}-{self.weights_id[:16]}.onnx"

    def _export(self, path: Path) -> None:
        import torch

        from lookalike.io import atomic_write

        dummy = torch.zeros(1, 224, 224, 3)

        def export(tmp: Path) -> None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    self.module,
                    (dummy,),
                    str(tmp),
                    input_names=["pixels"],
                    output_names=["features"],
                    dynamic_axes={"pixels": {0: "n", 1: "h", 2: "w"}, "features": {0: "n", 2: "fh", 3: "fw"}},
                    opset_version=17,
                    dynamo=False,
                )

        atomic_write(path, export)  # a concurrent or killed export never leaves a half-written model

    def _onnx_session(self) -> Any:
        import onnxruntime as ort

        path = self.onnx_path
        if not path.exists():
            log.info("exporting %s to ONNX at %s (once)", self.name, path)
            self._export(path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception:
            path.unlink(missing_ok=True)  # a corrupt cache entry is re-exported next time
            raise

    def features(self, batch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(batch, dtype=np.float32)
        if self._session is not None:
            return self._session.run(None, {"pixels": x})[0]
        import torch

        with self._lock, torch.inference_mode():
            torch.set_num_threads(self.threads)
            return self.module(torch.from_numpy(x)).numpy()
