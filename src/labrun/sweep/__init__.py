"""Sweeps: Optuna searches and Hydra multiruns, one MLflow parent run each, a child per trial."""
