"""One analysis in a fresh process, as the CLI runs it: CPU seconds of one plain forward and of one ``analyze()``
of a torchvision model (weights=None) at a batch size, one torch thread. Run it once per tree to compare two
versions (a first analysis learns what later ones reuse: plans, kernel-memory probes, skipped kernels' outputs):

    python -m benchmarks.first_analysis resnet50 8
    PYTHONPATH=<old tree>/src python -m benchmarks.first_analysis resnet50 8
"""

from __future__ import annotations

import argparse
import time

import torch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.first_analysis")
    parser.add_argument("model", help="a torchvision.models name")
    parser.add_argument("batch", type=int, nargs="?", default=1)
    args = parser.parse_args(argv)
    import torchvision

    import torchcost

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = getattr(torchvision.models, args.model)(weights=None).eval()
    x = torch.randn(args.batch, 3, 224, 224)
    with torch.no_grad():
        model(x)  # (the allocator and oneDNN warmed, as a user's earlier forward would)
        start = time.process_time()
        model(x)
        forward = time.process_time() - start
    start = time.process_time()
    torchcost.analyze(model, x)
    analysis = time.process_time() - start
    print(f"{args.model} batch {args.batch}: forward {forward:.3f} s, analyze() {analysis:.3f} s, "
          f"{analysis / forward:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
