"""tests/deploy: make the `cfn_template` helper importable under any pytest import mode."""

from __future__ import annotations

import sys
from pathlib import Path

# With --import-mode=importlib pytest no longer puts test folders on sys.path; the helper
# module beside these tests must stay importable either way.
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
