"""``python -m wham_gym`` is the ``wham-gym`` command."""

import sys

from .commands.main import main

sys.exit(main())
