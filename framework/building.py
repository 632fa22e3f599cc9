"""Create registered objects with arguments checked against their signature first."""

from __future__ import annotations

import inspect
from typing import Any

import registry
from framework.errors import ConfigError


def create(kind: str, name: str, *args: Any, **kwargs: Any) -> Any:
    """``registry.create`` whose wrong arguments are a ConfigError naming the entry, not a TypeError."""
    obj = registry.get(kind, name)
    try:
        inspect.signature(obj).bind(*args, **kwargs)
        accepted = _keywords(obj) if inspect.isclass(obj) else None
        unknown = sorted(set(kwargs) - accepted) if accepted is not None else []
        if unknown:
            raise TypeError(f"got an unexpected keyword argument {unknown[0]!r}")
    except TypeError as err:
        raise ConfigError(f"{kind} {name!r}: {err}") from None
    except ValueError:  # no signature to check (some builtins)
        pass
    return obj(*args, **kwargs)


def _keywords(cls: type) -> set[str] | None:
    """Keyword arguments a class accepts, following ``**kwargs`` handed up to the base classes' ``__init__``.

    Stops at the first ``__init__`` without ``**kwargs`` (it names the rest); None (anything)
    when every ``__init__`` of the chain takes ``**kwargs``.
    """
    names: set[str] = set()
    for base in cls.__mro__:
        init = vars(base).get("__init__")
        if init is None or base is object:
            continue
        params = inspect.signature(init).parameters.values()
        names |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            return names
    return None
