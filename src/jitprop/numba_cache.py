"""Where Numba keeps compiled kernels, and what happens when that place is unusable.

Runs before any kernel is defined (``@njit(cache=True)`` looks for a cache
directory at definition time). Three deployments need help:

- ``JITPROP_CACHE_DIR`` set: Numba's cache goes there too (``.../numba``),
  unless ``NUMBA_CACHE_DIR`` says otherwise, so one setting moves every
  compiled artefact.
- Nowhere writable (a read-only install and an unwritable home): Numba would
  refuse to define the kernels at all. Compile into a temporary directory
  instead, and say once that compiled code is not kept between runs.
- A cache left corrupt (a full disk, a crash mid-write, a copied tree):
  Numba would raise while unpickling its index. Treat it as a miss: the
  kernel compiles again and the entry is rewritten.
"""

import os
import sys
import tempfile
import warnings
from pathlib import Path

import numba
from numba.core import caching


class CacheWarning(UserWarning):
    """Compiled kernels cannot be cached on disk; each run compiles them again."""


#: The one-line notice when caching is off (the command line prints it; Python code gets a warning).
notice = None


def _writable(path):
    """True when ``path`` (created if need be) accepts a new file."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            return True
    except OSError:
        return False


def configure():
    """Point Numba's cache somewhere that works; called once, on import of jitprop."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return  # numba's own setting wins
    if os.environ.get("JITPROP_CACHE_DIR"):
        numba.config.CACHE_DIR = str(Path(os.environ["JITPROP_CACHE_DIR"]) / "numba")
        return
    package = Path(__file__).resolve().parent
    in_tree = all(_writable(p / "__pycache__") for p in (package, package / "default_plugins"))
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    if in_tree or _writable(Path(base) / "numba"):
        return  # Numba's own locators find one of these
    global notice
    numba.config.CACHE_DIR = tempfile.mkdtemp(prefix="jitprop-numba-")
    notice = (
        f"jitprop: neither {package} nor {base} is writable, so compiled kernels are not kept between runs"
        " (every run compiles them again); set JITPROP_CACHE_DIR to a writable directory"
    )
    if Path(sys.argv[0]).name != "jitprop":  # the command line prints it its own way
        warnings.warn(notice, CacheWarning, stacklevel=3)


_load_index = caching.IndexDataCacheFile._load_index
_load = caching.IndexDataCacheFile.load


def _safe_load_index(self):
    try:
        return _load_index(self)
    except Exception:  # corrupt or foreign index: as if empty; saving the next entry rewrites it
        return {}


def _safe_load(self, key):
    try:
        return _load(self, key)
    except Exception:  # a corrupt data file: a cache miss, so the kernel compiles again
        return None


caching.IndexDataCacheFile._load_index = _safe_load_index
caching.IndexDataCacheFile.load = _safe_load
