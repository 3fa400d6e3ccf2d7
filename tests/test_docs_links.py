"""The documentation travels with the clone: every relative link in README.md and docs/*.md resolves
to a file inside the repository, and no tracked file points into a folder outside it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
EXTERNAL = ("http://", "https://", "mailto:", "#")
OUTSIDE_FOLDER = "shared" + "/"  # the team folder beside a checkout, which a clone does not have


def relative_links(document: Path) -> list[str]:
    """Targets of the Markdown links in `document` that point at files, without their anchors."""
    targets = LINK.findall(document.read_text(encoding="utf-8"))
    return [t.split("#", 1)[0] for t in targets if not t.startswith(EXTERNAL)]


@pytest.mark.parametrize("document", DOCUMENTS, ids=[d.name for d in DOCUMENTS])
def test_every_relative_link_resolves_inside_the_repository(document: Path):
    broken = []
    for target in relative_links(document):
        resolved = (document.parent / target).resolve()
        if not resolved.is_relative_to(ROOT) or not resolved.exists():
            broken.append(target)
    assert broken == [], f"{document.name} links to what a clone does not have: {broken}"


def test_link_finder_sees_relative_links_and_skips_external_ones(tmp_path: Path):
    page = tmp_path / "page.md"
    page.write_text("[a](docs/design.md#shape) ![b](img.png \"t\") [c](https://x.org) [d](#top)\n")
    assert relative_links(page) == ["docs/design.md", "img.png"]


def test_no_tracked_file_points_to_the_team_folder_outside_the_clone():
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    naming = [name for name in files
              if (ROOT / name).is_file() and OUTSIDE_FOLDER in (ROOT / name).read_text(errors="ignore")]
    assert naming == [], f"these files send readers outside the repository: {naming}"
