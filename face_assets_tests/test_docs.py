"""The README and docs/ say what works: every command they show parses as written (the cheap
ones run), every script option they use exists, every path they name is in the repository,
and the README stays a front door."""

from __future__ import annotations

import contextlib
import io
import re
import runpy
import shlex
import sys
import tempfile
from pathlib import Path

import pytest

from face_assets.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# What the synopses' placeholders stand for, to turn each into a command one could type.
PLACEHOLDERS = {
    "FOLDER": "photos", "PERSON_ID": "3", "FACE_ID": "2", "ID": "1", "NAME": "Ama", "DIR": "out",
    "IMAGES": "a.jpg", "IMAGE": "a.jpg", "FILE.pkl": "faces.pkl", "COMMAND": "detect", "N": "2",
    "$LFW_TUNE": "lfw-tune", "~/Pictures": "photos",
}  # fmt: skip
# Files the pages tell users to make (`cp deploy/env.example deploy/.env`).
WRITTEN_BY_USERS = {"deploy/.env"}
NOT_PATHS = {"face_assets/recluster"}  # a Dagster run tag
# Commands that touch only an empty database of their own: they are run, not only parsed.
CHEAP = {"db init", "persons list", "errors", "unlock", "recluster"}


def _documented_lines() -> list[tuple[str, str]]:
    """(page, command) for each `face-assets ...` or `python scripts/...` the pages show, in
    code spans or in code blocks, comments cut off."""
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        spans = re.findall(r"`((?:face-assets|python scripts/)[^`]+)`", text)
        blocks = re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)
        lines = [line.strip() for block in blocks for line in block.splitlines()]
        shown = [line for line in lines if line.startswith(("face-assets", "python scripts/"))]
        for command in spans + shown:
            found.append((page.name, command.split("  #")[0].split(" # ")[0].strip()))
    return found


def _as_typed(command: str) -> list[str]:
    """A synopsis as a command one could type: optional parts taken, the first of alternatives,
    placeholders filled in, repetition marks dropped."""
    command = command.replace("\\|", "|")
    command = re.sub(r"\[([^\]|]*)\|[^\]]*\]", r"\1", command)  # [--pick largest|center]
    command = re.sub(r"(\S+)\|\S+", r"\1", command)
    command = command.replace("[", "").replace("]", "").replace("...", "")
    words = shlex.split(command)
    return [PLACEHOLDERS.get(word, word) for word in words]


CLI_COMMANDS = sorted({(p, c) for p, c in _documented_lines() if c.startswith("face-assets")})
SCRIPT_COMMANDS = sorted({(p, c) for p, c in _documented_lines() if c.startswith("python scripts/")})


def test_the_pages_show_commands_at_all() -> None:
    assert len(CLI_COMMANDS) > 30 and len(SCRIPT_COMMANDS) > 8


@pytest.mark.parametrize(("page", "command"), CLI_COMMANDS)
def test_each_documented_command_parses_as_written(page: str, command: str) -> None:
    argv = _as_typed(command)[1:]
    if len(argv) == 1:  # a command named in the text (`face-assets evaluate`): it exists
        argv.append("--help")
    try:
        build_parser().parse_args(argv)
    except SystemExit as exit_:
        if exit_.code != 0 or argv[-1] != "--help":
            pytest.fail(f"{page}: `{command}` does not parse ({shlex.join(argv)}): exit {exit_.code}")


def test_the_cheap_documented_commands_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("DATABASE_URL", "FACE_ASSETS_DATA_DIR", "DAGSTER_HOME"):
        monkeypatch.delenv(name, raising=False)
    shown = {" ".join(_as_typed(c)[1:]) for _, c in CLI_COMMANDS}
    assert CHEAP <= shown, CHEAP - shown
    for command in ["db init", *sorted(CHEAP - {"db init"})]:
        assert main(command.split()) == 0, command


@pytest.mark.parametrize("script", sorted({c.split()[1] for _, c in SCRIPT_COMMANDS}))
def test_each_documented_script_takes_the_options_the_pages_give_it(
    script: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `python SCRIPT --help` run in this process: the imports the scripts share are paid once.
    monkeypatch.setattr(sys, "argv", [script, "--help"])
    monkeypatch.chdir(ROOT)
    shown = io.StringIO()
    with contextlib.redirect_stdout(shown), pytest.raises(SystemExit) as done:
        runpy.run_path(script, run_name="__main__")
    assert done.value.code in (0, None)
    usage = shown.getvalue()
    for page, command in SCRIPT_COMMANDS:
        if command.split()[1] != script:
            continue
        for option in re.findall(r"(?<!\S)(--[a-z][a-z0-9-]*)", command):
            assert option in usage, f"{page}: `{command}` uses {option}, which {script} does not take"


def test_every_path_the_pages_name_is_in_the_repository() -> None:
    pattern = r"(?<![\w/.$~-])((?:docs|scripts|deploy|face_assets\w*)/[\w./-]*\w)"
    missing = [
        f"{page.name}: {path}"
        for page in PAGES
        for path in re.findall(pattern, page.read_text(encoding="utf-8"))
        if not (ROOT / path).exists()
        and not (ROOT / "docs" / path).exists()
        and path not in WRITTEN_BY_USERS | NOT_PATHS
    ]
    assert missing == []


def test_the_pages_name_no_path_outside_the_repository() -> None:
    """No relative path climbs out of the clone, and no absolute path of this machine (the
    folder the clone sits in, the home folder) is written down."""
    # A clone made in the temporary folder (as CI makes it) does not make /tmp a machine path.
    folders = (ROOT, ROOT.parent, Path.home())
    machine = {f"{folder}/" for folder in folders if str(folder) != tempfile.gettempdir()}
    outside = []
    for page in PAGES:
        for line in page.read_text(encoding="utf-8").splitlines():
            relative = re.findall(r"(?:\.\./)+[\w./-]*", line)
            climbing = [p for p in relative if ROOT not in (page.parent / p).resolve().parents]
            if climbing or any(folder in line for folder in machine):
                outside.append(f"{page.name}: {line.strip()}")
    assert outside == []


def test_the_readme_is_a_front_door() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) < 300
    headings = re.findall(r"^## (.+)$", text, flags=re.M)
    contents = re.findall(r"^- \[(.+?)\]\(#([\w-]+)\)", text, flags=re.M)
    assert [title for title, _ in contents] == [h for h in headings if h != "Contents"]
    assert text.index("```bash\npython3 -m venv") < text.index("```bash\nmake test")


def _variable(name: str, info: object) -> str:
    """The variable a Settings field is read from (its first alias, else FACE_ASSETS_NAME)."""
    alias = getattr(info, "validation_alias", None)
    choices = getattr(alias, "choices", None)
    return str(choices[0]) if choices else f"FACE_ASSETS_{name.upper()}"


def _shown(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _plain_defaults() -> dict[str, str]:
    """Each setting's variable and its default as written, where the default is a plain value
    (not a path worked out at run time, not unset)."""
    from face_assets.core.settings import Settings

    plain = {}
    for name, info in Settings.model_fields.items():
        if info.default_factory is None and isinstance(info.default, (str, int, float, bool)):
            plain[_variable(name, info)] = _shown(info.default)
    return plain


def test_env_example_lists_every_setting_with_its_default() -> None:
    from face_assets.core.settings import Settings

    written = dict(
        line.split("=", 1)
        for line in (ROOT / ".env.example").read_text(encoding="utf-8").splitlines()
        if line and not line.startswith("#")
    )
    variables = {_variable(name, info) for name, info in Settings.model_fields.items()}
    assert set(written) == variables
    for variable, default in _plain_defaults().items():
        assert written[variable] == default, variable


def test_the_readmes_settings_table_gives_the_defaults_the_settings_have() -> None:
    rows = re.findall(r"^\| `(\w+)` \| `([^`]*)` \|", (ROOT / "README.md").read_text(encoding="utf-8"), re.M)
    plain = _plain_defaults()
    assert len(rows) > 15
    for variable, default in rows:
        if variable in plain:
            assert default == plain[variable], variable
