"""``python -m benchmarks DIR --keras MODEL``: the same as ``keras-edge bench``."""

import sys

from benchmarks.cli import main

sys.exit(main())
