"""The vlm family end to end on tiny random checkpoints of each supported architecture (no download)."""

from __future__ import annotations

import copy
import dataclasses
import json

import pytest
import torch

from medtune.core_models import default_preset, load
from medtune.core_models.vlm_tiny import write_tiny_vlm
from medtune.data import demo_dataset
from medtune.data.chat_collator import ChatTemplateCollator
from medtune.tuning.adapter import load_adapter, save_adapter
from medtune.tuning.apply import apply_paradigm
from medtune.tuning.batches import make_collator
from medtune.tuning.cli import main
from medtune.tuning.datasets import read_records
from medtune.tuning.errors import UsageError
from medtune.tuning.paradigm import Paradigm

ARCHS = (
    "tiny-gemma3",
    "tiny-qwen2.5-vl",
    "tiny-qwen2-vl",
    "tiny-idefics3",
    "tiny-llava-next",
    "tiny-internvl",
)
METHODS = ("ln", "attention", "ffn", "lora", "prefix", "full")
# What each release's chat template writes after the generation prompt for the answer "brain".
ANSWER_RENDERING = {
    "tiny-gemma3": "brain<end_of_turn>\n",
    "tiny-qwen2.5-vl": "brain<|im_end|>\n",
    "tiny-idefics3": " brain<end_of_utterance>\n",
    "tiny-llava-next": " brain</s>",
    "tiny-internvl": "brain<|im_end|>\n",
    "tiny-qwen2-vl": "brain<|im_end|>\n",
}


@pytest.fixture(scope="module")
def records(demo_cache):
    return read_records(demo_dataset("downstream"), "train", None, "raise", [])[1]


@pytest.fixture(scope="module")
def checkpoints(records, tmp_path_factory):
    texts = [r.question for r in records] + [r.answer for r in records]
    root = tmp_path_factory.mktemp("vlm")
    return {arch: write_tiny_vlm(arch, root / arch, texts) for arch in ARCHS}


_LOADED: dict = {}


def _built(checkpoints, arch):
    """Return a Built of the tiny checkpoint with a fresh copy of its model (loaded from disk once per arch)."""
    if arch not in _LOADED:
        _LOADED[arch] = load(default_preset("vlm", checkpoints[arch]), checkpoints[arch])
    return dataclasses.replace(_LOADED[arch], model=copy.deepcopy(_LOADED[arch].model))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("arch", ARCHS)
def test_every_method_takes_a_step_under_a_mixed_paradigm(checkpoints, records, arch, method):
    built = _built(checkpoints, arch)
    if method == "prefix" and arch == "tiny-gemma3":
        with pytest.raises(
            UsageError, match="prefix tuning is not available for Gemma3ForConditionalGeneration"
        ):
            apply_paradigm(built.model, "vlm", method, Paradigm.parse("F,F,PEFT,F", "vlm"))
        return
    # vision tower trained in full, connector and LLM by the method (prefix: LLM only, vision groups refused)
    paradigm = Paradigm.parse("T,F,PEFT,F" if method == "prefix" else "T,PEFT,PEFT,F", "vlm")
    tuned = apply_paradigm(built.model, "vlm", method, paradigm)
    counts = tuned.counts()
    assert counts["groups"]["vision_tower"]["trainable"] == counts["groups"]["vision_tower"]["params"]
    assert counts["groups"]["lm_head"]["trainable"] == 0 and counts["peft_params"] > 0
    built.model = tuned.model
    batch = make_collator(built, train=True)(records[:2])
    batch.pop("qids")
    before = {n: p.detach().clone() for n, p in tuned.model.named_parameters()}
    optimizer = torch.optim.AdamW([p for p in tuned.model.parameters() if p.requires_grad], lr=1e-2)
    loss = tuned.model(**batch).loss
    loss.backward()
    assert torch.isfinite(loss)
    # (LLaVA-NeXT reads the CLIP tower's hidden states before its final norm, which so never gets a gradient)
    no_grad = [
        n
        for n, p in tuned.model.named_parameters()
        if p.requires_grad and p.grad is None and "vision_tower.post_layernorm" not in n
    ]
    assert not no_grad, no_grad[:3]
    optimizer.step()
    after = dict(tuned.model.named_parameters())
    changed = {n for n in before if not torch.equal(before[n], after[n].detach())}
    assert changed and changed <= tuned.trainable


# The exact tensors LN-tuning trains under F,PEFT,PEFT,F in each tiny (2-layer) architecture.
LLM_NORMS = ("input_layernorm", "post_attention_layernorm")
GEMMA_NORMS = (*LLM_NORMS, "pre_feedforward_layernorm", "post_feedforward_layernorm", "self_attn.q_norm",
               "self_attn.k_norm")  # fmt: skip
EXPECTED_LN = {
    "tiny-gemma3": {"model.multi_modal_projector.mm_soft_emb_norm.weight", "model.language_model.norm.weight"}
    | {f"model.language_model.layers.{i}.{n}.weight" for i in range(2) for n in GEMMA_NORMS},
    "tiny-qwen2.5-vl": {"model.visual.merger.ln_q.weight", "model.language_model.norm.weight"}
    | {f"model.language_model.layers.{i}.{n}.weight" for i in range(2) for n in LLM_NORMS},
    "tiny-idefics3": {"model.text_model.norm.weight"}  # Idefics3's connector is one linear map: no norm
    | {f"model.text_model.layers.{i}.{n}.weight" for i in range(2) for n in LLM_NORMS},
    "tiny-llava-next": {"model.language_model.norm.weight"}  # an MLP connector: no norm
    | {f"model.language_model.layers.{i}.{n}.weight" for i in range(2) for n in LLM_NORMS},
    "tiny-qwen2-vl": {"model.language_model.norm.weight"}  # Qwen2-VL's merger norm is a LayerNorm
    | {f"model.visual.merger.ln_q.{w}" for w in ("weight", "bias")}
    | {f"model.language_model.layers.{i}.{n}.weight" for i in range(2) for n in LLM_NORMS},
    "tiny-internvl": {"model.language_model.norm.weight"}  # the projector's LayerNorm has a bias too
    | {f"model.multi_modal_projector.layer_norm.{w}" for w in ("weight", "bias")}
    | {f"model.language_model.layers.{i}.{n}.weight" for i in range(2) for n in LLM_NORMS},
}


@pytest.mark.parametrize("arch", ARCHS)
def test_ln_tunes_exactly_the_norms_of_the_tuned_groups_in_fp32(checkpoints, arch):
    built = load(default_preset("vlm", checkpoints[arch]), checkpoints[arch], dtype=torch.bfloat16)
    tuned = apply_paradigm(built.model, "vlm", "ln", Paradigm.parse("F,PEFT,PEFT,F", "vlm"))
    assert tuned.trainable == EXPECTED_LN[arch]
    params = dict(tuned.model.named_parameters())
    assert all(params[n].dtype == torch.float32 for n in tuned.trainable)  # a bf16 gamma cannot absorb 2e-5
    assert {p.dtype for n, p in params.items() if n not in tuned.trainable} == {torch.bfloat16}


def test_exact_tensors_of_each_method_on_qwen2_5_vl(checkpoints):
    layers = [f"model.language_model.layers.{i}" for i in range(2)]
    attention = {f"{layer}.self_attn.{p}.{w}" for layer in layers for p in ("q_proj", "k_proj", "v_proj")
                 for w in ("weight", "bias")} | {f"{layer}.self_attn.o_proj.weight" for layer in layers}  # fmt: skip
    ffn = {f"{layer}.mlp.{p}.weight" for layer in layers for p in ("gate_proj", "up_proj", "down_proj")}
    expected = {
        "attention": attention,
        "ffn": ffn,
        "prefix": {"model.language_model.prefix_encoder.embedding.weight"},
    }
    for method, names in expected.items():
        tuned = apply_paradigm(_built(checkpoints, "tiny-qwen2.5-vl").model, "vlm", method,
                               Paradigm.parse("F,F,PEFT,F", "vlm"))  # fmt: skip
        got = tuned.peft if method != "prefix" else {n for n in tuned.peft if "embedding" in n}
        assert got == names, method
    lora = apply_paradigm(_built(checkpoints, "tiny-qwen2.5-vl").model, "vlm", "lora",
                          Paradigm.parse("F,F,PEFT,F", "vlm"))  # fmt: skip
    wrapped = {n.split(".lora_")[0] for n in lora.peft}
    assert wrapped == {n.rsplit(".", 1)[0] for n in attention | ffn}  # every LLM linear, rank 4
    assert lora.details["rank"] == 4


@pytest.mark.parametrize("arch", ARCHS)
def test_labels_supervise_exactly_the_answer_the_chat_template_writes(checkpoints, records, arch):
    built = _built(checkpoints, arch)
    processor = built.processor
    record = next(r for r in records if r.answer == "brain")
    batch = ChatTemplateCollator(processor, train=True)([record, *records[:2]])
    ids, labels = batch["input_ids"][0], batch["labels"][0]
    supervised = ids[labels != -100]
    assert torch.equal(labels[labels != -100], supervised)
    assert processor.tokenizer.decode(supervised) == ANSWER_RENDERING[arch]
    # the whole row is the processor's own encoding of the template's rendering of question + answer
    turn = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": record.question}]},
            {"role": "assistant", "content": [{"type": "text", "text": record.answer}]}]  # fmt: skip
    from medtune.data.images import load_image

    text = processor.apply_chat_template(turn, tokenize=False)
    alone = processor(text=[text], images=[[load_image(record.image, record.qid)]], add_special_tokens=False)
    real = batch["attention_mask"][0].bool()
    assert ids[real].tolist() == list(alone["input_ids"][0])
    # the supervised tokens are the last ones of the row, after the template's generation prompt
    prompt = processor.apply_chat_template(turn[:1], add_generation_prompt=True, tokenize=False)
    assert text == prompt + ANSWER_RENDERING[arch]


def test_images_go_through_the_checkpoints_own_processor(checkpoints, records, tmp_path):
    from PIL import Image

    Image.new("RGB", (16, 40), "gray").save(tmp_path / "tall.png")
    Image.new("RGB", (32, 32), "gray").save(tmp_path / "square.png")
    tall = dataclasses.replace(records[0], image=tmp_path / "tall.png")
    square = dataclasses.replace(records[1], image=tmp_path / "square.png")
    qwen = _built(checkpoints, "tiny-qwen2.5-vl").processor
    batch = ChatTemplateCollator(qwen, train=False)([tall, square])
    grid = batch["image_grid_thw"]  # dynamic resolution: each image keeps its own (t, h, w) patch grid
    assert grid.tolist() == [[1, 10, 4], [1, 8, 8]]  # 16 x 40 px -> 16 x 40 (multiples of 8); 32 x 32 as is
    image_tokens = (batch["input_ids"] == qwen.image_token_id).sum(dim=1)
    assert image_tokens.tolist() == [10, 16]  # after the 2 x 2 merge
    assert batch["attention_mask"][:, -1].all()  # prompts end flush right for generation
    idefics = _built(checkpoints, "tiny-idefics3").processor
    tiles = ChatTemplateCollator(idefics, train=False)([records[0]])["pixel_values"]
    assert tiles.shape[:2] == (
        1,
        5,
    )  # image splitting: 48 px -> 64 px, 2 x 2 tiles of 32 px + the whole image


@pytest.mark.parametrize("arch", ARCHS)
def test_an_adapter_round_trips_into_a_fresh_base(checkpoints, arch, tmp_path):
    paradigm = Paradigm.parse("F,F,PEFT,F", "vlm")
    for method in ("ln", "lora"):
        tuned = apply_paradigm(_built(checkpoints, arch).model, "vlm", method, paradigm)
        with torch.no_grad():
            for name, p in tuned.model.named_parameters():
                if name in tuned.trainable:
                    p.add_(torch.randn_like(p))
        manifest = {"preset": "x", "family": "vlm", "method": method, "paradigm": str(paradigm),
                    "method_details": tuned.details}  # fmt: skip
        folder = save_adapter(tmp_path / f"{arch}-{method}", tuned.model, tuned.trainable, manifest)
        fresh = apply_paradigm(_built(checkpoints, arch).model, "vlm", method, paradigm)
        load_adapter(fresh.model, folder, check_base=False)
        trained, loaded = dict(tuned.model.named_parameters()), dict(fresh.model.named_parameters())
        for name in tuned.trainable:
            torch.testing.assert_close(loaded[name], trained[name], msg=name)
        assert json.loads((folder / "manifest.json").read_text())["family"] == "vlm"


def test_bad_paradigm_and_unsupported_checkpoint_are_one_sentence_each(checkpoints, tmp_path, capsys):
    with pytest.raises(
        UsageError, match=r"has 3 states but family 'vlm' has 4 groups \(vision_tower, connector"
    ):
        Paradigm.parse("F,PEFT,F", "vlm")
    other = tmp_path / "paligemma"
    other.mkdir()
    config = json.loads((checkpoints["tiny-gemma3"] / "config.json").read_text())
    (other / "config.json").write_text(
        json.dumps({**config, "architectures": ["PaliGemmaForConditionalGeneration"]})
    )
    assert main(["train", "vlm", "ln", "--model-path", str(other), "--max-steps", "1"]) == 2
    err = capsys.readouterr().err
    assert "PaliGemmaForConditionalGeneration" in err and "Qwen2_5_VLForConditionalGeneration" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_params_plans_medgemma_4bit_from_the_meta_device(capsys):
    assert main(["params", "vlm", "ln", "--preset", "medgemma-4b", "--memory", "--4bit", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["total_params"] == 4_300_079_472
    assert result["groups"]["llm"]["trainable"] == result["trainable_params"] > 0
    assert result["memory"]["four_bit"] and "8 GB" in result["memory"]["fits"]


@pytest.mark.parametrize("arch", ARCHS)
def test_medtune_train_vlm_runs_on_a_tiny_checkpoint(checkpoints, arch, tmp_path, capsys):
    argv = ["train", "vlm", "ln", "--model-path", str(checkpoints[arch]), "--max-steps", "2", "--no-eval-before",
            "--no-eval", "--quiet", "--output-dir", str(tmp_path)]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "paradigm F,F,PEFT,F" in out and "recipe paper" in out
    (run,) = tmp_path.iterdir()
    manifest = json.loads((run / "adapter" / "manifest.json").read_text())
    assert manifest["family"] == "vlm" and manifest["preset"] == default_preset("vlm", checkpoints[arch]).name
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == 2


def test_a_tuned_vlm_exports_to_a_checkpoint_transformers_serves_and_predicts(checkpoints, records, tmp_path):
    from transformers import AutoModelForImageTextToText

    from medtune.data.images import load_image

    argv = ["train", "vlm", "lora", "--model-path", str(checkpoints["tiny-qwen2.5-vl"]), "--max-steps", "1",
            "--no-eval-before", "--no-eval", "--quiet", "--output-dir", str(tmp_path / "runs")]  # fmt: skip
    assert main(argv) == 0
    (run,) = (tmp_path / "runs").iterdir()
    assert main(["export", str(run), "--merge", "--out", str(tmp_path / "merged")]) == 0
    model = AutoModelForImageTextToText.from_pretrained(tmp_path / "merged")
    from medtune.core_models.vlm_processor import load_processor

    processor = load_processor(tmp_path / "merged")  # AutoProcessor where torchvision is installed
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    assert processor.chat_template == load_processor(checkpoints["tiny-qwen2.5-vl"]).chat_template
    record = records[0]
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": record.question}]}],
        add_generation_prompt=True,
    )
    inputs = processor(text=[prompt], images=[[load_image(record.image, record.qid)]], return_tensors="pt")
    assert model.generate(**inputs, max_new_tokens=2).shape[1] == inputs["input_ids"].shape[1] + 2
    assert (
        main(["predict", str(run), "--image", str(record.image), "--question", record.question, "--quiet"])
        == 0
    )


def test_ln_tunes_fp32_norms_on_a_4bit_base(checkpoints, tmp_path, capsys):
    pytest.importorskip("bitsandbytes")
    argv = ["train", "vlm", "ln", "--model-path", str(checkpoints["tiny-gemma3"]), "--4bit", "--max-steps", "1",
            "--no-eval-before", "--no-eval", "--quiet", "--output-dir", str(tmp_path)]  # fmt: skip
    assert main(argv) == 0
    assert "frozen linear layers now NF4" in capsys.readouterr().out
    (run,) = tmp_path.iterdir()
    from safetensors.torch import load_file

    tensors = load_file(next((run / "adapter").glob("*.safetensors")))
    assert tensors and {t.dtype for t in tensors.values()} == {torch.float32}


@pytest.mark.parametrize("arch", ["tiny-gemma3", "tiny-qwen2.5-vl"])
def test_ln_tuning_lowers_the_loss_on_a_fixed_batch(checkpoints, records, arch):
    built = _built(checkpoints, arch)
    tuned = apply_paradigm(built.model, "vlm", "ln", Paradigm.parse("F,F,PEFT,F", "vlm"))
    built.model = tuned.model
    batch = make_collator(built, train=True)(records[:4])
    batch.pop("qids")
    optimizer = torch.optim.AdamW([p for p in tuned.model.parameters() if p.requires_grad], lr=5e-2)
    losses = []
    for _ in range(8):
        loss = tuned.model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.05, losses  # only the LLM's norms moved, and they fit the answers


def test_ffn_tunes_the_vision_mlps_of_qwen2_vl_too(checkpoints):
    # Qwen2-VL's ViT calls its MLP VisionMlp (not *MLP): FFN-tuning a PEFT vision tower must still find it
    tuned = apply_paradigm(
        _built(checkpoints, "tiny-qwen2-vl").model, "vlm", "ffn", Paradigm.parse("PEFT,F,F,F", "vlm")
    )
    assert tuned.peft == {
        f"model.visual.blocks.{i}.mlp.{fc}.{w}"
        for i in range(2)
        for fc in ("fc1", "fc2")
        for w in ("weight", "bias")
    }
