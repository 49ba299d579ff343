"""Ensembles of finished runs: members (load and score them), combine (pure maths, fitted on validation only), run
(the task), report."""
