"""``python -m toolgate.cli``: the ``toolgate`` command."""

import sys

from toolgate.cli.main import main

sys.exit(main())
