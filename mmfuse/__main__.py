"""``python -m mmfuse`` is the ``mmfuse`` command (with its exit status, as the console script has)."""

from mmfuse.cli import main

raise SystemExit(main())
