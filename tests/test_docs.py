"""The docs stay true to the code: the configuration reference is what Settings generates, the
README stays short, and every link and file path named in README.md, docs/ and the benchmarks
index exists. Fast, and imports no model."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import REPO
from rag.config import settings_reference

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
REGENERATE = (
    "python -c \"import pathlib, rag.config as c; "
    "pathlib.Path('docs/configuration.md').write_text(c.settings_reference(), encoding='utf-8')\""
)
FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.M | re.S)
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
# A repository path with a file suffix, not part of a longer path (~/.cache/rag/... is not ours).
PATH = re.compile(r"(?<![\w./~-])((?:rag|benchmarks|tests|docs)/[\w./*-]*\w\.(?:py|md|sh|json|jsonl|png|safetensors))\b")


def rel(page: Path) -> str:
    return str(page.relative_to(REPO))


def prose(text: str) -> str:
    """The page without its fenced code blocks (no links or headings are read inside them)."""
    return FENCE.sub("", text)


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens, repeats numbered."""
    seen: dict[str, int] = {}
    found = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", prose(page.read_text(encoding="utf-8")), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        found.add(slug if n == 0 else f"{slug}-{n}")
    return found


def exists(path: str, base: Path = REPO) -> bool:
    return any(base.glob(path)) if "*" in path else (base / path).exists()


def test_configuration_reference_is_generated_from_settings():
    page = REPO / "docs" / "configuration.md"
    text = page.read_text(encoding="utf-8") if page.exists() else ""
    assert text == settings_reference(), (
        f"docs/configuration.md is not what rag.config.Settings generates; regenerate it with:\n{REGENERATE}"
    )


def test_readme_fits_on_a_few_screens():
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; keep it to 200 and move depth to docs/"


def test_readme_keeps_the_ci_command_blocks():
    """.ci/run reads the test command from the bash block after `<!-- ci:test -->`."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    for marker in ("<!-- ci:app -->", "<!-- ci:test -->"):
        assert re.search(re.escape(marker) + r"\n```bash\n[^`\n]+\n```", text), f"README.md lost its {marker} block"


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_every_relative_link_resolves(page: Path):
    broken = []
    for target in LINK.findall(prose(page.read_text(encoding="utf-8"))):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target} (no file {dest.relative_to(REPO) if dest.is_relative_to(REPO) else dest})")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target} (no heading #{anchor} in {dest.relative_to(REPO)})")
    assert not broken, f"{rel(page)} links to what is not there: " + "; ".join(broken)


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_every_file_path_named_exists(page: Path):
    missing = sorted({p for p in PATH.findall(page.read_text(encoding="utf-8")) if not exists(p)})
    assert not missing, f"{rel(page)} names files that do not exist: {', '.join(missing)}"


def test_benchmarks_index_covers_every_script_and_names_real_results():
    index = (REPO / "benchmarks" / "README.md").read_text(encoding="utf-8")
    rows = [line for line in index.splitlines() if line.startswith("| `")]
    named = {m for row in rows for m in re.findall(r"`([\w]+\.(?:py|sh))\b", row.split("|")[1])}
    scripts = {p.name for p in (REPO / "benchmarks").glob("*.py") if p.name not in ("__init__.py", "results_file.py")}
    scripts |= {p.name for p in (REPO / "benchmarks").glob("*.sh")}
    assert scripts <= named, f"benchmarks/README.md has no row for: {', '.join(sorted(scripts - named))}"
    gone = sorted(n for n in named if not (REPO / "benchmarks" / n).exists())
    assert not gone, f"benchmarks/README.md indexes scripts that do not exist: {', '.join(gone)}"
    results = set(re.findall(r"(?<![\w/])(results/[\w./*-]*\w\.(?:md|json|png))", index))
    missing = sorted(r for r in results if not exists(r, REPO / "benchmarks"))
    assert not missing, f"benchmarks/README.md names result files that do not exist: {', '.join(missing)}"
