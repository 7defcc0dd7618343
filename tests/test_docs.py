"""The docs match the code: links resolve inside the repository, named files exist, named commands
and options exist (cheap checks; the README's examples and the plugin guide's example run elsewhere)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
REPO_PATH = re.compile(r"`((?:hubtune|plugins|tests|benchmarks|scripts|docs)/[\w./-]+)`")
COMMAND = re.compile(r"^\s*(?:\$ )?hubtune ([a-z][\w-]*)(?: ([a-z][\w-]*))?", re.MULTILINE)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_links_stay_in_the_repository_and_resolve(doc: Path) -> None:
    text = doc.read_text()
    assert "DESIGN.md" not in text and "../shared" not in text, f"{doc.name} points outside the repository"
    for target in LINK.findall(text):
        if target.startswith(("http://", "https://", "#", "mailto:")):
            continue
        path = (doc.parent / target.split("#")[0]).resolve()
        assert path.is_relative_to(ROOT), f"{doc.name}: link {target} leaves the repository"
        assert path.exists(), f"{doc.name}: link {target} names nothing"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_files_the_docs_name_exist(doc: Path) -> None:
    missing = [name for name in REPO_PATH.findall(doc.read_text())
               if "*" not in name and not (ROOT / name.rstrip("/")).exists()]
    assert not missing, f"{doc.name} names files that do not exist: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_commands_the_docs_show_exist(doc: Path) -> None:
    import click

    from hubtune.cli import cli

    context = click.Context(cli)
    code = "\n".join(re.findall(r"^```[^\n]*\n(.*?)^```", doc.read_text(), re.MULTILINE | re.DOTALL))
    for name, sub in COMMAND.findall(code):
        command = cli.get_command(context, name)
        if command is None and name.startswith("example-"):
            continue  # the example plugin's own command (docs/plugins.md)
        assert command is not None, f"{doc.name}: `hubtune {name}` is not a command"
        if isinstance(command, click.Group) and sub and not sub.startswith(("-",)):
            assert sub in command.commands, f"{doc.name}: `hubtune {name} {sub}` is not a command"
