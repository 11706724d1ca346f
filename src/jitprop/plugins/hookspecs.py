"""Every hook point of jitprop.

Two kinds of hooks live here. *Registration* hooks hand a plugin a
``register`` callback; the plugin calls it with its classes, and the core
checks types and name collisions in one place (``registry.py``). *Lifecycle*
hooks fire while a model trains; their names are Keras's, every one is
optional, and an implementation may accept any subset of the arguments.

A plugin module or object marks its functions with ``@jitprop.hookimpl``.
"""

import pluggy

hookspec = pluggy.HookspecMarker("jitprop")
hookimpl = pluggy.HookimplMarker("jitprop")


# -- registration --------------------------------------------------------


@hookspec
def register_layers(register):
    """Register layer classes: ``register(LayerClass, name=None, aliases=())``."""


@hookspec
def register_losses(register):
    """Register loss classes: ``register(LossClass, name=None, aliases=())``."""


@hookspec
def register_optimizers(register):
    """Register optimizer classes: ``register(OptimizerClass, name=None, aliases=())``."""


@hookspec
def register_callbacks(register):
    """Register callback classes: ``register(CallbackClass, name=None, aliases=())``."""


@hookspec
def register_transforms(register):
    """Register gradient-transform classes: ``register(TransformClass, name=None, aliases=())``."""


@hookspec
def register_schedules(register):
    """Register learning-rate schedule classes: ``register(ScheduleClass, name=None)``."""


@hookspec
def register_datasets(register):
    """Register data sets: ``register(DatasetClass, name=None, aliases=())``."""


@hookspec
def register_commands(cli):
    """Add commands to the ``jitprop`` click group ``cli``."""


@hookspec(firstresult=True)
def draw_picture(picture, path):
    """Draw ``picture`` (a ``jitprop.views.picture.Picture``: panels of curves and marked points)
    into the file ``path``, replacing it whole; return True, or None to leave it to another plugin
    (jitprop renders it as text when none draws)."""


# -- training lifecycle --------------------------------------------------
# ``trainer`` is the running ``jitprop.training.Trainer``: it holds the model,
# loss, optimizer, current epoch and iteration, and ``stop_training``.


@hookspec
def on_train_begin(trainer, logs):
    """Training is about to start its first epoch."""


@hookspec
def on_train_end(trainer, logs):
    """Training has ended, whatever ended it (epochs done, a stop, an interrupt)."""


@hookspec
def on_epoch_begin(trainer, epoch, logs):
    """Epoch ``epoch`` (0-based) is about to start."""


@hookspec
def on_epoch_end(trainer, epoch, logs):
    """Epoch ``epoch`` ended; ``logs`` holds its loss, metrics and validation results."""


@hookspec
def on_train_batch_begin(trainer, batch, logs):
    """Batch ``batch`` of the epoch is about to be trained on (slows training: fires per batch)."""


@hookspec
def on_train_batch_end(trainer, batch, logs):
    """Batch ``batch`` was trained on; ``logs`` holds its ``loss`` and ``size`` (fires per batch)."""


@hookspec
def on_train_chunk_end(trainer, batches_done):
    """A run of batches finished: a few times a second when the epoch runs compiled,
    after every batch otherwise. For progress displays; does not slow training down."""


@hookspec
def on_after_backward(trainer, grads):
    """Gradients of one batch are ready and the optimizer has not moved yet.

    ``grads`` is the model's flat gradient buffer (same layout as
    ``trainer.model.params``); change it in place to clip or average it.
    """
