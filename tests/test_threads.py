"""runtime/threads.py: BLAS kept to one thread while kernels that split a batch over the cores run, its
count chosen by the products' sizes, overridden by --threads or JITPROP_NUM_THREADS, tried as a model
trains only when asked (auto), so the same run gives the same numbers."""

import numpy as np
import pytest

import jitprop
from jitprop.runtime import threads
from jitprop.testing import command as run, one_line_error


def test_blas_keeps_to_one_thread_inside_the_block_and_gets_its_count_back():
    blas = threads._openblas()
    if not blas:  # another BLAS than SciPy's OpenBLAS: left alone, and the block still runs
        with threads.blas_threads(1):
            return
    setter, getter = blas
    before = getter()
    setter(2)
    try:
        with threads.blas_threads(1):
            assert getter() == 1
        assert getter() == 2
        with threads.capped(1):  # a sweep's runs: one thread each, whatever their size
            assert getter() == 1 and threads.blas_count(mlp(784, 256), 128) == 1
        assert getter() == 2 and threads.blas_count(mlp(784, 256), 128) == threads.cores()
    finally:
        setter(before)


def test_only_models_with_parallel_kernels_ask_for_it():
    cnn = jitprop.Sequential([jitprop.layer("conv2d", out_channels=2, kernel_size=3), "flatten", jitprop.layer("dense", units=2)],
                             input_shape=(1, 4, 4))  # fmt: skip
    mlp = jitprop.Sequential([jitprop.layer("dense", units=3)], input_dim=4)
    assert jitprop.Trainer(cnn, "cross_entropy")._own_threads()
    assert not jitprop.Trainer(mlp, "cross_entropy")._own_threads()
    assert not jitprop.Trainer(cnn, "cross_entropy", device="cuda")._own_threads()  # no BLAS of its own there


def mlp(n_in, width, seed=0):
    return jitprop.Sequential([jitprop.layer("dense", units=width), "relu", jitprop.layer("dense", units=10)],
                              input_dim=n_in, seed=seed)  # fmt: skip


def test_small_products_keep_blas_on_one_thread_and_large_ones_take_every_core(monkeypatch):
    monkeypatch.delenv("JITPROP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "cores", lambda: 2)
    digits = mlp(64, 100)  # scikit-learn's digits table: 1.3M multiply-adds at 200 rows, no gain from a second
    assert threads.blas_count(digits, 200) == 1
    wide = mlp(784, 256)  # 25.7M at 128 rows: a second thread takes a third off the step
    assert threads.blas_count(wide, 128) == 2
    assert threads.blas_count(wide, 128, own_threads=True) == 1  # the image kernels split batches themselves
    assert threads.blas_count(wide, 128, share=1) == 1  # a data-parallel rank's share of its host
    monkeypatch.setenv("JITPROP_NUM_THREADS", "2")
    assert threads.blas_count(digits, 200) == 2
    monkeypatch.setenv("JITPROP_NUM_THREADS", "two")
    with pytest.raises(jitprop.ConfigError, match="JITPROP_NUM_THREADS must be a whole number"):
        threads.blas_count(digits, 200)


def test_every_core_means_no_more_than_openblas_was_told(monkeypatch):
    """Two jobs started with OPENBLAS_NUM_THREADS=1 (or OMP_NUM_THREADS=1) each keep to one thread."""
    import os

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "JITPROP_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    wide = mlp(784, 256)
    assert threads.cores() == 4 and threads.blas_count(wide, 128) == 4
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert threads.cores() == 1 and threads.blas_count(wide, 128) == 1
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "3")  # OpenBLAS reads its own first
    assert threads.cores() == 3
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "16")  # never more than the cores
    assert threads.cores() == 4
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "many")  # not a count: passed over, as OpenBLAS does
    assert threads.cores() == 1  # OMP_NUM_THREADS's


def test_a_run_takes_the_same_thread_count_throughout_and_gives_the_same_weights_again(monkeypatch):
    # M's first layer (784 inputs, 128 rows): OpenBLAS rounds that product differently on one thread
    # and on two, so a count chosen by the clock (the Chooser, asked for with auto) could not promise
    # this; the default count is fixed by the model's size.
    monkeypatch.delenv("JITPROP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "_asked", None)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(384, 784)).astype(np.float32)
    y = rng.integers(0, 10, 384)
    runs = []
    for _ in range(2):
        model = mlp(784, 256)
        trainer = jitprop.Trainer(model, "cross_entropy", batch_size=128)
        h = trainer.fit(X, y, epochs=2, validation_split=0.25)
        assert not trainer._blas.adaptive
        runs.append((model.params.copy(), list(h.history["val_loss"])))
    assert np.array_equal(runs[0][0], runs[1][0]) and runs[0][1] == runs[1][1]
    monkeypatch.setenv("JITPROP_NUM_THREADS", "auto")
    trainer = jitprop.Trainer(mlp(784, 256), "cross_entropy", batch_size=128)
    trainer.fit(X, y, epochs=1)
    assert trainer._blas.adaptive == (threads.blas_count(trainer.model, 128) > 1)


def test_threads_flag(monkeypatch):
    monkeypatch.setattr(threads, "_asked", None)
    monkeypatch.setattr(threads, "use", lambda n: setattr(threads, "_asked", n))  # Numba's pool left as it is
    result = run("train", "--dataset", "spirals", "--hidden", "8", "--epochs", "1", "--threads", "0", ok=False)
    assert "Invalid value for '--threads': '0' is neither a whole number of threads, 1 or more, nor auto" in result.output
    run("train", "--dataset", "spirals", "--hidden", "8", "--epochs", "1", "--threads", "1")
    assert threads.asked() == 1
    run("train", "--dataset", "spirals", "--hidden", "8", "--epochs", "1", "--threads", "Auto")
    assert threads.asked() == threads.AUTO and threads.adaptive()
    monkeypatch.setattr(threads, "_asked", None)
    monkeypatch.setenv("JITPROP_NUM_THREADS", "-3")
    result = run("train", "--dataset", "spirals", "--hidden", "8", "--epochs", "1", ok=False)
    assert one_line_error(result) == "Error: JITPROP_NUM_THREADS must be a whole number of threads, 1 or more, or auto, got '-3'"
    monkeypatch.setenv("JITPROP_NUM_THREADS", "auto")
    assert threads.asked() == threads.AUTO and threads.blas_count(mlp(64, 8), 32) == 1  # the size rule, then tries


def test_where_a_second_thread_may_help_each_is_tried_and_the_faster_kept():
    now = [0.0]
    chooser = threads.Chooser(2, adaptive=True, clock=lambda: now[0])
    assert chooser.next() == 2  # the first span warms up, untimed
    chooser.record(2, 0.1, 10)
    first = chooser.next()  # a trial: one count, then the other
    chooser.record(first, 0.1 if first == 2 else 0.3, 10)
    second = chooser.next()
    assert {first, second} == {1, 2}
    chooser.record(second, 0.1 if second == 2 else 0.3, 10)
    assert chooser.next() == 2 == chooser.count  # idle: every core wins
    now[0] += threads.Chooser.RECHECK  # another program takes a core: the next trial sees it
    for _ in range(2):
        count = chooser.next()
        chooser.record(count, 0.5 if count == 2 else 0.2, 10)
    assert chooser.next() == 1 == chooser.count
    assert threads.Chooser(1, adaptive=True).next() == 1  # small products: nothing to try
    fixed = threads.Chooser(2, adaptive=False)  # the default, the user's count, or a data-parallel rank's
    fixed.record(2, 1.0, 1)
    assert [fixed.next() for _ in range(3)] == [2, 2, 2]
