"""``python -m RegC2PLib`` is the ``regc2p`` command line."""

import sys

from .cli import main

sys.exit(main())
