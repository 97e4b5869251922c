"""The fast path: settings chosen from the real memory planner and the free memory; --torch-compile trains the same."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from medtune.tuning.fast_path import choose, compile_blocks, fit_to_device, planner_for
from medtune.tuning.memory import GIB
from medtune.tuning.paradigm import Paradigm
from medtune.tuning.recipes import resolve_config

RECIPE = dict(
    load_4bit=False, grad_checkpointing=False, batch_size=4, grad_accum=1
)  # the paper's llava batch


@pytest.fixture(scope="module")
def planner_7b():
    """The planner of LN-tuning LLaVA-Med v1.5 (7B) in bf16, built on the meta device."""
    from medtune.core_models.model_class import build_model
    from medtune.tuning.apply import apply_paradigm

    meta = build_model("llava-med-v1.5", device="meta")
    return planner_for(apply_paradigm(meta, "llava", "ln", Paradigm.parse("F,F,PEFT,F", "llava")), 2)


@pytest.mark.slow  # the 7B meta model takes ~15 s to build on a shared CPU; still run by default
def test_the_7b_choices_follow_the_free_memory(planner_7b):
    card_8gb = choose(planner_7b, int(7.5 * GIB), RECIPE)  # an 8 GB card less its CUDA context
    assert (card_8gb.load_4bit, card_8gb.grad_checkpointing, card_8gb.fits) == (True, True, True)
    assert card_8gb.batch_size * card_8gb.grad_accum == 4
    card_24gb = choose(planner_7b, 23 * GIB, RECIPE)
    assert (card_24gb.load_4bit, card_24gb.grad_checkpointing) == (False, False)
    assert card_24gb.batch_size < 4 and card_24gb.batch_size * card_24gb.grad_accum == 4
    h100 = choose(planner_7b, 79 * GIB, RECIPE)
    assert (h100.load_4bit, h100.grad_checkpointing, h100.batch_size, h100.grad_accum) == (False, False, 4, 1)
    for c, free in ((card_8gb, 7.5), (card_24gb, 23), (h100, 79)):  # each fits with the chooser's margin
        assert c.plan.peak * 1.1 <= free * GIB and len(c.reasons) == 3
    assert card_8gb.reasons[0].startswith("4-bit on: 16-bit frozen weights need")
    # A setting the user gave is kept, even where it cannot fit: the load check then says what to change.
    kept = choose(planner_7b, int(7.5 * GIB), RECIPE, explicit={"load_4bit"})
    assert (kept.load_4bit, kept.grad_checkpointing, kept.batch_size, kept.fits) == (False, True, 1, False)
    assert kept.reasons[0] == "4-bit off: as set" and "nothing fits" in kept.reasons[-1]
    batch = choose(planner_7b, 79 * GIB, {**RECIPE, "batch_size": 1}, explicit={"batch_size"})
    assert (batch.batch_size, batch.grad_accum) == (1, 1)


def test_the_order_is_16_bit_then_no_checkpointing_then_the_largest_micro_batch():
    def planner(four_bit, checkpointing, batch):  # a made-up model: weights, then per-sample activations
        from medtune.tuning.memory import MemoryPlan

        weights = (2 if four_bit else 8) * GIB
        per_sample = (0.5 if checkpointing else 2) * GIB
        total = int(weights + batch * per_sample)
        return MemoryPlan(
            weights, 0, 0, total - weights, total, weights, (), batch, 100, four_bit, checkpointing
        )

    # batch 8: without checkpointing 16-bit fits micro-batch 2 (12 GiB) in 14 GiB, so that wins over 4-bit
    c = choose(planner, int(14 * 1.1 * GIB), {**RECIPE, "batch_size": 8})
    assert (c.load_4bit, c.grad_checkpointing, c.batch_size, c.grad_accum) == (False, False, 2, 4)
    assert c.reasons[2] == (
        "micro-batch 2 x 4 accumulation (the recipe's batch 8): micro-batch 4 would need 16.0 GiB, 15.4 GiB free"
    )
    c = choose(planner, int(9.2 * 1.1 * GIB), {**RECIPE, "batch_size": 8})  # only checkpointed 16-bit fits
    assert (c.load_4bit, c.grad_checkpointing, c.batch_size) == (False, True, 2)
    c = choose(planner, int(9.2 * 1.1 * GIB), {**RECIPE, "batch_size": 8}, four_bit_available=True,
               explicit={"grad_checkpointing"})  # fmt: skip
    assert (c.load_4bit, c.grad_checkpointing, c.batch_size) == (True, False, 2)


def test_resolve_config_records_what_the_user_set_and_the_cpu_changes_nothing():
    cfg = resolve_config("llava", "ln", "tiny-llava", "F,F,PEFT,F", {"batch_size": 2, "lr": None})
    assert "batch_size" in cfg.explicit and "grad_accum" not in cfg.explicit and "lr" not in cfg.explicit
    same, lines = fit_to_device(cfg, Paradigm.parse(cfg.paradigm, "llava"), torch.device("cpu"))
    assert same == cfg and lines == []


def _first_loss(tmp_path, name, **settings):
    from medtune.tuning.train import train

    cfg = resolve_config(
        "llava", "ln", "tiny-llava", "F,F,PEFT,F",
        {"max_steps": 1, "batch_size": 2, "eval_before": False, "eval_after": False, "report_to": (),
         "output_dir": str(tmp_path / name), **settings},
    )  # fmt: skip
    result = train(cfg, progress=False)
    return result.first_loss, json.loads((result.run_dir / "config.json").read_text())


@pytest.mark.slow  # two tiny runs, one compiled (aot_eager: inductor would compile for minutes here)
def test_torch_compile_trains_the_same_first_loss(tmp_path, demo_cache):
    eager_loss, _ = _first_loss(tmp_path, "eager")
    compiled_loss, config = _first_loss(
        tmp_path, "compiled", torch_compile=True, torch_compile_backend="aot_eager"
    )
    assert config["torch_compile"] is True
    assert compiled_loss == pytest.approx(eager_loss, rel=1e-5)


def test_fused_norms_compile_inside_a_decoder_block_without_graph_breaks():
    """Under TRITON_INTERPRET=1 the fused norms run on the CPU: a patched block compiles as one graph."""
    from medtune.core_models.model_class import build_model
    from medtune.kernels import patch_norms

    torch.manual_seed(0)
    model = build_model("tiny-llava")
    patch_norms(model)
    layers = model.model.language_model.layers
    x = torch.randn(2, 7, model.config.text_config.hidden_size)
    position = torch.arange(7).expand(2, 7)
    rope = model.model.language_model.rotary_emb(x, position)

    def loss_of(layer):
        model.zero_grad(set_to_none=True)
        out = layer(x, position_embeddings=rope, position_ids=position)
        (out[0] if isinstance(out, tuple) else out).square().mean().backward()
        return layer.input_layernorm.weight.grad.clone()

    eager_grad = loss_of(layers[0])
    torch._dynamo.reset()
    compiled = torch.compile(layers[0], fullgraph=True, backend="aot_eager")  # fullgraph: a break fails
    torch.testing.assert_close(loss_of(compiled), eager_grad, rtol=1e-5, atol=1e-6)
    assert type(layers[0].input_layernorm).__module__.startswith("medtune.kernels")
    compile_blocks(model, "aot_eager")  # the regional form train uses: blocks compiled in place, names kept
    assert "model.language_model.layers.0.input_layernorm.weight" in dict(model.named_parameters())


def test_on_the_cpu_checkpointing_turns_on_only_when_the_host_memory_needs_it(monkeypatch):
    import medtune.tuning.fast_path as fast_path

    cfg = resolve_config("llava", "ln", "tiny-llava", "F,F,PEFT,F", {"batch_size": 2})
    paradigm = Paradigm.parse(cfg.paradigm, "llava")
    plenty = fit_to_device(cfg, paradigm, torch.device("cpu"))
    monkeypatch.setattr(fast_path, "host_memory", lambda: 1 * 2**20)  # 1 MiB: the tiny step needs more
    short, lines = fit_to_device(cfg, paradigm, torch.device("cpu"))
    assert plenty == (cfg, [])
    assert short.grad_checkpointing and not cfg.grad_checkpointing
    assert lines[0].startswith("host memory: activation checkpointing on: without it the step needs about")
    assert "1 MiB" not in lines[0] and "0.0 GiB available" in lines[0]
    # A setting the user gave is kept, as is the recipe's with --no-auto-fit.
    given = resolve_config("llava", "ln", "tiny-llava", "F,F,PEFT,F", {"grad_checkpointing": False})
    assert fit_to_device(given, paradigm, torch.device("cpu")) == (given, [])
    off = resolve_config("llava", "ln", "tiny-llava", "F,F,PEFT,F", {"auto_fit": False})
    assert fit_to_device(off, paradigm, torch.device("cpu")) == (off, [])


@pytest.mark.skipif(not Path("/proc/meminfo").is_file(), reason="Linux reports MemAvailable")
def test_host_memory_is_what_the_machine_has_available_at_most():
    from medtune.tuning.fast_path import host_memory

    total = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0]) * 1024
    assert 0 < host_memory() <= total


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_a_cgroup_limit_counts_its_usage_less_the_page_cache_it_can_drop(tmp_path, version):
    from medtune.tuning.fast_path import cgroup_room

    names = {"v1": ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file"),
             "v2": ("memory.max", "memory.current", "inactive_file")}[version]  # fmt: skip
    (tmp_path / names[0]).write_text("2400000000\n")
    (tmp_path / names[1]).write_text("900000000\n")
    (tmp_path / "memory.stat").write_text(f"cache 1\n{names[2]} 300000000\n")
    assert cgroup_room(tmp_path) == 2_400_000_000 - (900_000_000 - 300_000_000)
    (tmp_path / names[0]).write_text("max\n")  # v2's "no limit"
    assert cgroup_room(tmp_path) is None
