"""Combining sources beyond a data-free merge: output-space ensembles, distillation into one student,
iterative training with periodic merges, and the adapted family's label-free choices.

May import: core, langs, corpus, analysis, learn, merge.
"""
