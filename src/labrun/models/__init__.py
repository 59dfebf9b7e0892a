from labrun.models.gan import GAN, DCGANDiscriminator, DCGANGenerator, GeneratorSampler
from labrun.models.image_classifier import ImageClassifier, LeNet
from labrun.models.pipeline import TextClassifierPipeline
from labrun.models.text_classifier import LSTMNet, TextClassifier

__all__ = [
    "GAN",
    "DCGANDiscriminator",
    "DCGANGenerator",
    "GeneratorSampler",
    "ImageClassifier",
    "LSTMNet",
    "LeNet",
    "TextClassifier",
    "TextClassifierPipeline",
]
