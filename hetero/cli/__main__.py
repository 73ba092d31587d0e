"""`python -m hetero.cli` (torchrun launches training this way)."""

import sys

from hetero.cli import main

sys.exit(main())
