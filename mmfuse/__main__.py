"""``python -m mmfuse`` is the ``mmfuse`` command."""

from mmfuse.cli import main

main()
