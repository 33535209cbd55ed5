"""Documentation hygiene: every citation and local link resolves inside the repository.

- ``docs/<file>.md §X.Y`` (and ``§X``, ``§X-Y``) in the package, tests, examples, benchmarks,
  ``docs/*.md`` and ``README.md`` names a file that exists and a heading with that section number.
  A ``§`` without a file name means ``docs/math.md``; docstrings must name the file.
- "Lemma 3.1", "Theorem 3.5" and "oracle 10" are headings of ``docs/math.md``.
- No text points outside the repository (the design notes it was written from are not shipped).
- Markdown links in ``README.md`` and ``docs/*.md`` to local files (and their ``#anchors``) resolve.

Plain text only: no JAX, no imports of the package.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MATH = ROOT / "docs" / "math.md"
THIS = Path(__file__).resolve()


def _sources() -> list[Path]:
    py = [
        p
        for d in ("numpyro_dsd", "tests", "examples", "benchmarks")
        for p in (ROOT / d).rglob("*.py")
    ]
    return sorted(p for p in py if p.resolve() != THIS)


def _markdown() -> list[Path]:
    return sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)


def _lineno(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


FENCE = re.compile(r"^```.*?^```", re.M | re.S)


def _strip_fences(text: str) -> str:
    """Blank out fenced code blocks, keeping line numbers."""
    return FENCE.sub(lambda m: "\n" * m.group().count("\n"), text)


HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.M)
SECTION_HEADING = re.compile(r"^(?:(?:Lemma|Theorem)\s+)?(\d+(?:\.\d+)?)(?![\d.]*\d)")
ITEM_HEADING = re.compile(r"^(Lemma|Theorem|Oracle)\s+(\d+(?:\.\d+)?)\b")


def _headings(path: Path) -> list[str]:
    return HEADING.findall(_strip_fences(path.read_text(encoding="utf-8")))


def _sections(path: Path) -> set[str]:
    """Section numbers of a markdown file's headings: "## 3. Flows" -> 3, "### Lemma 3.1" -> 3.1."""
    return {m.group(1) for h in _headings(path) if (m := SECTION_HEADING.match(h))}


def _items(path: Path) -> set[tuple[str, str]]:
    """Numbered items that are headings: ("lemma", "3.1"), ("oracle", "10"), ..."""
    return {
        (m.group(1).lower(), m.group(2)) for h in _headings(path) if (m := ITEM_HEADING.match(h))
    }


# --- section citations ---------------------------------------------------------------------------

NUM = r"\d+(?:\.\d+)?"
SECTION = re.compile(rf"§\s*({NUM})(?:\s*[–-]\s*({NUM})(?![\d.]*\d))?")
# the text just before a "§": a file name, optionally as a markdown link, then earlier "§a, §b and"
FILE_BEFORE = re.compile(
    rf"(?P<file>[\w./-]*\w\.md)`?\]?(?:\([^)\s]*\))?`?[\s,]*"
    rf"(?:§\s*{NUM}(?:\s*[–-]\s*{NUM})?\s*(?:,|and|or|&|[–-])?\s*)*$"
)


def _resolve(name: str, cited_from: Path) -> Path | None:
    for base in (ROOT, cited_from.parent):
        candidate = (base / name).resolve()
        if candidate.is_file() and candidate.is_relative_to(ROOT):
            return candidate
    return None


def _section_problems(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    problems = []
    for m in SECTION.finditer(text):
        where = f"{_rel(path)}:{_lineno(text, m.start())}"
        before = FILE_BEFORE.search(text, max(0, m.start() - 300), m.start())
        if before:
            target = _resolve(before.group("file"), path)
            if target is None:
                problems.append(
                    f"{where}: '{before.group('file')} §{m.group(1)}' names no file in the "
                    "repository (write docs/<file>.md)"
                )
                continue
        elif path.suffix == ".py":
            problems.append(
                f"{where}: '§{m.group(1)}' names no file (write docs/math.md §{m.group(1)})"
            )
            continue
        else:
            target = MATH
        sections = _sections(target)
        for number in filter(None, m.groups()):
            if number not in sections:
                problems.append(f"{where}: {_rel(target)} has no heading numbered {number}")
    return problems


@pytest.mark.parametrize("path", _sources() + _markdown(), ids=_rel)
def test_section_citations_resolve(path):
    assert not _section_problems(path)


def test_math_reference_exists_with_numbered_sections():
    sections = _sections(MATH)
    expected = {str(i) for i in range(9)} | {"1.1", "1.2", "1.3", "2.3", "3.1", "3.5", "3.8", "6.3"}
    assert expected <= sections, sorted(expected - sections)


# --- lemmas, theorems and oracles ----------------------------------------------------------------

ITEM = re.compile(r"\b(Lemma|Theorem)\s+(\d+\.\d+)")
ORACLES = re.compile(r"\boracles?\s+(\d+(?:(?:\s*,\s*|\s+and\s+)\d+)*)", re.I)


@pytest.mark.parametrize("path", _sources() + _markdown(), ids=_rel)
def test_lemma_theorem_and_oracle_citations_are_headings_of_math_md(path):
    text = path.read_text(encoding="utf-8")
    items = _items(MATH)
    cited = {(k.lower(), n) for k, n in ITEM.findall(text)}
    cited |= {("oracle", n) for m in ORACLES.finditer(text) for n in re.findall(r"\d+", m.group(1))}
    assert not sorted(cited - items), f"not a heading of docs/math.md: {sorted(cited - items)}"


# --- nothing outside the repository --------------------------------------------------------------

OUTSIDE = re.compile(r"shared/design|\.\./shared|/work/shared")
# a docs file named without its folder: "math.md §2" in a docstring is a dead end; in markdown
# "math.md §2" must be a link or "docs/math.md"
BARE_PY = re.compile(r"(?<![\w/.'\"-])(\w+)\.md\b")
BARE_MATH_MD = re.compile(r"(?<![\w/.-])(?<!\]\()math\.md`?\s*§")


@pytest.mark.parametrize("path", _sources() + _markdown(), ids=_rel)
def test_no_citation_points_outside_the_repository(path):
    text = path.read_text(encoding="utf-8")
    problems = [f"line {_lineno(text, m.start())}: {m.group()!r}" for m in OUTSIDE.finditer(text)]
    if path.suffix == ".py":
        problems += [
            f"line {_lineno(text, m.start())}: {m.group()!r} (write docs/{m.group()})"
            for m in BARE_PY.finditer(text)
            if m.group(1) == "math" or (ROOT / "docs" / m.group()).is_file()
        ]
    else:
        problems += [
            f"line {_lineno(text, m.start())}: bare 'math.md §' (link it or write docs/math.md)"
            for m in BARE_MATH_MD.finditer(text)
        ]
    assert not problems


# --- markdown links ------------------------------------------------------------------------------

LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE_CODE = re.compile(r"`[^`\n]*`")


def _slugs(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens, -1, -2 ..."""
    seen: Counter[str] = Counter()
    slugs = set()
    for heading in _headings(path):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        slugs.add(slug if not seen[slug] else f"{slug}-{seen[slug]}")
        seen[slug] += 1
    return slugs


def _link_problems(path: Path) -> list[str]:
    raw = path.read_text(encoding="utf-8")
    text = INLINE_CODE.sub(lambda m: " " * len(m.group()), _strip_fences(raw))
    problems = []
    for m in LINK.finditer(text):
        target = m.group(1)
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        where = f"{_rel(path)}:{_lineno(text, m.start())}"
        resolved = (path.parent / file_part).resolve() if file_part else path
        if not resolved.is_relative_to(ROOT):
            problems.append(f"{where}: {target} points outside the repository")
        elif not resolved.exists():
            problems.append(f"{where}: {target} does not exist")
        elif anchor and resolved.suffix == ".md" and anchor not in _slugs(resolved):
            problems.append(f"{where}: {target}: no heading with anchor #{anchor}")
    return problems


@pytest.mark.parametrize("path", _markdown(), ids=_rel)
def test_local_markdown_links_resolve(path):
    assert not _link_problems(path)


def test_the_checks_catch_what_they_should(tmp_path):
    """The parsers on known-good and known-bad snippets, so a passing suite means something."""
    sections = _sections(MATH)
    assert {"2.3", "3.5", "6.3"} <= sections
    good = "x (docs/math.md §2.4, §3.7) and [`theory.md`](theory.md) §1–3"
    m = list(SECTION.finditer(good))
    assert [x.group(1) for x in m] == ["2.4", "3.7", "1"] and m[2].group(2) == "3"
    assert FILE_BEFORE.search(good, 0, m[1].start()).group("file") == "docs/math.md"
    assert FILE_BEFORE.search(good, 0, m[2].start()).group("file") == "theory.md"
    assert BARE_PY.search("see math.md §2") and not BARE_PY.search("see docs/math.md §2")
    assert BARE_MATH_MD.search("see `math.md` §2") and not BARE_MATH_MD.search("math.md, method.md")
    assert BARE_MATH_MD.search("fixes this (math.md §8).")
    assert not BARE_MATH_MD.search("[math.md](math.md) §2 and docs/math.md §3")
    assert not BARE_MATH_MD.search("[`math.md`](math.md)")
    bad = tmp_path / "bad.py"
    bad.write_text('"""Cites math.md §2.3 and §9.9."""\n', encoding="utf-8")
    assert len(_section_problems(bad)) == 2
