"""Training the tiny models on synthetic scenes: ``python -m fgq.training`` (``train``), losses, correspondence."""
