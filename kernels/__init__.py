"""Triton kernels, one module per family (launchers named after the op)."""
