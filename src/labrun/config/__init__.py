"""Composing configs: Hydra composition, the root schema, `_target_` checks, error wording."""
