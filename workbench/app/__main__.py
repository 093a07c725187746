"""``python -m workbench.app``: the same as ``workbench app``."""

from workbench.app.commands import main

raise SystemExit(main())
