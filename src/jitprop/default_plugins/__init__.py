"""Built-in layers, losses, optimizers, schedules and callbacks.

Each module is a plugin written exactly as a third-party package would write
it: public jitprop API only, kernels beside their classes, one
``register_*`` hook at the bottom.
"""
