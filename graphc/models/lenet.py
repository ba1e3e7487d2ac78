"""LeNet: the network of the PyTorch 60-minute blitz tutorial (seed 004), for 1x32x32 inputs."""
from __future__ import annotations

from ..nn import Conv2d, Linear, Module
from ..nn import functional as F  # noqa: N812  (torch's convention)
from ..tensor import Tensor


class LeNet(Module):
    """conv 1->6 3x3, conv 6->16 3x3 (each followed by relu and 2x2 max pooling), fc 576->120->84->10."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = Conv2d(1, 6, 3)
        self.conv2 = Conv2d(6, 16, 3)
        self.fc1 = Linear(16 * 6 * 6, 120)
        self.fc2 = Linear(120, 84)
        self.fc3 = Linear(84, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), (2, 2))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = x.view(-1, self.num_flat_features(x))
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)

    @staticmethod
    def num_flat_features(x: Tensor) -> int:
        n = 1
        for s in x.size()[1:]:
            n *= s
        return n
