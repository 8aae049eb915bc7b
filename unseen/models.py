"""Classifiers with an explicit embedding, so one network serves training, scoring and feature extraction."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch
from torch import nn
from torchvision import models as tv_models

from unseen.io import atomic_path

_INIT_LOCK = threading.Lock()


@contextlib.contextmanager
def seeded_init(seed: int) -> Iterator[None]:
    """Draw a new model's initial weights from `seed`: torch's global generator is shared by the threads of a local
    run, so models built at the same time in two threads would otherwise get each other's draws."""
    with _INIT_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


class Classifier(nn.Module):
    """A backbone that maps images to an embedding, and a linear head on top."""

    def __init__(self, backbone: nn.Module, embed_dim: int, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(embed_dim, num_classes)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images))


def _conv_block(cin: int, cout: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def small_cnn(channels: int) -> tuple[nn.Module, int]:
    """Three strided 3x3 conv blocks: about 10 s per Fashion-MNIST epoch on two CPU cores."""
    layers = _conv_block(channels, 32, 2) + _conv_block(32, 64, 2) + _conv_block(64, 128, 2)
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten()), 128


def mlp(channels: int, height: int, width: int) -> tuple[nn.Module, int]:
    return nn.Sequential(nn.Flatten(), nn.Linear(channels * height * width, 512), nn.ReLU(inplace=True), nn.Linear(512, 256), nn.ReLU(inplace=True)), 256


def resnet18_small_images(channels: int) -> tuple[nn.Module, int]:
    """torchvision's ResNet-18 with the CIFAR stem (3x3 stride-1 first conv, no max-pool)."""
    net = tv_models.resnet18(num_classes=10)
    net.conv1 = nn.Conv2d(channels, 64, 3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    return net, 512


def build_model(name: str, num_classes: int, image_shape: tuple[int, int, int], seed: int) -> Classifier:
    """Build a freshly initialised model; the same seed gives the same weights, even across threads."""
    channels, height, width = image_shape
    builders = {
        "small_cnn": lambda: small_cnn(channels),
        "mlp": lambda: mlp(channels, height, width),
        "resnet18": lambda: resnet18_small_images(channels),
    }
    if name not in builders:
        raise ValueError(f"unknown model {name!r}; use one of: {', '.join(builders)}")
    with seeded_init(seed):
        backbone, embed_dim = builders[name]()
        return Classifier(backbone, embed_dim, num_classes)


class PixelClassifier(nn.Module):
    """A classifier that takes raw pixel values (float, 0..255, N x C x H x W): what the saved model serves."""

    def __init__(self, classifier: Classifier, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.classifier = classifier
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.classifier((pixels / 255.0 - self.mean) / self.std)


def save_model(path, classifier: Classifier, *, model_name: str, classes: list[str], image_shape, mean, std, **provenance: str) -> None:
    """Write weights and everything needed to rebuild the model, atomically, loadable with weights_only=True."""
    payload = {
        "model_name": model_name,
        "classes": list(classes),
        "image_shape": list(image_shape),
        "mean": list(mean),
        "std": list(std),
        "state_dict": {k: v.detach().cpu() for k, v in classifier.state_dict().items()},
        "provenance": dict(provenance),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_model(path) -> PixelClassifier:
    """Rebuild a model saved by `save_model`, ready for inference on raw pixels."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    classifier = build_model(payload["model_name"], len(payload["classes"]), tuple(payload["image_shape"]), seed=0)
    classifier.load_state_dict(payload["state_dict"])
    return PixelClassifier(classifier, tuple(payload["mean"]), tuple(payload["std"])).eval()
