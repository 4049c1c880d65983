"""Check a musllinux wheel's extension as auditwheel would on a musl host: built for ARCH,
needing musl's libc alone (no other library to bundle), and no symbol versioned for glibc; and
as musl's loader would: no initial-exec thread-locals (DF_STATIC_TLS), which it refuses in a
library loaded with dlopen, as Python loads an extension.

    python scripts/musl_wheel_check.py WHEEL ARCH

Exits 1, saying why, when the extension is not so; prints what it read otherwise.
"""

from __future__ import annotations

import io
import sys
import zipfile

from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile
from elftools.elf.gnuversions import GNUVerNeedSection

MACHINES = {"x86_64": "EM_X86_64", "aarch64": "EM_AARCH64"}
DF_STATIC_TLS = 0x10


def dynamic(elf: ELFFile) -> tuple[list[str], int, list[str]]:
    """What a shared library asks of the loader: the libraries it needs (DT_NEEDED), its
    DT_FLAGS, and the versions of the symbols it takes from them (also read by
    tests/test_image.py of Envoy's module)."""
    tags = [
        tag
        for section in elf.iter_sections()
        if isinstance(section, DynamicSection)
        for tag in section.iter_tags()
    ]
    needed = sorted(tag.needed for tag in tags if tag.entry.d_tag == "DT_NEEDED")
    flags = sum(tag.entry.d_val for tag in tags if tag.entry.d_tag == "DT_FLAGS")
    versions = sorted(
        aux.name
        for section in elf.iter_sections()
        if isinstance(section, GNUVerNeedSection)
        for _, auxes in section.iter_versions()
        for aux in auxes
    )
    return needed, flags, versions


def main(wheel: str, arch: str) -> int:
    with zipfile.ZipFile(wheel) as z:
        (so,) = [n for n in z.namelist() if n.endswith(".so")]
        elf = ELFFile(io.BytesIO(z.read(so)))
    needed, flags, versions = dynamic(elf)
    problems = []
    if elf["e_machine"] != MACHINES[arch]:
        problems.append(f"built for {elf['e_machine']}, not {arch}")
    if needed != ["libc.so"]:
        problems.append(f"needs {needed}, not musl's libc.so alone")
    if flags & DF_STATIC_TLS:
        problems.append("uses initial-exec thread-locals (DF_STATIC_TLS): musl cannot dlopen it")
    if any(v.startswith("GLIBC") for v in versions):
        problems.append(f"has glibc-versioned symbols: {versions}")
    if problems:
        print(f"{wheel}: {so}: " + "; ".join(problems), file=sys.stderr)
        return 1
    print(f"{wheel}: {so}: {elf['e_machine']}, needs {needed}, no versioned symbols, no static TLS")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
