"""Training-step time of each registry network in contiguous vs channels-last-3d layout.

One process, same weights and batch for both layouts, alternating layouts over ``--rounds``
so that a change in machine load hits both; the table reports the median step time and the
ratio channels-last / contiguous (< 1: channels-last is faster). The result decides
``train.channels_last: auto`` (``medseg.training.loop.CHANNELS_LAST_CPU``).

    .venv/bin/python benchmarks/train_step_layout.py [--threads 2] [--batch 3]

Writes ``benchmarks/results/train_step_layout.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import time
from pathlib import Path

import torch
from monai.losses import DiceCELoss

from medseg.io.atomic import atomic_write_text
from medseg.networks.registry import build_network
from medseg.planning.plans import NetworkSpec

RESULTS = Path(__file__).resolve().parent / "results" / "train_step_layout.json"
PATCH = (40, 56, 40)  # the MSD Hippocampus plan
VNET_PATCH = (48, 64, 48)  # VNet needs sides divisible by 16

SPECS = {
    # the CPU default planned for MSD Hippocampus: a full-resolution level, then 24..96
    "unet": NetworkSpec(
        name="unet", channels=(8, 24, 48, 96), strides=((2, 2, 2),) * 3, full_res_level=True
    ),
    # MONAI UNet's own layout (plans written before ``full_res_level``), 24..192
    "unet_halfres": NetworkSpec(name="unet", channels=(24, 48, 96, 192), strides=((2, 2, 2),) * 3),
    "segresnet": NetworkSpec(
        name="segresnet", channels=(16, 32, 64, 128), strides=((2, 2, 2),) * 3
    ),
    "dynunet": NetworkSpec(
        name="dynunet",
        channels=(24, 48, 96, 192),
        strides=((2, 2, 2),) * 3,
        kernel_sizes=((3, 3, 3),) * 4,
    ),
    "vnet": NetworkSpec(name="vnet", channels=(16, 32, 64, 128), strides=((2, 2, 2),) * 3),
    "basicunet": NetworkSpec(name="basicunet", channels=(16, 16, 32, 64, 128, 16)),
}


def _time_steps(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> float:
    """Median seconds of one forward + backward + AdamW step."""
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False, batch=True)
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        out = net(x)
        out = out[:, 0] if out.dim() == x.dim() + 1 else out  # deep supervision: full-res head
        loss_fn(out, y).backward()
        opt.step()
        if i:  # the first step warms up the kernels
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(name: str, batch: int, steps: int, rounds: int) -> dict:
    """Median step time of network ``name`` in both layouts."""
    torch.manual_seed(0)
    net = build_network(SPECS[name], 1, 3)
    patch = VNET_PATCH if name == "vnet" else PATCH
    x = torch.randn(batch, 1, *patch)
    y = torch.randint(0, 3, (batch, 1, *patch))
    runs: dict[str, list[float]] = {"contiguous": [], "channels_last": []}
    for _ in range(rounds):
        for layout, fmt in (
            ("contiguous", torch.contiguous_format),
            ("channels_last", torch.channels_last_3d),
        ):
            net = net.to(memory_format=fmt)
            runs[layout].append(_time_steps(net, x.contiguous(memory_format=fmt), y, steps))
    plain = statistics.median(runs["contiguous"])
    last = statistics.median(runs["channels_last"])
    return {
        "network": name,
        "patch": list(patch),
        "batch": batch,
        "contiguous_s": round(plain, 4),
        "channels_last_s": round(last, 4),
        "ratio": round(last / plain, 3),
    }


def main(argv: list[str] | None = None) -> int:
    """Measure every network, print the table, write the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=3)
    ap.add_argument("--steps", type=int, default=4, help="timed steps per round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--networks", nargs="+", default=list(SPECS), choices=list(SPECS))
    ap.add_argument("--result", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    rows = [measure(n, args.batch, args.steps, args.rounds) for n in args.networks]
    header = f"{'network':<13} {'contiguous s':>13} {'channels-last s':>16} {'ratio':>6}"
    lines = [header] + [
        f"{r['network']:<13} {r['contiguous_s']:>13.3f} {r['channels_last_s']:>16.3f} "
        f"{r['ratio']:>6.3f}"
        for r in rows
    ]
    logging.getLogger(__name__).info("\n".join(lines))
    result = {
        "benchmark": "train_step_layout",
        "device": "cpu",
        "threads": args.threads,
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        "rows": rows,
    }
    args.result.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.result, json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
