"""``python -m catrs_plugin.cli``: the same as the ``catrs`` console script."""

from catrs_plugin.cli import main

raise SystemExit(main())
