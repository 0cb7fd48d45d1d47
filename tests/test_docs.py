"""The README's option table is the one FitConfig makes (options have one source)."""

from pathlib import Path

from transmodal.config import options_markdown

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_option_table_is_generated_from_fitconfig():
    text = README.read_text()
    start, end = "<!-- options:start -->\n", "\n<!-- options:end -->"
    table = text[text.index(start) + len(start): text.index(end)]
    assert table == options_markdown(), (
        "README option table is stale; paste the output of "
        "`python -c 'from transmodal.config import options_markdown; print(options_markdown())'`")
