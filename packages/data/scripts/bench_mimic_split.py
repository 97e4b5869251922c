"""Time reading a generated MIMIC-CXR split CSV of 377,110 rows into Arrow and grouping it by study.

Usage: python packages/data/scripts/bench_mimic_split.py [--rows 377110]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from medtune.data.mimic import mimic_studies, read_mimic_split_csv


def write_split_csv(path: Path, rows: int) -> None:
    """Write a synthetic split CSV with MIMIC's columns: ~1.66 images per study, 3 studies per subject."""
    splits = ("train",) * 97 + ("validate", "test", "test")
    with path.open("w") as f:
        f.write("dicom_id,study_id,subject_id,split\n")
        for k in range(rows):
            study = k * 3 // 5
            f.write(
                f"{k:08x}-{k * 7919 % 99991:05x}-synthetic,{50000000 + study},{10000000 + study // 3},"
                f"{splits[study % 100]}\n"
            )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=377_110)
    rows = parser.parse_args().rows
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mimic-cxr-2.0.0-split.csv"
        write_split_csv(path, rows)
        start = time.perf_counter()
        dataset = read_mimic_split_csv(path)
        read_s = time.perf_counter() - start
        start = time.perf_counter()
        studies = {s: mimic_studies(dataset.data.table, s).num_rows for s in ("train", "validation", "test")}
        group_s = time.perf_counter() - start
    print(
        f"rows={len(dataset)} read_csv_to_arrow_s={read_s:.3f} group_by_study_all_splits_s={group_s:.3f} studies={studies}"
    )


if __name__ == "__main__":
    main()
