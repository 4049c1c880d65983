"""The core is read a function at a time: none of its functions is longer than a screenful
or two (150 lines, its signature and body), so that following a decision means reading its
steps, not one function that is all of them."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "rust" / "core" / "src"
LONGEST = 150


def blank_literals(text: str) -> str:
    """``text`` with comments, strings and char literals blanked (newlines kept), so that
    braces and ``fn`` inside them do not count."""
    out, i, n = [], 0, len(text)
    raw = re.compile(r'b?r(#*)"')
    char = re.compile(r"'(\\.|\\u\{[0-9a-fA-F]+\}|[^\\'])'")
    while i < n:
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
        elif text.startswith("/*", i):
            j = text.index("*/", i) + 2
        elif (m := raw.match(text, i)) and (
            i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")
        ):
            j = text.index('"' + m.group(1), m.end()) + len(m.group(1)) + 1
        elif text[i] == '"':
            j = i + 1
            while text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            j += 1
        elif m := char.match(text, i):
            j = m.end()
        else:
            out.append(text[i])
            i += 1
            continue
        out.append(re.sub(r"[^\n]", " ", text[i:j]))
        i = j
    return "".join(out)


def function_lengths(text: str) -> list[tuple[str, int, int]]:
    """Each function with a body: (name, first line, lines from ``fn`` to its closing brace)."""
    code = blank_literals(text)
    found = []
    for m in re.finditer(r"\bfn\s+(\w+)", code):
        i, depth = m.end(), 0
        while i < len(code):  # the body's brace, unless a `;` ends a declaration first
            if code[i] in "([":
                depth += 1
            elif code[i] in ")]":
                depth -= 1
            elif depth == 0 and code[i] in ";{":
                break
            i += 1
        if i >= len(code) or code[i] == ";":
            continue
        depth = 0
        for j in range(i, len(code)):
            depth += {"{": 1, "}": -1}.get(code[j], 0)
            if depth == 0:
                break
        first = code.count("\n", 0, m.start()) + 1
        found.append((m.group(1), first, code.count("\n", m.start(), j) + 1))
    return found


def test_no_core_function_is_longer_than_150_lines():
    long = [
        f"{path.relative_to(ROOT)}:{line} {name} ({n} lines)"
        for path in sorted(CORE.rglob("*.rs"))
        for name, line, n in function_lengths(path.read_text())
        if n > LONGEST
    ]
    assert long == []


def test_lengths_are_read_past_braces_in_strings_and_comments():
    text = (
        'fn short() -> &\'static str {\n    "}}}"\n}\n'
        "// fn commented() {\n"
        "fn declared(x: u8);\n"
        "fn long() {\n" + "    let c = '{';\n" * 3 + '    let r = r#"}"#;\n    /* } */\n}\n'
    )
    assert function_lengths(text) == [("short", 1, 3), ("long", 6, 7)]
