"""The paper's three sanity checks as runnable experiments (``python -m recipes.experiments.<name>``).

- :mod:`recipes.experiments.input_variation` (Figures 2 and 3),
- :mod:`recipes.experiments.architecture_variation` (Figure 4),
- :mod:`recipes.experiments.training_stages` (Figure 5), in a ViT
  (:mod:`recipes.experiments.vit_training_stages`) and across five architecture families on two
  data sets, testing whether SROP falls after downscaling (:mod:`recipes.experiments.families`).

Each writes a CSV of its numbers and a PNG figure into ``--out-dir``.
"""
