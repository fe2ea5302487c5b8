"""Analysis of finished results, torch-free: per-target tables with baselines, intervals and paired
tests, the method table, claims in words, seeds, typology vs transfer, figures.

May import: core, langs, corpus.
"""
