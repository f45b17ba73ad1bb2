"""``python -m robustvit``."""

from __future__ import annotations

import sys

from robustvit.cli import main

sys.exit(main())
