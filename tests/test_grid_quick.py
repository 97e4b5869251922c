"""`medtune grid --quick` end to end, as the README runs it: all six methods per family, tables and figures."""

from __future__ import annotations

import csv

import pytest

from medtune.tuning.cli import main

METHODS = ["full", "ln", "attention", "ffn", "lora", "prefix"]


@pytest.mark.slow  # about a minute: twelve short training runs, each scored twice
def test_the_quick_grid_trains_every_method_and_writes_its_tables(tmp_path, capsys):
    assert main(["grid", "--quick", "--output-dir", str(tmp_path)]) == 0
    report = tmp_path / "grid-quick" / "report"
    for preset in ("tiny-llava", "tiny-miss"):
        for evalset in (
            "demo_downstream_in-distribution_test",
            "demo_VQA-RAD_layout_site_D_out_of_distribution",
        ):
            folder = report / f"{evalset}_preset_{preset}"
            rows = list(csv.DictReader((folder / "table.csv").open()))
            assert [r["Method"] for r in rows] == METHODS
            assert all(0 <= float(r["Global (%)"]) <= 100 for r in rows)
            assert (folder / "accuracy_vs_params.png").stat().st_size > 10_000
    summary = capsys.readouterr().out.split("best cells per table")[1].strip().splitlines()[1:]
    assert len(summary) == 4 and all(" ln [" in line for line in summary)  # LN-tuning is always named
    # A finished grid trains nothing again.
    assert main(["grid", "--quick", "--output-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.count("already trained") == 12
