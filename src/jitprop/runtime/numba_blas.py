"""Numba's BLAS, without importing the whole of scipy.linalg.

Numba reaches BLAS (``np.dot`` in the dense kernels) through
``scipy.linalg.cython_blas``. On its first compile or cache load in a process
it checks that BLAS is there by importing that module, and Python imports the
package ``scipy.linalg`` first: all of SciPy's linear algebra, ~0.2 s, a fifth
of a warm-cache ``jitprop train``. The extension module needs nothing from that
package, so ``preload()`` loads it alone, under its own name, before Numba asks;
Numba (and SciPy, if it is imported later) then finds it in ``sys.modules``.

The one visible difference: a ``scipy.linalg`` imported later has no
``cython_blas`` attribute, though ``from scipy.linalg import cython_blas``
and ``import scipy.linalg.cython_blas as m`` work as always. Anything
unexpected (no SciPy, another layout) leaves the import to Numba.
"""

import importlib.machinery
import importlib.util
import os
import sys

NAME = "scipy.linalg.cython_blas"


def preload():
    """Load ``scipy.linalg.cython_blas`` without its package; True if this call loaded it."""
    if NAME in sys.modules or "scipy.linalg" in sys.modules:
        return False
    try:
        import scipy  # cheap, and on some platforms it makes SciPy's bundled libraries findable

        dirs = [os.path.join(d, "linalg") for d in scipy.__path__]
        found = importlib.machinery.PathFinder.find_spec("cython_blas", dirs)
        if found is None or not isinstance(found.loader, importlib.machinery.ExtensionFileLoader):
            return False
        spec = importlib.util.spec_from_file_location(NAME, found.origin)
        module = importlib.util.module_from_spec(spec)
        sys.modules[NAME] = module
        spec.loader.exec_module(module)
        return True
    except Exception:  # any surprise: Numba imports it the usual way
        sys.modules.pop(NAME, None)
        return False
