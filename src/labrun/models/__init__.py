from labrun.models.dcgan import DCGANDiscriminator, DCGANGenerator, GeneratorSampler
from labrun.models.gan import GAN
from labrun.models.image_classifier import ImageClassifier, LeNet
from labrun.models.kim_cnn import KimCNN, KimCNNNet
from labrun.models.pipeline import TextClassifierPipeline
from labrun.models.text_classifier import LSTMNet, TextClassifier

__all__ = [
    "GAN",
    "DCGANDiscriminator",
    "DCGANGenerator",
    "GeneratorSampler",
    "ImageClassifier",
    "KimCNN",
    "KimCNNNet",
    "LSTMNet",
    "LeNet",
    "TextClassifier",
    "TextClassifierPipeline",
]
