"""benchmarks/gpu_suite.py --tiny runs on the CPU: every section of the GPU suite, tiny nets, one JSON."""

import json
import math
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import gpu_suite
    finally:
        sys.path.pop(0)
    out = tmp_path_factory.mktemp("gpu_suite") / "tiny.json"
    argv = list(sys.argv)
    try:
        code = gpu_suite.main(["--tiny", "--device", "cpu", "--out", str(out)])
    finally:
        sys.argv[:] = argv  # the CLI rewrites sys.argv
    return gpu_suite, code, json.loads(out.read_text())


def _numbers(obj):
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return
    if isinstance(obj, (int, float)):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _numbers(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _numbers(v)


def test_tiny_suite_passes_every_check(suite):
    _, code, result = suite
    assert result["failures"] == [] and code == 0


def test_tiny_suite_covers_every_recipe_and_section(suite):
    gpu_suite, _, result = suite
    recipes = set(gpu_suite.RECIPES)
    assert {r["recipe"] for r in result["train"]} == recipes
    generators = {n for n, spec in gpu_suite.RECIPES.items() if "sample" in spec}
    assert {r["recipe"] for r in result["sampling"]} == generators == {r["recipe"] for r in result["agreement"]}
    nets = {(n, path) for n, spec in gpu_suite.RECIPES.items() for path in spec["nets"]}
    assert {(r["recipe"], r["net"]) for r in result["correctness"]} == nets
    assert {"SongUNet", "DiT", "UNet", "ResNetGenerator", "ConditionalDiscriminator", "CifarResNet"} <= {
        r["class"] for r in result["correctness"]
    }
    assert any("compile_relative_error" in r for r in result["correctness"])
    assert result["mfu"]["flops_per_step"] > 0 and 0 < result["mfu"]["mfu"] < 1
    assert result["mfu"]["peak_tflops"] == 989.0


def test_tiny_suite_figures_are_finite(suite):
    _, _, result = suite
    values = list(_numbers(result))
    assert values and all(math.isfinite(v) for v in values)
    for row in result["train"]:
        assert row["images_per_s"] > 0 and row["loss_finite"]
    assert all(r["nfe"] >= 1 and r["images_per_s"] > 0 for r in result["sampling"])
    # On the CPU the agreement compares one batch of 4 with two batches of 2: seeding per sample.
    assert all(r["max_abs_diff"] <= r["tolerance"] for r in result["agreement"])


def test_checks_flag_a_figure_over_tolerance(suite):
    gpu_suite, _, result = suite
    broken = json.loads(json.dumps(result))
    broken["correctness"][0]["bf16_relative_error"] = 1.0
    broken["correctness"][1]["reference_norm"] = 0.0
    broken["agreement"][0]["max_abs_diff"] = float("nan")
    failures = gpu_suite.check(broken)
    assert len(failures) == 3 and "bf16" in failures[0] and "zero" in failures[1] and "agreement" in failures[2]
