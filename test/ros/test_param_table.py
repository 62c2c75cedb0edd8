"""The README's parameter table is the node's own: generated from the Specs the node
declares (`python -m tttkd_ros.ros.param_table`), so a new or changed parameter that is not
in the README fails here."""
from __future__ import annotations

from pathlib import Path

from tttkd_ros.ros.param_table import markdown_table
from tttkd_ros.ros.params import all_specs

README = Path(__file__).resolve().parents[2] / "README.md"
BEGIN, END = "<!-- parameters:begin -->", "<!-- parameters:end -->"


def test_the_readme_holds_the_generated_parameter_table() -> None:
    text = README.read_text()
    assert BEGIN in text and END in text, f"README lacks the {BEGIN} ... {END} markers"
    in_readme = text.split(BEGIN, 1)[1].split(END, 1)[0].strip() + "\n"
    assert in_readme == markdown_table(), (
        "README parameter table is stale: replace it with the output of "
        "`python -m tttkd_ros.ros.param_table`")


def test_every_declared_parameter_has_a_row_with_its_run_time_flag() -> None:
    rows = {line.split("|")[1].strip().strip("`"): line.split("|")[5].strip()
            for line in markdown_table().splitlines()[2:]}
    specs = all_specs(["camera"])
    assert set(rows) == set(specs)
    assert {n for n, flag in rows.items() if flag == "yes"} == {
        n for n, s in specs.items() if not s.read_only}
    assert rows["adaptation.lr"] == "yes" and rows["checkpoint"] == "no"
