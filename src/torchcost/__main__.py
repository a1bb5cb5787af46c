from torchcost.cli import console

raise SystemExit(console())
