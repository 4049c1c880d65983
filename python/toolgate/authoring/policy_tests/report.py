"""Policy test results as text, JSON or JUnit XML."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Sequence

from toolgate.authoring.explain import render
from toolgate.authoring.policy_tests.run import FileResult


def report_text(results: Sequence[FileResult], *, quiet: bool = False, explain: bool = True) -> str:
    lines: list[str] = []
    for r in results:
        failed = [c for c in r.cases if not c.passed]
        if quiet and not failed:
            continue
        lines.append(f"{r.path} on {r.policy}")
        for c in r.cases:
            if c.passed:
                if not quiet:
                    lines.append(f"  PASS  {c.name}")
                continue
            f = c.failure
            assert f is not None
            lines.append(f"  FAIL  {c.name}")
            lines.append(f"        at {f.step}, call {f.call} of {f.of} ({f.tool}):")
            lines.extend(f"          {m}" for m in f.mismatches)
            if explain:
                lines.append("        how it was decided:")
                lines.extend(f"          {line}" for line in render(f.steps).splitlines())
    passed = sum(c.passed for r in results for c in r.cases)
    failed = sum(not c.passed for r in results for c in r.cases)
    runs = len(results)
    lines.append(f"{passed} passed, {failed} failed ({runs} file-policy run{'s' * (runs != 1)})")
    return "\n".join(lines) + "\n"


def report_json(results: Sequence[FileResult]) -> str:
    doc = {
        "passed": sum(c.passed for r in results for c in r.cases),
        "failed": sum(not c.passed for r in results for c in r.cases),
        "runs": [
            {
                "file": r.path,
                "policy": r.policy,
                "cases": [
                    {"name": c.name, "passed": c.passed}
                    | ({"failure": c.failure.to_dict()} if c.failure else {})
                    for c in r.cases
                ],
            }
            for r in results
        ],
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def report_junit(results: Sequence[FileResult]) -> bytes:
    """JUnit XML, which CI systems show as test results: a suite per file and policy."""
    suites = ET.Element("testsuites", name="toolgate test")
    for r in results:
        failures = sum(not c.passed for c in r.cases)
        suite = ET.SubElement(
            suites,
            "testsuite",
            name=f"{r.path} on {r.policy}",
            tests=str(len(r.cases)),
            failures=str(failures),
        )
        for c in r.cases:
            case = ET.SubElement(suite, "testcase", name=c.name, classname=r.path)
            if c.failure is not None:
                f = c.failure
                message = "; ".join(f.mismatches)
                failure = ET.SubElement(case, "failure", message=message)
                failure.text = f"at {f.step}, call {f.call} of {f.of} ({f.tool})\n" + render(
                    f.steps
                )
    return ET.tostring(suites, encoding="utf-8", xml_declaration=True)
