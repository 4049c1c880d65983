"""Print `ID ROUND MEDIAN_NS` for criterion's latest run of one benchmark.

    python bench/criterion_median.py target/criterion decide/keys/1 3

run_micro.sh calls it after each repeated run of a target case, since criterion keeps only
the latest run's estimates.
"""

import argparse
import json
import pathlib


def latest_median(criterion_dir: pathlib.Path, bench_id: str) -> float:
    for meta in criterion_dir.glob("**/new/benchmark.json"):
        if json.loads(meta.read_text())["full_id"] == bench_id:
            estimates = json.loads((meta.parent / "estimates.json").read_text())
            return float(estimates["median"]["point_estimate"])
    raise SystemExit(f"criterion_median: no results for {bench_id} under {criterion_dir}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("criterion_dir", type=pathlib.Path, help="criterion's output directory")
    p.add_argument("bench_id", help="the benchmark's full id, e.g. decide/keys/1")
    p.add_argument("round", type=int, help="which run of it this is")
    a = p.parse_args()
    print(f"{a.bench_id} {a.round} {latest_median(a.criterion_dir, a.bench_id):.3f}")
