"""Every registered model and DataModule has a recipe, and every recipe is run by a test."""

from __future__ import annotations

import fnmatch
import glob
import os
import re

import pytest
import yaml

import framework  # noqa: F401 - registers everything
import registry
from framework.cli import resolve_config

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
RECIPES = sorted(glob.glob(os.path.join(REPO, "recipes", "*.yaml")))


def _class_paths(node) -> set[str]:
    found = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "class_path" or (key in ("model", "data") and isinstance(value, str)):
                found.add(value)
            found |= _class_paths(value)
    elif isinstance(node, list):
        for value in node:
            found |= _class_paths(value)
    return found


def _recipe_class_paths() -> set[str]:
    paths: set[str] = set()
    for recipe in RECIPES:
        with open(recipe) as f:
            paths |= _class_paths(resolve_config(yaml.safe_load(f)))
    return paths


@pytest.mark.parametrize("kind", ["model", "data"])
def test_every_registered_module_has_a_recipe(kind):
    used = _recipe_class_paths()
    missing = [e.name for e in registry.entries(kind) if e.path not in used]
    assert not missing, f"registered {kind}s without a recipe: {missing}"


def test_every_recipe_is_run_by_a_test():
    sources = ""
    for path in glob.glob(os.path.join(REPO, "tests", "**", "*.py"), recursive=True):
        if os.sep + "docs" + os.sep in path or path.endswith("test_coverage.py"):
            continue  # pages that mention a recipe do not run it
        with open(path) as f:
            sources += f.read()
    # A test names a recipe by file name or by a glob such as "diffusion_*.yaml".
    patterns = set(re.findall(r"[\"'/]([\w*?\[\]-]+\.yaml)[\"']", sources)) - {"*.yaml"}  # "*.yaml" names no recipe
    unrun = [
        os.path.basename(r)
        for r in RECIPES
        if not any(fnmatch.fnmatch(os.path.basename(r), pattern) for pattern in patterns)
    ]
    assert not unrun, f"recipes that no test runs: {unrun}"


@pytest.mark.parametrize("recipe", RECIPES, ids=os.path.basename)
def test_recipe_header_says_what_it_runs(recipe):
    with open(recipe) as f:
        first = f.readline()
    assert first.startswith("# "), f"{os.path.basename(recipe)} should start with a comment saying what it runs"


@pytest.mark.parametrize("recipe", [r for r in RECIPES if "accelerator: cpu" in open(r).read()], ids=os.path.basename)
def test_every_cpu_recipe_runs_one_intra_op_thread(recipe):
    # On 2 shared cores torch's two intra-op threads spin against any other load (2.5x slower).
    with open(recipe) as f:
        assert yaml.safe_load(f).get("torch_threads") == 1, f"{os.path.basename(recipe)} lacks torch_threads: 1"


@pytest.mark.parametrize("recipe", RECIPES, ids=os.path.basename)
def test_recipe_checkpoints_follow_default_root_dir(recipe):
    """A ModelCheckpoint with a pinned dirpath ignores --trainer.default_root_dir: recipes leave it to
    Lightning (<default_root_dir>/lightning_logs/version_N/checkpoints/)."""
    with open(recipe) as f:
        config = yaml.safe_load(f)
    callbacks = (config.get("trainer") or {}).get("callbacks") or []
    pinned = [c for c in callbacks if isinstance(c, dict) and (c.get("init_args") or {}).get("dirpath")]
    assert not pinned, f"{os.path.basename(recipe)} pins checkpoints to {pinned[0]['init_args']['dirpath']}"
