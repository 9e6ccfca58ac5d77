"""Name -> factory registry of backbones."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from lookalike.errors import ModelUnavailableError

if TYPE_CHECKING:
    from lookalike.models.base import Backbone

_FACTORIES: dict[str, Callable[..., Backbone]] = {}
_DESCRIPTIONS: dict[str, str] = {}
_TAKES_WEIGHTS: set[str] = set()
DEFAULT_MODEL = "efficientnet-lite0"


def register_model(
    name: str, description: str = "", *, weights: bool = False
) -> Callable[[Callable[..., Backbone]], Callable[..., Backbone]]:
    """Register a backbone factory; ``weights=True`` when it takes a checkpoint file (``weights=``)."""

    def decorator(factory: Callable[..., Backbone]) -> Callable[..., Backbone]:
        _FACTORIES[name] = factory
        if weights:
            _TAKES_WEIGHTS.add(name)
        _DESCRIPTIONS[name] = description or (factory.__doc__ or "").strip().splitlines()[0]
        return factory

    return decorator


def takes_weights(name: str) -> bool:
    """Whether a model takes a checkpoint file (``weights=``): hub models do, bundled and trained ones do not."""
    return name in _TAKES_WEIGHTS


def available_models() -> dict[str, str]:
    return dict(_DESCRIPTIONS)


def create_model(name: str = DEFAULT_MODEL, **kwargs: object) -> Backbone:
    """Build a backbone by registered name, or from a directory holding a model trained by ``lookalike train``."""
    if name in _FACTORIES:
        return _FACTORIES[name](**kwargs)
    if Path(name).is_dir():
        try:
            from lookalike.models.trained import load_trained_model
        except ImportError:  # pragma: no cover - the trained-model loader ships with lookalike.training
            raise ModelUnavailableError(f"{name}: loading trained models is not available in this install") from None
        return load_trained_model(Path(name), **kwargs)
    known = ", ".join(sorted(_FACTORIES))
    raise ModelUnavailableError(f"unknown model {name!r}; known models: {known} (or a folder from `lookalike train`)")
