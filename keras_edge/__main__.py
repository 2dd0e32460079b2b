"""``python -m keras_edge ...`` is the ``keras-edge`` console script."""

import sys

from keras_edge.cli import main

sys.exit(main())
