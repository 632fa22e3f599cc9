"""The registry: register, aliases, duplicates, unknown names, namespaces, plugins."""

from __future__ import annotations

import sys
import textwrap

import pytest

from registry import DuplicateNameError, Registry, UnknownNameError
from tests import _processes as processes


class Alpha:
    """First test class."""


class Beta:
    """Second test class."""


def test_register_get_create_and_aliases():
    reg = Registry()
    reg.register("model", "alpha", aliases=("first", "a1"))(Alpha)
    assert reg.get("model", "alpha") is Alpha
    assert reg.get("model", "FIRST") is Alpha  # case-insensitive, aliases resolve
    assert isinstance(reg.create("model", "a1"), Alpha)
    assert reg.names("model") == ["alpha"]
    entry = reg.entry("model", "alpha")
    assert entry.summary == "First test class."
    assert entry.aliases == ("first", "a1")
    assert ("model", "first") in reg and ("model", "zzz") not in reg


def test_default_name_is_the_object_name():
    reg = Registry()
    reg.register("net")(Beta)
    assert reg.get("net", "Beta") is Beta


def test_duplicate_name_is_an_error():
    reg = Registry()
    reg.register("model", "alpha")(Alpha)
    with pytest.raises(DuplicateNameError, match="already registered"):
        reg.register("model", "alpha")(Beta)
    with pytest.raises(DuplicateNameError):
        reg.register("model", "other", aliases=("ALPHA",))(Beta)
    # Re-registering the same object (a module imported twice) is not a duplicate.
    reg.register("model", "alpha")(Alpha)
    # The same name under another kind is fine.
    reg.register("data", "alpha")(Beta)


def test_unknown_name_lists_closest_names():
    reg = Registry()
    for name in ("adcgan", "acgan", "classifier", "diffusion"):
        reg.add("model", name, Alpha if name != "classifier" else Beta)
    with pytest.raises(UnknownNameError) as info:
        reg.get("model", "adcgn")
    message = str(info.value)
    assert "unknown model 'adcgn'" in message and "'adcgan'" in message
    assert isinstance(info.value, KeyError)
    with pytest.raises(UnknownNameError, match="lightning list model"):
        reg.get("model", "zzzzzzzz")


def test_namespace_serves_every_member():
    reg = Registry()

    def make(member, scale=1):
        return (member, scale)

    reg.register_namespace("net", "zoo", make, "A zoo of nets.")
    assert reg.create("net", "zoo/lion", scale=3) == ("lion", 3)
    assert "zoo/<name>" in reg.names("net")
    with pytest.raises(UnknownNameError):
        reg.get("net", "zoo/")


def test_the_registry_package_does_not_import_torch():
    code = "import sys, registry; assert 'torch' not in sys.modules, 'registry imported torch'"
    processes.run([sys.executable, "-c", code], timeout=120, check=True, capture_output=False)


def test_plugins_register_through_a_real_entry_point(tmp_path):
    """A package installed in a temp site dir (with .dist-info metadata) adds entries via classzoo.plugins."""
    site = tmp_path / "site"
    (site / "zoo_plugin").mkdir(parents=True)
    (site / "zoo_plugin" / "__init__.py").write_text(
        textwrap.dedent(
            '''
            from registry import register

            @register("model", "plugin_model")
            class PluginModel:
                """A model that a third-party package registers."""
            '''
        )
    )
    dist = site / "zoo_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: zoo-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[classzoo.plugins]\nzoo = zoo_plugin\n")
    code = textwrap.dedent(
        """
        import registry
        loaded = registry.load_plugins()
        assert loaded == ["zoo"], loaded
        cls = registry.get("model", "plugin_model")
        assert cls.__module__ == "zoo_plugin"
        """
    )
    env = {"PYTHONPATH": str(site)}
    import os

    processes.run([sys.executable, "-c", code], timeout=120, check=True, capture_output=False, env={**os.environ, **env})
