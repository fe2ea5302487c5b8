"""A classifier for any language from the command line (``python -m mu weights`` / ``merge``): where the
sources come from (folders, hub ids, a pattern) and what language each is, their URIEL weights, the
checks before any weight is read, the merged folder with its model card and mergekit recipe, and its
evaluation on a labeled file.

May import: core, langs, corpus, analysis, learn, merge.
"""
