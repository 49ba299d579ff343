"""Ensembles of finished runs: combine (pure maths, fitted on validation only), run (the task), report."""
