"""Loading in the checkpoint's dtype and quantising while loading: one frozen weight in full precision at a time."""

from __future__ import annotations

import json
import weakref

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import LlavaForConditionalGeneration

from medtune.core_models import CheckpointError, get_preset, load
from medtune.core_models.build import full_precision_weights, train_dtype
from medtune.core_models.model_class import build_model

bnb = pytest.importorskip("bitsandbytes", reason="--4bit needs bitsandbytes")
from medtune.core_models.quantize import FourBit, quantize_frozen  # noqa: E402

TINY = get_preset("tiny-llava")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A small LLaVA written by save_pretrained in fp16, sharded, with the demo's tokenizer beside it."""
    folder = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    model = build_model(TINY).to(torch.float16)
    model.save_pretrained(folder, max_shard_size="600KB")
    for name in ("tokenizer.json", "tokenizer_config.json", "preprocessor_config.json"):
        (folder / name).write_bytes((TINY.default_weights / name).read_bytes())
    assert (folder / "model.safetensors.index.json").is_file()
    return folder


def batch(model):
    torch.manual_seed(1)
    ids = torch.randint(5, model.config.text_config.vocab_size, (2, 44))
    ids[:, 1:37] = model.config.image_token_index
    return {"input_ids": ids, "pixel_values": torch.randn(2, 3, 48, 48)}


class LiveFullPrecision(TorchDispatchMode):
    """Counts the full-precision tensors shaped like a frozen linear weight that are alive at once.

    Every tensor an op reads or writes is remembered weakly; after each op, the still-living ones are counted.
    """

    def __init__(self, shapes: set[tuple[int, ...]]):
        super().__init__()
        self.shapes, self.seen, self.peak = shapes, {}, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        flat = [*args, *(kwargs or {}).values(), *(out if isinstance(out, (tuple, list)) else [out])]
        for t in flat:
            real = isinstance(t, torch.Tensor) and t.device.type != "meta"  # meta: shapes, not memory
            if real and t.is_floating_point() and tuple(t.shape) in self.shapes:
                self.seen.setdefault(id(t.untyped_storage()), weakref.ref(t))
        self.seen = {k: r for k, r in self.seen.items() if r() is not None}
        self.peak = max(self.peak, len(self.seen))
        return out


def linear_shapes(preset) -> set[tuple[int, ...]]:
    model = build_model(preset, device="meta")
    return {
        tuple(m.weight.shape) for n, m in model.named_modules() if type(m) is nn.Linear and n != "lm_head"
    }


def test_auto_loads_the_checkpoints_own_dtype_and_flags_choose_one(checkpoint):
    assert load(TINY, checkpoint, dtype="auto").dtype == torch.float16
    assert {p.dtype for p in load(TINY, checkpoint, dtype="auto").model.parameters()} == {torch.float16}
    assert {p.dtype for p in load(TINY, checkpoint, dtype="bf16").model.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in load(TINY, checkpoint).model.parameters()} == {torch.float32}  # the default


def test_train_dtype_is_fp32_on_the_cpu_and_the_checkpoints_16_bit_on_a_gpu(checkpoint):
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert train_dtype("auto", checkpoint, TINY, cpu) == torch.float32
    assert train_dtype("auto", checkpoint, TINY, gpu) == torch.float16
    assert train_dtype("bf16", checkpoint, TINY, cpu) == torch.bfloat16
    config = json.loads((checkpoint / "config.json").read_text())
    fp32 = checkpoint.parent / "fp32-config"
    fp32.mkdir(exist_ok=True)
    (fp32 / "config.json").write_text(json.dumps({**config, "dtype": "float32"}))
    # the paper's precision for a 32-bit checkpoint
    assert train_dtype(None, fp32, TINY, gpu) == torch.bfloat16


def test_4bit_load_holds_one_full_precision_weight_at_a_time_unlike_load_then_quantise(checkpoint):
    shapes = linear_shapes(TINY)
    with LiveFullPrecision(shapes) as streaming:
        built = load(TINY, checkpoint, four_bit=FourBit())
    assert len(built.quantized) == 48
    assert streaming.peak <= 2  # the tensor as read and its fp32 copy
    with LiveFullPrecision(shapes) as old_path:
        quantize_frozen(load(TINY, checkpoint).model, set())
    assert old_path.peak >= 40  # the counter sees the whole model when it is all there


def test_4bit_logits_equal_the_load_then_quantise_path(checkpoint):
    new = load(TINY, checkpoint, four_bit=FourBit()).model.eval()
    old = load(TINY, checkpoint).model.eval()
    quantize_frozen(old, set())
    inputs = batch(new)
    with torch.no_grad():
        torch.testing.assert_close(new(**inputs).logits, old(**inputs).logits, rtol=0, atol=0)


def test_kept_linears_and_the_head_stay_full_precision(checkpoint):
    keep = "model.language_model.layers.0.self_attn.q_proj"
    model = load(TINY, checkpoint, four_bit=FourBit(keep=frozenset({keep}))).model
    assert type(model.get_submodule(keep)) is nn.Linear
    assert type(model.lm_head) is nn.Linear
    assert isinstance(
        model.get_submodule("model.language_model.layers.0.self_attn.k_proj"), bnb.nn.Linear4bit
    )


def test_eval_mode_forward_of_a_4bit_model_runs_on_the_cpu_and_keeps_gradients(checkpoint):
    model = load(TINY, checkpoint, four_bit=FourBit()).model
    inputs = batch(model)
    model.eval()
    with torch.no_grad():  # the path bitsandbytes would repack for inference (and fail on 96-wide layers)
        scored = model(**inputs).logits
    model.train()
    norm = model.model.language_model.layers[0].input_layernorm.weight
    norm.requires_grad_(True)
    trained = model(**inputs).logits
    trained.sum().backward()
    torch.testing.assert_close(scored, trained.detach(), rtol=0, atol=0)
    assert norm.grad is not None and norm.grad.abs().sum() > 0


def test_full_precision_weights_read_the_checkpoint_for_each_nf4_weight(checkpoint):
    built = load(TINY, checkpoint, four_bit=FourBit())
    full = full_precision_weights(built)
    reference = LlavaForConditionalGeneration.from_pretrained(checkpoint, dtype=torch.float16).state_dict()
    assert set(full) == {f"{n}.weight" for n in built.quantized}
    for name in list(full)[:5]:
        assert torch.equal(full[name], reference[name])


def test_a_missing_shard_a_truncated_shard_and_a_wrong_shape_are_named(checkpoint, tmp_path):
    import shutil

    index = json.loads((checkpoint / "model.safetensors.index.json").read_text())
    shard = sorted(set(index["weight_map"].values()))[-1]
    missing = tmp_path / "missing"
    shutil.copytree(checkpoint, missing)
    (missing / shard).unlink()
    with pytest.raises(CheckpointError, match=f"lists shard {shard} .* is missing"):
        load(TINY, missing, four_bit=FourBit())

    cut = tmp_path / "cut"
    shutil.copytree(checkpoint, cut)
    data = (cut / shard).read_bytes()
    (cut / shard).write_bytes(data[: len(data) - 1000])
    with pytest.raises(CheckpointError, match=rf"{shard} is truncated: tensor \S+ needs bytes"):
        load(TINY, cut)

    wrong = tmp_path / "wrong"
    shutil.copytree(checkpoint, wrong)
    config = json.loads((wrong / "config.json").read_text())
    config["text_config"]["intermediate_size"] = 256
    (wrong / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        CheckpointError, match=r"tensor model\.language_model\.layers\.\d\.mlp\.\w+_proj\.weight in"
    ):
        load(TINY, wrong)


def test_a_missing_tensor_is_an_error_not_a_random_init(checkpoint, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    folder = tmp_path / "partial"
    shutil.copytree(checkpoint, folder)
    index_file = folder / "model.safetensors.index.json"
    index = json.loads(index_file.read_text())
    name = "model.language_model.layers.1.mlp.down_proj.weight"
    (stored,) = [k for k in index["weight_map"] if k.endswith("layers.1.mlp.down_proj.weight")]
    shard = folder / index["weight_map"].pop(stored)
    tensors = load_file(shard)
    del tensors[stored]
    save_file(tensors, shard, metadata={"format": "pt"})
    index_file.write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=f"tensor {name} is missing from"):
        load(TINY, folder, four_bit=FourBit())
