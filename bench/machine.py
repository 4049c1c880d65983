"""Write the machine block of bench/RESULTS.md: the hardware, the versions of everything the
benchmarks run, the code measured, and which parts of ``bench/run_all.sh`` ran when, how long
they took and with which command.

    .venv/bin/python bench/machine.py --parts target/bench-run-all/parts.tsv [--print]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import harness as h

ORDER = ["micro", "wire", "envoy-unix", "ext-proc", "peers", "redis"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--parts", type=Path, help="run_all.sh's list of the parts it ran")
    p.add_argument("--print", dest="write", action="store_false")
    args = p.parse_args()
    latest: dict[str, list[str]] = {}  # the last run of each part
    if args.parts and args.parts.exists():
        for line in filter(None, args.parts.read_text().splitlines()):
            latest[line.split("\t")[0]] = line.split("\t")
    parts = sorted(latest.values(), key=lambda f: ORDER.index(f[0]) if f[0] in ORDER else 99)
    text = h.machine_block(parts)
    print(text)
    if args.write:
        h.write_block("machine", text, "## Machine")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
