"""Recipe overrides from the command line (`field=value ...`), shared by the benchmark scripts."""
from __future__ import annotations

import ast


def overrides(pairs: list[str]) -> dict:
    """`lr=0.002 position=rope offsets=[0,3,7]` -> {"lr": 0.002, "position": "rope", "offsets": [0, 3, 7]}: numbers
    and lists parsed, other values kept as text."""
    return {k: ast.literal_eval(v) if v[0].isdigit() or v[0] in "-.[" else v
            for k, v in (s.split("=", 1) for s in pairs)}
