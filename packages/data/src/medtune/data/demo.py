"""The built-in demo: synthetic "scans" written in the Slake 1.0 on-disk layout.

Each image shows one organ-shaped blob (brain: a disc, lung: two upright lobes, liver: a wide wedge)
and, in some images, a small lesion in the left or right half, so every answer depends on what the
image shows. Two appearances stand for two scanners: the *pretraining* set (scanner A: dark
background, bright lesion) teaches a tiny base model the task; the *downstream* set (scanner B:
brighter, noisier, blurred, a darker lesion and reworded questions) is what the demo tunes on, a
domain shift like a new hospital's scanner.

Generation is deterministic (a seeded NumPy RNG); folders are written once to a cache, under a
temporary name that is renamed when complete, so an interrupted first run never leaves half a set.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageFilter

DEMO_VERSION = "1"
ORGANS = ("brain", "lung", "liver")
SIDES = ("left", "right")
IMAGE_SIZE = 48
Domain = Literal["pretrain", "downstream"]
DEMO_SETS: tuple[str, ...] = ("pretrain", "downstream")  # what `demo:<name>` names in a grid spec


@dataclass(frozen=True)
class Scanner:
    """How one scanner renders a scene: intensities in [0, 1], noise and blur."""

    background: float
    organ: float
    lesion: float
    noise: float
    blur: float
    modality: str


SCANNERS: dict[Domain, Scanner] = {
    "pretrain": Scanner(background=0.05, organ=0.45, lesion=0.95, noise=0.03, blur=0.0, modality="CT"),
    "downstream": Scanner(background=0.25, organ=0.6, lesion=0.95, noise=0.08, blur=0.6, modality="MRI"),
}

# Question wordings per domain: (content_type, answer_type, template); the downstream set rewords them.
QUESTIONS: dict[Domain, dict[str, str]] = {
    "pretrain": {
        "organ": "Which organ is shown in this image?",
        "abnormal": "Is there a lesion in this image?",
        "where": "Where is the lesion?",
        "left": "Is the lesion on the left side?",
        "is_brain": "Is this a brain scan?",
    },
    "downstream": {
        "organ": "What organ does this scan show?",
        "abnormal": "Does the image show an abnormality?",
        "where": "In which half of the image is the abnormality?",
        "left": "Is the abnormality in the left half?",
        "is_brain": "Does this image show the brain?",
    },
}
SPLIT_SIZES: dict[Domain, dict[str, int]] = {
    # number of images per split; each image yields 3-4 questions
    "pretrain": {"train": 1200, "validate": 60, "test": 120},
    "downstream": {"train": 90, "validate": 30, "test": 80},
}
SLAKE_FILES = {"train": "train.json", "validate": "validate.json", "test": "test.json"}
LOCATION = {"brain": "Brain", "lung": "Chest", "liver": "Abdomen"}


def render_scan(
    organ: str, lesion_side: str | None, scanner: Scanner, rng: np.random.Generator
) -> Image.Image:
    """Return a grey-scale IMAGE_SIZE x IMAGE_SIZE scan of one organ with an optional lesion."""
    n = IMAGE_SIZE
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) / (n - 1) * 2 - 1  # coordinates in [-1, 1]
    cx, cy = rng.uniform(-0.08, 0.08, size=2)
    scale = rng.uniform(0.9, 1.1)
    x, y = (xx - cx) / scale, (yy - cy) / scale
    if organ == "brain":
        mask = x**2 / 0.62**2 + y**2 / 0.72**2 <= 1
    elif organ == "lung":
        mask = ((x + 0.4) ** 2 / 0.28**2 + y**2 / 0.7**2 <= 1) | (
            (x - 0.4) ** 2 / 0.28**2 + y**2 / 0.7**2 <= 1
        )
    else:  # liver: a wide wedge, thick on one side
        mask = (np.abs(y) <= 0.55 * (1.1 - 0.5 * (x + 1))) & (np.abs(x) <= 0.8)
    img = np.full((n, n), scanner.background, dtype=np.float32)
    img[mask] = scanner.organ
    if lesion_side is not None:
        lx = rng.uniform(-0.55, -0.25) if lesion_side == "left" else rng.uniform(0.25, 0.55)
        ly = rng.uniform(-0.35, 0.35)
        r = rng.uniform(0.11, 0.16)
        img[(xx - lx) ** 2 + (yy - ly) ** 2 <= r**2] = scanner.lesion
    img += rng.normal(0, scanner.noise, size=img.shape).astype(np.float32)
    pil = Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8), mode="L")
    if scanner.blur:
        pil = pil.filter(ImageFilter.GaussianBlur(scanner.blur))
    return pil


def _questions(
    organ: str, side: str | None, domain: Domain, rng: np.random.Generator
) -> list[tuple[str, str, str, str]]:
    """(key, question, answer, answer_type) rows for one image; answers depend only on the image."""
    q = QUESTIONS[domain]
    rows = [
        ("organ", q["organ"], organ, "OPEN"),
        ("abnormal", q["abnormal"], "yes" if side else "no", "CLOSED"),
    ]
    if side is not None:
        rows.append(("where", q["where"], side, "OPEN"))
        rows.append(("left", q["left"], "yes" if side == "left" else "no", "CLOSED"))
    else:
        rows.append(("is_brain", q["is_brain"], "yes" if organ == "brain" else "no", "CLOSED"))
    return rows


CONTENT_TYPE = {
    "organ": "Organ",
    "abnormal": "Abnormality",
    "where": "Position",
    "left": "Position",
    "is_brain": "Organ",
}


def write_slake(root: Path, domain: Domain, seed: int) -> None:
    """Write one domain's demo set under ``root`` in the Slake 1.0 layout (all 12 fields per row)."""
    rng = np.random.default_rng(seed)
    scanner = SCANNERS[domain]
    img_id, qid = 0, 0
    for split, n_images in SPLIT_SIZES[domain].items():
        rows = []
        for _ in range(n_images):
            organ = ORGANS[int(rng.integers(len(ORGANS)))]
            side = SIDES[int(rng.integers(2))] if rng.random() < 0.5 else None
            folder = root / "imgs" / f"xmlab{img_id}"
            folder.mkdir(parents=True, exist_ok=True)
            render_scan(organ, side, scanner, rng).save(folder / "source.jpg", quality=95)
            for key, question, answer, answer_type in _questions(organ, side, domain, rng):
                rows.append(
                    {
                        "img_id": img_id,
                        "img_name": f"xmlab{img_id}/source.jpg",
                        "question": question,
                        "answer": answer,
                        "q_lang": "en",
                        "location": LOCATION[organ],
                        "modality": scanner.modality,
                        "answer_type": answer_type,
                        "base_type": "vqa",
                        "content_type": CONTENT_TYPE[key],
                        "triple": ["vhead", "_", "_"],
                        "qid": qid,
                    }
                )
                qid += 1
            img_id += 1
        (root / SLAKE_FILES[split]).write_text(json.dumps(rows, indent=1))


def cache_dir() -> Path:
    """Return where generated demo data lives (``$MEDTUNE_CACHE`` or ``~/.cache/medtune``)."""
    return Path(os.environ.get("MEDTUNE_CACHE", Path.home() / ".cache" / "medtune"))


def demo_dataset(domain: Domain = "downstream") -> Path:
    """Return the folder of the demo's Slake-format set for ``domain``, generating it on first use."""
    target = cache_dir() / f"demo-slake-{domain}-v{DEMO_VERSION}"
    if (target / "test.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        write_slake(tmp, domain, seed={"pretrain": 1234, "downstream": 5678}[domain])
        try:
            tmp.rename(target)
        except OSError:  # another process finished first; its copy is identical
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


if __name__ == "__main__":
    for d in ("pretrain", "downstream"):
        print(d, demo_dataset(d))
