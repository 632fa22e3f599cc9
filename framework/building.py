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
    except TypeError as err:
        raise ConfigError(f"{kind} {name!r}: {err}") from None
    except ValueError:  # no signature to check (some builtins)
        pass
    return obj(*args, **kwargs)
