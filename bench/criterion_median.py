"""Print `ID ROUND MEDIAN_NS` for criterion's latest run of one benchmark.

    python bench/criterion_median.py target/criterion decide/keys/1 3

run_micro.sh calls it after each repeated run of a target case, since criterion keeps only
the latest run's estimates.
"""

import json
import pathlib
import sys


def latest_median(criterion_dir: pathlib.Path, bench_id: str) -> float:
    for meta in criterion_dir.glob("**/new/benchmark.json"):
        if json.loads(meta.read_text())["full_id"] == bench_id:
            estimates = json.loads((meta.parent / "estimates.json").read_text())
            return float(estimates["median"]["point_estimate"])
    raise SystemExit(f"criterion_median: no results for {bench_id} under {criterion_dir}")


if __name__ == "__main__":
    directory, bench_id, round_no = pathlib.Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    print(f"{bench_id} {round_no} {latest_median(directory, bench_id):.3f}")
