"""Analysis of finished results, torch-free: per-target tables with baselines, intervals and paired
tests (item-aware where rows carry per-item results), the method table, claims in words, seeds, the
pre-registered confirmatory analysis, typology vs transfer, figures.

May import: core, langs, corpus.
"""
