"""Every command in the README is checked: CI runs the two front-door commands as written (.ci/run reads
them from the README); here every other `wildlife-vision ...` line must parse with the real CLI parser,
and the Python API example must run."""

import re
import shlex
from pathlib import Path

import pytest

from helpers import make_photo
from wildlife_vision.cli import build_parser

README = Path(__file__).resolve().parents[1] / "README.md"


def _bash_blocks(text):
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def _cli_lines():
    lines = []
    for block in _bash_blocks(README.read_text(encoding="utf-8")):
        for line in block.splitlines():
            for part in re.split(r"&&|;", line.split("#", 1)[0]):
                part = part.strip()
                if part.startswith("wildlife-vision "):
                    lines.append(part)
    return lines


def test_readme_has_both_front_door_commands():
    text = README.read_text(encoding="utf-8")
    for marker in ("<!-- main-command -->", "<!-- test-command -->"):
        after = text.split(marker, 1)[1]
        assert after.lstrip().startswith("```bash"), f"{marker} must be followed by a ```bash block"
    main_block = text.split("<!-- main-command -->", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    assert "pip install ." in main_block and "wildlife-vision predict" in main_block
    test_block = text.split("<!-- test-command -->", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    assert "pytest" in test_block


@pytest.mark.parametrize("line", _cli_lines())
def test_readme_cli_line_parses(line):
    argv = shlex.split(line)[1:]
    args = build_parser().parse_args(argv)  # SystemExit (a failure) on an unknown command or flag
    assert callable(getattr(args, "func", None))


def test_readme_python_example_runs(tmp_path, monkeypatch):
    import wildlife_vision as wv

    try:
        wv.load_model()
    except wv.ModelLoadError as e:
        pytest.skip(f"no shipped default model in this checkout: {e}")
    code = re.search(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S).group(1)
    monkeypatch.chdir(tmp_path)
    for name in ("photo.jpg", "a.jpg"):
        make_photo(1, (320, 240)).save(name)
    make_photo(2, (200, 300)).save("b.png")
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - our own README
    assert namespace["pred"].error is None
    preds = namespace["preds"]
    assert [p.error is None for p in preds] == [True, True, False]  # b"<jpeg bytes>" is not an image
