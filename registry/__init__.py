"""A generic name registry: decorate, list, create.

Entries are grouped by *kind* (``model``, ``data``, ``net``, ``sampler``, ``guidance``,
``feature``, ...). Any string is a valid kind; the framework documents the ones it uses.
This package imports nothing heavy, so ``registry`` can be used without torch.

    from registry import register, create

    @register("net", "mlp", aliases=("resmlp",))
    class MLP: ...

    net = create("net", "mlp", width=64)

Third-party packages add entries through the entry-point group ``classzoo.plugins``: each
entry point names a module (or an object inside one) whose import registers its entries.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import inspect
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "PLUGIN_GROUP",
    "DuplicateNameError",
    "Entry",
    "Registry",
    "RegistryError",
    "UnknownNameError",
    "REGISTRY",
    "register",
    "register_namespace",
    "get",
    "create",
    "entry",
    "names",
    "kinds",
    "entries",
    "load_plugins",
    "import_path",
]

PLUGIN_GROUP = "classzoo.plugins"


class RegistryError(Exception):
    """Base class of the registry's errors."""


class UnknownNameError(RegistryError, KeyError):
    """A name that is not registered under the asked kind."""

    def __init__(self, kind: str, name: str, known: Iterable[str]):
        self.kind, self.name = kind, name
        by_lower = {}
        for k in sorted(known):
            by_lower.setdefault(k.lower(), k)
        close = difflib.get_close_matches(name.lower(), sorted(by_lower), n=3, cutoff=0.5)
        self.suggestions = [by_lower[c] for c in close]
        super().__init__(kind, name)

    def __str__(self) -> str:
        msg = f"unknown {self.kind} {self.name!r}"
        if self.suggestions:
            msg += "; did you mean " + ", ".join(repr(s) for s in self.suggestions) + "?"
        else:
            msg += f" (see `lightning list {self.kind}`)"
        return msg


class DuplicateNameError(RegistryError):
    """A name registered twice under one kind by two different objects."""


def import_path(obj: Any) -> str:
    """The dotted path that imports ``obj`` (``package.module.Name``)."""
    return f"{obj.__module__}.{obj.__qualname__}"


def _summary(obj: Any) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


@dataclass(frozen=True)
class Entry:
    """One registered object."""

    kind: str
    name: str
    obj: Any
    aliases: tuple[str, ...] = ()
    summary: str = field(default="")

    @property
    def path(self) -> str:
        return import_path(self.obj)


@dataclass(frozen=True)
class _Namespace:
    """A family of names ``prefix/anything`` served by one factory (e.g. ``timm/resnet18``)."""

    kind: str
    prefix: str
    factory: Callable[..., Any]
    summary: str


class Registry:
    """Names to objects, grouped by kind."""

    def __init__(self) -> None:
        self._entries: dict[str, dict[str, Entry]] = {}
        self._lookup: dict[str, dict[str, str]] = {}  # kind -> lower-case name or alias -> name
        self._namespaces: dict[str, dict[str, _Namespace]] = {}
        self._plugins_loaded = False

    # -- registration -------------------------------------------------------------------
    def register(
        self, kind: str, name: str | None = None, *, aliases: Iterable[str] = ()
    ) -> Callable[[Any], Any]:
        """Decorator registering a class or factory as ``kind``/``name`` (default: its name)."""

        def decorator(obj: Any) -> Any:
            self.add(kind, name or obj.__name__, obj, aliases=aliases)
            return obj

        return decorator

    def add(self, kind: str, name: str, obj: Any, *, aliases: Iterable[str] = ()) -> Entry:
        """Register ``obj``; a name already taken by a different object is an error."""
        aliases = tuple(aliases)
        lookup = self._lookup.setdefault(kind, {})
        entries = self._entries.setdefault(kind, {})
        for key in (name, *aliases):
            if "/" in key and key.split("/", 1)[0] in self._namespaces.get(kind, {}):
                raise DuplicateNameError(f"{kind} {key!r} collides with the namespace {key.split('/')[0]!r}/")
            taken = lookup.get(key.lower())
            if taken is None:
                continue
            other = entries[taken].obj
            # Re-importing the same module (reload, notebooks) registers the same object again.
            if import_path(other) != import_path(obj):
                raise DuplicateNameError(
                    f"{kind} {key!r} is already registered to {import_path(other)}; "
                    f"cannot register {import_path(obj)} under the same name"
                )
        entry = Entry(kind, name, obj, aliases, _summary(obj))
        entries[name] = entry
        for key in (name, *aliases):
            lookup[key.lower()] = name
        return entry

    def register_namespace(self, kind: str, prefix: str, factory: Callable[..., Any], summary: str = "") -> None:
        """Serve every ``prefix/<name>`` of ``kind`` by ``factory(<name>, **kwargs)``."""
        spaces = self._namespaces.setdefault(kind, {})
        if prefix in spaces and import_path(spaces[prefix].factory) != import_path(factory):
            raise DuplicateNameError(f"{kind} namespace {prefix!r}/ is already registered")
        spaces[prefix] = _Namespace(kind, prefix, factory, summary or _summary(factory))

    # -- lookup ---------------------------------------------------------------------------
    def entry(self, kind: str, name: str) -> Entry:
        """The entry for ``name`` (or an alias; case does not matter) under ``kind``."""
        key = self._lookup.get(kind, {}).get(name.lower())
        if key is None and not self._plugins_loaded:
            self.load_plugins()
            key = self._lookup.get(kind, {}).get(name.lower())
        if key is not None:
            return self._entries[kind][key]
        if "/" in name:
            prefix, rest = name.split("/", 1)
            space = self._namespaces.get(kind, {}).get(prefix)
            if space is not None and rest:
                return Entry(kind, name, _NamespaceMember(space.factory, rest), (), space.summary)
        known = list(self._lookup.get(kind, {})) + [f"{p}/" for p in self._namespaces.get(kind, {})]
        raise UnknownNameError(kind, name, known)

    def get(self, kind: str, name: str) -> Any:
        """The registered object (class or factory)."""
        return self.entry(kind, name).obj

    def create(self, kind: str, name: str, *args: Any, **kwargs: Any) -> Any:
        """Call the registered object with the given arguments."""
        return self.get(kind, name)(*args, **kwargs)

    def __contains__(self, kind_and_name: tuple[str, str]) -> bool:
        kind, name = kind_and_name
        try:
            self.entry(kind, name)
        except UnknownNameError:
            return False
        return True

    def kinds(self) -> list[str]:
        return sorted(set(self._entries) | set(self._namespaces))

    def names(self, kind: str) -> list[str]:
        """Canonical names of ``kind`` (namespaces appear as ``prefix/<name>``)."""
        return sorted(self._entries.get(kind, {})) + [f"{p}/<name>" for p in sorted(self._namespaces.get(kind, {}))]

    def entries(self, kind: str | None = None) -> Iterator[Entry]:
        for k in [kind] if kind else self.kinds():
            for name in sorted(self._entries.get(k, {})):
                yield self._entries[k][name]
            for prefix, space in sorted(self._namespaces.get(k, {}).items()):
                yield Entry(k, f"{prefix}/<name>", space.factory, (), space.summary)

    def find(self, obj: Any) -> Entry | None:
        """The entry that registered ``obj`` (matched by import path), if any."""
        path = import_path(obj)
        for kind_entries in self._entries.values():
            for e in kind_entries.values():
                if import_path(e.obj) == path:
                    return e
        return None

    def load_plugins(self, group: str = PLUGIN_GROUP) -> list[str]:
        """Import every entry point of ``group``; their imports register their entries."""
        self._plugins_loaded = True
        loaded = []
        for ep in importlib.metadata.entry_points(group=group):
            ep.load()
            loaded.append(ep.name)
        return loaded


class _NamespaceMember:
    """``factory`` bound to one member name of its namespace."""

    def __init__(self, factory: Callable[..., Any], member: str):
        self.factory, self.member = factory, member
        self.__module__ = factory.__module__
        self.__qualname__ = factory.__qualname__
        self.__doc__ = factory.__doc__

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.factory(self.member, *args, **kwargs)


REGISTRY = Registry()
register = REGISTRY.register
register_namespace = REGISTRY.register_namespace
get = REGISTRY.get
create = REGISTRY.create
entry = REGISTRY.entry
names = REGISTRY.names
kinds = REGISTRY.kinds
entries = REGISTRY.entries
load_plugins = REGISTRY.load_plugins
