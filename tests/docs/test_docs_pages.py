"""The user docs stay in step with the repository: every recipe listed, every relative link alive."""

import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"


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


# Every Markdown page a user reads: the README and docs/ with its sub-folders (benchmarks too).
LINKED_PAGES = ["README.md", *sorted(str(p.relative_to(REPO)) for p in DOCS.rglob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\)")


def _prose(text: str) -> str:
    """The page without fenced code blocks and inline code, where brackets are not links."""
    text = re.sub(r"^(```|~~~).*?^\1[^\n]*$", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def github_anchors(text: str) -> set[str]:
    """The anchors GitHub gives a page's headings (lower case, punctuation dropped, spaces to
    hyphens, -1, -2, ... for repeats) plus explicit ``id=`` / ``name=`` anchors."""
    anchors, seen = set(), {}
    body = re.sub(r"^(```|~~~).*?^\1[^\n]*$", "", text, flags=re.S | re.M)
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", body, flags=re.M):
        heading = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    anchors |= set(re.findall(r"""<a\s+(?:name|id)=["']([^"']+)["']""", text))
    return anchors


def test_github_anchors_follow_githubs_rules():
    text = "# Guidance (`guidance`, on `generate`)\n## Tests (`tests/flow/`)\n## A, b & c\n## A, b & c\n```\n# not a heading\n```\n"
    assert github_anchors(text) == {"guidance-guidance-on-generate", "tests-testsflow", "a-b--c", "a-b--c-1"}


@pytest.mark.parametrize("page", LINKED_PAGES)
def test_relative_links_and_anchors_resolve(page):
    source = REPO / page
    text = source.read_text()
    broken = []
    for target in LINK.findall(_prose(text)):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        path = (source.parent / path_part).resolve() if path_part else source
        if not path.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and path.suffix == ".md" and anchor not in github_anchors(path.read_text()):
            broken.append(f"{target} (no heading #{anchor} in {path.relative_to(REPO)})")
    assert not broken, f"{page} has broken links: {broken}"
