"""Where a training run's batches execute: the seam (base.py) and its three sides.

``python.py`` calls every kernel from Python, ``compiled.py`` runs batches
inside one generated njit function (``codegen.py`` writes it), ``cuda.py``
launches numba.cuda kernels. ``Trainer._backend`` chooses among them.
"""
