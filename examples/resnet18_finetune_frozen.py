"""Fine-tuning with a frozen backbone (seeds 001/002): freeze every ResNet-18 parameter, replace
fc with a fresh nn.Linear(512, 10), and train only the classifier. The backward pass touches no
frozen layer: the autodiff report shows how many recorded ops ran a backward rule, frozen vs not.
Run: python examples/resnet18_finetune_frozen.py [--fast] [--steps N] [--weights PATH]
"""
from __future__ import annotations

import argparse
import time

import graphc as gc
from graphc import nn, optim
from graphc.passes import autodiff


def backward_ops(model: nn.Module, data: gc.Tensor) -> tuple[int, float]:
    t0 = time.perf_counter()
    model(data).sum().backward()
    return autodiff.last_stats["nodes_executed"], time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--fast", action="store_true", help="two steps (for CI)")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--weights", help="a torchvision resnet18 state_dict file")
    args = ap.parse_args()
    gc.manual_seed(0)

    model = gc.models.resnet18()
    if args.weights:
        model.load_state_dict(gc.io.load_weights(args.weights))
    data = gc.rand(2, 3, 32, 32) if args.fast else gc.rand(4, 3, 64, 64)
    labels = gc.tensor([1, 7, 3, 0][:data.shape[0]])

    full_ops, full_s = backward_ops(model, data)
    model.zero_grad()

    # Freeze all the parameters in the network
    for param in model.parameters():
        param.requires_grad = False
    model.fc = nn.Linear(512, 10)
    frozen_ops, frozen_s = backward_ops(model, data)
    print(f"backward ops run: {full_ops} with every parameter trainable, {frozen_ops} with a frozen backbone "
          f"({full_s:.2f}s -> {frozen_s:.2f}s including the forward)")
    print("parameters with a gradient:", [n for n, p in model.named_parameters() if p.grad is not None])

    # Optimize only the classifier
    optimizer = optim.SGD(model.fc.parameters(), lr=1e-2, momentum=0.9)
    print(optimizer)
    criterion = nn.CrossEntropyLoss()
    for step in range(2 if args.fast else args.steps):
        optimizer.zero_grad()
        loss = criterion(model(data), labels)
        loss.backward()
        optimizer.step()
        print(f"step {step + 1}: loss {loss.item():.4f}")


if __name__ == "__main__":
    main()
