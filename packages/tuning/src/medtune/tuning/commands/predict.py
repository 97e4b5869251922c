"""`medtune predict RUN_OR_ADAPTER --image scan.png --question "..."`: ask a tuned (or untuned) model about images."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from medtune.tuning.errors import UsageError


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "predict",
        help="answer questions about images with a tuned model (or a base, zero-shot)",
        description="Answer one --image/--question, or every line of --input (JSONL: image path + question), "
        "with RUN_DIR_OR_ADAPTER's model, or --model-path DIR alone (zero-shot). Same prompt template, image "
        "processing and generation settings as `medtune eval`.",
    )
    p.add_argument("source", nargs="?", type=Path, metavar="RUN_DIR_OR_ADAPTER")
    p.add_argument("--image", type=Path, help="one image to ask about")
    p.add_argument("--question", help="the question about --image")
    p.add_argument(
        "--input",
        type=Path,
        help='JSONL, one {"image": PATH, "question": TEXT} per line (relative paths: from the file\'s folder)',
    )
    p.add_argument("--out", type=Path, help="where --input's answers go as JSONL (default: print them)")
    p.add_argument("--model-path", help="base checkpoint (default: the one the run was tuned from)")
    p.add_argument("--preset", help="the base's preset when --model-path is used alone (default: found)")
    p.add_argument(
        "--max-new-tokens", type=int, default=8, help="longest answer in tokens (default 8, as eval)"
    )
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default, as eval)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--quiet", action="store_true")
    return p


def questions(args: argparse.Namespace) -> list[dict]:
    """Return [{id, image, question}] from --image/--question or --input; a bad line names the file and line."""
    if args.input is not None:
        if args.image is not None or args.question is not None:
            raise UsageError("pass either --input FILE or --image with --question, not both")
        return read_questions(args.input)
    if args.image is None or not args.question:
        raise UsageError('pass --image PATH and --question "TEXT", or --input questions.jsonl')
    return [{"id": "1", "image": args.image, "question": args.question}]


def read_questions(file: Path) -> list[dict]:
    """Return the questions of a JSONL file; any line that is not an object with image and question is an error."""
    if not file.is_file():
        raise UsageError(f"--input {file} does not exist; pass a JSONL file of image + question lines")
    rows = []
    for number, line in enumerate(file.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{file} line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise UsageError(
                f"{where} is not valid JSON ({err.msg}); write one JSON object per line"
            ) from None
        if not isinstance(row, dict):
            raise UsageError(f'{where} is not a JSON object; write {{"image": PATH, "question": TEXT}}')
        if "question" not in row and "text" in row:  # a LLaVA-Med question file: question_id, image, text
            row = {**row, "question": row["text"], "id": row.get("id", row.get("question_id"))}
        bad = [k for k in ("image", "question") if not isinstance(row.get(k), str) or not row[k].strip()]
        if bad:
            raise UsageError(
                f"{where} has no {' or '.join(bad)} (a non-empty string); fix or remove that line"
            )
        image = Path(row["image"]).expanduser()
        rows.append({**row, "id": str(row.get("id", number)), "image": image if image.is_absolute()
                     else file.parent / image, "where": where})  # fmt: skip
    if not rows:
        raise UsageError(f"--input {file} holds no questions")
    return rows


def run(args: argparse.Namespace) -> int:
    from medtune.data import VQARecord
    from medtune.data.images import load_image
    from medtune.data.run_files import write_jsonl_atomic
    from medtune.tuning.adapter import find_adapter
    from medtune.tuning.datasets import check_generation_flags
    from medtune.tuning.evaluate import predict
    from medtune.tuning.rebuild import load_base_alone, rebuild_from_manifest

    check_generation_flags(args.batch_size, args.temperature, args.max_new_tokens)
    if args.source is None and not args.model_path:
        raise UsageError("name a run directory or adapter to answer with, or --model-path DIR (zero-shot)")
    asked = questions(args)
    for row in asked:  # every image decodes before a model is loaded: a bad one names its file and line
        load_image(row["image"], row.get("where", row["id"]))
    if args.source is not None:
        built = rebuild_from_manifest(find_adapter(args.source), args.model_path)
    else:
        built = load_base_alone(args.model_path, args.preset)
    records = [
        VQARecord(row["id"], Path(row["image"]), row["question"], "", "open", "", "predict") for row in asked
    ]
    answers = predict(
        built,
        records,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        progress=not args.quiet and len(records) > 1,
    )
    if args.input is None:
        print(answers[0])
        return 0
    rows = [
        {**{k: v for k, v in row.items() if k != "where"}, "image": str(row["image"]), "answer": answer}
        for row, answer in zip(asked, answers)
    ]
    if args.out is None:
        for row in rows:
            print(json.dumps(row, ensure_ascii=False))
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl_atomic(args.out, rows)
    print(f"{len(rows)} answer(s) written to {args.out}")
    return 0
