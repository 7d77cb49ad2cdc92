"""Every kernel family registers itself here: one module per family (the problem and its variants), and
``_<family>_cuda.py`` beside it for a family's raw-CUDA launchers.

``harness.registry.load_all()`` imports them by name (``registry.FAMILIES``), plus any named in ``WB_FAMILIES``.
"""
