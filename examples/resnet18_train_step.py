"""The seed's ResNet-18 training step (000-002) with `import graphc as gc`: forward a random
1x3x64x64 image, loss = (prediction - labels).sum(), backward, SGD(lr=1e-2, momentum=0.9) step.

Without network access the model starts from torchvision's initialisation; pass --weights with
a torchvision resnet18 checkpoint (.safetensors, .npz, or .pth when torch is installed) to start
from pretrained weights: its keys load unchanged.
Run: python examples/resnet18_train_step.py [--fast] [--steps N] [--weights PATH]
"""
from __future__ import annotations

import argparse
import time

import graphc as gc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--fast", action="store_true", help="one step (for CI)")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--weights", help="a torchvision resnet18 state_dict file")
    args = ap.parse_args()
    gc.manual_seed(0)

    model = gc.models.resnet18()
    if args.weights:
        print(model.load_state_dict(gc.io.load_weights(args.weights)))
    data = gc.rand(1, 3, 64, 64)
    labels = gc.rand(1, 1000)

    optim = gc.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
    print(optim)
    for step in range(1 if args.fast else args.steps):
        t0 = time.perf_counter()
        optim.zero_grad()
        prediction = model(data)  # forward pass
        loss = (prediction - labels).sum()
        loss.backward()  # backward pass
        w_before = model.conv1.weight.detach().numpy().copy()
        optim.step()  # gradient descent
        moved = abs(model.conv1.weight.detach().numpy() - w_before).max()
        grad = model.conv1.weight.grad.abs().max().item()
        print(f"step {step + 1}: loss {loss.item():.4f}, max |conv1.weight.grad| {grad:.4f}, "
              f"conv1.weight moved by up to {moved:.2e}, {time.perf_counter() - t0:.2f}s")
    print(f"prediction {tuple(prediction.shape)}, {len(list(model.parameters()))} parameter tensors, "
          f"{sum(p.numel() for p in model.parameters())} parameters")


if __name__ == "__main__":
    main()
