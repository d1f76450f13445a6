"""Load a YAML spec, run it, and print the JSON a `flowopt run --json` would print.

FLOWOPT_BASE_URL=http://127.0.0.1:8000 python examples/run_yaml.py
"""

from __future__ import annotations

import json
from pathlib import Path

import flowopt

spec = Path(__file__).with_name("support.yaml")
pipe = flowopt.load(spec)
result = pipe.invoke("I was charged twice for one order.", user="bob")
print(json.dumps(result.to_dict(), indent=2)[:1500])
assert result.hops[0].step == "classify"
assert result.hops[-1].step in ("billing", "shipping")
pipe.close()
