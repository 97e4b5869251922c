"""First and second load of a Hub-style VQA parquet folder through read_vqa, each in a fresh process.

Writes a synthetic folder shaped like the Hub's vqa-rad (data/train-*.parquet, data/test-*.parquet, an
image column of {bytes, path}; 1,793 train and 451 test questions over 315 distinct 512x512 JPEGs), then
times ``medtune.data.read_vqa(folder, "train")`` (the call alone, not the import) twice against one empty datasets cache: the first run
converts parquet to Arrow, maps the columns and stores the images; the second finds all three cached.

    python benchmarks/data/hf_load.py [--keep DIR]
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import datasets
import numpy as np
from PIL import Image

LOAD = (
    "import sys, time; from medtune.data import read_vqa; t = time.perf_counter(); "
    "r = read_vqa(sys.argv[1], 'train'); print(len(r), time.perf_counter() - t)"
)


def write_folder(root: Path, train: int = 1793, test: int = 451, images: int = 315) -> None:
    """Write the synthetic Hub-style folder (noise images, so JPEG cannot shrink them to nothing)."""
    rng = np.random.default_rng(0)
    blobs = []
    for _ in range(images):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (512, 512), dtype=np.uint8)).save(buffer, format="JPEG")
        blobs.append(buffer.getvalue())
    features = datasets.Features(
        {"image": datasets.Image(), "question": datasets.Value("string"), "answer": datasets.Value("string")}
    )
    (root / "data").mkdir(parents=True)
    for split, n in (("train", train), ("test", test)):
        rows = {
            "image": [{"bytes": blobs[i % images], "path": f"synpic{i % images}.jpg"} for i in range(n)],
            "question": [f"is there a finding {i}?" for i in range(n)],
            "answer": ["yes" if i % 2 else "left lung" for i in range(n)],
        }
        table = datasets.Dataset.from_dict(rows, features=features)
        table.to_parquet(str(root / "data" / f"{split}-00000-of-00001-0123456789ab.parquet"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="write the folder and cache here instead of a temp dir")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = args.keep or Path(tmp)
        folder, cache = base / "vqa-rad", base / "hf-cache"
        write_folder(folder)
        env = {**os.environ, "HF_DATASETS_CACHE": str(cache), "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}
        print("run,records,read_vqa_s,wall_s")
        for run in ("first", "second"):
            started = time.perf_counter()
            out = subprocess.run(
                [sys.executable, "-c", LOAD, str(folder)], env=env, capture_output=True, text=True, check=True
            ).stdout.split()
            print(f"{run},{out[0]},{float(out[1]):.2f},{time.perf_counter() - started:.2f}")


if __name__ == "__main__":
    main()
