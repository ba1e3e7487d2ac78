"""Autograd basics from the seed tutorials (000-003), with `import graphc as gc` in place of torch.

Q = 3a^3 - b^2 differentiated with an explicit gradient, the scalar chain 3(x+1)^2 averaged,
a vector-Jacobian product, and which results require grad.
Run: python examples/autograd_basics.py [--fast]
"""
from __future__ import annotations

import argparse

import graphc as gc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--fast", action="store_true", help="accepted for CI; this example is always quick")
    ap.parse_args()
    gc.manual_seed(0)

    # Differentiation in autograd: dQ/da = 9a^2, dQ/db = -2b
    a = gc.tensor([2.0, 3.0], requires_grad=True)
    b = gc.tensor([6.0, 4.0], requires_grad=True)
    Q = 3 * a ** 3 - b ** 2  # noqa: N806  (the tutorial's name)
    external_grad = gc.tensor([1.0, 1.0])
    Q.backward(gradient=external_grad)
    print(9 * a ** 2 == a.grad)
    print(-2 * b == b.grad)

    # A scalar output: out = mean(3 (x + 1)^2), so d out / dx = 3 (x + 1) / 2 = 3 at x = 1
    x = gc.ones(2, 2, requires_grad=True)
    print(x)
    y = x + 1
    print(y)
    z = 3 * y ** 2
    print(z)
    out = z.mean()
    print(out)
    out.backward()
    print(x.grad)
    print(out.grad_fn, out.grad_fn.next_functions)

    # Multiple inputs: a vector-Jacobian product
    x = gc.randn(3, requires_grad=True)
    y = x * 2
    y.backward(gc.tensor([1, 2, 3]))
    print(x.grad)

    # Exclusion from the DAG: a result requires grad if any input does
    x, y = gc.rand(5, 5), gc.rand(5, 5)
    z = gc.rand((5, 5), requires_grad=True)
    print(f"Does `a` require gradients?: {(x + y).requires_grad}")
    print(f"Does `b` require gradients?: {(x + z).requires_grad}")
    with gc.no_grad():
        print(f"Under no_grad, does `x + z` require gradients?: {(x + z).requires_grad}")


if __name__ == "__main__":
    main()
