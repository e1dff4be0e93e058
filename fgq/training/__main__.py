"""``python -m fgq.training model=vggt_tiny``: train a tiny model (``fgq.training.train``)."""

from fgq.training.train import main

main()
