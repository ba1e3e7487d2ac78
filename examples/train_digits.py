"""Train the seed's LeNet on scikit-learn's bundled 8x8 digits with a compiled training step.

The step (zero_grad, forward, loss, backward, optimizer step) is one static graph compiled
once; the example shows a progress bar, held-out accuracy per epoch, a loss-curve PNG, a
dump of the step's graph, and a saved artifact that is reloaded and gives the same accuracy.
Run: python examples/train_digits.py [--epochs N] [--fast] [--out DIR]
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

import graphc as gc
import graphc.nn.functional as F
from graphc import optim


def load_digits_32(seed: int = 0):
    """Digits upsampled from 8x8 to 32x32 (LeNet's input size), split 80/20."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)
    x = np.kron(x, np.ones((4, 4), dtype=np.float32))[:, None]  # N, 1, 32, 32
    x = (x - x.mean()) / x.std()
    y = d.target.astype(np.int64)
    idx = np.random.default_rng(seed).permutation(len(x))
    cut = int(0.8 * len(x))
    return x[idx[:cut]], y[idx[:cut]], x[idx[cut:]], y[idx[cut:]]


def accuracy(predict, x: np.ndarray, y: np.ndarray, batch: int = 256) -> float:
    hits = 0
    for i in range(0, len(x), batch):
        logits = predict(gc.from_numpy(x[i:i + batch]))
        hits += int((logits.numpy().argmax(1) == y[i:i + batch]).sum())
    return hits / len(x)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--fast", action="store_true", help="two epochs on a subset (for CI)")
    ap.add_argument("--out", default="examples/out")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    from tqdm import tqdm

    gc.manual_seed(0)
    xtr, ytr, xte, yte = load_digits_32()
    if args.fast:
        xtr, ytr, args.epochs = xtr[:512], ytr[:512], 2
    model = gc.models.LeNet()
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

    @gc.compile
    def train_step(x, y):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    @gc.compile
    def predict(x):
        with gc.no_grad():
            return model(x)

    losses, t0 = [], time.perf_counter()
    rng = np.random.default_rng(0)
    steps_per_epoch = len(xtr) // args.batch
    for epoch in range(args.epochs):
        order = rng.permutation(len(xtr))
        model.train()
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{args.epochs}", leave=False)
        for s in bar:
            b = order[s * args.batch:(s + 1) * args.batch]
            loss = train_step(gc.from_numpy(xtr[b]), gc.from_numpy(ytr[b])).item()
            losses.append(loss)
            bar.set_postfix(loss=f"{loss:.3f}")
        model.eval()
        print(f"epoch {epoch + 1}: loss {np.mean(losses[-steps_per_epoch:]):.4f}  "
              f"held-out accuracy {accuracy(predict, xte, yte):.2%}")
    elapsed = time.perf_counter() - t0
    acc = accuracy(predict, xte, yte)
    print(f"trained {len(losses)} steps in {elapsed:.1f} s; held-out accuracy {acc:.2%}")
    print(train_step.cache_info())

    x0, y0 = gc.from_numpy(xtr[:args.batch]), gc.from_numpy(ytr[:args.batch])
    lowered = train_step.lower(x0, y0)
    lowered.dump(os.path.join(args.out, "train_step.txt"), format="text")
    exe = lowered.compile()
    path = os.path.join(args.out, "train_step.graphc")
    exe.save(path)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(losses, lw=1)
        ax.set_xlabel("step")
        ax.set_ylabel("cross-entropy loss")
        ax.set_title("LeNet on digits (graphc compiled step)")
        fig.tight_layout()
        fig.savefig(os.path.join(args.out, "loss.png"), dpi=120)
    except ImportError:
        print("matplotlib not installed: no loss curve")

    restored = gc.models.LeNet()
    restored.load_state_dict(gc.load(path).state_dict())
    restored.eval()
    with gc.no_grad():
        acc2 = accuracy(restored, xte, yte)
    print(f"artifact {path}: {len(lowered.graph)} nodes; reloaded weights give held-out accuracy {acc2:.2%}")
    print(f"wrote {args.out}/loss.png, {args.out}/train_step.txt")


if __name__ == "__main__":
    main()
