"""``python -m vlpapers`` == the ``vlpapers`` console script."""
from vlpapers.cli import main

raise SystemExit(main())
