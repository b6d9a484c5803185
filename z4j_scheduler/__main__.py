"""``python -m z4j_scheduler``: the same as the ``z4j-scheduler`` command."""

import sys

from z4j_scheduler.cli import main

sys.exit(main())
