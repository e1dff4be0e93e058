"""``python -m fgq [group=option ...]``: the command line of ``fgq.cli``."""

from fgq.cli import main

main()
