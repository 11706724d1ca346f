"""How jitprop sets Numba up before any kernel exists: where compiled code is cached, and its BLAS."""
