"""Hyperparameter search (Optuna): the search command and its workers (runner), the study and its storage (study)."""
