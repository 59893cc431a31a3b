"""The docs: the config reference is generated from the config model and must not go stale; the README
starts with the two commands; every link between the docs reaches a file and a heading."""

from __future__ import annotations

import re
from pathlib import Path

from tools.config_reference import BEGIN, END, reference

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
CONFIGURATION = ROOT / "docs" / "configuration.md"


def test_the_config_reference_is_current() -> None:
    text = CONFIGURATION.read_text(encoding="utf-8")
    current = text[text.index(BEGIN) : text.index(END) + len(END)]
    assert current == reference(), "docs/configuration.md's config reference is stale: run `make docs`"


def test_readme_starts_with_the_two_commands() -> None:
    text = README.read_text(encoding="utf-8")
    first_block = text.split("```bash", 1)[1].split("```", 1)[0]
    assert "make demo" in first_block and "make test" in first_block


def test_every_config_key_of_the_dev_stack_is_documented() -> None:
    import yaml

    text = CONFIGURATION.read_text(encoding="utf-8")
    with open(ROOT / "Pulumi.dev.yaml", encoding="utf-8") as handle:
        keys = [k.split(":", 1)[1] for k in yaml.safe_load(handle)["config"]]
    for key in keys:
        assert f"| `{key}` |" in text, key


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_link_between_the_docs_reaches_its_file_and_heading() -> None:
    docs = [README, ROOT / "CONTRIBUTING.md", ROOT / "lab" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken = []
    for doc in docs:
        for target, anchor in re.findall(r"\]\(([^)#\s]*)(?:#([^)\s]+))?\)", doc.read_text(encoding="utf-8")):
            if target.startswith(("http:", "https:", "mailto:")):
                continue
            path = (doc.parent / target).resolve() if target else doc
            if not path.exists():
                broken.append(f"{doc.name}: {target} (no such file)")
            elif anchor and path.suffix == ".md":
                headings = {slug(m) for m in re.findall(r"^#+ (.*)$", path.read_text(encoding="utf-8"), re.M)}
                if anchor not in headings:
                    broken.append(f"{doc.name}: {target}#{anchor} (no such heading)")
    assert not broken, broken
