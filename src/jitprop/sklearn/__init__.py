"""scikit-learn estimators that train with jitprop: ``MLPClassifier`` and ``MLPRegressor``.

They take scikit-learn's own parameter names (``hidden_layer_sizes``,
``alpha``, ``max_iter``, ``early_stopping``, ...) and work wherever its
estimators do: ``Pipeline``, ``GridSearchCV``, ``cross_val_score``,
pickle and joblib. jitprop's own options (any layer stack, loss,
optimizer, device) sit beside them. scikit-learn is an optional extra:
``pip install 'jitprop[sklearn]'``.
"""

try:
    import sklearn  # noqa: F401
except ImportError:  # pragma: no cover - the message is the test
    raise ImportError("jitprop.sklearn needs scikit-learn: pip install 'jitprop[sklearn]'") from None

from .estimators import MLPClassifier, MLPRegressor

__all__ = ["MLPClassifier", "MLPRegressor"]
