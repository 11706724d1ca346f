"""The ``jitprop`` command line: train, evaluate, predict, list, plugins, gradcheck
(and install, uninstall, new-plugin from ``manage.py``).

User mistakes end in one line and a non-zero exit (``JITPROP_DEBUG=1``
shows the traceback); files are written atomically, so a failed command
leaves what was there before.
"""

import contextlib
import csv
import difflib
import errno
import io
import json
import os
import signal
import sys
import warnings

import click
import numpy as np
from click.core import ParameterSource
from numba.core.errors import NumbaError

from .. import api, distributed
from .. import gradcheck as gradchecks
from ..backends.python import numba_summary
from ..components import kernel
from ..data import checkpoint as checkpoints
from ..data import runconfig
from ..data.prepare import Standardiser
from ..data.tables import csv_header
from ..errors import ConfigError, DataError, JitpropError
from ..plugins.manager import (
    PluginLoadWarning,
    distribution_of,
    failed_plugins,
    load_plugins,
    plugin_name,
    plugin_problems,
    strict,
)
from ..plugins.registry import entries, tables
from ..runtime import caches, threads
from ..training.trainer import TrainingWarning, evaluate as evaluate_model
from ..version import __version__
from . import flags, manage, views
from .progress import EpochPrinter, ProgressBar
from .run import inputs_for, plan, resume_conflicts, same_component

KINDS = {"layers": "layer", "losses": "loss", "optimizers": "optimizer", "callbacks": "callback",
         "schedules": "schedule", "transforms": "transform", "datasets": "dataset"}  # fmt: skip


class JitpropGroup(click.Group):
    """Turns jitprop's own errors into one-line messages; adds the plugins' commands when first asked.

    Importing this module only defines commands: plugins load, and warnings
    are shown as jitprop shows them, while a command runs.
    """

    plugin_commands_added = False

    def main(self, *args, **kwargs):
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            if distributed.environment_rank() > 0:
                return self._quiet_main(*args, **kwargs)
            if caches.notice:
                click.echo(caches.notice, err=True)
            return super().main(*args, **kwargs)

    def _quiet_main(self, *args, **kwargs):
        """Off rank 0 of an MPI job: rank 0 says what every rank would (the same usage errors, the
        same agreed errors); a rank's own failure in training ends the job through Group.fatal."""
        warnings.simplefilter("ignore")
        try:
            code = super().main(*args, **{**kwargs, "standalone_mode": False})
        except click.ClickException as exc:
            code = exc.exit_code
        except click.exceptions.Exit as exc:
            code = exc.exit_code
        except click.Abort:
            code = 1
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except JitpropError as exc:
            if os.environ.get("JITPROP_DEBUG"):
                raise
            raise click.ClickException(str(exc)) from None

    def _with_plugins(self):
        if not self.plugin_commands_added:
            self.plugin_commands_added = True
            try:
                add_plugin_commands(self)
            except JitpropError as exc:  # strict mode: a broken plugin stops the command line
                raise click.ClickException(str(exc)) from None

    def list_commands(self, ctx):
        self._with_plugins()
        return super().list_commands(ctx)

    def get_command(self, ctx, name):
        self._with_plugins()
        return super().get_command(ctx, name)


@click.group(cls=JitpropGroup)
@click.version_option(__version__, prog_name="jitprop")
@click.pass_context
def cli(ctx):
    """jitprop: train neural networks with Numba-compiled backpropagation.

    \b
    Start with:
      jitprop train                       # an MLP on the built-in digits
      jitprop train --help                # every option
      jitprop list                        # layers, losses, optimizers, ...

    Set JITPROP_DEBUG=1 to see tracebacks.
    """
    if distributed.environment_size() > 1 and ctx.invoked_subcommand != "train":
        raise ConfigError(f"jitprop {ctx.invoked_subcommand} runs in one process: run it without mpiexec"
                          " (train is the data-parallel command)")  # fmt: skip


# -- train -----------------------------------------------------------------


def _run_config(saved):
    """The run configuration a checkpoint was trained with, or a one-line error."""
    config = saved.info.get("config")
    if not config:
        raise ConfigError(
            f"{saved.path} was saved from Python without a run configuration, so the command line cannot resume it;"
            " continue it with jitprop.Trainer.load_state"
        )
    return config


#: The flags a resumed run may give with any value (the rest must give the saved run's, run.RESUMABLE).
MAY_CHANGE = "--epochs, --checkpoint, --callback, --coach, --coach-json, --lr, --on-divergence and --divergence-factor"
#: The flag that sets each run configuration key; the model's keys have several.
FLAG_OF = {"layers": ("model", "hidden", "activation", "dropout"), "transforms": ("transforms",)}


@cli.command()
@flags.options("config", "dataset", "target", "drop", "task", "fill", "normalize", "normalize_target", "input_shape",
               "model", "hidden", "activation", "dropout", "loss", "optimizer", "lr", "schedule", "epochs", "batch_size",
               "validation_split", "seed", "dtype", "device", "on_divergence", "divergence_factor")
@click.option("--checkpoint", help="Save the run here (.npz) at the end and on Ctrl-C.")
@click.option("--resume", help="Continue the run saved in this checkpoint.")
@click.option("--callback", "callbacks", multiple=True, help="Callback NAME[:k=v,...]; repeatable.")
@flags.options("transforms")
@click.option("--coach", "coached", is_flag=True, help="Watch every layer learn (gradients, update/weight, dead ReLUs) and say what to fix.")
@click.option("--coach-json", help="Also write the coach's per-epoch, per-layer records and findings here (JSON).")
@click.option("--check", "sanity", is_flag=True, help="Run jitprop check's sanity checks first; stop if any fails.")
@click.option("--explain", "explained", is_flag=True, help="Explain the loop with this run's numbers first (jitprop explain).")
@click.option("--print-config", is_flag=True, help="Print the resolved run as TOML and exit.")
@click.option("--processes", type=click.IntRange(min=1), help="Train data-parallel on this many processes of this machine (starts mpiexec).")
@click.option("--mpi-timeout", type=click.FloatRange(min=0), default=distributed.TIMEOUT, show_default=True,
              help="Under MPI: abort the job when no training step completes in this many seconds (0: never).")
@click.option("--threads", "thread_count", type=flags.ThreadCount(),
              help="Threads for matrix products and image kernels (also JITPROP_NUM_THREADS), or auto: try one"
                   " and every core as it trains and keep the faster, for a machine other programs keep busy (a"
                   " product may round differently on one thread and two, so such a run is not repeatable to the"
                   " last bit).  [default: one for models whose products are small, else every core]")
@click.pass_context
def train(ctx, config_path, dataset, target, drop, task, fill, normalize, normalize_target, input_shape, model, hidden,
          activation, dropout, loss, optimizer, lr, schedule, epochs, batch_size, validation_split, seed, dtype, device,
          on_divergence, divergence_factor, checkpoint, resume, callbacks, transforms, coached, coach_json, sanity, explained,
          print_config, processes, mpi_timeout, thread_count):  # fmt: skip
    """Train a model and report loss and accuracy per epoch.

    \b
    Examples:
      jitprop train                                   # MLP on the built-in digits
      jitprop train --hidden 256,128 --dropout 0.2 --epochs 30
      jitprop train --dataset digit_images --model cnn     # a CNN on 1x8x8 images
      jitprop train --dataset spirals --optimizer sgd:momentum=0.9 --lr 0.1
      jitprop train --dataset data.csv --target species --checkpoint model.npz
      jitprop train --dataset houses.csv --fill median --drop id --normalize-target
      jitprop train --dataset scores.csv --task regression    # whole numbers, but a quantity
      jitprop train --dataset spirals:n=200,classes=4,noise=0.1
      jitprop train --callback early_stopping:patience=3,restore_best_weights=true
      jitprop train --transform gradient_clipping:max_norm=1
      jitprop train --coach                           # how each layer learns, and what to fix
      jitprop train --check                           # sanity checks first (jitprop check)
      jitprop train --explain                         # the loop in words, its first iteration traced
      jitprop train --print-config > run.toml && jitprop train --config run.toml
      jitprop train --resume model.npz --epochs 40    # continue to 40 epochs in all
      jitprop train --resume model.npz --lr 1e-4      # ... at a lower learning rate
      jitprop train --dataset spirals --resume model.npz   # flags equal to the saved run's are fine
      jitprop train --processes 2                     # data-parallel on 2 processes (MPI)
      mpiexec -n 8 -hosts a,b jitprop train ...       # ... on 8 ranks over two machines

    Ctrl-C stops after the current batch and, with --checkpoint, saves the
    run so --resume continues it exactly. The first line says whether the
    run classifies or regresses, and why; the next, what became of each
    column of the data.
    """
    if processes and processes > 1:
        distributed.launch(processes, _without_processes(sys.argv[1:]))
    if thread_count:
        threads.use(thread_count)
    threads.asked()  # a JITPROP_NUM_THREADS that is no count: one line before anything runs
    group = distributed.world(mpi_timeout)
    if group is None:
        return _train(ctx, None, config_path, epochs, lr, on_divergence, checkpoint, resume, callbacks, coached,
                      coach_json, sanity, explained, print_config)  # fmt: skip
    if not group.root:
        sys.stdout = open(os.devnull, "w")  # rank 0 alone prints
    with group.agreed():  # --device cuda: the Trainer refuses it, once the run is resolved
        if sanity or explained:
            raise ConfigError("--check and --explain run in one process; run them without MPI, then train")
    return _train(ctx, group, config_path, epochs, lr, on_divergence, checkpoint, resume, callbacks, coached, coach_json,
                  sanity, explained, print_config)  # fmt: skip


def _without_processes(args):
    """The command line again without ``--processes N``: what every rank runs."""
    kept, skip = [], False
    for arg in args:
        if skip or arg.startswith("--processes="):
            skip = False
            continue
        skip = arg == "--processes"
        if not skip:
            kept.append(arg)
    return kept


def _read_resumed(group, resume):
    """The checkpoint to resume: read from disk, or under MPI read by rank 0 and sent to every rank
    (the ranks on other machines need not see rank 0's files)."""
    if group is None:
        return checkpoints.load(resume)
    try:
        data, problem = (checkpoints.read(resume), None) if group.root else (None, None)
    except JitpropError as exc:
        data, problem = None, str(exc)
    data, problem = group.broadcast_object((data, problem))
    if problem:
        raise DataError(problem)
    return checkpoints.load(resume, data=data)


def _train(ctx, group, config_path, epochs, lr, on_divergence, checkpoint, resume, callbacks, coached, coach_json,
           sanity, explained, print_config):  # fmt: skip
    """``train`` once its ranks are known (``group``, or None in one process)."""
    root = group is None or group.root
    with group.agreed() if group is not None else contextlib.nullcontext():  # a rank's setup error: every rank stops
        setup = _setup(ctx, group, config_path, epochs, lr, on_divergence, checkpoint, resume, callbacks, coached,
                       coach_json, print_config)  # fmt: skip
    if setup is None:
        return
    p, trainer, path = setup
    total = p.config["epochs"]
    X, y = p.train
    n_val = 0 if p.val_rows is None else len(p.val_rows)
    if group is not None:
        bs = min(p.config["batch_size"], len(y))
        click.echo(f"data-parallel on {group.size} ranks (MPI): each trains {bs // group.size}"
                   f"{'' if bs % group.size == 0 else '-' + str(-(-bs // group.size))} rows of every {bs}-row batch")  # fmt: skip
    click.echo(
        f"training {len(p.model.layers)} layers ({p.model.n_params:,} parameters) on {p.table.source}:"
        f" {len(y)} training rows, {n_val} validation rows; epochs {trainer.epoch + 1}..{total}; {p.notes['task']}"
    )
    if p.notes["columns"]:
        click.echo(p.notes["columns"])
    if p.notes.get("warning") and root:
        click.echo(p.notes["warning"], err=True)
    click.echo(p.model.summary())
    for cb in trainer.callbacks if root else ():  # what a callback that writes a file will do to it
        if callable(getattr(cb, "writes", None)):
            click.echo(cb.writes(trainer))
    if sanity:
        failed = [c for c in views.run_checks(p) if not c.ok]
        if failed:
            raise JitpropError(f"{len(failed)} sanity check(s) failed (above): {failed[0].name}; train without --check to train anyway")
    if explained and trainer.epoch == 0:
        views.explain_run(p, trainer)
    if trainer.epoch >= total:
        click.echo(f"already trained for {trainer.epoch} epochs; ask for more with --epochs")

    caught = {}

    def on_signal(signum, frame):
        if trainer._interrupt_requested:  # a second Ctrl-C: stop at once
            raise KeyboardInterrupt
        caught["signal"] = signum
        trainer.request_interrupt()

    def save():  # rank 0 alone writes
        if root:
            checkpoints.save(path, trainer, state=trainer.end_state)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        trainer.fit(X, y, epochs=total, validation_data=p.validation)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)

    if trainer.interrupted:
        name, status = flags.stopped_by(caught.get("signal"))
        if trainer.end_state is None:  # while compiling: nothing trained, nothing to save
            click.echo(f"{name}: {trainer.stop_reason}; nothing to save", err=True)
            ctx.exit(status)
        if path:
            save()
            click.echo(f"{name}: {trainer.stop_reason}; saved {path}; continue with: jitprop train --resume {path}", err=True)
        else:
            click.echo(f"{name}: {trainer.stop_reason}; nothing saved (give --checkpoint PATH to keep progress)", err=True)
        ctx.exit(status)
    for r in trainer.rollbacks:
        click.echo(f"rolled back epoch {r['epoch']} ({r['reason']} at iteration {r['iteration']});"
                   f" learning rate now {r['lr']:.4g}")  # fmt: skip
    if trainer.divergence is not None:
        where = f"saved {path}" if path else "nothing saved (give --checkpoint PATH to keep it)"
        if path:
            save()
        if getattr(trainer.optimizer, "eps", None) == 0:  # the reason says to set eps: a lower rate would not help
            hint = "train again with eps=1e-8 in --optimizer"
        else:
            hint = "train again with a lower --lr" + ("" if trainer.rollbacks else ", or with --on-divergence rollback")
        raise JitpropError(f"{trainer.stop_reason}; {where}; {hint}")
    if trainer.stop_reason:
        click.echo(trainer.stop_reason)
    final = trainer.history.history
    if hasattr(trainer.history, "coach"):
        views.coach_report(trainer, coach_json)
    if final and trainer.divergence is None:
        click.echo(f"verdict: {trainer.history.verdict()}")
    if final:
        key = "val_accuracy" if "val_accuracy" in final else "val_loss" if "val_loss" in final else None
        key = key or ("accuracy" if "accuracy" in final else "loss")
        units = " (of the standardised target; jitprop evaluate gives it in the target's units)" if (
            p.data.target_scaler is not None and "loss" in key) else ""  # fmt: skip
        click.echo(f"{key.replace('_', ' ').replace('val', 'validation')}: {final[key][-1]:.4f}{units}")
    if path:
        save()
        click.echo(f"saved {path}")


def _setup(ctx, group, config_path, epochs, lr, on_divergence, checkpoint, resume, callbacks, coached, coach_json,
           print_config):  # fmt: skip
    """The run's plan, its trainer and checkpoint path, or None when it only prints its configuration."""
    root = group is None or group.root
    if resume:
        saved = _read_resumed(group, resume)
        config = runconfig.check(_run_config(saved), resume)
        given = {name: value for name, value in ctx.params.items()
                 if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE}  # fmt: skip
        wanted = flags.run_config(given)  # what the flags and the run file ask for
        conflicts = resume_conflicts(config, wanted, saved)
        if conflicts:
            key, was, asked = conflicts[0]
            names = [f"--{n.replace('_', '-')}" for n in FLAG_OF.get(key, (key,)) if n in given]
            flag = names[0] if names else f"{config_path}'s {key!r}"
            raise ConfigError(f"{flag} differs from the run saved in {resume} ({key} {was} there, {asked} here): a resumed"
                              f" run continues with its configuration; only {MAY_CHANGE} may change")  # fmt: skip
        # Saved where it was read from (or --checkpoint), never to the path the run was first saved
        # under (a run file's too): resuming a copy must not overwrite the original.
        config["checkpoint"] = checkpoint or resume
        for key in ("epochs", "divergence_factor"):
            if wanted.get(key) is not None:
                config[key] = wanted[key]
        lr, on_divergence = wanted.get("lr"), wanted.get("on_divergence")  # set on the trainer below
        # A callback the saved run has is not added twice: rerunning its command with --resume is the habit.
        config["callbacks"] = list(config.get("callbacks", []))
        for spec in wanted["callbacks"]:
            if not any(same_component("callback", spec, kept) for kept in config["callbacks"]):
                config["callbacks"].append(spec)
        config = runconfig.check(config, "run")
    else:
        saved = None
        config = flags.run_config(ctx.params)
    flags.check_epochs(config, "the total to train, with --resume too")
    path = config.get("checkpoint")
    if path:  # model_checkpoint with no filepath saves where --checkpoint does, not to ./checkpoint.npz
        config["callbacks"] = [{**spec, "filepath": path} if spec.get("name") == "model_checkpoint" and "filepath" not in spec
                               else spec for spec in config["callbacks"]]  # fmt: skip
    if coach_json and root:
        flags.check_writable(coach_json, "coach JSON")
    if coached or coach_json:
        spec = {"name": "coach", **({"path": coach_json} if coach_json else {})}
        config["callbacks"] = [c for c in config["callbacks"] if c.get("name") != "coach"] + [spec]

    p = plan(config, saved)
    if print_config:
        click.echo(runconfig.dumps(p.config), nl=False)
        return None
    path = p.config.get("checkpoint")
    if path and root:
        flags.check_writable(path, "checkpoint")

    total = p.config["epochs"]
    reporters = [ProgressBar(total)] if sys.stdout.isatty() else []
    reporters.append(EpochPrinter(total))
    trainer = p.trainer(extra_callbacks=reporters if root else (), group=group)
    if saved is not None:
        trainer.load_state(*saved.trainer_state(p.model))
        if lr is not None:
            trainer.set_learning_rate(lr)
        if on_divergence is not None:
            trainer.on_divergence = on_divergence
    return p, trainer, path


@cli.command()
@flags.options("config", "dataset", "target", "drop", "task", "fill", "input_shape", "model", "hidden", "activation", "dropout")
def summary(**params):
    """Print the model a run trains, as a table: each layer, its output shape, its parameters.

    \b
    Examples:
      jitprop summary --config run.toml
      jitprop summary --dataset digit_images --model cnn
      jitprop summary --dataset pixels.csv --input-shape 1,28,28 --model lenet
    """
    p = plan(flags.run_config(params))
    click.echo(f"{p.table.source}: {p.data.X.shape[0]} rows of {'x'.join(map(str, p.data.shape))}")
    click.echo(p.model.summary())


# -- evaluate / predict ---------------------------------------------------


@cli.command()
@click.argument("checkpoint_path", metavar="CHECKPOINT")
@click.option("--dataset", help="Data set name or .csv / .npz file.  [default: the run's own validation rows]")
@click.option("--target", help="CSV column holding the targets.  [default: the run's target column if the file has it, else the last]")
@click.option("--batch-size", type=int, default=256, show_default=True)
def evaluate(checkpoint_path, dataset, target, batch_size):
    """Print the loss and metrics of a saved model on data.

    \b
    Examples:
      jitprop evaluate model.npz                      # its validation rows
      jitprop evaluate model.npz --dataset test.csv --target species
    """
    saved = checkpoints.load(checkpoint_path)
    if dataset is None and not saved.info.get("config"):
        raise ConfigError(f"{checkpoint_path} was saved from Python without a run configuration; name the data with --dataset")
    config = dict(saved.info.get("config") or {"validation_split": 0.0, "loss": saved.meta["loss"]})
    if dataset:
        config.pop("target", None)
        config.update(dataset=dataset, validation_split=0.0)
        trained_on = saved.info.get("target_name")
        if target is None and trained_on and trained_on in csv_header(dataset):
            target = trained_on  # a test file like the training file, its columns in any order
        if target:
            config["target"] = target
    elif target:
        raise ConfigError("--target needs --dataset")
    p = plan(runconfig.check(config, checkpoint_path), saved)
    if p.notes.get("warning"):
        click.echo(p.notes["warning"], err=True)
    rows = p.val_rows if p.val_rows is not None else p.train_rows
    where = f"{len(rows)} validation rows of {p.table.source}" if p.val_rows is not None else f"{len(rows)} rows of {p.table.source}"
    result = evaluate_model(p.model, p.X[rows], p.y[rows], loss=p.loss, batch_size=batch_size)
    if p.data.target_scaler is not None:  # standardised in training: the loss in the target's own units first
        result = {"loss": loss_in_target_units(p, rows), "standardised_loss": result["loss"]}
    click.echo("  ".join(f"{k} {v:.4f}" for k, v in result.items()) + f"  ({where})")


def loss_in_target_units(p, rows):
    """The loss of a run trained on a standardised target, on ``rows``, its predictions and the targets
    both in the target's own units (float64)."""
    predictions = p.data.in_target_units(p.model.predict(p.X[rows]))
    truth = np.ascontiguousarray(p.data.in_target_units(p.y[rows]))
    scratch = np.zeros_like(predictions)
    h = np.ascontiguousarray(p.loss.hyper(), dtype=np.float64)
    return float(kernel(p.loss, "kernel")(np.ascontiguousarray(predictions), truth, scratch, h))


@cli.command()
@click.argument("checkpoint_path", metavar="CHECKPOINT")
@click.argument("input_path", metavar="INPUT")
@click.option("-o", "--output", default="-", show_default=True, help="CSV file to write ('-' for standard output).")
def predict(checkpoint_path, input_path, output):
    """Write the model's prediction for every row of INPUT (.csv, .npz or a data set name).

    Classifiers write the predicted label (as named in the training data)
    and one probability column per class; regressors write the values (in
    the target's units, also when training standardised it). Text columns
    are one-hot encoded and missing cells filled as in training; a category
    training never saw is all zeros, and one warning line counts them.

    \b
    Examples:
      jitprop predict model.npz new_rows.csv -o predictions.csv
      jitprop predict model.npz digits | head
    """
    if output != "-":
        flags.check_writable(output, "output")
    saved = checkpoints.load(checkpoint_path)
    model = saved.build_model()
    loss = api.loss(**saved.meta["loss"])
    table, X, warning = inputs_for(saved, model, loss, input_path)
    if warning:
        click.echo(warning, err=True)
    out = model.predict(X)
    target_scaler = Standardiser.saved(saved, "target")
    if target_scaler is not None:
        out = target_scaler.inverse(np.asarray(out, dtype=np.float64))
    info = saved.info
    target = info.get("target_name") or "y"
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if loss.target == "class":
        labels = info.get("labels") or [str(i) for i in range(out.shape[1])]
        probs = loss.probabilities(out)
        writer.writerow([target, *(f"p_{label}" for label in labels)])
        for row in probs:
            writer.writerow([labels[int(row.argmax())], *(f"{v:.6g}" for v in row)])
    elif loss.target == "binary":
        probs = loss.probabilities(out)
        names = [target] if out.shape[1] == 1 else [f"{target}_{j}" for j in range(out.shape[1])]
        writer.writerow([*names, *(f"p_{n}" for n in names)])
        for row in probs:
            writer.writerow([*(int(v >= 0.5) for v in row), *(f"{v:.6g}" for v in row)])
    else:
        writer.writerow([target] if out.shape[1] == 1 else [f"{target}_{j}" for j in range(out.shape[1])])
        for row in out:
            writer.writerow([f"{v:.8g}" for v in row])
    text = buffer.getvalue()
    if output == "-":
        click.echo(text, nl=False)
    else:
        checkpoints.atomic_write(output, lambda f: f.write(text.encode()))
        click.echo(f"wrote {len(out)} predictions to {output}", err=True)


# -- inspecting what is installed ------------------------------------------


@cli.command("list")
@click.argument("kind", required=False, type=click.Choice(list(KINDS)))
def list_(kind):
    """Show every registered name, the plugin that gave it, and what it is.

    \b
    Examples:
      jitprop list
      jitprop list losses
    """
    for plural in [kind] if kind else KINDS:
        rows = entries(KINDS[plural])
        click.echo(f"{plural}:")
        width = max((len(e.name) for e in rows), default=0)
        pwidth = max((len(e.plugin) for e in rows), default=0)
        for e in rows:
            aliases = f" (also: {', '.join(e.aliases)})" if e.aliases else ""
            click.echo(f"  {e.name:<{width}}  {e.plugin:<{pwidth}}  {e.doc}{aliases}")
        if not kind:
            click.echo("")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def plugins(as_json):
    """List loaded plugins with their version and the hooks each implements.

    \b
    Examples:
      jitprop plugins
      jitprop plugins --json
    """
    pm = load_plugins()
    tables()  # registering everything finds the registrations that are skipped (a name taken twice)
    rows = []
    for plugin in pm.get_plugins():
        dist, version = distribution_of(plugin)
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [])
        name = plugin_name(plugin)
        rows.append({"name": name, "package": dist, "version": version, "hooks": hooks,
                     "problems": plugin_problems.get(name, [])})  # fmt: skip
    rows.sort(key=lambda r: (not r["name"].startswith("jitprop."), r["name"]))
    for name, reason in sorted(failed_plugins.items()):
        rows.append({"name": name, "package": None, "version": None, "hooks": [], "error": reason, "problems": []})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        version = f" {r['package']} {r['version']}" if r["version"] else ""
        status = f"  FAILED: {r['error']}" if r.get("error") else f"  hooks: {', '.join(r['hooks'])}"
        click.echo(f"{r['name']}{version}{status}")
        for problem in r.get("problems", []):
            click.echo(f"  problem: {problem}")


@cli.command()
@click.argument("names", nargs=-1)
@click.option("--tolerance", type=float, default=gradchecks.TOLERANCE, show_default=True, help="Largest relative error that passes.")
@click.option("--seed", type=int, default=0, show_default=True)
def gradcheck(names, tolerance, seed):
    """Check layer and loss gradients against float64 finite differences.

    With no NAME, checks every registered layer and loss. NAME may carry
    options, NAME:k=v,... as for train. Exits with 1 when any relative error
    exceeds the tolerance.

    \b
    Examples:
      jitprop gradcheck
      jitprop gradcheck dense huber
      jitprop gradcheck leaky_relu:negative_slope=0.2 huber:delta=0.5
    """
    todo = []
    known = {k: {n for e in entries(k) for n in (e.name, *e.aliases)} for k in ("layer", "loss")}
    for text in names:
        spec = runconfig.parse_spec(text)
        name = spec.pop("name")
        kinds = [k for k in ("layer", "loss") if name in known[k]]
        if not kinds:
            close = difflib.get_close_matches(name, known["layer"] | known["loss"], n=3)
            hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else "; see jitprop list layers / losses"
            raise ConfigError(f"unknown layer or loss {name!r}{hint}")
        for kind in kinds:  # built here, so options it refuses end the command before any output
            make = api.layer if kind == "layer" else api.loss
            todo.append((kind, text, make(name, **spec) if spec else name))
    if not names:
        todo = [("layer", e.name, e.name) for e in entries("layer")] + [("loss", e.name, e.name) for e in entries("loss")]
    failures = 0
    click.echo(f"{'kind':<6} {'name':<24} {'gradient':<14} {'rel. error':>11}  result")
    for kind, shown, component in todo:
        try:
            check = gradchecks.check_layer if kind == "layer" else gradchecks.check_loss
            errors = check(component, seed=seed)
        except NumbaError as exc:  # a plugin's kernel that does not compile: Numba's reason, as train gives it
            failures += 1
            click.echo(f"{kind:<6} {shown:<24} {'-':<14} {'-':>11}  ERROR its kernel does not compile: {numba_summary(exc)}")
            continue
        except Exception as exc:  # a plugin's broken kernel is reported, not raised
            failures += 1
            message = f"{type(exc).__name__}: {exc}".splitlines()[0]
            click.echo(f"{kind:<6} {shown:<24} {'-':<14} {'-':>11}  ERROR {message}")
            continue
        for part, err in errors.items():
            ok = err < tolerance
            failures += not ok
            click.echo(f"{kind:<6} {shown:<24} {part:<14} {err:>11.2e}  {'ok' if ok else 'FAIL'}")
    if failures:
        click.echo(f"{failures} gradient check(s) failed (tolerance {tolerance:g})")
        sys.exit(1)
    click.echo(f"all {len(todo)} checked: ok")


def add_plugin_commands(group=cli):
    """Let every plugin add commands (``register_commands(cli)``); a failing one is reported, not fatal
    (a JitpropError in strict mode)."""
    for impl in load_plugins().hook.register_commands.get_hookimpls():
        try:
            impl.function(group)
        except Exception as exc:
            message = f"plugin {impl.plugin_name!r} failed to add its commands: {type(exc).__name__}: {exc}".splitlines()[0]
            if strict():
                raise JitpropError(f"{message} (JITPROP_STRICT_PLUGINS is set)") from None
            click.echo(f"jitprop: {message}", err=True)


#: Failures to write standard output that end a command in one line (a closed pipe: in none).
OUTPUT_ERRORS = {errno.EPIPE, errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO}


def main():
    """The ``jitprop`` command. Output that cannot be written ends it as Unix tools end: quietly
    for a closed pipe (``jitprop list | head -1``), in one line for a full disk (``> /dev/full``)."""
    try:
        try:
            cli()
        finally:
            sys.stdout.flush()  # buffered output fails here, not in the interpreter's exit
    except OSError as exc:
        if exc.errno not in OUTPUT_ERRORS:
            raise
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # what is still buffered goes nowhere
        if exc.errno != errno.EPIPE:
            click.echo(f"Error: cannot write the output: {exc.strerror or exc}", err=True)
        sys.exit(1)


def _show_warning(message, category, filename, lineno, file=None, line=None, _default=warnings.showwarning):
    """Plugin problems and doubtful settings as the one line they are; other warnings as Python shows them."""
    if issubclass(category, (PluginLoadWarning, TrainingWarning)):
        click.echo(str(message), err=True)
    else:
        _default(message, category, filename, lineno, file, line)


for command in manage.COMMANDS + views.COMMANDS:
    cli.add_command(command)
