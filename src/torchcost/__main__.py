from torchcost.cli import main

raise SystemExit(main())
