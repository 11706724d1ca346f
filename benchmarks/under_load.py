"""Small and medium models while another process keeps a core busy (UNDER_LOAD.md).

jitprop gives BLAS one thread where a batch's products are too small for a
second to help, else every core (``jitprop.runtime.threads.blas_count``),
and with ``--threads auto`` tries one and every core as it trains. This
times a training step of each configuration with that choice, with auto,
and with BLAS fixed at 2 threads (``JITPROP_NUM_THREADS=2``) and at 1, on an
idle machine and with a busy process (a Python loop) on one core: medians
over interleaved rounds, each round and variant a fresh process that times
12 epochs of one fit after a warm one (so the other variant's spinning BLAS
threads are gone).

    python benchmarks/under_load.py            # writes benchmarks/UNDER_LOAD.md (~9 min)
    python benchmarks/under_load.py --quick    # fewer rounds, nothing written
"""

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import jitprop

HERE = Path(__file__).resolve().parent

#: (input width, hidden widths, batch, rows): S and M of run.py, and scikit-learn's digits network.
CONFIGS = {
    "S": (64, [64], 32, 1437),
    "digits 64-100-10": (64, [100], 200, 1437),
    "M": (784, [256, 256], 128, 6000),
}
VARIANTS = {"jitprop's choice": None, "auto": "auto", "2 threads": "2", "1 thread": "1"}


class EpochTimes:
    """A callback keeping each epoch's seconds."""

    def __init__(self):
        self.times, self.started = [], 0.0

    @jitprop.hookimpl
    def on_epoch_begin(self):
        self.started = time.perf_counter()

    @jitprop.hookimpl
    def on_epoch_end(self):
        self.times.append(time.perf_counter() - self.started)


def step_time(name, epochs=12):
    """Median microseconds of a training step of configuration ``name`` over ``epochs`` epochs of
    one fit, after a warm one, in this process (BLAS's threads as ``JITPROP_NUM_THREADS`` says,
    else jitprop's choice by the products' sizes; auto tries both counts as it goes)."""
    from jitprop.runtime import threads

    timer = EpochTimes()
    n_in, widths, batch, rows = CONFIGS[name]
    rng = np.random.default_rng(0)
    X = rng.normal(size=(rows, n_in)).astype(np.float32)
    y = rng.integers(0, 10, rows)
    layers = [s for w in widths for s in (jitprop.layer("dense", units=w), "relu")]
    model = jitprop.Sequential(layers + [jitprop.layer("dense", units=10)], input_dim=n_in)
    t = jitprop.Trainer(model, "cross_entropy", "adam", batch_size=batch, callbacks=[timer])
    t.fit(X, y, epochs=1 + epochs)
    steps = -(-rows // batch)
    return threads.blas_count(model, batch), float(np.median(timer.times[1:])) / steps * 1e6


def measured(name, variant):
    """``step_time`` in a fresh process: the other variant's spinning BLAS threads can't linger."""
    env = {k: v for k, v in os.environ.items() if k != "JITPROP_NUM_THREADS"}
    if VARIANTS[variant]:
        env["JITPROP_NUM_THREADS"] = VARIANTS[variant]
    out = subprocess.run([sys.executable, __file__, "--one", name], env=env, capture_output=True, text=True, check=True)
    chosen, us = out.stdout.split()
    return int(chosen), float(us)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds, nothing written")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # one configuration's step, in this process
    args = parser.parse_args()
    if args.one:
        print(*step_time(args.one))
        return
    rounds = 2 if args.quick else 5
    rows = []
    for load in ("idle", "one core busy"):
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if load != "idle" else None
        try:
            time.sleep(0.5 if busy else 0)
            for name in CONFIGS:
                times = {variant: [] for variant in VARIANTS}
                for r in range(rounds):  # the variants take turns, each going first in turn
                    k = r % len(VARIANTS)
                    for variant in list(VARIANTS)[k:] + list(VARIANTS)[:k]:
                        chosen, us = measured(name, variant)
                        times[variant].append(us)
                ours, auto, two, one = (float(np.median(times[v])) for v in VARIANTS)
                chosen = measured(name, "jitprop's choice")[0]
                rows.append((name, load, chosen, ours, auto, two, one))
                print(f"{name}, {load}: jitprop's choice ({chosen} BLAS thread{'s' * (chosen > 1)}) {ours:.0f} us a step,"
                      f" auto {auto:.0f} us, 2 threads {two:.0f} us ({two / ours:.2f}x), 1 thread {one:.0f} us"
                      f" ({one / ours:.2f}x)", flush=True)  # fmt: skip
        finally:
            if busy:
                busy.kill()
                busy.wait()
    if args.quick:
        return
    lines = [
        "# Under load: BLAS threads chosen by the products' sizes",
        "",
        "`python benchmarks/under_load.py`: a training step (Adam, float32) with jitprop's choice of BLAS threads (by the"
        " products' sizes), with `--threads auto` (`JITPROP_NUM_THREADS=auto`: tries 1 and 2 threads as it goes where a"
        " second may help), with 2 fixed threads and with 1, on the idle machine and with another process keeping one"
        f" core busy; medians over {rounds} interleaved rounds, each a fresh process timing 12 epochs of one fit after a"
        " warm one.",
        "",
        f"{time.strftime('%Y-%m-%d')}, Python {platform.python_version()}, {os.cpu_count()} cpus.",
        "",
        "| model | machine | jitprop's choice | µs a step | auto: µs a step | 2 threads: µs a step | 2 threads / choice"
        " | 1 thread: µs a step |",
        "|---|---|---|---|---|---|---|---|",
    ]
    chose = lambda c: "1 thread" if c == 1 else f"{c} threads"  # noqa: E731
    lines += [f"| {n} | {load} | {chose(c)} | {a:.0f} | {au:.0f} | {b:.0f} | {b / a:.2f}x | {one:.0f} |"
              for n, load, c, a, au, b, one in rows]  # fmt: skip
    (HERE / "UNDER_LOAD.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {HERE / 'UNDER_LOAD.md'}")


if __name__ == "__main__":
    main()
