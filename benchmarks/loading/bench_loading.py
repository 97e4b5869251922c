"""Peak host memory of the user's path: `medtune train llava ln --model-path DIR --4bit` on a 0.8B-parameter LLaVA.

    python benchmarks/loading/bench_loading.py                # ~10-20 minutes on 2 CPU cores, writes loading.csv
    python benchmarks/loading/bench_loading.py --layouts transformers --llm-layers 4   # a quicker, smaller run
    python benchmarks/loading/bench_loading.py --memory-limit 2.4   # as root: each run in a 2.4 GB memory cgroup

Writes one random-weight checkpoint (fp16; CLIP ViT-L/14-336 tower as in LLaVA-Med v1.5, MLP connector, a
Mistral-style LLM) twice into a scratch folder: as `save_pretrained` writes it (transformers layout, ~500 MB
shards with an index) and in the original LLaVA-Med release layout that medtune converts while loading
(LlavaMistralForCausalLM config, `model.mm_projector.*`, the tower under `model.vision_tower.vision_tower.`,
sharded the same way). Then it runs the real command as a subprocess for each layout, and the built-in demo for
the process's own baseline, and records each run's peak RSS (getrusage of the one child) beside the peak the run
itself wrote to config.json and its planned peak. The scratch folder is deleted afterwards. With --memory-limit,
each command runs in a memory cgroup of that size, as on a machine that small (medtune sees the limit and chooses
its settings by it; a command that overruns it is killed, exit -9).
Target (issue 12): transformers layout at most 2.4 GB (5.23 GB before streaming), the release layout within 10%.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
GB = 1e9
COLUMNS = ["host", "torch", "layout", "params", "checkpoint_bytes", "command", "seconds", "peak_rss_bytes",
           "run_measured_peak_bytes", "run_measured_load_peak_bytes", "planned_load_peak_bytes",
           "planned_peak_bytes", "exit"]  # fmt: skip
sys.path.insert(0, str(HERE.parent))
from checkpoint_shards import write_shards  # noqa: E402  (benchmarks/, scripts not a package)
from results_log import append_rows, check_appendable  # noqa: E402

# One process: the child's peak RSS, seen by the parent that waited for it (and for nothing else). With a cgroup
# folder first, the parent moves itself into it before starting the child (a machine with that much memory).
MEASURE = """
import pathlib, resource, subprocess, sys
args = sys.argv[1:]
if args[0] != "-":
    (pathlib.Path(args[0]) / "cgroup.procs").write_text(str(__import__("os").getpid()))
code = subprocess.run(args[1:]).returncode
print("PEAK_RSS_KIB", resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, code)
"""
SHARD = 500 * 2**20


def build_source(llm_layers: int):
    """Return a random fp16 LLaVA (ViT-L/14-336, MLP connector, Mistral LLM of ``llm_layers`` layers) and its config."""
    import torch
    from transformers import LlavaConfig, LlavaForConditionalGeneration, MistralConfig

    from medtune.core_models.llava_med import clip_vit_l14

    text = MistralConfig(
        vocab_size=32_064, hidden_size=1536, intermediate_size=4096, num_hidden_layers=llm_layers,
        num_attention_heads=12, num_key_value_heads=4, max_position_embeddings=4096, rms_norm_eps=1e-5,
        rope_theta=1_000_000.0, sliding_window=None, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        tie_word_embeddings=False,
    )  # fmt: skip
    config = LlavaConfig(
        vision_config=clip_vit_l14(336), text_config=text, image_token_index=4, image_seq_length=576,
        vision_feature_layer=-2, vision_feature_select_strategy="default", projector_hidden_act="gelu",
    )  # fmt: skip
    torch.manual_seed(0)
    from transformers.initialization import no_init_weights

    with no_init_weights():
        model = LlavaForConditionalGeneration._from_config(config, dtype=torch.float16)
    with torch.no_grad():  # small random weights, unit norms: finite losses, like a real checkpoint
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or "layer_norm" in name or "layrnorm" in name:
                p.fill_(1.0) if name.endswith("weight") else p.zero_()
            elif name.endswith("bias") or p.ndim < 2:
                p.zero_()
            else:
                p.normal_(0.0, 0.02)
    return model


def release_name(name: str) -> str:
    """Return the original LLaVA-Med release name of a transformers Llava parameter name."""
    if name.startswith("model.language_model."):
        return "model." + name.removeprefix("model.language_model.")
    if name.startswith("model.multi_modal_projector.linear_1."):
        return "model.mm_projector.0." + name.rsplit(".", 1)[1]
    if name.startswith("model.multi_modal_projector.linear_2."):
        return "model.mm_projector.2." + name.rsplit(".", 1)[1]
    if name.startswith("model.vision_tower."):  # transformers 5 keeps CLIP's vision_model. level or drops it
        rest = name.removeprefix("model.vision_tower.").removeprefix("vision_model.")
        return "model.vision_tower.vision_tower.vision_model." + rest
    return name  # lm_head.weight


def write_release(model, folder: Path) -> None:
    """Write ``model`` in the LLaVA-Med release layout: its config keys, names and ~500 MB safetensors shards."""
    folder.mkdir(parents=True)
    text = model.config.text_config
    config = {
        "architectures": ["LlavaMistralForCausalLM"], "model_type": "llava_mistral", "dtype": "float16",
        **{k: getattr(text, k) for k in ("hidden_size", "intermediate_size", "num_hidden_layers",
                                          "num_attention_heads", "num_key_value_heads", "vocab_size",
                                          "rms_norm_eps", "max_position_embeddings", "bos_token_id",
                                          "eos_token_id", "pad_token_id")},
        "rope_theta": 1_000_000.0, "mm_projector_type": "mlp2x_gelu", "mm_vision_select_layer": -2,
        "mm_vision_select_feature": "patch", "mm_vision_tower": "openai/clip-vit-large-patch14-336",
        "mm_use_im_start_end": False,
    }  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    shards: list[dict] = [{}]
    size = 0
    for name, p in model.state_dict().items():
        if size and size + p.numel() * p.element_size() > SHARD:
            shards.append({})
            size = 0
        shards[-1][release_name(name)] = p.contiguous()
        size += p.numel() * p.element_size()
    write_shards(folder, shards)


def write_checkpoints(scratch: Path, llm_layers: int) -> tuple[int, Path, Path]:
    """Write both layouts under ``scratch``; return (parameter count, transformers folder, release folder)."""
    from transformers import CLIPImageProcessor

    from medtune.core_models import get_preset

    model = build_source(llm_layers)
    params = sum(p.numel() for p in model.parameters())
    hf, release = scratch / "transformers", scratch / "release"
    model.save_pretrained(hf, max_shard_size="500MB")
    write_release(model, release)
    processor = CLIPImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    demo = get_preset("tiny-llava").default_weights
    for folder in (hf, release):
        processor.save_pretrained(folder)
        for name in ("tokenizer.json", "tokenizer_config.json"):  # the demo's word tokenizer: <image> is id 4
            shutil.copy(demo / name, folder / name)
    return params, hf, release


def folder_bytes(folder: Path | None) -> int:
    """Return the bytes of the weight files in ``folder`` (0 for None)."""
    return sum(f.stat().st_size for f in folder.glob("*.safetensors")) if folder else 0


def limited_cgroup(limit_gb: float, scratch: Path) -> Path:
    """Return a new memory cgroup below this process's own, limited to ``limit_gb`` GB (v2 or v1; needs root)."""
    from medtune.tuning.fast_path import cgroup_folders

    folders = cgroup_folders()
    if not folders:
        sys.exit("--memory-limit needs a Linux memory cgroup (v1 or v2) this process can see")
    child = folders[0] / f"medtune-bench-{scratch.name}"
    limit_file = "memory.max" if (folders[0] / "memory.max").is_file() else "memory.limit_in_bytes"
    try:
        child.mkdir()
        (child / limit_file).write_text(str(int(limit_gb * GB)))
    except OSError as err:
        sys.exit(f"--memory-limit: cannot make a limited cgroup under {folders[0]} ({err}); run as root")
    return child


def measure(
    layout: str, folder: Path | None, runs: Path, extra: list[str], cgroup: Path | None = None, limit_gb=None
) -> dict:
    """Run the command for ``layout`` in a fresh process (in ``cgroup``, of ``limit_gb``, when given); its CSV row."""
    medtune = str(Path(sys.executable).with_name("medtune"))
    args = ["train", "llava", "ln", "--4bit", "--max-steps", "2", "--no-eval-before", "--no-eval",
            "--batch-size", "2", "--quiet", *extra]  # fmt: skip
    if folder is not None:
        args += ["--model-path", str(folder)]
    out = runs / layout
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, str(cgroup or "-"), medtune, *args, "--output-dir", str(out)],
        capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
    )  # fmt: skip
    seconds = time.perf_counter() - start
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("PEAK_RSS_KIB"))
    _, kib, code = line.split()
    if code != "0":
        print(done.stdout[-3000:], done.stderr[-3000:], sep="\n", file=sys.stderr)
    memory = {}
    for config in out.glob("*/config.json"):
        memory = json.loads(config.read_text()).get("memory", {})
    import torch

    return {
        "host": platform.node(), "torch": torch.__version__,
        "layout": layout if cgroup is None else f"{layout} in {limit_gb:g} GB",
        "params": None, "checkpoint_bytes": folder_bytes(folder), "command": "medtune " + " ".join(args),
        "seconds": round(seconds, 1), "peak_rss_bytes": int(kib) * 1024,
        "run_measured_peak_bytes": memory.get("measured_peak_bytes"),
        "run_measured_load_peak_bytes": memory.get("measured_load_peak_bytes"),
        "planned_load_peak_bytes": memory.get("planned_load_peak_bytes"),
        "planned_peak_bytes": memory.get("planned_peak_bytes"),
        "exit": int(code),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Write the checkpoints, measure each layout and the demo, append loading.csv, print the table; return 0."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--llm-layers", type=int, default=16, help="16: ~0.8B parameters with the ViT-L tower")
    p.add_argument("--layouts", default="demo,transformers,release", help="comma-separated, in this order")
    p.add_argument("--scratch", type=Path, default=Path(tempfile.gettempdir()), help="where checkpoints go")
    p.add_argument("--out", type=Path, default=HERE / "loading.csv")
    p.add_argument("--train-flags", default="", help="more `medtune train` flags, e.g. --grad-checkpointing")
    p.add_argument(
        "--memory-limit",
        type=float,
        metavar="GB",
        help="run each command in a memory cgroup of this many GB, a machine that small (root only)",
    )
    args = p.parse_args(argv)
    check_appendable(args.out, COLUMNS)
    scratch = Path(tempfile.mkdtemp(prefix="medtune-bench-loading-", dir=args.scratch))
    cgroup = limited_cgroup(args.memory_limit, scratch) if args.memory_limit else None
    try:
        layouts = args.layouts.split(",")
        params, hf, release = 0, None, None
        if {"transformers", "release"} & set(layouts):
            print(f"writing the checkpoints under {scratch} ...", flush=True)
            params, hf, release = write_checkpoints(scratch, args.llm_layers)
            print(
                f"{params:,} parameters, {folder_bytes(hf) / GB:.2f} GB of fp16 shards per layout", flush=True
            )
        rows = []
        for layout in layouts:
            folder = {"demo": None, "transformers": hf, "release": release}[layout]
            extra = (["--preset", "llava-med-v1.5"] if layout == "release" else []) + args.train_flags.split()
            row = measure(layout, folder, scratch / "runs", extra, cgroup, args.memory_limit)
            row["params"] = params if folder is not None else None
            rows.append(row)
            load = (row["run_measured_load_peak_bytes"] or 0) / GB
            print(f"{layout:>12}: peak RSS {row['peak_rss_bytes'] / GB:.2f} GB (after loading {load:.2f} GB), "
                  f"{row['seconds']:.0f} s, exit {row['exit']}", flush=True)  # fmt: skip
        append_rows(args.out, rows, COLUMNS)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if cgroup is not None:
            cgroup.rmdir()  # empty again: each measured process has exited
    by = {r["layout"].split(" in ")[0]: r["peak_rss_bytes"] for r in rows}
    if "transformers" in by:
        print(f"transformers layout: {by['transformers'] / GB:.2f} GB (target <= 2.4 GB)")
    if "transformers" in by and "release" in by:
        print(f"release layout: {by['release'] / by['transformers'] - 1:+.1%} against it (target within 10%)")
    return 0 if all(r["exit"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
