"""How close a training step comes to the machine: model FLOPs counted by PyTorch, against a matmul peak
measured in the same run, for the dtype the step computes in.

* :func:`step_flops` runs one training step (forward and backward) under
  ``torch.utils.flop_counter.FlopCounterMode``, which counts the FLOPs of every matmul, convolution and
  attention kernel the step dispatches (elementwise work is not counted: that is the convention of
  model-FLOP utilisation, as in PaLM's MFU).
* :func:`matmul_peak` times square matrix products in one dtype on one device: the best the matrix
  units give this process here and now (not the data-sheet number).
* :func:`utilisation` = FLOPs per step × steps/s ÷ peak.

The benchmarks (``performance.py``, ``gpu_flagship.py``) print these columns in every row.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

__all__ = ["matmul_peak", "peak_dtype", "step_flops", "utilisation"]


def peak_dtype(precision: str) -> Any:
    """The dtype a Lightning ``precision`` computes its matmuls in (``bf16-mixed`` -> bfloat16)."""
    import torch

    if precision.startswith("bf16"):
        return torch.bfloat16
    if precision.startswith("16"):
        return torch.float16
    return torch.float32


def matmul_peak(dtype: Any, device: str = "cpu", n: int | None = None, seconds: float = 1.0) -> float:
    """The best FLOP/s of ``n × n`` products in ``dtype`` on ``device`` over about ``seconds``.

    ``n``: 2,048 on a CPU, 8,192 on a GPU (large enough to reach the matrix units' plateau). A CPU without
    bf16 matrix instructions (AVX2 only) multiplies bfloat16 at about 1 GFLOP/s, where one 2,048² product
    takes 17 s: a 256² product is timed first and ``n`` halved (down to 256) until one product fits in
    ``seconds``, so a slow dtype costs about ``seconds``, not minutes.

    Examples:
        >>> import torch
        >>> matmul_peak(torch.float32, n=64, seconds=0.01) > 0
        True
    """
    import torch

    n = n or (8192 if device != "cpu" else 2048)

    def sync() -> None:
        if device != "cpu":
            torch.cuda.synchronize(device)

    def once(a: Any, b: Any) -> float:
        start = time.perf_counter()
        a @ b
        sync()
        return time.perf_counter() - start

    probe = min(n, 256)
    small = [torch.randn(probe, probe, device=device).to(dtype) for _ in range(2)]
    once(*small)
    rate = 2 * probe**3 / max(once(*small), 1e-9)
    while n > probe and 2 * n**3 / rate > seconds:
        n //= 2
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    for _ in range(2):  # warm-up: kernels chosen, caches filled
        once(a, b)
    best, spent = float("inf"), 0.0
    while spent < seconds or best == float("inf"):
        took = once(a, b)
        best, spent = min(best, took), spent + took
    return 2 * n**3 / best


def step_flops(step: Callable[[], Any]) -> int:
    """The FLOPs one call of ``step`` dispatches (a training step: forward, loss and ``backward()``).

    Examples:
        >>> import torch
        >>> w = torch.randn(8, 4, requires_grad=True)
        >>> step_flops(lambda: (torch.randn(2, 8) @ w).sum().backward())  # 2·(2·8·4) forward, as many for w's grad
        256
    """
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return int(counter.get_total_flops())


def utilisation(flops_per_step: float, steps_per_s: float, peak: float) -> float:
    """The share of ``peak`` (FLOP/s) the steps reach.

    Examples:
        >>> utilisation(1e9, 50.0, 1e11)
        0.5
    """
    return flops_per_step * steps_per_s / peak
