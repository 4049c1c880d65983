"""scripts/build-cache.sh keeps cargo's builds per checkout under a budget: past it, other
checkouts' builds go, least recently used first, and never the build of the checkout asking,
which a run of its own (pytest beside the packaging tests) may be loading from."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KIB = 1024


def kept(checkout: Path, cache: Path, budget_kib: int) -> Path:
    """What ``kept_build_dir target`` prints, asked from ``checkout``."""
    script = f"set -euo pipefail\n. {ROOT}/scripts/build-cache.sh\nkept_build_dir target\n"
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), "TOOLGATE_KEPT_BUILDS_KIB": str(budget_kib)}
    done = subprocess.run(
        ["bash", "-c", script], cwd=checkout, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return Path(done.stdout.strip())


def build_of(checkout: Path, cache: Path) -> Path:
    name = hashlib.sha256(f"{checkout.resolve()}\n".encode()).hexdigest()[:16]
    return cache / "toolgate" / "target" / name


def fill(directory: Path, kib: int, age: int) -> None:
    """``kib`` of build in ``directory``, last used ``age`` seconds ago."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "artifact").write_bytes(os.urandom(kib * KIB))
    when = 1_700_000_000 - age
    os.utime(directory, (when, when))


def test_past_the_budget_other_checkouts_go_oldest_first_and_the_askers_stays(tmp_path: Path):
    cache = tmp_path / "cache"
    checkouts = {name: tmp_path / name for name in ("old", "recent", "asking")}
    for path in checkouts.values():
        path.mkdir()
    fill(build_of(checkouts["old"], cache), 600, age=300)
    fill(build_of(checkouts["recent"], cache), 600, age=100)
    fill(build_of(checkouts["asking"], cache), 600, age=500)  # the oldest of all: still kept
    mine = kept(checkouts["asking"], cache, budget_kib=1400)
    assert mine == build_of(checkouts["asking"], cache)
    assert (mine / "artifact").exists()
    assert not build_of(checkouts["old"], cache).exists()
    assert (build_of(checkouts["recent"], cache) / "artifact").exists()


def test_a_checkout_over_the_budget_alone_keeps_its_build(tmp_path: Path):
    cache = tmp_path / "cache"
    (other := tmp_path / "other").mkdir()
    (asking := tmp_path / "asking").mkdir()
    fill(build_of(other, cache), 300, age=100)
    fill(build_of(asking, cache), 900, age=200)
    mine = kept(asking, cache, budget_kib=500)
    assert (mine / "artifact").exists()
    assert not build_of(other, cache).exists()


def test_under_the_budget_nothing_goes(tmp_path: Path):
    cache = tmp_path / "cache"
    (other := tmp_path / "other").mkdir()
    (asking := tmp_path / "asking").mkdir()
    fill(build_of(other, cache), 100, age=100)
    kept(asking, cache, budget_kib=10_000)
    assert (build_of(other, cache) / "artifact").exists()
