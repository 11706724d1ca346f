"""jitprop.sklearn.MLPClassifier against scikit-learn's own, the same network for the same epochs.

    python benchmarks/sklearn_mlp.py            # 4 data sets, 5 rounds; writes benchmarks/SKLEARN.md
    python benchmarks/sklearn_mlp.py --quick    # small and quick, prints only

Needs ``pip install '.[sklearn]'``. Both estimators get the same parameters
(one hidden layer of 100 ReLU units, Adam at 1e-3, batches of 200, alpha
1e-4, ``max_iter`` epochs, the stopping rule switched off by
``n_iter_no_change > max_iter`` so both train every epoch) on the same
standardised float32 rows (scikit-learn keeps float32 inputs in float32, its
faster mode), split 75/25 with stratification. Each round fits both with
that round's ``random_state``, in alternating order so the machine's slow
phases hit both, with a pause of ``PAUSE`` seconds before each fit: an
OpenBLAS keeps its threads spinning a while after a call, and numpy's
(scikit-learn's) spinning threads took the cores from the next fit's BLAS
(SciPy's, jitprop's), halving its speed when measured back to back. Fit
times are medians over rounds, accuracies mean and standard deviation over
the rounds' seeds. One fit of each per data set
comes first, untimed: jitprop's step is compiled (or loaded from its cache)
once, not per fit.
"""

import argparse
import datetime
import os
import platform
import statistics
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
TARGET = 5.0  # issue 17: fit time at least 5x shorter than scikit-learn's
PAUSE = 0.5  # seconds before each timed fit: the other library's BLAS threads stop spinning
PARAMS = dict(hidden_layer_sizes=(100,), activation="relu", solver="adam", learning_rate_init=1e-3, batch_size=200, alpha=1e-4)


def datasets(quick):
    from sklearn.datasets import load_breast_cancer, load_digits, load_wine, make_classification

    big = 5_000 if quick else 100_000
    return [
        ("digits", *load_digits(return_X_y=True), 20 if quick else 100),
        ("wine", *load_wine(return_X_y=True), 20 if quick else 200),
        ("breast_cancer", *load_breast_cancer(return_X_y=True), 20 if quick else 100),
        (f"make_classification {big // 1000}k x 20", *make_classification(big, 20, n_informative=10, n_classes=4,
                                                                        random_state=0), 3 if quick else 10),
    ]  # fmt: skip


def split(X, y):
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    Xt, Xv, yt, yv = train_test_split(X, y, test_size=0.25, stratify=y, random_state=0)
    scaler = StandardScaler().fit(Xt)
    return scaler.transform(Xt).astype(np.float32), yt, scaler.transform(Xv).astype(np.float32), yv


def estimators(epochs):
    from sklearn.neural_network import MLPClassifier as SkMLP

    from jitprop.sklearn import MLPClassifier

    same = dict(PARAMS, max_iter=epochs, n_iter_no_change=epochs + 1)
    return {"jitprop": lambda seed: MLPClassifier(**same, random_state=seed),
            "scikit-learn": lambda seed: SkMLP(**same, random_state=seed)}  # fmt: skip


def measure(name, X, y, epochs, rounds):
    Xt, yt, Xv, yv = split(X, y)
    make = estimators(epochs)
    times = {k: [] for k in make}
    accuracy = {k: [] for k in make}
    for key in make:  # untimed: compiles (or loads) jitprop's step; warms scikit-learn's BLAS
        make[key](0).fit(Xt, yt)
    for r in range(rounds):
        order = list(make) if r % 2 == 0 else list(make)[::-1]
        for key in order:
            est = make[key](r)
            time.sleep(PAUSE)
            start = time.perf_counter()
            est.fit(Xt, yt)
            times[key].append(time.perf_counter() - start)
            accuracy[key].append(est.score(Xv, yv))
    return {"name": name, "rows": Xt.shape[0], "features": X.shape[1], "classes": len(np.unique(y)), "epochs": epochs,
            "times": times, "accuracy": accuracy}  # fmt: skip


def noise(acc):
    """Whether the two accuracies' means differ by less than twice their combined standard error."""
    a, b = acc["jitprop"], acc["scikit-learn"]
    if len(a) < 2:
        return True
    se = np.sqrt(np.var(a, ddof=1) / len(a) + np.var(b, ddof=1) / len(b))
    return abs(np.mean(a) - np.mean(b)) <= max(2 * se, 1.0 / 1000)


def report(results, rounds):
    import sklearn

    import jitprop

    lines = [
        "# jitprop.sklearn.MLPClassifier against scikit-learn's MLPClassifier",
        "",
        f"{datetime.date.today()}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores;"
        f" jitprop {jitprop.__version__}, scikit-learn {sklearn.__version__}, numpy {np.__version__}."
        f" `python benchmarks/sklearn_mlp.py`: {rounds} interleaved rounds, fit-time medians;"
        " accuracy on the held-out quarter, mean +- sd over the rounds' seeds.",
        "",
        f"Both: {PARAMS}, float32 rows, every epoch trained. Target (issue 17): fit time at least {TARGET:g}x shorter,"
        " accuracy within noise (means within two combined standard errors).",
        "",
        "| data | train rows x features, classes | epochs | jitprop fit | scikit-learn fit | speed-up | jitprop accuracy"
        " | scikit-learn accuracy | within noise |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for res in results:
        tj, ts = (statistics.median(res["times"][k]) for k in ("jitprop", "scikit-learn"))
        aj, as_ = res["accuracy"]["jitprop"], res["accuracy"]["scikit-learn"]
        lines.append(
            f"| {res['name']} | {res['rows']} x {res['features']}, {res['classes']} | {res['epochs']} | {tj:.3f} s"
            f" | {ts:.3f} s | **{ts / tj:.1f}x** | {np.mean(aj):.4f} +- {np.std(aj):.4f} | {np.mean(as_):.4f} +- {np.std(as_):.4f}"
            f" | {'yes' if noise(res['accuracy']) else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="small data, few epochs, 2 rounds; print, don't write")
    args = parser.parse_args()
    rounds = 2 if args.quick else args.rounds
    results = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: every epoch is trained on purpose
        for name, X, y, epochs in datasets(args.quick):
            results.append(measure(name, X, y, epochs, rounds))
            print(f"{name}: done", flush=True)
    text = report(results, rounds)
    print(text)
    if not args.quick:
        (HERE / "SKLEARN.md").write_text(text)


if __name__ == "__main__":
    main()
