"""Name -> factory registry of backbones."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lookalike.models.base import Backbone

_FACTORIES: dict[str, Callable[..., Backbone]] = {}
_DESCRIPTIONS: dict[str, str] = {}
_TAKES_WEIGHTS: set[str] = set()


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


def registered_factory(name: str) -> Callable[..., Backbone] | None:
    return _FACTORIES.get(name)
