"""Regenerate the table of recipes in docs/recipes.md from the recipes themselves.

    python scripts/recipes_table.py          # rewrite the table in docs/recipes.md
    python scripts/recipes_table.py --check  # exit 1 if the table is out of date

Each row comes from one ``recipes/*.yaml``: the description is the first sentence of its
header comment, the model, net and data are read from the config, and the hardware from its
``trainer`` keys (accelerator, devices, num_nodes, strategy, precision).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
START, END = "<!-- recipes-table:start -->", "<!-- recipes-table:end -->"


def header_sentence(text: str, limit: int = 220) -> str:
    """First sentence of the leading comment block (the lines before its first command line)."""
    words = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        body = line.lstrip("#").strip()
        if re.match(r"^(lightning|torchrun|srun|then:)\b", body, re.IGNORECASE):
            break
        words.append(body)
    joined = " ".join(w for w in words if w)
    depth, end = 0, len(joined)
    for i, ch in enumerate(joined):
        depth += (ch == "(") - (ch == ")")
        # A sentence ends at a period outside parentheses that is followed by a space or the end
        # and does not close an abbreviation ("et al.", "e.g.").
        at_end = ch == "." and depth == 0 and (i + 1 == len(joined) or joined[i + 1] == " ")
        if at_end and not re.search(r"(\bal|\be\.g|\bi\.e|\bvs)$", joined[:i]):
            end = i + 1
            break
    sentence = joined[:end].rstrip(" :;")
    if len(sentence) > limit:
        sentence = sentence[: limit - 3].rsplit(" ", 1)[0] + "..."
    return sentence.replace("|", "\\|")


def _name(node) -> str:
    if isinstance(node, str):
        return node
    if isinstance(node, dict):
        return str(node.get("class_path", "?"))
    return "?"


def hardware(trainer: dict) -> str:
    accelerator = str(trainer.get("accelerator", "auto"))
    label = {"cpu": "CPU", "gpu": "GPU", "cuda": "GPU", "auto": "GPU if present, else CPU"}.get(
        accelerator, accelerator
    )
    devices, nodes = trainer.get("devices", 1), trainer.get("num_nodes", 1)
    parts = [label]
    if devices not in (1, "1", None):
        parts.append(f"{devices} devices")
    if nodes not in (1, "1", None):
        parts.append(f"{nodes} nodes")
    strategy = trainer.get("strategy")
    if isinstance(strategy, dict):  # class_path + init_args: the class's name
        strategy = str(strategy.get("class_path", "")).rsplit(".", 1)[-1]
    if strategy:
        parts.append(str(strategy))
    if trainer.get("precision") not in (None, 32, "32", "32-true"):
        parts.append(str(trainer["precision"]))
    return ", ".join(parts)


def row(path: Path) -> str:
    text = path.read_text()
    config = yaml.safe_load(text) or {}
    model, data = config.get("model", {}), config.get("data", {})
    model_args = model.get("init_args", {}) if isinstance(model, dict) else {}
    net = model_args.get("net") or model_args.get("generator")
    model_cell = f"`{_name(model)}`" + (f" (`{net}`)" if isinstance(net, str) else "")
    data_args = data.get("init_args", {}) if isinstance(data, dict) else {}
    data_cell = f"`{_name(data)}`"
    if isinstance(data_args.get("distribution"), str):
        data_cell += f" ({data_args['distribution']})"
    if data_args.get("dataset") is not None:  # a scenario over another DataModule
        data_cell += f" over `{_name(data_args['dataset'])}`"
    hw = hardware(config.get("trainer", {}) or {})
    rel = path.relative_to(REPO).as_posix()
    return f"| [`{path.name}`](../{rel}) | {header_sentence(text)} | {model_cell} | {data_cell} | {hw} |"


def table() -> str:
    lines = ["| recipe | what it runs | model (net) | data | hardware |", "|---|---|---|---|---|"]
    lines += [row(p) for p in sorted((REPO / "recipes").glob("*.yaml"))]
    return "\n".join(lines)


def render(doc: str) -> str:
    if START not in doc or END not in doc:
        raise SystemExit(f"docs/recipes.md lacks the markers {START} ... {END}")
    before, rest = doc.split(START, 1)
    _, after = rest.split(END, 1)
    return f"{before}{START}\n{table()}\n{END}{after}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/recipes.md is out of date")
    args = parser.parse_args(argv)
    doc_path = REPO / "docs" / "recipes.md"
    doc = doc_path.read_text()
    new = render(doc)
    if args.check:
        if new != doc:
            print("docs/recipes.md is out of date: run python scripts/recipes_table.py", file=sys.stderr)
            return 1
        return 0
    doc_path.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
