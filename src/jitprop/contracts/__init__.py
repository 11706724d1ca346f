"""The contracts plugins implement: a base class and a kernel signature per kind of component.

``layers.py``, ``losses.py``, ``optimizers.py``, ``schedules.py``,
``transforms.py``, ``callbacks.py`` and ``datasets.py`` each document, at the
top, what a registered class of that kind provides.
"""
