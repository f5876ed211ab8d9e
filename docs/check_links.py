"""Check the README and the documentation pages: the README's length and every relative link.

Run by ``make lint`` as ``python docs/check_links.py`` (standard library only). It fails when

- ``README.md`` has more than 160 lines (the manual lives in ``docs/``), or
- a relative Markdown link in ``README.md`` or ``docs/**/*.md`` points at a file that does not
  exist (relative to the linking file), or at a ``#anchor`` that is no heading of its target
  (GitHub's or MkDocs' heading slug: lowercase, punctuation other than ``-`` and ``_`` dropped,
  spaces as ``-``), or is an absolute path (it would break on GitHub or on the site).

Links inside code (fenced blocks, inline code spans) are not links and are skipped, as are
external ones (``https:``, ``mailto:``...). Prints one line per problem, ``file:line: ...``, and
exits 1 when there is any, else 0.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from functools import cache
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
README_MAX_LINES = 180

FENCE = re.compile(r"^\s*(`{3,}|~{3,})")
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)
# [text](target) and ![alt](target); text may wrap over lines, target may be <...> or titled.
INLINE_LINK = re.compile(
    r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>]*>|[^)\s]+)(?:\s+[\"'(][^)]*)?\)"
)
REFERENCE_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)", re.M)
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
EXPLICIT_ID = re.compile(r"""\{[^}]*#([\w-]+)[^}]*\}\s*$|<a\s[^>]*(?:id|name)=["']([^"']+)["']""")
EXTERNAL = re.compile(r"^(?:[a-zA-Z][a-zA-Z0-9+.-]*:|//)")


def blank_code(text: str) -> str:
    """The text with fenced blocks and inline code spans blanked out, line numbers kept."""
    lines, fence = [], ""
    for line in text.split("\n"):
        match = FENCE.match(line)
        if fence:
            if match and match.group(1)[0] == fence[0] and len(match.group(1)) >= len(fence):
                fence = ""
            lines.append("")
        elif match:
            fence = match.group(1)
            lines.append("")
        else:
            lines.append(line)
    return CODE_SPAN.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), "\n".join(lines))


def plain_heading(text: str) -> str:
    """A heading's text as the slug sees it: links reduced to their text, markup and tags gone."""
    text = re.sub(r"\s*\{[^}]*\}\s*$", "", text)  # attr_list {#id .class}
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"<[^>]+>", "", text)
    return text.replace("`", "")


def github_slug(text: str) -> str:
    """GitHub's anchor: lowercase, punctuation except ``-`` and ``_`` dropped, spaces → ``-``."""
    return re.sub(r"[^\w\- ]", "", plain_heading(text).strip().lower()).replace(" ", "-")


def mkdocs_slug(text: str) -> str:
    """Python-Markdown's ``toc`` slugify, MkDocs' default (ASCII, runs of ``-``/spaces → ``-``)."""
    value = unicodedata.normalize("NFKD", plain_heading(text)).encode("ascii", "ignore").decode()
    value = re.sub(r"[^\w\s-]", "", value).strip().lower()
    return re.sub(r"[-\s]+", "-", value)


@cache
def anchors(path: Path) -> frozenset[str]:
    """Every anchor a page offers: its headings' slugs (with the suffixes of repeated ones) and
    explicit ids."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for line in blank_code(path.read_text(encoding="utf-8")).split("\n"):
        explicit = EXPLICIT_ID.search(line)
        if explicit:
            found.add(explicit.group(1) or explicit.group(2))
        heading = HEADING.match(line)
        if not heading:
            continue
        for slug in {github_slug(heading.group(2)), mkdocs_slug(heading.group(2))}:
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            found.add(slug if count == 0 else f"{slug}-{count}")
            found.add(slug if count == 0 else f"{slug}_{count}")
    return frozenset(found)


def links(path: Path) -> list[tuple[int, str]]:
    """The (line, target) of every link of a page outside code."""
    text = blank_code(path.read_text(encoding="utf-8"))
    found = [(m.start(), m.group(1)) for m in INLINE_LINK.finditer(text)]
    found += [(m.start(), m.group(1)) for m in REFERENCE_DEF.finditer(text)]
    return sorted((text.count("\n", 0, start) + 1, target.strip("<>")) for start, target in found)


def problem(source: Path, target: str) -> str | None:
    """Why a link of ``source`` is broken, or None when it is fine (or not relative)."""
    if EXTERNAL.match(target):
        return None
    if target.startswith("/"):
        return "absolute path: link relative to the linking file"
    path_part, _, anchor = target.partition("#")
    path_part = unquote(path_part.split("?", 1)[0])
    dest = (source.parent / path_part).resolve() if path_part else source
    shown = path_part or source.name
    if not dest.exists():
        return f"{shown} does not exist"
    if not anchor:
        return None
    if dest.is_dir() or dest.suffix.lower() not in (".md", ".markdown"):
        return f"#{anchor}: {shown} is not a Markdown page"
    if unquote(anchor) not in anchors(dest):
        return f"#{anchor}: no such heading in {shown}"
    return None


def pages() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def main() -> int:
    errors: list[str] = []
    count = len(README.read_text(encoding="utf-8").splitlines())
    if count > README_MAX_LINES:
        errors.append(
            f"README.md: {count} lines, more than {README_MAX_LINES}: move detail into docs/"
        )
    for page in pages():
        shown = page.relative_to(ROOT)
        for line, target in links(page):
            why = problem(page, target)
            if why:
                errors.append(f"{shown}:{line}: broken link ({target}): {why}")
    for error in errors:
        print(error)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
