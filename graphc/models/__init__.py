"""graphc.models: the seed tutorials' LeNet and torchvision-compatible ResNets."""
from .lenet import LeNet
from .resnet import BasicBlock, Bottleneck, ResNet, resnet18, resnet34, resnet50

__all__ = ["BasicBlock", "Bottleneck", "LeNet", "ResNet", "resnet18", "resnet34", "resnet50"]
