from labrun.data.text import TextClassificationData

__all__ = ["TextClassificationData"]
