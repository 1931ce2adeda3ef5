"""Run every benchmark in bench/ (make bench). Figures go to stdout."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

for script in sorted(HERE.glob("*.py")):
    # The benches are the scripts; common.py and smpp_bench.py are what they share.
    if script.name == "run_all.py" or 'if __name__ == "__main__":' not in script.read_text(encoding="utf-8"):
        continue
    print(f"\n=== {script.name} ===", flush=True)
    subprocess.run([sys.executable, str(script)], cwd=HERE.parent, check=True)
