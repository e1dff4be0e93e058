"""``python -m fgq.sweeps DIR``: aggregate a sweep directory (``fgq.sweeps.aggregate``)."""

import sys

from fgq.sweeps.aggregate import main

sys.exit(main())
