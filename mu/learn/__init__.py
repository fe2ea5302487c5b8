"""Classifier models: where a locale's model lives, loading and saving, compatibility, fine-tuning,
pretraining the small encoder, evaluation (logits, accuracy, the NxN matrix), the fine-tuning recipe.

May import: core, langs, corpus, analysis.
"""
