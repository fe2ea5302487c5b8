"""Data: MASSIVE intent data (real files or the generated toy set), subsamples and pools, STS pairs.

May import: core, langs.
"""
