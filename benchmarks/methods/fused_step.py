"""Do the fused norms speed up a whole LN-tuning step? Steps with and without `medtune.kernels.patch_norms` on one
model, round-robin, at several batch sizes.

    python benchmarks/methods/fused_step.py                                  # MISS (BLIP-VQA), batch 1 4 16 32
    python benchmarks/methods/fused_step.py --preset llava-med-v1.5 --4bit --batch 1 2

The fused kernels take less GPU time than torch's norms but more CPU time per call (benchmarks/kernels/README.md):
a step whose GPU waits for its CPU (a small model, a small batch) can get slower. For each batch size this prints
the fused/eager step-time ratio (below 1: the fused norms pay) and appends fused_step.csv. `medtune train ... ln`
patches the norms on a GPU unless given `--no-fused-norms`; this says where that default is right.

Random init, the family's default paradigm, bf16 on a GPU (the tuned norms fp32). `--device cpu` runs the script's
whole path as a smoke test; without a GPU the fused modules fall back to torch, so the timings mean nothing there.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
COLUMNS = ["device", "torch", "preset", "four_bit", "batch", "seq_len", "variant", "steps", "p20_ms", "p50_ms",
           "p80_ms", "samples_per_s"]  # fmt: skip
VARIANTS = ("eager", "fused")
sys.path[:0] = [str(HERE), str(HERE.parent)]
from gpu_7b import step  # noqa: E402  (sibling script, not a package)
from results_log import append_rows, check_appendable  # noqa: E402


def vqa_batch(config, batch: int, question_tokens: int, answer_tokens: int, seed: int = 0) -> dict:
    """Return a BLIP-VQA training batch as medtune's BlipVQACollator makes it, with random ids and pixels."""
    gen = torch.Generator().manual_seed(seed)
    text = config.text_config
    questions = torch.randint(5, text.vocab_size, (batch, question_tokens), generator=gen)
    answers = torch.randint(5, text.vocab_size, (batch, answer_tokens), generator=gen)
    answers[:, 0] = text.bos_token_id  # the decoder starts from [DEC]
    size = config.vision_config.image_size
    return {
        "input_ids": questions,
        "attention_mask": torch.ones_like(questions),
        "pixel_values": torch.randn(batch, 3, size, size, generator=gen),
        "decoder_input_ids": answers,
        "decoder_attention_mask": torch.ones_like(answers),
        "labels": answers.clone(),
    }


def synthetic(config, family: str, batch: int, text_tokens: int) -> dict:
    """Return a training batch for `family`: LLaVA's image + text sequence, or a BLIP-VQA question and answer."""
    if family == "llava":
        from bench_methods import synthetic_batch

        return synthetic_batch(config, batch, text_tokens, config.vision_config.image_size)
    return vqa_batch(config, batch, question_tokens=text_tokens, answer_tokens=8)


def build(preset: str, four_bit: bool, device: torch.device):
    """Return (model, optimizer, family): `preset` at random init, LN-tuned under its family's default paradigm."""
    from medtune.core_models import build_random, get_preset
    from medtune.core_models.quantize import quantize_frozen
    from medtune.tuning.apply import apply_paradigm
    from medtune.tuning.paradigm import Paradigm

    family = get_preset(preset).family
    torch.manual_seed(0)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    tuned = apply_paradigm(
        build_random(preset, device=device, dtype=dtype), family, "ln", Paradigm.parse(None, family)
    )
    if four_bit:
        quantize_frozen(tuned.model, tuned.trainable)
    tuned.model.train()
    params = [p for p in tuned.model.parameters() if p.requires_grad]
    return tuned.model, torch.optim.AdamW(params, lr=1e-5), family


def time_batch(model, opt, batch: dict, device: torch.device, args) -> dict[str, list[float]]:
    """Return step seconds per variant; eager and fused alternate each round so drift hits both alike."""
    from medtune.kernels import patch_norms

    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for r in range(args.warmup + args.rounds):
        for variant in VARIANTS:
            handle = patch_norms(model, verify=False) if variant == "fused" else None
            try:
                for _ in range(args.steps):
                    start = time.perf_counter()
                    step(model, opt, batch, device)
                    if r >= args.warmup:
                        times[variant].append(time.perf_counter() - start)
            finally:
                if handle is not None:
                    handle.restore()
    return times


def main(argv: list[str] | None = None) -> int:
    """Time eager and fused LN-tuning steps per batch size; append fused_step.csv; print the ratios; return 0."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="miss")
    p.add_argument(
        "--4bit", dest="four_bit", action="store_true", help="frozen linears in NF4 (bitsandbytes)"
    )
    p.add_argument("--batch", type=int, nargs="+", default=[1, 4, 16, 32])
    p.add_argument(
        "--text-tokens", type=int, default=20, help="question tokens (MISS) or text tokens (LLaVA)"
    )
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=3, help="timed steps per variant per round")
    p.add_argument("--out", type=Path, default=HERE / "fused_step.csv")
    p.add_argument("--device", default="cuda", help="cpu only as a smoke test of this script")
    args = p.parse_args(argv)
    if min(*args.batch, args.rounds, args.steps) < 1 or args.warmup < 0:
        p.error("--batch, --rounds and --steps must be at least 1 and --warmup at least 0")
    check_appendable(args.out, COLUMNS)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(
            f"fused_step.py compares the fused norm kernels with torch's on a CUDA GPU, and torch "
            f"{torch.__version__} sees none; run it on a machine with one (or pass --device cpu for a smoke test).",
            file=sys.stderr,
        )
        return 2
    model, opt, family = build(args.preset, args.four_bit, device)
    rows = []
    print("| batch | seq | eager p50 ms | fused p50 ms | fused / eager |\n|---|---|---|---|---|")
    for size in args.batch:
        batch = {k: v.to(device) for k, v in synthetic(model.config, family, size, args.text_tokens).items()}
        batch["pixel_values"] = batch["pixel_values"].to(next(model.parameters()).dtype)
        seq = batch["input_ids"].shape[1]
        times = time_batch(model, opt, batch, device, args)
        p50 = {}
        for variant, ts in times.items():
            q = torch.quantile(
                torch.tensor(ts, dtype=torch.float64), torch.tensor([0.2, 0.5, 0.8], dtype=torch.float64)
            )
            p20, p50[variant], p80 = (float(x) * 1e3 for x in q)
            rows.append({
                "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu (smoke test)",
                "torch": torch.__version__, "preset": args.preset, "four_bit": args.four_bit, "batch": size,
                "seq_len": seq, "variant": variant, "steps": len(ts), "p20_ms": round(p20, 2),
                "p50_ms": round(p50[variant], 2), "p80_ms": round(p80, 2),
                "samples_per_s": round(size / (p50[variant] / 1e3), 2),
            })  # fmt: skip
        print(
            f"| {size} | {seq} | {p50['eager']:.1f} | {p50['fused']:.1f} | {p50['fused'] / p50['eager']:.3f} |"
        )
        del batch
        if device.type == "cuda":
            torch.cuda.empty_cache()
    append_rows(args.out, rows, COLUMNS)
    print(f"appended {len(rows)} rows to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
