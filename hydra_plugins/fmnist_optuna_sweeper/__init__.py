"""The project's Optuna sweeper for Hydra multirun (Optuna >= 4.9).

Hydra imports every public module of the `hydra_plugins` namespace package at start-up, so the public modules
(`config`, `optuna_sweeper`) stay light; Optuna, the search-space parser, the reports and the pruning callback live
in `_`-modules, imported when a sweep or a trial actually runs.
"""
