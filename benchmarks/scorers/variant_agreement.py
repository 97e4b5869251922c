"""How far the `medtune` and `llava-med` VQA scorers agree on synthetic Slake/VQA-RAD-style answers.

Builds a seeded set of questions with bare and verbose model answers (the styles fine-tuned VLMs produce:
full sentences, repeated words, number words, "###"/"</s>" endings, substring traps such as "normal"
for "no"), scores them through `medtune.eval.score_vqa_per_item` and writes one CSV row per answer style
plus one per question type, with per-question agreement and the aggregate difference in points.

    python benchmarks/scorers/variant_agreement.py [--n 600] [--seed 0] [--out benchmarks/scorers/agreement.csv]
"""

from __future__ import annotations

import argparse
import csv
import random
from collections import defaultdict
from pathlib import Path

from medtune.eval import score_vqa_per_item

ORGANS = ["liver", "heart", "left lung", "right lung", "brain", "spleen", "right kidney", "bladder"]
MODALITIES = ["CT", "MRI", "X-Ray"]
FINDINGS = ["nodule", "mass", "effusion", "pneumothorax", "cyst"]
NUMBERS = [("two", "2"), ("three", "3"), ("one", "1"), ("twelve", "12")]

# (style, template): {a} is the ground truth, {o} another organ, {f} a finding, {m} a modality.
CLOSED_STYLES = {
    "bare": lambda a, r: a,
    "bare+punct": lambda a, r: a.capitalize() + ".",
    "sentence": lambda a, r: (
        f"Yes, there is a {r.choice(FINDINGS)} in the {r.choice(ORGANS)}."
        if a == "yes"
        else f"No, there is no {r.choice(FINDINGS)}."
    ),
    "trap": lambda a, r: (  # the opposite answer, worded so that "no" hides inside another word
        r.choice(
            [
                f"The {r.choice(ORGANS)} appears normal.",
                f"There is a nodule in the {r.choice(ORGANS)}.",
                "It is not possible to say.",
            ]
        )
        if a == "no"
        else r.choice(["No abnormality is seen.", "The eyes are not shown."])
    ),
    "end-marker": lambda a, r: a.capitalize() + r.choice(["###", "</s>", "###Human: what"]),
}
OPEN_STYLES = {
    "bare": lambda a, r: a,
    "sentence": lambda a, r: f"The image shows the {a}.",
    "repeats": lambda a, r: ", ".join([a.split()[-1]] * r.randint(2, 4)),
    "partial": lambda a, r: a.split()[-1],
    "wrong": lambda a, r: r.choice([o for o in ORGANS if o != a]),
    "end-marker": lambda a, r: a + r.choice(["###", "</s>", "###Human: what"]),
    "glued-punct": lambda a, r: f"{a}: {r.choice(FINDINGS)}",
}


def _open_answer(r: random.Random) -> tuple[str, str | None]:
    kind = r.random()
    if kind < 0.6:
        return r.choice(ORGANS), None
    if kind < 0.8:
        return r.choice(MODALITIES), None
    word, digit = r.choice(NUMBERS)
    return digit, word  # a count: the model may answer with the word


def build_cases(n: int, seed: int) -> list[tuple[str, str, str, str]]:
    """Return (style, prediction, answer, answer_type) rows, half closed, half open."""
    r = random.Random(seed)
    cases = []
    for i in range(n):
        if i % 2 == 0:
            answer = r.choice(["yes", "no"])
            style = r.choice(list(CLOSED_STYLES))
            cases.append((style, CLOSED_STYLES[style](answer, r), answer, "CLOSED"))
        else:
            answer, word = _open_answer(r)
            style = r.choice(list(OPEN_STYLES))
            if word is not None and style in ("bare", "sentence"):
                style = f"{style} (number word)"
                prediction = OPEN_STYLES[style.split()[0]](word, r)
            else:
                prediction = OPEN_STYLES[style](answer, r)
            cases.append((style, prediction, answer, "OPEN"))
    return cases


def agreement_rows(cases: list[tuple[str, str, str, str]]) -> list[dict]:
    """Return one row per (question type, answer style) and per question type: agreement and means."""
    items = score_vqa_per_item([c[1] for c in cases], [c[2] for c in cases], [c[3] for c in cases])
    groups: dict[tuple[str, str], list] = defaultdict(list)
    for (style, *_), item in zip(cases, items):
        groups[(item.answer_type, style)].append(item)
        groups[(item.answer_type, "all")].append(item)
    rows = []
    for (answer_type, style), members in sorted(groups.items()):
        medtune = [m.score for m in members]
        llava = [m.llava_med_score for m in members]
        agree = sum(abs(a - b) < 1e-9 for a, b in zip(medtune, llava))
        rows.append(
            {
                "answer_type": answer_type,
                "style": style,
                "n": len(members),
                "agreement_pct": round(100 * agree / len(members), 1),
                "medtune_pct": round(100 * sum(medtune) / len(members), 2),
                "llava_med_pct": round(100 * sum(llava) / len(members), 2),
                "medtune_minus_llava_med_points": round(100 * (sum(medtune) - sum(llava)) / len(members), 2),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=600, help="number of questions (half closed, half open)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("agreement.csv"))
    args = parser.parse_args()
    rows = agreement_rows(build_cases(args.n, args.seed))
    tmp = args.out.with_name(args.out.name + ".tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(args.out)
    for row in rows:
        print(
            f"{row['answer_type']:6} {row['style']:26} n={row['n']:3}  agree {row['agreement_pct']:5.1f}%  "
            f"medtune {row['medtune_pct']:6.2f}  llava-med {row['llava_med_pct']:6.2f}  "
            f"diff {row['medtune_minus_llava_med_points']:+6.2f} points"
        )
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
