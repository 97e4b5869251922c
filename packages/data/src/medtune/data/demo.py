"""The built-in demo: synthetic "scans" from several sites, written in the published on-disk layouts.

Each image shows one organ-shaped blob (brain: a disc, lung: two upright lobes, liver: a wide wedge)
and, in half of the images, a small lesion in the left or right half, so every answer depends on what
the image shows. Sites differ as hospitals do: scanner intensities and contrast, noise, blur, the
resolution images are stored at, and the style answers are written in. The questions (and report
sentences) come from one vocabulary shared by every site.

- ``pretrain``: sites A, C and E mixed (Slake layout, with reports), what the demo bases learn from;
- ``downstream``: site B (Slake 1.0 layout), what the demo tunes on: low contrast, noisy, stored at
  28 px, lesions darker than the organ, positions answered "left side"; closed questions are
  balanced yes/no and depend on the image;
- ``vqa-rad``: site D in the VQA-RAD layout, the out-of-distribution set;
- ``iu-xray``: site B's studies with reports in the R2Gen/IU X-ray layout (report generation);
- ``mimic``: site D's studies in the MIMIC-CXR-JPG layout (zero-shot report generation).

Generation is deterministic (a seeded NumPy RNG); folders are written once to a cache, under a
temporary name that is renamed when complete, so an interrupted first run never leaves half a set.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

DEMO_VERSION = "2"
ORGANS = ("brain", "lung", "liver")
SIDES = ("left", "right")
RENDER_SIZE = 48
DEMO_SETS: tuple[str, ...] = (
    "pretrain",
    "downstream",
    "vqa-rad",
    "iu-xray",
    "mimic",
)  # demo:<name> in a grid


@dataclass(frozen=True)
class Scanner:
    """How one site renders and stores a scene: intensities in [0, 1], noise, blur, stored size, answer style."""

    background: float
    organ: float
    lesion: float
    noise: float
    blur: float
    size: int  # pixels the image is stored at
    modality: str
    side_style: str = "{side}"  # how this site writes a position answer


SITES: dict[str, Scanner] = {
    "A": Scanner(background=0.05, organ=0.45, lesion=0.95, noise=0.03, blur=0.0, size=48, modality="CT"),
    "C": Scanner(background=0.15, organ=0.7, lesion=0.3, noise=0.05, blur=0.5, size=40, modality="MRI"),
    "E": Scanner(background=0.0, organ=0.35, lesion=0.75, noise=0.07, blur=0.3, size=32, modality="CT"),
    "B": Scanner(0.3, 0.55, 0.35, 0.1, 0.7, 28, "MRI", side_style="{side} side"),
    "D": Scanner(background=0.2, organ=0.8, lesion=0.45, noise=0.06, blur=0.4, size=36, modality="X-Ray"),
}
QUESTIONS = {
    "organ": "Which organ is shown in this image?",
    "abnormal": "Is there a lesion in this image?",
    "where": "Where is the lesion?",
    "left": "Is the lesion on the left side?",
    "is_organ": "Is this a {organ} scan?",
}
CONTENT_TYPE = {"organ": "Organ", "abnormal": "Abnormality", "where": "Position", "left": "Position"}
CONTENT_TYPE["is_organ"] = "Organ"
SLAKE_FILES = {"train": "train.json", "validate": "validate.json", "test": "test.json"}
LOCATION = {"brain": "Brain", "lung": "Chest", "liver": "Abdomen"}


@dataclass(frozen=True)
class Scene:
    """What one image shows: the organ and the lesion's side (None: no lesion)."""

    organ: str
    side: str | None


def random_scene(rng: np.random.Generator) -> Scene:
    """Return an organ drawn uniformly, with a lesion in half of the images (left or right equally)."""
    organ = ORGANS[int(rng.integers(len(ORGANS)))]
    return Scene(organ, SIDES[int(rng.integers(2))] if rng.random() < 0.5 else None)


def render_scan(scene: Scene, scanner: Scanner, rng: np.random.Generator) -> Image.Image:
    """Return a grey-scale scan of ``scene`` as ``scanner`` renders and stores it."""
    n = RENDER_SIZE
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) / (n - 1) * 2 - 1  # coordinates in [-1, 1]
    cx, cy = rng.uniform(-0.08, 0.08, size=2)
    scale = rng.uniform(0.9, 1.1)
    x, y = (xx - cx) / scale, (yy - cy) / scale
    if scene.organ == "brain":
        mask = x**2 / 0.62**2 + y**2 / 0.72**2 <= 1
    elif scene.organ == "lung":
        mask = ((x + 0.4) ** 2 / 0.28**2 + y**2 / 0.7**2 <= 1) | (
            (x - 0.4) ** 2 / 0.28**2 + y**2 / 0.7**2 <= 1
        )
    else:  # liver: a wide wedge, thick on one side
        mask = (np.abs(y) <= 0.55 * (1.1 - 0.5 * (x + 1))) & (np.abs(x) <= 0.8)
    img = np.full((n, n), scanner.background, dtype=np.float32)
    img[mask] = scanner.organ
    if scene.side is not None:
        lx = rng.uniform(-0.55, -0.25) if scene.side == "left" else rng.uniform(0.25, 0.55)
        ly = rng.uniform(-0.35, 0.35)
        r = rng.uniform(0.12, 0.17)
        img[(xx - lx) ** 2 + (yy - ly) ** 2 <= r**2] = scanner.lesion
    img += rng.normal(0, scanner.noise, size=img.shape).astype(np.float32)
    pil = Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8), mode="L")
    if scanner.blur:
        pil = pil.filter(ImageFilter.GaussianBlur(scanner.blur))
    return pil if scanner.size == n else pil.resize((scanner.size, scanner.size), Image.BILINEAR)


def questions(scene: Scene, scanner: Scanner, rng: np.random.Generator) -> list[tuple[str, str, str, str]]:
    """(key, question, answer, answer_type) rows for one image; every closed answer depends on the image."""
    rows = [
        ("organ", QUESTIONS["organ"], scene.organ, "OPEN"),
        ("abnormal", QUESTIONS["abnormal"], "yes" if scene.side else "no", "CLOSED"),
    ]
    if scene.side is not None:
        rows.append(("where", QUESTIONS["where"], scanner.side_style.format(side=scene.side), "OPEN"))
        rows.append(("left", QUESTIONS["left"], "yes" if scene.side == "left" else "no", "CLOSED"))
    else:  # half the time the organ shown, else another one: yes and no equally often
        asked = (
            scene.organ
            if rng.random() < 0.5
            else ORGANS[(ORGANS.index(scene.organ) + int(rng.integers(1, 3))) % 3]
        )
        rows.append(
            (
                "is_organ",
                QUESTIONS["is_organ"].format(organ=asked),
                "yes" if asked == scene.organ else "no",
                "CLOSED",
            )
        )
    return rows


def report(scene: Scene) -> tuple[str, str]:
    """Return (findings, impression) sentences describing ``scene``."""
    findings = f"The scan shows the {scene.organ}."
    if scene.side is None:
        return f"{findings} No lesion is seen.", "No abnormality."
    return (
        f"{findings} A lesion is seen in the {scene.side} half.",
        f"Lesion of the {scene.side} {scene.organ}.",
    )


def _scenes(rng: np.random.Generator, sites: str, n: int) -> list[tuple[Scene, Scanner]]:
    return [(random_scene(rng), SITES[sites[int(rng.integers(len(sites)))]]) for _ in range(n)]


def write_slake(root: Path, sites: str, sizes: dict[str, int], seed: int, with_reports: bool = False) -> None:
    """Write a demo set of ``sites`` under ``root`` in the Slake 1.0 layout (all 12 fields per row).

    With ``with_reports``, each split's images also get a report (``reports-<split>.json``, R2Gen style) that
    the demo bases pretrain on.
    """
    rng = np.random.default_rng(seed)
    img_id, qid = 0, 0
    for split, n_images in sizes.items():
        rows, reports = [], []
        for scene, scanner in _scenes(rng, sites, n_images):
            name = f"xmlab{img_id}/source.jpg"
            (root / "imgs" / name).parent.mkdir(parents=True, exist_ok=True)
            render_scan(scene, scanner, rng).save(root / "imgs" / name, quality=95)
            for key, question, answer, answer_type in questions(scene, scanner, rng):
                rows.append(
                    {
                        "img_id": img_id,
                        "img_name": name,
                        "question": question,
                        "answer": answer,
                        "q_lang": "en",
                        "location": LOCATION[scene.organ],
                        "modality": scanner.modality,
                        "answer_type": answer_type,
                        "base_type": "vqa",
                        "content_type": CONTENT_TYPE[key],
                        "triple": ["vhead", "_", "_"],
                        "qid": qid,
                    }
                )
                qid += 1
            reports.append({"id": f"xmlab{img_id}", "report": " ".join(report(scene)), "image_path": [name]})
            img_id += 1
        (root / SLAKE_FILES[split]).write_text(json.dumps(rows, indent=1))
        if with_reports:
            (root / f"reports-{split}.json").write_text(json.dumps(reports, indent=1))


def write_vqarad(root: Path, seed: int, n_images: int = 60) -> None:
    """Write site D's questions in the VQA-RAD layout (test_freeform test questions, freeform train ones)."""
    rng = np.random.default_rng(seed)
    folder = root / "VQA_RAD Image Folder"
    folder.mkdir(parents=True, exist_ok=True)
    rows, qid = [], 0
    for k, (scene, scanner) in enumerate(_scenes(rng, "D", n_images)):
        name = f"synpic{k}.jpg"
        render_scan(scene, scanner, rng).save(folder / name, quality=95)
        for _, question, answer, answer_type in questions(scene, scanner, rng):
            phrase = "test_freeform" if k < 2 * n_images // 3 else "freeform"
            rows.append(
                {
                    "qid": qid,
                    "phrase_type": phrase,
                    "qid_linked_id": f"{qid:04d}",
                    "image_case_url": "https://example.invalid/medtune-demo",
                    "image_name": name,
                    "image_organ": LOCATION[scene.organ].upper(),
                    "evaluation": "given",
                    "question": question,
                    "question_rephrase": "NULL",
                    "question_relation": "NULL",
                    "question_frame": "NULL",
                    "question_type": "PRES",
                    "answer": answer.capitalize(),  # VQA-RAD writes "Yes" / "No"
                    "answer_type": answer_type + " ",  # and its labels carry a trailing space
                }
            )
            qid += 1
    (root / "VQA_RAD Dataset Public.json").write_text(json.dumps(rows, indent=1))


def write_iu_xray(root: Path, seed: int, sizes: dict[str, int] | None = None) -> None:
    """Write site B's studies in the R2Gen IU X-ray layout: annotation.json and images/<id>/0.png."""
    rng = np.random.default_rng(seed)
    data = {}
    for split, n in (sizes or {"train": 120, "val": 30, "test": 40}).items():
        entries = []
        for scene, scanner in _scenes(rng, "B", n):
            study = f"CXR{len(entries) + 1000 * len(data)}_IM-{seed % 10000:04d}"
            (root / "images" / study).mkdir(parents=True, exist_ok=True)
            render_scan(scene, scanner, rng).save(root / "images" / study / "0.png")
            entries.append(
                {
                    "id": study,
                    "report": " ".join(report(scene)),
                    "image_path": [f"{study}/0.png"],
                    "split": split,
                }
            )
        data[split] = entries
    (root / "annotation.json").write_text(json.dumps(data, indent=1))


MIMIC_TEXT = """                                 FINAL REPORT
 EXAMINATION:  DEMO SCAN

 FINDINGS:

 {findings}

 IMPRESSION:

 {impression}
"""


def write_mimic(root: Path, seed: int, n_studies: int = 40) -> None:
    """Write site D's studies in the MIMIC-CXR-JPG layout (split CSV, files/p<NN>/p<subject>/s<study>/)."""
    rng = np.random.default_rng(seed)
    lines = ["dicom_id,study_id,subject_id,split"]
    for k, (scene, scanner) in enumerate(_scenes(rng, "D", n_studies)):
        subject, study, dicom = 10000000 + k, 50000000 + k, f"demo{k:04d}"
        folder = root / "files" / f"p{str(subject)[:2]}" / f"p{subject}" / f"s{study}"
        folder.mkdir(parents=True, exist_ok=True)
        render_scan(scene, scanner, rng).save(folder / f"{dicom}.jpg", quality=95)
        findings, impression = report(scene)
        folder.with_suffix(".txt").write_text(MIMIC_TEXT.format(findings=findings, impression=impression))
        lines.append(f"{dicom},{study},{subject},{'test' if k < 3 * n_studies // 4 else 'validate'}")
    (root / "mimic-cxr-2.0.0-split.csv").write_text("\n".join(lines) + "\n")


WRITERS: dict[str, Callable[[Path], None]] = {
    "pretrain": lambda root: write_slake(
        root, "ACE", {"train": 1200, "validate": 60, "test": 120}, 1234, True
    ),
    "downstream": lambda root: write_slake(root, "B", {"train": 90, "validate": 30, "test": 80}, 5678),
    "vqa-rad": lambda root: write_vqarad(root, 2468),
    "iu-xray": lambda root: write_iu_xray(root, 1357),
    "mimic": lambda root: write_mimic(root, 9753),
}


def cache_dir() -> Path:
    """Return where generated demo data lives (``$MEDTUNE_CACHE`` or ``~/.cache/medtune``)."""
    return Path(os.environ.get("MEDTUNE_CACHE", Path.home() / ".cache" / "medtune"))


def demo_dataset(name: str = "downstream") -> Path:
    """Return the folder of the demo set ``name`` (one of DEMO_SETS), generating it on first use."""
    if name not in WRITERS:
        raise ValueError(f"unknown demo set {name!r}; choose one of: {', '.join(DEMO_SETS)}")
    target = (
        cache_dir() / f"demo-{'slake-' if name in ('pretrain', 'downstream') else ''}{name}-v{DEMO_VERSION}"
    )
    done = target / ".complete"
    if done.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        WRITERS[name](tmp)
        (tmp / ".complete").write_text("")
        try:
            tmp.rename(target)
        except OSError:  # another process finished first; its copy is identical
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


if __name__ == "__main__":
    for d in DEMO_SETS:
        print(d, demo_dataset(d))
