"""Common machinery for torch backbones: in-graph normalisation, a cached ONNX export and the runtime choice.

ONNX Runtime ran EfficientNet-Lite0 about 3-4× faster than eager torch on this class of 2-core CPU, so every
backbone is exported once (keyed by its weights' hash, so new weights mean a new export) and run there; eager torch
remains the fallback when export or the runtime fails. The cache key needs no torch module: a backbone is given a
function that builds its module, called only to export or to run eagerly, so a cached model starts without torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from lookalike.config import PRECISIONS

log = logging.getLogger(__name__)


def _is_builder(module: Any) -> bool:
    """A plain function (or lambda, or partial) that builds the module, rather than a module itself."""
    return callable(module) and not hasattr(module, "state_dict")


def cache_dir() -> Path:
    """Where exported models live: $LOOKALIKE_CACHE, else $XDG_CACHE_HOME/lookalike, else ~/.cache/lookalike."""
    if os.environ.get("LOOKALIKE_CACHE"):
        return Path(os.environ["LOOKALIKE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lookalike"


def file_hash(path: str | os.PathLike[str]) -> str:
    """The blake2b-128 of a file's bytes, remembered under the cache folder against the file's size, modification
    time and inode: hashing the 14 MB of EfficientNet-Lite0 weights took 40 ms of every ``lookalike search``, which
    only needs it to name the cached export. A file rewritten in place gets a new modification time, so a new hash."""
    path = os.path.abspath(path)
    st = os.stat(path)
    stamp = f"{st.st_size} {st.st_mtime_ns} {st.st_ino}"
    memo = cache_dir() / "hashes" / hashlib.blake2b(os.fsencode(path), digest_size=16).hexdigest()
    try:
        known_stamp, _, digest = memo.read_text().partition("\n")
        if known_stamp == stamp and len(digest) == 32:
            return digest
    except (OSError, ValueError):
        pass
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    digest = h.hexdigest()
    if os.stat(path).st_mtime_ns == st.st_mtime_ns:  # not rewritten while being read
        from lookalike.io import atomic_write

        with contextlib.suppress(OSError):  # a read-only cache only costs the hashing
            atomic_write(memo, f"{stamp}\n{digest}")
    return digest


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

    ``module`` is a torch module or, better, a function that builds one: it is only called when the ONNX export is
    not cached yet or the runtime is eager torch, so with the export on disk embedding never imports torch (about
    3 s of a cold ``lookalike search`` on two cores). ``weights_id`` must therefore identify the weights without
    building the module (a hash of the weights file).

    ``runtime``: "auto" (ONNX Runtime, falling back to torch), "onnx" (fail if export fails) or "torch".
    ``precision``: "fp32", or "int8", which runs a statically quantized copy of the export once one is loaded
    (:meth:`load_int8`) or made (:meth:`quantize`); until then it runs the fp32 export.
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
        precision: str = "fp32",
    ) -> None:
        from lookalike.errors import ConfigError, LookalikeError

        if runtime not in ("auto", "onnx", "torch"):
            raise LookalikeError(f"unknown runtime {runtime!r}; use auto, onnx or torch")
        if precision not in PRECISIONS:
            raise ConfigError(
                f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}", setting="precision"
            )
        if precision == "int8" and runtime == "torch":
            raise ConfigError(
                f"{name}: int8 precision runs in ONNX Runtime; with the torch runtime use precision fp32",
                setting="precision",
            )
        self.name = name
        self.feature_dim = feature_dim
        self.stride = stride
        self.default_resolution = default_resolution
        self.weights_id = weights_id
        self.precision = precision
        self._build_module = module if _is_builder(module) else (lambda: module)
        self._module: Any = None
        self._mean, self._std = mean, std
        self.threads = threads or os.cpu_count() or 1
        self._extra = dict(extra_config or {})
        self._session: Any = None
        self._model_path: Path | None = None
        self.int8_path: Path | None = None
        self._lock = threading.Lock()
        self.runtime = runtime
        if runtime in ("auto", "onnx"):
            try:
                if precision == "int8":
                    self.export_onnx()  # the int8 session comes from load_int8 or quantize: no fp32 one meanwhile
                else:
                    self._session = self._onnx_session()
                self.runtime = "onnx"
            except LookalikeError:
                raise  # the weights themselves are unusable: torch would fail on them too
            except Exception as exc:
                if runtime == "onnx" or precision == "int8":
                    from lookalike.errors import ModelUnavailableError

                    raise ModelUnavailableError(f"{name}: ONNX export failed ({exc})") from None
                log.warning("%s: ONNX Runtime unavailable (%s); using eager torch", name, exc)
                self.runtime = "torch"

    @property
    def module(self) -> Any:
        """The torch module with the pixel normalisation in front, built on first use."""
        if self._module is None:
            self._module = _Normalised(self._build_module(), self._mean, self._std)
        return self._module

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "weights": self.weights_id, "feature_dim": self.feature_dim, **self._extra}

    @property
    def onnx_path(self) -> Path:
        """The cached fp32 export: named from the model name and weights hash alone, so finding it builds nothing."""
        return cache_dir() / "onnx" / f"{self.name.replace('/', '_')}-{self.weights_id[:16]}.onnx"

    @property
    def int8_ready(self) -> bool:
        """Whether the quantized model is the one running (an int8 backbone runs fp32 until it has one)."""
        return self.int8_path is not None and self._model_path == self.int8_path

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

    def export_onnx(self) -> Path:
        """The fp32 ONNX export, made once and cached."""
        path = self.onnx_path
        if not path.exists():
            log.info("exporting %s to ONNX at %s (once)", self.name, path)
            self._export(path)
        return path

    def _onnx_session(self, path: Path | None = None) -> Any:
        import onnxruntime as ort

        path = path or self._model_path or self.export_onnx()
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle pool threads sleep instead of spinning: spinning burnt ~0.1 s of CPU in a one-off search (while the
        # graph is optimised and after the run) and, on two shared cores, took cycles from decoding and from other
        # work (batch 8 at 320 px ran 12.4 img/s without it against 10.4 with it, side by side, under load).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception:
            if path == self.onnx_path:
                path.unlink(missing_ok=True)  # a corrupt cache entry is re-exported next time
            raise
        self._model_path = path
        return session

    def load_int8(self, path: str | os.PathLike[str]) -> None:
        """Run the quantized model at ``path`` (made by :meth:`quantize`) from now on."""
        from lookalike.errors import ModelUnavailableError

        path = Path(path)
        try:
            session = self._onnx_session(path)
        except Exception as exc:
            raise ModelUnavailableError(f"{self.name}: cannot load the int8 model {path} ({exc})") from None
        self._session, self.int8_path = session, path
        from lookalike.models.quantize import WEIGHT_BITS_KEY, saturates_here

        if saturates_here(session.get_modelmeta().custom_metadata_map.get(WEIGHT_BITS_KEY)):
            log.warning(
                "%s: the int8 model %s has full-range weights, made for a CPU with VNNI; this CPU has none, so ONNX "
                "Runtime's int8 kernels saturate and its vectors drift from fp32 (median cosine 0.93 instead of 0.99 "
                "measured): rebuild the index on this machine or use precision fp32",
                self.name,
                path,
            )

    def quantize(self, calibration: Iterable[np.ndarray], path: str | os.PathLike[str]) -> None:
        """Write an int8 copy of the export to ``path``, calibrated on ``calibration`` batches of (N, H, W, 3) uint8
        pixels, and run it from now on."""
        from lookalike.models.quantize import quantize_static_qdq

        quantize_static_qdq(self.export_onnx(), Path(path), calibration)
        self.load_int8(path)

    def features(self, batch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(batch, dtype=np.float32)
        if self._session is None and self.runtime == "onnx":
            self._session = self._onnx_session()
        if self._session is not None:
            return self._session.run(None, {"pixels": x})[0]
        import torch

        with self._lock, torch.inference_mode():
            torch.set_num_threads(self.threads)
            return self.module(torch.from_numpy(x)).numpy()
