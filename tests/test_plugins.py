"""Plugins: built-ins registered through the hooks, third-party ones through entry points."""

import textwrap
import warnings
from importlib import metadata

import numpy as np
import pluggy
import pytest
from numba import njit

import jitprop
import jitprop.plugins as plugins
from jitprop import gradcheck
from jitprop.registry import entries, lookup


@njit(cache=True)
def huber_kernel(pred, y, grad, h):
    delta = h[0]
    n, k = pred.shape
    total = 0.0
    for i in range(n):
        for j in range(k):
            d = pred[i, j] - y[i, j]
            if abs(d) <= delta:
                total += 0.5 * d * d
                grad[i, j] = d / (n * k)
            else:
                total += delta * (abs(d) - 0.5 * delta)
                grad[i, j] = delta * np.sign(d) / (n * k)
    return total / (n * k)


class Huber(jitprop.Loss):
    """Huber loss: squared near zero, linear beyond delta (torch.nn.HuberLoss)."""

    name = "huber"
    target = "regression"
    kernel = staticmethod(huber_kernel)

    def __init__(self, delta=1.0):
        self.delta = delta

    def hyper(self):
        return np.array([self.delta])


class HuberPlugin:
    @jitprop.hookimpl
    def register_losses(self, register):
        register(Huber)


def test_builtins_are_registered_through_the_same_hooks():
    pm = plugins.load_plugins()
    names = {pm.get_name(p) for p in pm.get_plugins()}
    assert set(plugins.DEFAULT_PLUGINS) <= names
    assert lookup("layer", "dense").plugin == "jitprop.default_plugins.layers"
    assert lookup("loss", "cross_entropy").plugin == "jitprop.default_plugins.losses"
    assert lookup("optimizer", "adamw").plugin == "jitprop.default_plugins.optimizers"
    assert lookup("callback", "early_stopping").plugin == "jitprop.default_plugins.callbacks"
    assert {e.name for e in entries("callback")} >= {"history", "early_stopping", "terminate_on_nan"}


def test_a_custom_loss_plugin_is_used_by_fit_by_name(register_plugin):
    with pytest.raises(jitprop.ConfigError, match="unknown loss 'huber'"):
        jitprop.loss("huber")
    register_plugin(HuberPlugin(), name="huber-plugin")
    assert lookup("loss", "huber").plugin == "huber-plugin"
    assert gradcheck.check_loss(jitprop.loss("huber", delta=0.5))["pred"] < 1e-6
    rng = np.random.default_rng(0)
    X = rng.normal(size=(100, 3))
    y = X @ np.array([1.0, -2.0, 0.5]) + 0.1
    model = jitprop.Sequential([jitprop.layer("dense", units=1)], input_dim=3)
    h = jitprop.fit(model, X, y, loss="huber", optimizer=jitprop.optimizer("adam", lr=0.05), epochs=40)
    assert h.history["loss"][-1] < 0.05


def test_a_registered_block_leaves_nothing_behind_even_when_it_fails():
    """What the register_plugin fixture and jitprop.testing.registered promise, checked on its own:
    the plugin is gone after the block, whatever ended it."""
    from jitprop.testing import registered

    plugin = HuberPlugin()
    with pytest.raises(RuntimeError, match="inside the block"):
        with registered(plugin, name="huber-for-a-block"):
            assert lookup("loss", "huber").plugin == "huber-for-a-block"
            raise RuntimeError("inside the block")
    assert not plugins.pm.is_registered(plugin)
    with pytest.raises(jitprop.ConfigError, match="unknown loss 'huber'"):
        jitprop.loss("huber")


def test_a_name_registered_twice_names_both_plugins_and_the_first_stands(register_plugin, monkeypatch):
    class Clash:
        @jitprop.hookimpl
        def register_losses(self, register):
            register(Huber, name="mse")
            register(Huber)

    register_plugin(Clash(), name="clashing-plugin")
    with pytest.warns(plugins.PluginLoadWarning, match="'mse' is registered twice: by plugin 'jitprop.default_plugins.losses' and by plugin 'clashing-plugin'; skipped"):
        assert lookup("loss", "mse").plugin == "jitprop.default_plugins.losses"  # the built-in stands
    assert lookup("loss", "huber").plugin == "clashing-plugin"  # and the plugin's other names work
    assert any("registered twice" in p for p in plugins.plugin_problems["clashing-plugin"])
    monkeypatch.setenv("JITPROP_STRICT_PLUGINS", "1")
    monkeypatch.setattr(jitprop.registry, "_tables_key", None)
    with pytest.raises(jitprop.PluginError, match="registered twice.*JITPROP_STRICT_PLUGINS is set"):
        jitprop.loss("mse")


def test_registering_the_wrong_kind_of_class_is_skipped_in_one_line(register_plugin):
    class Wrong:
        @jitprop.hookimpl
        def register_layers(self, register):
            register(Huber)

    register_plugin(Wrong(), name="wrong-plugin")
    with pytest.warns(plugins.PluginLoadWarning, match="registered Huber as a layer, but it does not subclass jitprop.Layer"):
        jitprop.layer("relu")


def test_a_misspelled_hook_is_an_error():
    class Misspelled:
        @jitprop.hookimpl
        def register_lossess(self, register):
            pass

    with pytest.raises(jitprop.PluginError, match="register_lossess"):
        plugins.register(Misspelled(), name="misspelled")
    assert plugins.pm.get_plugin("misspelled") is None


def test_a_plugin_with_lifecycle_hooks_fires_in_every_fit(register_plugin):
    class Counter:
        epochs = 0

        @jitprop.hookimpl
        def on_epoch_end(self):
            Counter.epochs += 1

    register_plugin(Counter(), name="counter")
    model = jitprop.Sequential([jitprop.layer("dense", units=1)], input_dim=2)
    jitprop.fit(model, np.ones((4, 2)), np.ones(4), epochs=3)
    assert Counter.epochs == 3


@pytest.fixture
def fresh_manager(monkeypatch, tmp_path):
    """A new plugin manager and three installed entry points: one good, one that raises, one misspelled."""
    (tmp_path / "jp_good.py").write_text(textwrap.dedent('''
        import jitprop

        class Cube(jitprop.Layer):
            """x cubed"""
            name = "cube"

        @jitprop.hookimpl
        def register_layers(register):
            register(Cube)
    '''))
    (tmp_path / "jp_broken.py").write_text("raise RuntimeError('this package is broken')\n")
    (tmp_path / "jp_typo.py").write_text(textwrap.dedent('''
        import jitprop

        @jitprop.hookimpl
        def register_layer(register):
            pass
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    eps = [metadata.EntryPoint(name=n, value=f"jp_{n}", group="jitprop") for n in ("broken", "good", "typo")]
    monkeypatch.setattr(plugins.manager.metadata, "entry_points", lambda group: eps if group == "jitprop" else [])
    pm = pluggy.PluginManager("jitprop")
    pm.add_hookspecs(jitprop.plugins.hookspecs)
    monkeypatch.setattr(plugins.manager, "pm", pm)
    monkeypatch.setattr(plugins.manager, "_loaded", False)
    monkeypatch.setattr(plugins.manager, "failed_plugins", {})
    return pm


def test_a_broken_entry_point_is_reported_in_one_line_and_the_rest_load(fresh_manager, monkeypatch):
    monkeypatch.delenv("JITPROP_LOAD_PLUGINS")
    with pytest.warns(plugins.PluginLoadWarning) as caught:
        plugins.load_plugins()
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2 and all("\n" not in m for m in messages)
    assert "plugin 'broken' (jp_broken) failed to load and was skipped: RuntimeError: this package is broken" in messages[0]
    assert "'typo'" in messages[1] and "register_layer" in messages[1]
    assert set(plugins.manager.failed_plugins) == {"broken", "typo"}
    assert lookup("layer", "cube").plugin == "good"
    assert lookup("layer", "dense").plugin == "jitprop.default_plugins.layers"


def test_jitprop_load_plugins_limits_what_loads(fresh_manager, monkeypatch):
    monkeypatch.setenv("JITPROP_LOAD_PLUGINS", "good")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plugins.load_plugins()
    assert lookup("layer", "cube").plugin == "good"
    assert not plugins.manager.failed_plugins


def test_strict_mode_turns_a_broken_plugin_into_an_error(fresh_manager, monkeypatch):
    monkeypatch.delenv("JITPROP_LOAD_PLUGINS")
    monkeypatch.setenv("JITPROP_STRICT_PLUGINS", "1")
    with pytest.raises(jitprop.PluginError, match=r"plugin 'broken' \(jp_broken\) failed to load.*JITPROP_STRICT_PLUGINS is set"):
        plugins.load_plugins()


BAD_KERNEL_PLUGIN = '''
import jitprop
from numba import njit


@njit(cache=False)
def bad_loss_kernel(pred, y, grad, h):
    return pred.no_such_attribute + 1.0


class BadLoss(jitprop.Loss):
    """A loss whose kernel does not type-check."""

    name = "bad_loss"
    kernel = staticmethod(bad_loss_kernel)


@jitprop.hookimpl
def register_losses(register):
    register(BadLoss)
'''


@pytest.mark.parametrize("compiled", [True, False])
def test_a_kernel_that_does_not_compile_is_one_line_naming_its_plugin(register_plugin, tmp_path, monkeypatch, compiled):
    (tmp_path / "jp_badkernel.py").write_text(BAD_KERNEL_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    register_plugin(importlib.import_module("jp_badkernel"), name="badkernel")
    model = jitprop.Sequential([jitprop.layer("dense", units=2)], input_dim=3)
    trainer = jitprop.Trainer(model, "bad_loss")
    trainer.compiled = compiled
    before = model.params.copy()
    with pytest.raises(jitprop.PluginError) as caught:
        trainer.fit(np.ones((8, 3)), np.ones((8, 2)), epochs=1)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("loss 'bad_loss' from plugin 'badkernel': its kernel does not compile: Unknown attribute 'no_such_attribute'")
    assert "jp_badkernel.py, line 8" in message
    assert np.array_equal(model.params, before)
    jitprop.fit(model, np.ones((8, 3)), np.ones((8, 2)), loss="mse", epochs=1)  # the rest goes on working


def test_testing_helpers_register_for_a_block_and_shrink_grids():
    from jitprop import cuda_launch
    from jitprop.testing import registered, tiny_cuda_grids

    class Plugin:
        @jitprop.hookimpl
        def register_losses(self, register):
            register(Huber)

    with registered(Plugin(), name="helper-test"):
        assert lookup("loss", "huber").plugin == "helper-test"
    with pytest.raises(jitprop.ConfigError):
        jitprop.loss("huber")
    with tiny_cuda_grids():
        assert cuda_launch.grid_1d(100) == (3, 8)
    assert cuda_launch.grid_1d(100) == (1, 256)


def test_the_registry_follows_a_new_plugin_that_reuses_a_freed_ones_id():
    class Reused:
        def __init__(self, loss_name):
            self.loss_name = loss_name

        @jitprop.hookimpl
        def register_losses(self, register):
            register(type("Renamed", (Huber,), {"name": self.loss_name}))

    for i in range(20):  # CPython soon hands a new object the id of one just freed
        plugin = Reused(f"reused_{i}")
        plugins.register(plugin, name="reused")
        try:
            assert lookup("loss", f"reused_{i}").plugin == "reused"
        finally:
            plugins.unregister(plugin)
        del plugin


def test_a_function_named_like_a_hook_but_not_marked_is_reported_naming_it(register_plugin, monkeypatch):
    import types

    plugin = types.ModuleType("forgot_the_marker")

    def register_losses(register):  # no @jitprop.hookimpl: pluggy would ignore it
        pass

    plugin.register_losses = register_losses
    plugin.hookimpl = jitprop.hookimpl  # a plugin module holding the marker itself is fine
    with pytest.warns(plugins.PluginLoadWarning, match=r"plugin 'forgot-marker': register_losses is named like a hook"
                      r" but not marked @jitprop.hookimpl, so it never runs"):
        register_plugin(plugin, name="forgot-marker")
    other = types.ModuleType("forgot_again")
    other.on_epoch_end = lambda trainer, epoch, logs: None
    monkeypatch.setenv("JITPROP_STRICT_PLUGINS", "1")
    with pytest.raises(jitprop.PluginError, match="on_epoch_end is named like a hook"):
        register_plugin(other, name="forgot-again")
