from labrun.models.pipeline import TextClassifierPipeline
from labrun.models.text_classifier import LSTMNet, TextClassifier

__all__ = ["LSTMNet", "TextClassifier", "TextClassifierPipeline"]
