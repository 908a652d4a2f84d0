"""Import first: this checkout's rue_trio, never an installed one, for in-process tools.

``python bench/x.py`` puts bench/ on the path, not the checkout, so an installed rue_trio
(an editable install of another checkout included) would win otherwise.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
