"""The README's notebook example runs as written (on its own 2,000-sample subset), so the documented API stays real."""

import re

from tests.conftest import REPO


def test_the_readme_python_example_runs(fashion_root, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)
    example = next(block for block in blocks if "select_multistep(" in block)
    monkeypatch.chdir(REPO)
    example = example.replace('"data.test_subset=500"', f'"data.test_subset=500", "data.root={fashion_root}", "data.download=false", '
                              '"scores.recipe.epochs=2", "scores.score_epochs=[1,2]"')
    exec(compile(example, "README.md", "exec"), {})
    assert capsys.readouterr().out.strip() == "1000 of 2000 kept"
