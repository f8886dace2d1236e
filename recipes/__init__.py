"""Runnable recipes for lightning-srop: training with SROP tracking and the paper's sanity checks.

Run them from the repository root, e.g. ``python -m recipes.mnist`` (see ``docs/recipes.md``).
"""
