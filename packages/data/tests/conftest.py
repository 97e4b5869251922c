"""Fixture builders: tiny synthetic datasets in the exact published on-disk layouts (never real data)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image


def make_image(path: Path, mode: str = "L", size: tuple[int, int] = (12, 10), fmt: str | None = None) -> Path:
    """Write a small synthetic grey-scale (or RGB) image and return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    value = 128 if mode == "L" else (10, 200, 30)
    Image.new(mode, size, value).save(path, format=fmt)
    return path


def slake_row(qid: int, img: int, lang: str = "en", **over) -> dict:
    """Return one Slake 1.0 row with all 12 fields."""
    row = {
        "img_id": img,
        "img_name": f"xmlab{img}/source.jpg",
        "question": "Which organ is shown?" if lang == "en" else "图中是哪个器官？",
        "answer": "Lung" if lang == "en" else "肺",
        "q_lang": lang,
        "location": "Chest",
        "modality": "CT",
        "answer_type": "OPEN",
        "base_type": "vqa",
        "content_type": "Organ",
        "triple": ["vhead", "_", "_"],
        "qid": qid,
    }
    row.update(over)
    return row


def build_slake(
    root: Path, splits: dict[str, list] | None = None, validation_name: str = "validate.json"
) -> Path:
    """Write a Slake 1.0 folder (train.json, validate.json, test.json, imgs/xmlab<N>/source.jpg)."""
    if splits is None:
        splits = {
            "train": [
                slake_row(0, 0),
                slake_row(1, 0, answer="Yes", answer_type="CLOSED", question="Is this a lung?"),
                slake_row(2, 1, lang="zh"),
                slake_row(3, 1, answer=3, question="How many lobes are shown?"),
            ],
            "validation": [slake_row(10, 2)],
            "test": [slake_row(20, 3), slake_row(21, 3, lang="zh")],
        }
    names = {"train": "train.json", "validation": validation_name, "test": "test.json"}
    for split, rows in splits.items():
        (root / names[split]).parent.mkdir(parents=True, exist_ok=True)
        (root / names[split]).write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
        for row in rows if isinstance(rows, list) else []:
            if isinstance(row, dict) and "img_name" in row:
                image = root / "imgs" / row["img_name"]
                if not image.exists():
                    make_image(image, fmt="JPEG")
    return root


def vqarad_row(qid: int, phrase_type: str, **over) -> dict:
    """Return one VQA-RAD public JSON row."""
    row = {
        "qid": qid,
        "phrase_type": phrase_type,
        "qid_linked_id": f"{qid:04d}",
        "image_case_url": "https://example.invalid/case",
        "image_name": f"synpic{qid}.jpg",
        "image_organ": "CHEST",
        "evaluation": "given",
        "question": "Is there a pneumothorax?",
        "question_rephrase": "NULL",
        "question_relation": "NULL",
        "question_frame": "NULL",
        "question_type": "PRES",
        "answer": "Yes",
        "answer_type": "CLOSED ",
    }
    row.update(over)
    return row


VQARAD_PHRASES = ("freeform", "para", "frame", "test_freeform", "test_para", "freeform")


def build_vqarad(root: Path, rows: list | None = None) -> Path:
    """Write a VQA-RAD folder ('VQA_RAD Dataset Public.json' and 'VQA_RAD Image Folder/')."""
    if rows is None:
        rows = [vqarad_row(k, p) for k, p in enumerate(VQARAD_PHRASES)]
        rows[2].update(answer=2, answer_type="OPEN", question="How many ribs are fractured?")
        rows[3].update(answer="NO")
    root.mkdir(parents=True, exist_ok=True)
    (root / "VQA_RAD Dataset Public.json").write_text(json.dumps(rows), encoding="utf-8")
    for row in rows if isinstance(rows, list) else []:
        if isinstance(row, dict) and "image_name" in row:
            make_image(root / "VQA_RAD Image Folder" / row["image_name"], fmt="JPEG")
    return root


def llava_row(rid: str, image: str, question: str, answer: str, **over) -> dict:
    """Return one LLaVA conversation record."""
    row = {
        "id": rid,
        "image": image,
        "conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": answer}],
    }
    row.update(over)
    return row


def build_llava(path: Path, rows: list | None = None) -> Path:
    """Write a LLaVA conversation JSON file (images beside it under images/) and return the file."""
    if rows is None:
        rows = [
            llava_row("a1", "images/a.png", "<image>\nIs the heart enlarged?", "No", answer_type="CLOSED"),
            llava_row("a2", "images/b.png", "What modality is this?\n<image>", "X-Ray"),
        ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows), encoding="utf-8")
    for row in rows if isinstance(rows, list) else []:
        if isinstance(row, dict) and "image" in row:
            make_image(path.parent / row["image"], fmt="PNG")
    return path


def build_r2gen(root: Path, data: dict | None = None, mimic: bool = False) -> Path:
    """Write an R2Gen annotation.json (iu_xray or mimic_cxr style) with images under images/."""
    if data is None:
        if mimic:
            entry = {
                "id": "d0a1",
                "study_id": 50000001,
                "subject_id": 10000001,
                "report": "The lungs are clear.  No effusion.",
                "image_path": ["p10/p10000001/s50000001/d0a1.jpg"],
                "split": "test",
            }
            data = {"train": [], "val": [], "test": [entry]}
        else:
            data = {
                split: [
                    {
                        "id": f"CXR{k}_IM-{k:04d}",
                        "report": f"Heart size normal. Case {k}.",
                        "image_path": [f"CXR{k}_IM-{k:04d}/0.png", f"CXR{k}_IM-{k:04d}/1.png"],
                        "split": split,
                    }
                    for k in ks
                ]
                for split, ks in (("train", (1, 2)), ("val", (3,)), ("test", (4,)))
            }
    root.mkdir(parents=True, exist_ok=True)
    (root / "annotation.json").write_text(json.dumps(data), encoding="utf-8")
    for entries in data.values() if isinstance(data, dict) else []:
        for entry in entries if isinstance(entries, list) else []:
            for p in entry.get("image_path", []) if isinstance(entry, dict) else []:
                make_image(root / "images" / p, fmt="JPEG" if p.endswith(".jpg") else "PNG")
    return root


OPENI_XML = """<?xml version="1.0" encoding="utf-8"?>
<eCitation>
  <meta type="rr"/>
  <uId id="{uid}"/>
  <MedlineCitation Owner="Indiana University" Status="supplied by publisher">
    <Article PubModel="Electronic">
      <ArticleTitle>Indiana University Chest X-ray Collection</ArticleTitle>
      <Abstract>
        <AbstractText Label="COMPARISON">None.</AbstractText>
        <AbstractText Label="INDICATION">Synthetic indication.</AbstractText>
        <AbstractText Label="FINDINGS">{findings}</AbstractText>
        <AbstractText Label="IMPRESSION">{impression}</AbstractText>
      </Abstract>
    </Article>
  </MedlineCitation>
  {images}
</eCitation>
"""


def build_openi(root: Path, reports: dict[str, tuple[str, str, list[str]]]) -> Path:
    """Write ecgen-radiology/<n>.xml reports and NLMCXR_png/<image id>.png; reports maps uid -> (findings, impression, image ids)."""
    (root / "ecgen-radiology").mkdir(parents=True, exist_ok=True)
    for n, (uid, (findings, impression, image_ids)) in enumerate(reports.items(), start=1):
        images = "\n  ".join(
            f'<parentImage id="{i}"><figureId>F{k}</figureId></parentImage>' for k, i in enumerate(image_ids)
        )
        xml = OPENI_XML.format(uid=uid, findings=findings, impression=impression, images=images)
        (root / "ecgen-radiology" / f"{n}.xml").write_text(xml, encoding="utf-8")
        for i in image_ids:
            make_image(root / "NLMCXR_png" / f"{i}.png", fmt="PNG")
    return root


MIMIC_REPORT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  Synthetic history.

 FINDINGS:

 {findings}

 IMPRESSION:

 {impression}
"""


def build_mimic(
    root: Path, studies: list[tuple[int, int, list[str], str]], reports: dict[int, str] | None = None
) -> Path:
    """Write a MIMIC-CXR-JPG folder: split CSV, files/p<NN>/p<subject>/s<study>/<dicom>.jpg and s<study>.txt."""
    lines = ["dicom_id,study_id,subject_id,split"]
    for subject, study, dicoms, split in studies:
        folder = root / "files" / f"p{str(subject)[:2]}" / f"p{subject}" / f"s{study}"
        for d in dicoms:
            lines.append(f"{d},{study},{subject},{split}")
            make_image(folder / f"{d}.jpg", fmt="JPEG")
        text = (reports or {}).get(
            study, MIMIC_REPORT.format(findings=f"Findings of {study}.", impression="No acute process.")
        )
        folder.with_suffix(".txt").write_text(text, encoding="utf-8")
    (root / "mimic-cxr-2.0.0-split.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


@pytest.fixture
def builders():
    """The fixture builders, as attributes (tests import nothing from conftest under importlib mode)."""

    class B:
        pass

    for fn in (make_image, slake_row, build_slake, vqarad_row, build_vqarad, llava_row, build_llava):
        setattr(B, fn.__name__, staticmethod(fn))
    for fn in (build_r2gen, build_openi, build_mimic):
        setattr(B, fn.__name__, staticmethod(fn))
    B.MIMIC_REPORT = MIMIC_REPORT
    return B


WORDS = (
    "A chat between a curious user and an artificial intelligence assistant . The assistant gives helpful , "
    "detailed , and polite answers to the user ' s questions . USER : ASSISTANT [ INST ] / Q is the heart "
    "enlarged ? no yes which organ shown lung what modality this x - ray describe given chest image in detail "
    "CLS SEP DEC [/ Describe"
)


@pytest.fixture
def tokenizer():
    """A real tiny word-level tokenizer (<pad>, <s>, </s>, <unk>, <image>) wrapped as PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>", "<image>"]
    vocab = {t: k for k, t in enumerate(specials)}
    for word in WORDS.split():
        vocab.setdefault(word, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(specials)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


@pytest.fixture
def image_processor():
    """A real CLIPImageProcessor at 16 px."""
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16})
