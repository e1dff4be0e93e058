"""A sweep's results: reading job dirs, paper-layout tables, renderers, figures, W&B summary, the Hydra callback
(``python -m fgq.sweeps DIR``)."""
