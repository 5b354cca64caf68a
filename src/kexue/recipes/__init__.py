"""The procedures of each article, one module per article, built on data/, models/, training/ and analysis/.

A recipe is what a user would call from Python to do what a ``kexue`` command does: the CLI
commands (:mod:`kexue.commands`) only validate their flags, call a recipe and print, and
``kexue reproduce`` calls the same recipes. So every reported number is something a user can rerun.

- :mod:`kexue.recipes.vae_cluster`: article 1, AE pre-training -> mixture initialisation -> VAE
  training; evaluation, seed studies, plots.
- :mod:`kexue.recipes.onlstm`: article 2, ON-LSTM training, tree induction and scoring, evaluation.
- :mod:`kexue.recipes.lm`: article 5, LM training, loading, generation, the termination study.
- :mod:`kexue.recipes.repetition`: article 7, theory / measure / rebalance and the corpus study.
- :mod:`kexue.recipes.runs`: the checks every trained-run folder shares (right command, model.json, resume).
- :mod:`kexue.recipes.listops`: article 8, the ListOps study (Nyström vs exact attention) and the
  approximation error of a trained model.
"""
