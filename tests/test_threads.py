"""runtime/threads.py: BLAS kept to one thread while kernels that split a batch over the cores run."""

import jitprop
from jitprop.runtime import threads


def test_blas_keeps_to_one_thread_inside_the_block_and_gets_its_count_back():
    blas = threads._openblas()
    if not blas:  # another BLAS than SciPy's OpenBLAS: left alone, and the block still runs
        with threads.one_blas_thread():
            return
    setter, getter = blas
    before = getter()
    setter(2)
    try:
        with threads.one_blas_thread():
            assert getter() == 1
        assert getter() == 2
        with threads.one_blas_thread(active=False):  # a model without parallel kernels: untouched
            assert getter() == 2
    finally:
        setter(before)


def test_only_models_with_parallel_kernels_ask_for_it():
    cnn = jitprop.Sequential([jitprop.layer("conv2d", out_channels=2, kernel_size=3), "flatten", jitprop.layer("dense", units=2)],
                             input_shape=(1, 4, 4))  # fmt: skip
    mlp = jitprop.Sequential([jitprop.layer("dense", units=3)], input_dim=4)
    assert jitprop.Trainer(cnn, "cross_entropy")._own_threads()
    assert not jitprop.Trainer(mlp, "cross_entropy")._own_threads()
    assert not jitprop.Trainer(cnn, "cross_entropy", device="cuda")._own_threads()  # no BLAS of its own there
