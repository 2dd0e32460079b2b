"""``python -m keras_edge.benchmarks DIR``: the same as ``keras-edge bench DIR``."""

import sys

from keras_edge.benchmarks.cli import main

sys.exit(main())
