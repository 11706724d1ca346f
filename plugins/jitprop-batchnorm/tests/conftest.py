import os

# Before numba loads, for every test module: only this plugin (found through its entry point),
# and CUDA kernels on numba's simulator (no GPU in CI).
os.environ["JITPROP_LOAD_PLUGINS"] = "batch_norm"
os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
