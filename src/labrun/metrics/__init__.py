from labrun.metrics.features import FeatureSpace, FrozenFeatures, load_or_train, mode_coverage

__all__ = ["FeatureSpace", "FrozenFeatures", "load_or_train", "mode_coverage"]
