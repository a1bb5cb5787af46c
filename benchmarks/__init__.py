"""torchcost benchmarks: accuracy and speed against the peer tools, on the same models, in one run.

    python -m benchmarks.run            # the full run: writes docs/benchmarks.md and benchmarks/results.json
    python -m benchmarks.run --quick    # a few models, 3 timed runs: for development

Modules: ``models`` (the model set, built from public code with random weights), ``analytic`` (hand-derived cases),
``peers`` (one adapter per peer tool, unit normalisation, side-effect checks), ``accuracy``, ``speed``, ``report``.
The peers come with ``pip install -e '.[bench]'``; a missing or crashing peer is a note in the tables, never a crash.
"""
