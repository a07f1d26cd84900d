"""CLs at mu = 1 for every signal point of a patchset, as a pandas table.

    python examples/patchset_scan.py [BkgOnly.json patchset.json]

Default: the staus search of ATLAS (SUSY-2018-04) from ../shared/workspaces/real (57 signal points).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import hf2ppl

if len(sys.argv) > 2:
    bkgonly, patchset = sys.argv[1], sys.argv[2]
else:
    real = Path(os.environ.get("HF2PPL_SHARED", Path(__file__).resolve().parents[2] / "shared")) / "workspaces" / "real"
    bkgonly, patchset = real / "staus_SUSY-2018-04_BkgOnly.json", real / "staus_SUSY-2018-04_patchset.json"

res = hf2ppl.scan(bkgonly, patchset, patches=None, poi_value=1.0, test_stat="qtilde", limits=False, scheduler=None, output=None)
df = res.to_pandas()
print(df.to_string(max_rows=80))
