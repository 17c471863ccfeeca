"""``python -m labeling.cli``: the same as the ``phenoscout`` command."""

import sys

from labeling.cli.commands import main

sys.exit(main())
