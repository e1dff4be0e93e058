"""``python run.py [group=option ...]`` in a checkout: the same command line as ``fgq`` (``fgq.cli``); ``-m`` sweeps.

Each job evaluates the FP model, quantizes it, evaluates again and writes ``metrics.json`` to its directory.
"""

from fgq.cli import main

if __name__ == "__main__":
    main()
