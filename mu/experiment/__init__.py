"""The study at its real shape on real MASSIVE (the mini profile): its driver and command line,
the declared knobs, the time budget, the pretraining-objective comparison.

May import: every wing.
"""
