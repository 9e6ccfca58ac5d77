"""Name -> factory registry of backbones."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from lookalike.config import DEFAULT_PRECISION

if TYPE_CHECKING:
    from lookalike.models.base import Backbone

_FACTORIES: dict[str, Callable[..., Backbone]] = {}
_DESCRIPTIONS: dict[str, str] = {}
_TAKES_WEIGHTS: set[str] = set()
_TORCH_ONLY: set[str] = set()


def register_model(
    name: str, description: str = "", *, weights: bool = False, torch_only: bool = False
) -> Callable[[Callable[..., Backbone]], Callable[..., Backbone]]:
    """Register a backbone factory; ``weights=True`` when it takes a checkpoint file (``weights=``), ``torch_only``
    when it runs in eager torch only (no ONNX export, so no int8)."""

    def decorator(factory: Callable[..., Backbone]) -> Callable[..., Backbone]:
        _FACTORIES[name] = factory
        if weights:
            _TAKES_WEIGHTS.add(name)
        if torch_only:
            _TORCH_ONLY.add(name)
        _DESCRIPTIONS[name] = description or (factory.__doc__ or "").strip().splitlines()[0]
        return factory

    return decorator


def takes_weights(name: str) -> bool:
    """Whether a model takes a checkpoint file (``weights=``): hub models do, bundled and trained ones do not."""
    return name in _TAKES_WEIGHTS


def default_precision(name: str, runtime: str = "auto") -> str:
    """int8 wherever the model runs in ONNX Runtime (registered models that export, and model folders from
    ``lookalike train``) on a CPU whose int8 kernels are exact and fast (VNNI, or not x86); fp32 for eager-torch-only
    models, the torch runtime, and x86 CPUs without VNNI. There int8 needs 7-bit weights to stay exact, which gave a
    median cosine of 0.974 to fp32 (against 0.994 with VNNI) at about fp32's speed: nothing gained for the loss."""
    if runtime == "torch" or name in _TORCH_ONLY or not int8_pays():
        return "fp32"
    return DEFAULT_PRECISION


def int8_pays() -> bool:
    """Whether this CPU runs full-range int8 exactly, so int8 is worth being the default (see ``default_precision``)."""
    from lookalike.models.quantize import cpu_has_vnni

    return cpu_has_vnni()


def available_models() -> dict[str, str]:
    return dict(_DESCRIPTIONS)


def registered_factory(name: str) -> Callable[..., Backbone] | None:
    return _FACTORIES.get(name)
