"""The README's Python examples run as shown."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(sklearn=False):
    """The README's Python examples: those of jitprop.sklearn (``sklearn=True``) run in tests/scikit_learn."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    return [b for b in blocks if ("jitprop.sklearn" in b) == sklearn]


def test_readme_examples_run(capsys):
    blocks = python_blocks()
    assert len(blocks) >= 2
    for block in blocks:
        exec(compile(block, str(README), "exec"), {"__name__": "readme_example"})
    accuracy = float(capsys.readouterr().out.splitlines()[0])
    assert accuracy > 0.9
