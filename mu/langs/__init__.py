"""Languages: the 51 MASSIVE locales, their URIEL codes, and the similarity weights derived from
URIEL vectors (lang2vec).

May import: core.
"""
