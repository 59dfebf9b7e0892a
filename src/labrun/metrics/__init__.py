from labrun.metrics.features import (
    FeatureSpace,
    FrozenFeatures,
    confident_by_class,
    confident_share,
    load_or_train,
    mode_coverage,
)

__all__ = [
    "FeatureSpace",
    "FrozenFeatures",
    "confident_by_class",
    "confident_share",
    "load_or_train",
    "mode_coverage",
]
