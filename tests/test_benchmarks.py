"""The benchmark suite runs (tiny settings), so it cannot rot. Timings are never asserted."""

import importlib.util
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parents[1] / "benchmarks" / "run.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("jitprop_benchmarks", RUN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_benchmark_runs_every_system_to_the_same_loss(bench):
    import jitprop.plugins

    try:
        results = bench.main(["--quick", "--configs", "S,M"])
    finally:  # leave no plugin behind for other tests
        for name in ("benchmark-plugin-loss", "jitprop-batchnorm"):
            plugin = jitprop.plugins.pm.get_plugin(name)
            if plugin is not None:
                jitprop.plugins.unregister(plugin)
    assert [r["config"] for r in results] == ["S", "M"]
    for res in results:
        systems = res["systems"]
        assert {"jitprop", "numpy"} <= set(systems)
        assert systems["jitprop"]["compiled_path"]
        if res["config"] == "S":  # plugins' kernels (a loss; a layer from plugins/) take the same compiled path
            assert systems["jitprop+plugin-loss"]["compiled_path"]
            assert systems["jitprop+batchnorm-plugin"]["compiled_path"]
            assert systems["jitprop+gradient-norms"]["compiled_path"]  # and gradient transforms
            assert systems["jitprop+gradient-norms"]["baseline"] == "jitprop"
        # Same weights, same batches, same optimizer: each model's systems agree to float32 rounding.
        for with_batch_norm in (False, True):
            losses = [e["first_epoch_loss"] for name, e in systems.items() if ("batchnorm" in name) == with_batch_norm]
            if losses:
                assert max(losses) - min(losses) < 1e-3 * max(1.0, abs(losses[0]))
        assert all(e["samples_per_s"] > 0 for e in systems.values())
        if res["config"] == "M":  # where a step goes: each kernel in place, each product alone
            parts = dict(res["step_profile"])
            assert {"0: dense forward", "0: dense backward", "optimizer (adam)"} <= set(parts)
            assert all(seconds > 0 for seconds in parts.values())
            assert [name for name, *_ in res["profile"]] == [
                "layer 1 forward", "layer 1 weight gradient", "layer 2 forward", "layer 2 weight gradient",
                "layer 2 input gradient"]
            assert "| all products |" in "\n".join(bench.profile_lines(res, 100.0))


def test_the_cnn_configurations_run_on_the_compiled_path_with_their_profile(bench):
    """Cs, quick: jitprop's CNN (and PyTorch's, where installed) from the same weights; each kernel
    of the step in place; each convolution's products per sample; the roofline."""
    import numpy as np

    (res,) = bench.main(["--quick", "--configs", "Cs"])
    systems = res["systems"]
    assert systems["jitprop"]["compiled_path"] and "numpy" not in systems  # NumPy has no CNN here
    if "pytorch" in systems:  # same weights, same batches: the same first epoch to float32 rounding
        assert abs(systems["pytorch"]["first_epoch_loss"] - systems["jitprop"]["first_epoch_loss"]) < 1e-3
    parts = dict(res["step_profile"])
    assert {"0: conv2d forward", "0: conv2d backward", "2: max_pool2d forward", "3: conv2d backward"} <= set(parts)
    assert [name for name, *_ in res["profile"]] == [
        "layer 0 forward (conv2d)", "layer 0 weight gradient (conv2d)", "layer 3 forward (conv2d)",
        "layer 3 weight gradient (conv2d)", "layer 3 input gradient (conv2d)", "layer 7 forward",
        "layer 7 weight gradient", "layer 7 input gradient"]
    assert res["profile"][0][1] == (16, 9, 80) and res["profile"][0][3] == 32  # 8x8 on the wide grid: 8 x 10, per sample
    text = "\n".join(bench.profile_lines(res, 100.0))
    assert "Roofline of a Cs step (batch 32)" in text and "FLOP a byte" in text
    # one sample's forward: conv 16x9x64 + conv 32x144x16 + dense 128x10 multiply-adds, 6 FLOPs each
    assert bench.flops_per_sample(("cnn", (1, 8, 8))) == 6 * (16 * 9 * 64 + 32 * 144 * 16 + 128 * 10)
    X, y = bench.load_data("digit_images")
    assert X.shape[1:] == (1, 8, 8) and X.dtype == np.float32 and len(X) == len(y)


def test_report_names_machine_and_ratios(bench):
    res = {"config": "S", "sizes": [64, 64, 10], "batch": 32, "systems": {
        "jitprop": {"samples_per_s": 1e6, "min": 9e5, "max": 1.1e6, "gflops": 28.4, "final_loss": 0.2, "first_epoch_loss": 0.5,
                    "ratio_to_pytorch": 25.0, "ratio_min": 20.0, "ratio_max": 30.0},
        "pytorch": {"samples_per_s": 4e4, "min": 3e4, "max": 5e4, "gflops": 1.1, "final_loss": 0.2, "first_epoch_loss": 0.5}}}
    text = bench.report([res], 190.0, {"jitprop": 100.0}, {"warm_s": 0.9, "cold_s": 9.0}, {"date": "2026-11-27", "cpu": "x"})
    assert "| S [64, 64, 10] b32 | jitprop | 1,000,000 |" in text and "25.00 (20.00-30.00)" in text
    assert "warm cache 0.90 s" in text and "jitprop 100 MiB" in text


def test_the_real_gpu_check_runs_on_the_simulator():
    """gpu_check.py --quick compares every CUDA kernel with its CPU kernel; on the simulator
    here, so the script a GPU machine will run cannot rot either."""
    import os
    import subprocess
    import sys

    script = RUN.with_name("gpu_check.py")
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1", "JITPROP_LOAD_PLUGINS": ""}
    out = subprocess.run([sys.executable, "-W", "ignore", str(script), "--quick"], capture_output=True, text=True,
                         env=env, timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert "kernels: 47 checked" in out.stdout and " FAIL" not in out.stdout
    assert all(f"layer     {name} " in out.stdout for name in ("conv2d", "max_pool2d", "avg_pool2d", "global_avg_pool2d"))
    assert "transform gradient_clipping" in out.stdout and "transform gradient_norms" in out.stdout
    assert "transform coach_statistics" in out.stdout  # with its memory and a model's activations


def test_the_memory_floor_probe_runs(bench, capsys, monkeypatch, tmp_path):
    import json

    import numba

    monkeypatch.setattr(numba.config, "CACHE_DIR", str(tmp_path))  # not beside run.py, under this module's name
    monkeypatch.setitem(bench.CONFIGS, "M", {**bench.CONFIGS["M"], "data": (512, 784)})
    bench.memory_probe("M", "numba-floor", 1)
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["peak_rss_mib"] > 0
