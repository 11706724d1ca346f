"""MLPClassifier and MLPRegressor: scikit-learn's estimators, trained by jitprop's compiled step.

What follows scikit-learn (``sklearn.neural_network``) and what does not:

- The parameters keep its names and defaults. ``alpha`` is L2 on the weights
  alone, as there: the gradient gains ``alpha / batch_rows * W`` (the
  ``weight_decay`` transform with ``decay_bias=false``, its rate fixed from
  the full batch size, where scikit-learn divides a smaller last batch's by
  its own rows).
- Training stops as there: after ``max_iter`` epochs, or once the training
  loss (with ``early_stopping``, the validation score: accuracy or R^2 on a
  held-out ``validation_fraction``, stratified for classes) has not improved
  by ``tol`` for more than ``n_iter_no_change`` epochs; early stopping keeps
  the best epoch's weights. ``learning_rate="adaptive"`` (sgd's alone, as there)
  divides the rate by 5 instead of stopping, while it is above 1e-6.
- Weights start Glorot-uniform as there (bound sqrt(2 / (fan_in + fan_out))
  before a logistic activation); biases start at zero, not uniform.
- The losses are jitprop's: cross-entropy on softmax logits, binary
  cross-entropy on logits (binary and multilabel targets), and mean squared
  error, where scikit-learn halves it; ``loss_curve_`` holds that loss plus the
  L2 penalty alpha / (2 * batch_rows) * sum(W^2) at each epoch's end.
- ``solver="lbfgs"``, ``learning_rate="invscaling"``, sparse inputs and
  ``sample_weight`` are not supported (refused in one line).

jitprop's own parameters: ``layers`` (the hidden stack as layer names or
specs, replacing ``hidden_layer_sizes`` and ``activation``; the output
layer is added to fit the targets), ``loss``, ``optimizer`` (replacing
``solver`` and its options), ``lr_schedule``, ``transforms``,
``callbacks``, ``device`` ("cpu" or "cuda") and ``dtype``.
"""

import copy
import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets, type_of_target, unique_labels
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from .. import api
from ..contracts.layers import Layer
from ..data.runconfig import parse_spec
from ..model.sequential import Sequential
from ..plugins.hookspecs import hookimpl
from ..training.trainer import Trainer

#: scikit-learn's activation names, as jitprop's layers (identity: none).
ACTIVATIONS = {"identity": None, "logistic": "sigmoid", "tanh": "tanh", "relu": "relu"}
SOLVERS = ("adam", "sgd")
LEARNING_RATES = ("constant", "adaptive")
#: ``learning_rate="adaptive"``: the rate's divisor after a plateau, and where it gives up (scikit-learn's).
ADAPTIVE_FACTOR, ADAPTIVE_MIN = 5.0, 1e-6


class _Stopping:
    """scikit-learn's stopping rule, after every epoch: ``loss_curve_``, the no-improvement count,
    the validation score, the best weights, ``learning_rate="adaptive"``."""

    def __init__(self, estimator):
        self.estimator = estimator
        self.penalty, self.validation, self.incremental = None, None, False

    @hookimpl
    def on_epoch_end(self, trainer, epoch, logs):
        est = self.estimator
        loss = logs["loss"] + self.penalty(trainer.model)
        est.loss_curve_.append(loss)
        est.loss_ = loss
        est.n_iter_ += 1
        est.t_ += est._rows
        if est.verbose:
            print(f"Iteration {est.n_iter_}, loss = {loss:.8f}")
        if self.validation is not None:
            score = est._score_rows(*self.validation)
            est.validation_scores_.append(score)
            if est.verbose:
                print(f"Validation score: {score:f}")
            improved = score >= est.best_validation_score_ + est.tol
            if score > est.best_validation_score_:
                est.best_validation_score_ = score
                est._best_params = trainer.model.params.copy()
        else:  # partial_fit of an early-stopping estimator has no validation rows: the training loss, as there
            best = np.inf if est.best_loss_ is None else est.best_loss_
            improved = loss <= best - est.tol
            est.best_loss_ = min(best, loss)
        est._no_improvement_count = 0 if improved else est._no_improvement_count + 1
        if self.incremental or est._no_improvement_count <= est.n_iter_no_change:
            return
        what = "Validation score" if self.validation is not None else "Training loss"
        if est.learning_rate == "adaptive" and est.solver == "sgd" and trainer.optimizer.lr > ADAPTIVE_MIN:
            trainer.optimizer.lr /= ADAPTIVE_FACTOR
            est._no_improvement_count = 0
            if est.verbose:
                print(f"Setting learning rate to {trainer.optimizer.lr:f}")
            return
        if est.verbose:
            print(f"{what} did not improve more than tol={est.tol} for {est.n_iter_no_change} consecutive epochs. Stopping.")
        trainer.stop_training = True
        est._converged = True


class _MLP(BaseEstimator):
    """What the classifier and the regressor share: parameters, the model, the trainer, the loop."""

    def __init__(
        self,
        hidden_layer_sizes=(100,),
        activation="relu",
        *,
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate="constant",
        learning_rate_init=0.001,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        warm_start=False,
        momentum=0.9,
        nesterovs_momentum=True,
        early_stopping=False,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
        layers=None,
        loss=None,
        optimizer=None,
        lr_schedule=None,
        transforms=(),
        callbacks=(),
        device="cpu",
        dtype="float32",
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.layers = layers
        self.loss = loss
        self.optimizer = optimizer
        self.lr_schedule = lr_schedule
        self.transforms = transforms
        self.callbacks = callbacks
        self.device = device
        self.dtype = dtype

    # -- fitting ---------------------------------------------------------

    def fit(self, X, y):
        """Train on (X, y) for up to ``max_iter`` epochs (continuing from the last fit with ``warm_start``)."""
        return self._fit(X, y, incremental=False)

    def _fit(self, X, y, incremental):
        self._check_parameters()
        keep = hasattr(self, "model_") and (incremental or self.warm_start)
        X, y = validate_data(self, X, y, reset=not keep, multi_output=True, dtype=(np.float64, np.float32),
                             y_numeric=self._y_numeric)  # fmt: skip
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        y = self._encode_targets(y, keep, incremental)
        X = np.ascontiguousarray(X, dtype=self.dtype)
        if not keep:  # the seed of the weights, the shuffling and the validation split
            self._seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        validation = None
        if self.early_stopping and not incremental:
            X, validation, y = self._hold_out(X, y)
        if not keep:
            self._start(X, y)
        trainer = self._trainer_()
        self._rows = X.shape[0]
        trainer.batch_size = min(self._batch_rows(X.shape[0]), X.shape[0])
        self._decay.rate = float(self.alpha) / trainer.batch_size  # scikit-learn's alpha / batch rows
        trainer.transform_h[0] = np.ascontiguousarray(self._decay.hyper(), dtype=np.float64)
        self._no_improvement_count = 0
        self._converged = False
        stopping = self._stopping
        stopping.penalty, stopping.validation, stopping.incremental = self._penalty(trainer.batch_size), validation, incremental
        trainer.fit(X, self._train_targets(y), epochs=trainer.epoch + (1 if incremental else self.max_iter))
        if trainer.divergence is not None:
            raise ValueError(f"training diverged: {trainer.stop_reason}; lower learning_rate_init or scale the inputs")
        if validation is not None and self._best_params is not None:
            self.model_.params[...] = self._best_params  # early stopping keeps the best epoch's weights
        if not incremental and not self._converged and self.max_iter > 0:
            warnings.warn(f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached and the optimization"
                          " hasn't converged yet.", ConvergenceWarning, stacklevel=3)  # fmt: skip
        return self

    def _check_parameters(self):
        def bad(name, expected):
            raise ValueError(f"{type(self).__name__}: {name} must be {expected}, got {getattr(self, name)!r}")

        if self.optimizer is None and self.solver not in SOLVERS:
            bad("solver", "'adam' or 'sgd' (lbfgs is not supported; optimizer= takes any jitprop optimizer)")
        if self.layers is None:
            if self.activation not in ACTIVATIONS:
                bad("activation", f"one of {', '.join(ACTIVATIONS)}")
            sizes = self.hidden_layer_sizes
            sizes = [sizes] if np.isscalar(sizes) else list(sizes)
            if not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s > 0 for s in sizes):
                bad("hidden_layer_sizes", "positive whole numbers")
        if self.learning_rate not in LEARNING_RATES:
            bad("learning_rate", "'constant' or 'adaptive' (invscaling is not supported; lr_schedule= takes jitprop's schedules)")
        if not (isinstance(self.max_iter, (int, np.integer)) and self.max_iter >= 1):
            bad("max_iter", "a whole number >= 1")
        if not (isinstance(self.n_iter_no_change, (int, np.integer)) and self.n_iter_no_change >= 1):
            bad("n_iter_no_change", "a whole number >= 1")
        if self.batch_size != "auto" and not (isinstance(self.batch_size, (int, np.integer)) and self.batch_size >= 1):
            bad("batch_size", "'auto' or a whole number >= 1")
        for name, low in (("alpha", 0.0), ("tol", 0.0)):
            if not (np.isscalar(getattr(self, name)) and getattr(self, name) >= low):
                bad(name, f"a number >= {low}")
        if not (np.isscalar(self.learning_rate_init) and self.learning_rate_init > 0):
            bad("learning_rate_init", "a number > 0")
        if not (0 < self.validation_fraction < 1):
            bad("validation_fraction", "between 0 and 1")

    def _batch_rows(self, n):
        """scikit-learn's ``"auto"``: min(200, rows)."""
        return min(200, n) if self.batch_size == "auto" else int(self.batch_size)

    def _hold_out(self, X, y):
        """(training X, (validation X, validation targets), training targets): a seeded, for classes stratified, split."""
        stratify = y if self._stratify(y) else None
        seed = self._seed + 1
        try:
            Xt, Xv, yt, yv = train_test_split(X, y, test_size=self.validation_fraction, random_state=seed, stratify=stratify)
        except ValueError:  # a class too small to stratify: scikit-learn raises; a plain split still works
            Xt, Xv, yt, yv = train_test_split(X, y, test_size=self.validation_fraction, random_state=seed)
        if Xt.shape[0] < 1 or Xv.shape[0] < 1:
            raise ValueError(f"early_stopping: validation_fraction={self.validation_fraction} of {X.shape[0]} rows"
                             " leaves no training or no validation rows")  # fmt: skip
        return np.ascontiguousarray(Xt), (np.ascontiguousarray(Xv), yv), yt

    def _start(self, X, y):
        """A fresh model, trainer and counters for the data's widths."""
        self.n_outputs_ = self._outputs(y)
        hidden = self._hidden(X.shape[1])
        widths = [X.shape[1], *(layer.units for layer in hidden if layer.name == "dense")]
        output = api.layer("dense", units=self.n_outputs_, init=self._init(widths[-1], self.n_outputs_))
        self.model_ = Sequential(hidden + [output], input_dim=X.shape[1], dtype=self.dtype, seed=self._seed)
        self.n_layers_ = 2 + sum(layer.name == "dense" for layer in hidden)
        self._trainer = None
        self._trainer_state = None
        self.loss_curve_ = []
        self.n_iter_ = 0
        self.t_ = 0
        self.best_loss_ = np.inf
        self._best_params = None
        if self.early_stopping:
            self.validation_scores_ = []
            self.best_validation_score_ = -np.inf
            self.best_loss_ = None
        else:
            self.validation_scores_ = None
            self.best_validation_score_ = None

    def _hidden(self, n_features):
        if self.layers is not None:
            return [_layer(spec) for spec in self.layers]
        sizes = [self.hidden_layer_sizes] if np.isscalar(self.hidden_layer_sizes) else list(self.hidden_layer_sizes)
        act = ACTIVATIONS[self.activation]
        layers, fan_in = [], n_features
        for width in sizes:
            layers.append(api.layer("dense", units=int(width), init=self._init(fan_in, int(width))))
            if act:
                layers.append(api.layer(act))
            fan_in = int(width)
        return layers

    def _init(self, fan_in, fan_out):
        """scikit-learn's Glorot-uniform bound: sqrt(6 / (fan_in + fan_out)), 2 for 6 with logistic units."""
        if self.layers is not None or self.activation != "logistic":
            return "glorot_uniform"
        bound = float(np.sqrt(2.0 / (fan_in + fan_out)))
        return f"uniform:low={-bound!r},high={bound!r}"

    def _trainer_(self):
        """The run's Trainer, made on first use (after unpickling too) from the saved training state."""
        if self._trainer is None:
            self._decay = api.transform("weight_decay", rate=0.0, decay_bias=False)
            self._stopping = _Stopping(self)
            callbacks = [self._stopping, *(_component("callback", cb) for cb in self.callbacks)]
            self._trainer = Trainer(self.model_, loss=self._loss(), optimizer=self._optimizer(), callbacks=callbacks,
                                    seed=self._seed, shuffle=self.shuffle, lr_schedule=self.lr_schedule, device=self.device,
                                    transforms=[self._decay, *(_component("transform", tr) for tr in self.transforms)])  # fmt: skip
            if self._trainer_state is not None:
                self._trainer.load_state(*self._trainer_state)
                self._trainer_state = None
        return self._trainer

    def _optimizer(self):
        if self.optimizer is not None:
            spec = self.optimizer
            return api.optimizer(**parse_spec(spec)) if isinstance(spec, str) else _component("optimizer", spec)
        if self.solver == "sgd":
            return api.optimizer("sgd", lr=float(self.learning_rate_init), momentum=float(self.momentum),
                                 nesterov=bool(self.nesterovs_momentum and self.momentum > 0))  # fmt: skip
        return api.optimizer("adam", lr=float(self.learning_rate_init), betas=(float(self.beta_1), float(self.beta_2)),
                             eps=float(self.epsilon))  # fmt: skip

    def _penalty(self, rows):
        """alpha / (2 * rows) * sum of the dense weights' squares: scikit-learn's L2 term of the loss."""
        scale = float(self.alpha) / (2.0 * rows)
        weights = [(a, b) for key, (a, b) in self.model_.param_ranges().items() if not key.endswith("bias")]

        def penalty(model):
            return scale * sum(float(np.dot(model.params[a:b].astype(np.float64), model.params[a:b])) for a, b in weights)

        return penalty

    # -- predicting ------------------------------------------------------

    def _outputs_of(self, X):
        X = validate_data(self, X, reset=False, dtype=(np.float64, np.float32))
        return np.asarray(self.model_.predict(np.ascontiguousarray(X, dtype=self.dtype)), dtype=np.float64)

    @property
    def coefs_(self):
        """The dense layers' weights as scikit-learn shapes them, (fan_in, fan_out) (copies)."""
        check_is_fitted(self, "model_")
        params = self.model_.parameters()
        return [params[f"{i}.weight"].T.copy() for i, layer in enumerate(self.model_.layers) if layer.name == "dense"]

    @property
    def intercepts_(self):
        """The dense layers' biases (copies)."""
        check_is_fitted(self, "model_")
        params = self.model_.parameters()
        return [params[f"{i}.bias"].copy() for i, layer in enumerate(self.model_.layers) if layer.name == "dense"]

    # -- pickling: the trainer holds compiled code and hooks; its state travels instead --

    def __getstate__(self):
        state = self.__dict__.copy()
        trainer = state.pop("_trainer", None)
        state.pop("_decay", None)
        state.pop("_stopping", None)
        if "model_" in state:
            model = state.pop("model_")
            state["_model"] = (model.config(), model.state_dict())
            if trainer is not None:
                state["_trainer_state"] = trainer.state()
        return state

    def __setstate__(self, state):
        model = state.pop("_model", None)
        self.__dict__.update(state)
        self._trainer = None
        if model is not None:
            config, weights = model
            self.model_ = Sequential.from_config(config)
            self.model_.load_state_dict(weights)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags


class MLPClassifier(ClassifierMixin, _MLP):
    """A multi-layer perceptron classifier with scikit-learn's interface, trained by jitprop.

    Multiclass targets train with softmax cross-entropy, binary and
    multilabel ones with binary cross-entropy on logits. ``predict_proba``
    gives each class's probability, in ``classes_`` order.
    """

    _y_numeric = False

    def partial_fit(self, X, y, classes=None):
        """One epoch over (X, y), continuing the last fit; the first call needs ``classes`` (all of them)."""
        if not hasattr(self, "model_"):
            if classes is None and not type_of_target(y).startswith("multilabel"):
                raise ValueError("classes must be passed on the first call to partial_fit")
            self._binarizer = LabelBinarizer().fit(y if classes is None else classes)
            self.classes_ = self._binarizer.classes_
            self._partial_start = True
        return self._fit(X, y, incremental=True)

    def _encode_targets(self, y, keep, incremental):
        check_classification_targets(y)
        if getattr(self, "_partial_start", False):
            self._partial_start = False
            keep = True
        if not keep:
            self._binarizer = LabelBinarizer().fit(y)
            self.classes_ = self._binarizer.classes_
        else:
            classes = unique_labels(y)
            if self.warm_start and not incremental and set(classes) != set(self.classes_):
                raise ValueError(f"warm_start can only be used where `y` has the same classes as in the previous call"
                                 f" to fit. Previously got {self.classes_}, `y` has {classes}")  # fmt: skip
            if len(np.setdiff1d(classes, self.classes_)):
                raise ValueError(f"`y` has classes not in `self.classes_`. `self.classes_` has {self.classes_}. 'y' has {classes}.")
        if self._multilabel():
            return self._binarizer.transform(y)
        return np.searchsorted(self.classes_, y)  # each row's class index (all are in classes_, checked above)

    def _multilabel(self):
        return self._binarizer.y_type_ == "multilabel-indicator"

    def _outputs(self, y):
        """One output per class or label; one for a binary target (its logistic unit), as scikit-learn has."""
        return y.shape[1] if self._multilabel() else 1 if len(self.classes_) <= 2 else len(self.classes_)

    def _multiclass(self):
        return self._binarizer.y_type_ == "multiclass"

    def _stratify(self, y):
        return not self._multilabel()

    def _loss(self):
        if self.loss is not None:
            return _component("loss", self.loss)
        return api.loss("cross_entropy" if self._multiclass() else "binary_cross_entropy")

    @property
    def out_activation_(self):
        return "softmax" if self._multiclass() else "logistic"

    def _train_targets(self, y):
        """Class indices or label indicators as the loss takes them: indices for softmax, 0/1 columns otherwise."""
        if self._trainer_().loss.target == "class":
            if self._multilabel():
                raise ValueError(f"loss {self._trainer.loss.name!r} takes one class per row, and y holds several labels a row")
            return y
        if self._multilabel():
            return y.astype(self.dtype)
        if self.n_outputs_ == 1:
            return y.reshape(-1, 1).astype(self.dtype)
        return np.eye(self.n_outputs_, dtype=self.dtype)[y]

    def predict_proba(self, X):
        """Each class's probability, columns in ``classes_`` order (two columns for a binary target)."""
        check_is_fitted(self, "model_")
        proba = self._loss().probabilities(self._outputs_of(X))
        if proba.shape[1] == 1 and self._binarizer.y_type_ == "binary":
            return np.hstack([1.0 - proba, proba])
        return proba

    def predict_log_proba(self, X):
        """The log of ``predict_proba``."""
        return np.log(self.predict_proba(X))

    def predict(self, X):
        """The most likely class of each row (for multilabel targets, every label above 1/2)."""
        check_is_fitted(self, "model_")
        proba = self._loss().probabilities(self._outputs_of(X))
        if proba.shape[1] == 1:
            proba = proba.ravel()
        return self._binarizer.inverse_transform(proba)

    def _score_rows(self, X, y):
        return accuracy_score(y if self._multilabel() else self.classes_[y], self.predict(X))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class MLPRegressor(RegressorMixin, _MLP):
    """A multi-layer perceptron regressor with scikit-learn's interface, trained by jitprop (mean squared error)."""

    _y_numeric = True

    def partial_fit(self, X, y):
        """One epoch over (X, y), continuing the last fit."""
        return self._fit(X, y, incremental=True)

    def _encode_targets(self, y, keep, incremental):
        k = 1 if y.ndim == 1 else y.shape[1]
        if keep and k != self.n_outputs_:
            raise ValueError(f"y has {k} targets, but this model was fitted on {self.n_outputs_}")
        if not keep:
            self._flat = y.ndim == 1
        return y.reshape(y.shape[0], -1)

    def _outputs(self, y):
        return y.shape[1]

    def _stratify(self, y):
        return False

    def _loss(self):
        return api.loss("mse") if self.loss is None else _component("loss", self.loss)

    out_activation_ = "identity"

    def _train_targets(self, y):
        return y.astype(self.dtype)

    def predict(self, X):
        """The predicted target of each row (one column per target when fitted on several)."""
        check_is_fitted(self, "model_")
        out = self._outputs_of(X)
        return out.ravel() if self._flat else out

    def _score_rows(self, X, y):
        return r2_score(y.ravel() if self._flat else y, self.predict(X))


def _layer(spec):
    """A hidden layer from a name (``"relu"``, ``"dense:units=64"``), a spec dict or a Layer."""
    if isinstance(spec, Layer):
        return copy.deepcopy(spec)  # a fresh one per model: an estimator's parameter is never trained in place
    if isinstance(spec, str):
        spec = parse_spec(spec)
    if isinstance(spec, dict) and "name" in spec:
        return api.layer(spec["name"], **{k: v for k, v in spec.items() if k != "name"})
    raise ValueError(f"layers: expected layer names, {{'name': ...}} specs or jitprop layers, got {spec!r}")


def _component(kind, spec):
    """A loss, optimizer, transform or callback from a name, ``"name:k=v"``, a spec dict or an object.

    Objects are copied, callbacks aside (they are there to be seen): fitting never changes an
    estimator's parameters, and an optimizer's rate does change as it trains."""
    if isinstance(spec, str):
        spec = parse_spec(spec)
    if isinstance(spec, dict) and "name" in spec:
        return getattr(api, kind)(spec["name"], **{k: v for k, v in spec.items() if k != "name"})
    return getattr(api, kind)(spec if kind == "callback" else copy.deepcopy(spec))
