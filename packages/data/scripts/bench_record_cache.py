"""Time reading a MIMIC-CXR-JPG-shaped folder three ways, each in a fresh process: no cache, first read, cached.

`python packages/data/scripts/bench_record_cache.py [STUDIES]` writes STUDIES studies (default 20,000; one
512x512 JPEG and one report each) under a temporary folder, then reads the train split with
`read_reports` as `medtune train` does. The figures are wall seconds of the read alone (imports excluded).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from medtune.data.demo import MIMIC_TEXT

READ = """
import sys, time
from medtune.data import read_reports
start = time.perf_counter()
records = read_reports(sys.argv[1], "train")
print(f"{time.perf_counter() - start:.2f} {len(records)}")
"""


def write_mimic(root: Path, studies: int) -> None:
    buffer = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 255, (512, 512), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, "JPEG", quality=75)
    lines = ["dicom_id,study_id,subject_id,split"]
    for k in range(studies):
        subject, study = 10000000 + k // 3, 50000000 + k
        folder = root / "files" / f"p{str(subject)[:2]}" / f"p{subject}" / f"s{study}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"d{k:06d}.jpg").write_bytes(buffer.getvalue())
        report = MIMIC_TEXT.format(findings="The lungs are clear.", impression="No acute process.")
        folder.with_suffix(".txt").write_text(report)
        lines.append(f"d{k:06d},{study},{subject},train")
    (root / "mimic-cxr-2.0.0-split.csv").write_text("\n".join(lines) + "\n")


def timed_read(root: Path, cache: Path, setting: str) -> tuple[float, int]:
    env = {**os.environ, "MEDTUNE_CACHE": str(cache), "MEDTUNE_RECORD_CACHE_SECONDS": setting}
    out = subprocess.run([sys.executable, "-c", READ, str(root)], env=env, check=True, capture_output=True)
    seconds, count = out.stdout.split()
    return float(seconds), int(count)


def main() -> None:
    studies = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    with tempfile.TemporaryDirectory() as tmp:
        root, cache = Path(tmp) / "mimic", Path(tmp) / "cache"
        write_mimic(root, studies)
        off, n = timed_read(root, cache, "off")
        first, _ = timed_read(root, cache, "1")
        cached, m = timed_read(root, cache, "1")
        assert n == m == studies
        print(f"studies={studies} uncached_s={off:.2f} first_read_s={first:.2f} cached_s={cached:.2f}")


if __name__ == "__main__":
    main()
