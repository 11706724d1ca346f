"""Where compiled code is kept: Numba's cache of the kernels, and the generated steps.

The one place that decides. ``configure()`` runs before any kernel is
defined (``@njit(cache=True)`` looks for a cache directory at definition
time); ``generated_dir()`` is where the compiled backend writes the step it
generates for each model (Numba caches those beside them). For Numba's
cache, three deployments need help:

- ``JITPROP_CACHE_DIR`` set: Numba's cache goes there too (``.../numba``),
  unless ``NUMBA_CACHE_DIR`` says otherwise, so one setting moves every
  compiled artefact. Either one naming a directory that cannot be written
  (or made) runs uncached, saying so once, as nowhere writable does.
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
    for var, below in (("NUMBA_CACHE_DIR", ""), ("JITPROP_CACHE_DIR", "numba")):  # numba's own setting wins
        if os.environ.get(var):
            path = Path(os.environ[var]) / below
            if _writable(path):
                numba.config.CACHE_DIR = str(path)
                return
            # Numba would refuse to define the kernels ("no locator available"): run uncached, and say so.
            return _uncached(f"{var} ({os.environ[var]}) is not a writable directory", f"point {var} at one")
    package = Path(__file__).resolve().parents[1]
    folders = [package] + [p for p in package.iterdir() if (p / "__init__.py").exists()]  # kernels live in each
    in_tree = all(_writable(p / "__pycache__") for p in folders)
    base = base_dir()
    if in_tree or _writable(base / "numba"):
        return  # Numba's own locators find one of these
    _uncached(f"neither {package} nor {base} is writable", "set JITPROP_CACHE_DIR to a writable directory")


def _uncached(why, fix):
    """Compile into a temporary directory, and say once that nothing is kept."""
    global notice
    numba.config.CACHE_DIR = tempfile.mkdtemp(prefix="jitprop-numba-")
    notice = f"jitprop: {why}, so compiled kernels are not kept between runs (every run compiles them again); {fix}"
    if Path(sys.argv[0]).name != "jitprop":  # the command line prints it its own way
        warnings.warn(notice, CacheWarning, stacklevel=4)


def base_dir():
    """``$XDG_CACHE_HOME``, else ``~/.cache``: where per-user caches go by default."""
    return Path(os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"))


def generated_dir():
    """Where generated modules (and Numba's cache of them) live: ``JITPROP_CACHE_DIR``,
    else ``$XDG_CACHE_HOME/jitprop`` or ``~/.cache/jitprop``, else a temporary directory;
    None when nothing is writable (training then takes the Python loop)."""
    candidates = []
    if os.environ.get("JITPROP_CACHE_DIR"):
        candidates.append(Path(os.environ["JITPROP_CACHE_DIR"]))
    candidates.append(base_dir() / "jitprop")
    candidates.append(Path(tempfile.gettempdir()) / f"jitprop-{os.getuid() if hasattr(os, 'getuid') else 'user'}")
    for path in candidates:
        try:
            path.mkdir(parents=True, exist_ok=True)
            if os.access(path, os.W_OK):
                return path
        except OSError:
            continue
    return None


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
