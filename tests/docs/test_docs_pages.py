"""The user docs stay in step with the repository: every recipe listed, every relative link alive."""

import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
PAGES = ["index.md", "getting_started.md", "recipes.md", "data.md", "launching.md", "architecture.md"]


def test_every_recipe_is_in_the_recipes_table():
    doc = (DOCS / "recipes.md").read_text()
    table = doc.split("<!-- recipes-table:start -->", 1)[1].split("<!-- recipes-table:end -->", 1)[0]
    missing = [p.name for p in sorted((REPO / "recipes").glob("*.yaml")) if f"[`{p.name}`]" not in table]
    assert not missing, f"docs/recipes.md lacks {missing}: run python scripts/recipes_table.py"


def test_recipes_table_generator_reads_every_recipe():
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import recipes_table
    finally:
        sys.path.pop(0)
    rows = recipes_table.table().splitlines()[2:]
    assert len(rows) == len(list((REPO / "recipes").glob("*.yaml")))
    quick = next(r for r in rows if "quickstart.yaml" in r)
    assert "`classifier` (`cnn`)" in quick and "`digits`" in quick and "| CPU |" in quick
    ddp = next(r for r in rows if "ddp_cpu.yaml" in r)
    assert "CPU, 2 devices, ddp" in ddp


@pytest.mark.parametrize("page", PAGES)
def test_relative_links_resolve(page):
    text = (DOCS / page).read_text()
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"^[a-z]+://", target) or target.startswith("#"):
            continue
        path = (DOCS / target.split("#", 1)[0]).resolve()
        assert path.exists(), f"docs/{page} links to {target}, which does not exist"
