"""Commands that show a learner what a run does: lr-find, check, explain, sweep."""

import dataclasses
import json
import signal

import click

from .. import api
from ..data import checkpoint as checkpoints
from ..errors import ConfigError
from ..views import lr_find as lrf
from ..views import explain as explaining
from ..views import picture as pictures
from ..views import sanity
from ..views import sweep as sweeping
from . import flags
from ..model.architectures import mlp
from ..model.sequential import Sequential
from .run import plan


def _show(picture, path):
    """Write ``picture`` to ``path`` through a drawing plugin; else (or without a path) print it as text."""
    if path:
        flags.check_writable(path, "picture")
        if pictures.draw(picture, path):
            return f"wrote {path}"
        click.echo(f"no plugin draws pictures (pip install plugins/jitprop-plot, with matplotlib); as text instead of {path}:")
    click.echo(pictures.text(picture))
    return None


@click.command("lr-find")
@flags.options(*flags.DATA_AND_MODEL)
@click.option("--start-lr", type=float, default=lrf.START_LR, show_default=True, help="Learning rate of the first iteration.")
@click.option("--end-lr", type=float, default=lrf.END_LR, show_default=True, help="Learning rate the last iteration approaches.")
@click.option("--num-it", type=int, default=lrf.NUM_IT, show_default=True, help="Iterations, the rate growing exponentially.")
@click.option("--plot", "plot_path", help="Write the picture here (PNG, through the jitprop-plot plugin).  [default: text]")
@click.option("--json", "as_json", is_flag=True, help="Print the record as JSON instead of a table.")
def lr_find(start_lr, end_lr, num_it, plot_path, as_json, **params):
    """Find a learning rate: train a few iterations at an exponentially rising rate, watch the loss.

    The range test as fast.ai runs it: 1e-7 to 10 over 100 iterations, the
    loss smoothed (beta 0.98, bias-corrected), stopping when it passes 4x its
    best. The suggestion is the valley rule's: a point half of the way down
    the longest decreasing stretch of the curve. Weights are not kept: the
    test only looks. Same data and model flags as train.

    \b
    Examples:
      jitprop lr-find
      jitprop lr-find --optimizer sgd:momentum=0.9 --plot lr.png
      jitprop lr-find --dataset digit_images --model cnn --json
    """
    p = plan(flags.run_config(params))
    c = p.config
    if c["device"] != "cpu":
        raise ConfigError("lr-find sets the learning rate batch by batch, which runs on the CPU; drop --device")
    X, y = p.train
    result = lrf.lr_find(p.model, X, y, loss=p.loss, optimizer=api.optimizer(**c["optimizer"]), batch_size=c["batch_size"],
                         start_lr=start_lr, end_lr=end_lr, num_it=num_it, seed=c["seed"],
                         transforms=[api.transform(**t) for t in c.get("transforms", [])])  # fmt: skip
    if as_json:
        click.echo(json.dumps({"optimizer": c["optimizer"]["name"], "dataset": p.table.source, **result.to_dict()}, indent=1))
        return
    click.echo(f"lr-find: {c['optimizer']['name']} on {p.table.source}, {len(y)} training rows, batch {c['batch_size']}:"
               f" lr {start_lr:g} -> {end_lr:g} over {num_it} iterations")  # fmt: skip
    click.echo(f"{'iteration':>9}  {'lr':>9}  {'loss':>9}  {'smoothed':>9}")
    for i, lr, loss, smooth in result.rows():
        mark = "  <- suggested" if i - 1 == result.suggestion_index else ""
        click.echo(f"{i:>9}  {lr:>9.3g}  {loss:>9.4f}  {smooth:>9.4f}{mark}")
    click.echo(f"stopped: {result.stopped}")
    wrote = _show(lrf.picture(result, f"lr-find: {c['optimizer']['name']} on {p.table.source}"), plot_path)
    if wrote:
        click.echo(wrote)
    if result.suggestion is None:
        raise ConfigError(f"no suggestion: only {len(result.lrs)} iterations before the loss ran away; try a lower --end-lr"
                          " or more --num-it")  # fmt: skip
    click.echo(f"suggested lr: {result.suggestion:.2g}")


def coach_report(trainer, json_path=None, echo=click.echo):
    """The coach's last epoch, a line per layer, then its findings (or that it found nothing)."""
    records, found = trainer.history.coach, trainer.history.findings
    if records:
        echo(f"coach, epoch {records[-1]['epoch']}: per layer, gradient norm, update/weight a step, activations")
        for r in records[-1]["layers"]:
            parts = [f"  {r['layer']:>2} {r['name']:<12}"]
            if "grad_norm" in r:
                ratio = r["update_ratio_log10"]
                parts.append(f"|g| {r['grad_norm']:<9.3g} update/weight {'-' if ratio is None else f'{10**ratio:.1e}'}")
            if "dead_fraction" in r:
                parts.append(f"{r['zero_fraction']:.0%} zeros, {r['dead_fraction']:.0%} never fire")
            if "saturated_fraction" in r:
                parts.append(f"{r['saturated_fraction']:.0%} saturated")
            echo("  ".join(parts).rstrip())
    if found:
        echo(f"coach found {len(found)} thing{'s' if len(found) != 1 else ''} to look at:")
        for f in found:
            echo(f"  - {f['message']}")
    else:
        echo("coach: no alarm; every layer learns at a healthy pace")
    if json_path:
        echo(f"wrote {json_path}")


def run_checks(p, echo=click.echo):
    """The sanity checks of a planned run, each printed as its line; True when all passed."""
    c = p.config
    X, y = p.train
    model = p.model
    checks = [sanity.initial_loss(model, p.loss, X, y),
              sanity.overfit_batch(model, p.loss, api.optimizer(**c["optimizer"]), X, y, c["batch_size"]),
              *sanity.gradients(model, p.loss, X, y)]  # fmt: skip
    for check in checks:
        echo(str(check))
    return checks


@click.command()
@flags.options(*flags.DATA_AND_MODEL, "lr")
def check(**params):
    """Sanity checks before a long run, each one line: the loss at initialisation against
    log(classes), overfitting one batch to near-zero loss, and each layer's gradient on your
    own rows against finite differences. Exits with 1 when any fails. Same flags as train.

    
    Examples:
      jitprop check
      jitprop check --dataset digit_images --model cnn
      jitprop check --hidden 2          # too small to overfit one batch: fails
    """
    p = plan(flags.run_config(params))
    click.echo(f"checks of {len(p.model.layers)} layers ({p.model.n_params:,} parameters) on {p.table.source}")
    checks = run_checks(p)
    failed = sum(not c.ok for c in checks)
    if failed:
        click.echo(f"{failed} of {len(checks)} checks failed")
        raise SystemExit(1)
    click.echo(f"all {len(checks)} checks passed")


def explain_run(p, trainer, echo=click.echo):
    """Print the loop of a planned run in the learner's words (its first iteration traced)."""
    X, y = p.train
    for line in explaining.explain(trainer, X, y, p.config["epochs"]):
        echo(line)


@click.command()
@flags.options(*flags.DATA_AND_MODEL, "lr", "schedule", "epochs")
def explain(**params):
    """Explain the training loop with this run's own numbers: rows, batches and epochs as
    iterations, then the first iteration traced: the batch's predictions and loss, each
    layer's gradient from the last layer back to the first, and how far the optimizer moved
    the weights. Nothing is trained. Same flags as train.

    \b
    Examples:
      jitprop explain
      jitprop explain --batch-size 256 --epochs 5
      jitprop explain --dataset digit_images --model cnn
    """
    config = flags.run_config(params)
    flags.check_epochs(config)
    p = plan(config)
    click.echo(f"explain: {len(p.model.layers)} layers ({p.model.n_params:,} parameters) on {p.table.source}")
    explain_run(p, p.trainer())


def _values(text, flag, kind):
    """A comma-separated list of numbers, or a one-line error naming ``flag``."""
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{flag} takes comma-separated {kind.__name__}s, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise ConfigError(f"{flag} takes positive values, got {text!r}")
    return values


@click.command()
@flags.options(*(name for name in flags.DATA_AND_MODEL if name not in ("batch_size", "hidden")))
@click.option("--lr", "lrs", help="Learning rates to try, comma-separated, e.g. 1e-3,1e-2,1e-1.  [default: the optimizer's]")
@click.option("--batch-size", "batch_sizes", help="Batch sizes to try, comma-separated, e.g. 8,32,256.  [default: 32]")
@click.option("--hidden", "hiddens", multiple=True, help="An MLP's hidden widths to try (128,64); repeat the flag for each.")
@click.option("--epochs", "epoch_counts", help="Epoch counts to try, comma-separated.  [default: 20]")
@click.option("--workers", type=int, help="Runs at once.  [default: the CPU count]")
@click.option("--csv", "csv_path", help="Write the table as CSV here (- for stdout).")
@click.option("--json", "json_path", help="Write every run, its curves included, as JSON here (- for stdout).")
@click.option("--plot", "plot_path", help="Write a grid of each run's curves here (PNG, through the jitprop-plot plugin).")
def sweep(lrs, batch_sizes, hiddens, epoch_counts, workers, csv_path, json_path, plot_path, **params):
    """Train every combination of learning rates, batch sizes, hidden widths and epochs on the
    same data and seed, several at once (one per core), and compare them in a table.

    Small batches give noisier, quicker curves and large ones smoother, slower
    ones; a rate too small crawls and one too large jumps or blows up: the
    table and the picture (--plot) show both. Same data and model flags as train.

    \b
    Examples:
      jitprop sweep --lr 1e-3,1e-2,1e-1 --batch-size 8,32,256
      jitprop sweep --hidden 16 --hidden 128,64 --hidden 256,256 --epochs 30 --plot sweep.png
      jitprop sweep --lr 1e-3,3e-3 --csv sweep.csv --json sweep.json
    """
    for path, what in ((csv_path, "CSV"), (json_path, "JSON"), (plot_path, "picture")):
        if path and not (path == "-" and what != "picture"):
            flags.check_writable(path, what)
    if hiddens and params.get("model") not in (None, "mlp"):
        raise ConfigError(f"--hidden shapes the mlp model, not {params['model']!r}")
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be 1 or more, got {workers}")
    grid = {
        "lr": _values(lrs, "--lr", float) if lrs else [],
        "batch_size": _values(batch_sizes, "--batch-size", int) if batch_sizes else [],
        "hidden": [flags.widths(h, "--hidden", "layer widths like 128,64") for h in hiddens],
        "epochs": _values(epoch_counts, "--epochs", int) if epoch_counts else [],
    }
    if not any(grid.values()):
        raise ConfigError("give values to try: --lr, --batch-size, --hidden or --epochs (comma-separated)")
    config = flags.run_config(params)
    if not grid["epochs"]:  # every run trains the run file's: runs that train nothing compare nothing
        flags.check_epochs(config, "the run file's, which every run trains without --epochs", least=1)
    base = plan(config)
    c = base.config
    X, y = base.train

    def build(settings, callbacks):
        model = Sequential.from_config(base.model.config())  # fresh weights, the same for every run
        if "hidden" in settings:
            specs = mlp(base.data.outputs, settings["hidden"], params.get("activation") or "relu", params.get("dropout") or 0.0)
            model = Sequential([api.layer(**spec) for spec in specs], input_shape=base.data.shape, dtype=c["dtype"], seed=c["seed"])
        optimizer = {**c["optimizer"], "lr": settings.get("lr", c["optimizer"].get("lr"))}
        optimizer = {k: v for k, v in optimizer.items() if v is not None}
        config = {**c, "optimizer": optimizer, "batch_size": settings.get("batch_size", c["batch_size"])}
        trainer = dataclasses.replace(base, config=config, model=model).trainer(extra_callbacks=callbacks)
        return trainer, X, y, base.validation, settings.get("epochs", c["epochs"])

    n = len(sweeping.combinations(grid))
    click.echo(f"sweep: {n} runs on {base.table.source} ({len(y)} training rows), seed {c['seed']}")
    caught = {}

    def on_signal(signum, frame):  # set here, not inherited: a shell may start us with SIGINT ignored
        caught["signal"] = signum
        raise KeyboardInterrupt

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        result = sweeping.run_sweep(build, grid, workers)
    except KeyboardInterrupt:
        name, status = flags.stopped_by(caught.get("signal"))
        click.echo(f"{name}: sweep stopped; nothing written", err=True)
        raise SystemExit(status) from None
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    click.echo(f"{n} runs in {result.seconds:.1f} s, {result.workers} at a time")
    click.echo(str(result))
    for path, text in ((csv_path, result.to_csv), (json_path, result.to_json)):
        if path == "-":  # the data on stdout, after the table
            click.echo(text(), nl=False)
        elif path:
            checkpoints.atomic_write(path, lambda f: f.write(text().encode()))
            click.echo(f"wrote {path}")
    if plot_path:
        wrote = _show(result.picture(f"sweep on {base.table.source}"), plot_path)
        if wrote:
            click.echo(wrote)


COMMANDS = (check, explain, lr_find, sweep)
