"""OCCO training, evaluation and classical baselines (offline tools, not used at run time)."""
