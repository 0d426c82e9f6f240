"""Progress bars for long steps (stderr; silent when PREFBENCH_QUIET=1, e.g. in tests)."""
from __future__ import annotations

import os
import sys

from tqdm.auto import tqdm


def progress(total=None, desc: str = "", unit: str = "it", **kw):
    disable = os.environ.get("PREFBENCH_QUIET") == "1"
    return tqdm(total=total, desc=desc, unit=unit, disable=disable, leave=False, dynamic_ncols=True, **kw)


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
