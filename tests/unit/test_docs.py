"""The README's config reference is generated from the config model and must not go stale."""

from __future__ import annotations

from pathlib import Path

from tools.config_reference import BEGIN, END, reference

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_config_reference_is_current() -> None:
    text = README.read_text(encoding="utf-8")
    current = text[text.index(BEGIN) : text.index(END) + len(END)]
    assert current == reference(), "README.md's config reference is stale: run `make docs`"


def test_readme_starts_with_the_two_commands() -> None:
    text = README.read_text(encoding="utf-8")
    first_block = text.split("```bash", 1)[1].split("```", 1)[0]
    assert "make demo" in first_block and "make test" in first_block


def test_every_config_key_of_the_dev_stack_is_documented() -> None:
    import yaml

    text = README.read_text(encoding="utf-8")
    with open(README.parent / "Pulumi.dev.yaml", encoding="utf-8") as handle:
        keys = [k.split(":", 1)[1] for k in yaml.safe_load(handle)["config"]]
    for key in keys:
        assert f"| `{key}` |" in text, key
