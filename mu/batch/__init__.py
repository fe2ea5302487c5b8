"""Batches: notebooks x targets executed with papermill (local pool or Ray), the notebooks'
parameters and their one declaration of types and ranges, the Jupyter kernels.

May import: every wing below it (core ... publish).
"""
