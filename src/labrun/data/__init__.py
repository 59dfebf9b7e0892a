from labrun.data.images import ImageDataModule
from labrun.data.text import TextClassificationData

__all__ = ["ImageDataModule", "TextClassificationData"]
