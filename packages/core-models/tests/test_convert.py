"""Loading checkpoints from disk: HF format, and the original LLaVA-Med release layout converted to Llava."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import (
    CLIPConfig,
    CLIPImageProcessor,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    MistralConfig,
    PreTrainedTokenizerFast,
)

from medtune.core_models import IMAGE_TOKEN, Preset, build_word_tokenizer, load
from medtune.core_models.convert import is_llava_med_release, load_llava_med_release
from medtune.core_models.errors import CheckpointError
from medtune.core_models.llava_med import LinearConnectorLlava
from medtune.core_models.tokenizer import V1_IMAGE_PATCH, V1_IMAGE_START_END

WORDS = ["what organ is shown in this chest x-ray image", "yes no left right lung heart liver brain"]
TINY_CLIP_TEXT = {
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
}
ARCHS = {"llama": "LlavaLlamaForCausalLM", "mistral": "LlavaMistralForCausalLM"}


def tiny_vision() -> CLIPVisionConfig:
    return CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=28,
        patch_size=14,
    )


def tiny_text(kind: str, vocab: int):
    cls = LlamaConfig if kind == "llama" else MistralConfig
    return cls(
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=vocab,
        max_position_embeddings=128,
        tie_word_embeddings=False,
    )


def tiny_preset(kind: str, vocab: int) -> Preset:
    """A preset shaped like the fixtures: it supplies the vision config and the vocabulary to pad to."""
    return Preset(
        name=f"test-{kind}",
        family="llava",
        description="test",
        make_config=lambda: LlavaConfig(vision_config=tiny_vision(), text_config=tiny_text(kind, vocab)),
        template="demo",
        notes={"original_architecture": ARCHS[kind]},
    )


def plain_tokenizer() -> PreTrainedTokenizerFast:
    """A word tokenizer without <image>, like Mistral's and LLaMA's own."""
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.train_from_iterator(WORDS, trainers.WordLevelTrainer(special_tokens=["<unk>", "<s>", "</s>"]))
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


def source_model(kind: str, projector: str, tokenizer) -> LlavaForConditionalGeneration:
    """Return a randomly initialised tiny Llava whose weights a written checkpoint must reproduce."""
    torch.manual_seed(0)
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN) if IMAGE_TOKEN in tokenizer.get_vocab() else 0
    config = LlavaConfig(
        vision_config=tiny_vision(),
        text_config=tiny_text(kind, len(tokenizer)),
        image_token_index=image_id,
        vision_feature_layer=-2,
    )
    config.mm_projector_type = projector
    cls = LinearConnectorLlava if projector == "linear" else LlavaForConditionalGeneration
    return cls(config).eval()


def release_names(state: dict[str, torch.Tensor], projector: str) -> dict[str, torch.Tensor]:
    """Return ``state`` under the original LLaVA-Med release's tensor names."""
    out = {}
    for name, tensor in state.items():
        if name.startswith("model.vision_tower."):
            name = "model.vision_tower.vision_tower.vision_model." + name.removeprefix("model.vision_tower.")
        elif name.startswith("model.multi_modal_projector."):
            rest = name.removeprefix("model.multi_modal_projector.")
            if projector == "linear":
                name = "model.mm_projector." + rest.removeprefix("linear_1.")
            else:
                name = "model.mm_projector." + rest.replace("linear_1.", "0.").replace("linear_2.", "2.")
        elif name.startswith("model.language_model."):
            name = "model." + name.removeprefix("model.language_model.")
        out[name] = tensor.clone().contiguous()
    return out


def write_release(
    folder: Path,
    model,
    tokenizer,
    *,
    kind: str,
    projector: str,
    tower_inside: bool,
    drop: str | None = None,
    extra: str | None = None,
    weights: str = "safetensors",
) -> Path:
    """Write ``model`` in the release layout: config.json with mm_* keys and its weights.

    ``weights``: "safetensors" (2 shards and an index), "bin" (2 pytorch_model-*.bin shards and an index,
    as the LLaVA-Med v1 delta releases ship) or "single-bin" (one pytorch_model.bin).
    """
    folder.mkdir(parents=True)
    tensors = release_names(model.state_dict(), projector)
    mm_vision_tower = "openai/clip-vit-large-patch14-336"
    if not tower_inside:
        tower = folder.parent / f"{folder.name}-clip"
        # Like openai/clip-vit-large-patch14: a full CLIP config and vision_model.* / text_model.* tensor names.
        CLIPConfig(
            vision_config=model.config.vision_config.to_dict(), text_config=TINY_CLIP_TEXT
        ).save_pretrained(tower)
        clip = {f"vision_model.{k}": v.clone() for k, v in model.model.vision_tower.state_dict().items()}
        clip |= {"text_model.final_layer_norm.weight": torch.ones(16), "logit_scale": torch.tensor(2.6)}
        save_file(clip, tower / "model.safetensors")
        CLIPImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28}).save_pretrained(
            tower
        )
        tensors = {k: v for k, v in tensors.items() if not k.startswith("model.vision_tower.")}
        mm_vision_tower = str(tower)
    if drop:
        del tensors[drop]
    if extra:
        tensors[extra] = torch.zeros(3)
    text = model.config.text_config.to_dict()
    config = {
        k: text[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
    }
    config |= {
        "architectures": [ARCHS[kind]],
        "model_type": "llava_mistral" if kind == "mistral" else "llava",
        "num_key_value_heads": 2,
        "vocab_size": text["vocab_size"],
        "max_position_embeddings": 128,
        "rms_norm_eps": text["rms_norm_eps"],
        "rope_theta": 10000.0,
        "torch_dtype": "float32",
        "mm_vision_tower": mm_vision_tower,
        "mm_hidden_size": 32,
        "mm_projector_type": projector,
        "mm_vision_select_layer": -2,
        "mm_vision_select_feature": "patch",
        "mm_use_im_start_end": kind == "llama",
    }
    (folder / "config.json").write_text(json.dumps(config))
    names = sorted(tensors)
    if weights == "single-bin":
        torch.save(tensors, folder / "pytorch_model.bin")
    else:
        stem, ext = ("model", "safetensors") if weights == "safetensors" else ("pytorch_model", "bin")
        shards = {f"{stem}-00001-of-00002.{ext}": names[::2], f"{stem}-00002-of-00002.{ext}": names[1::2]}
        for file, part in shards.items():
            if ext == "safetensors":
                save_file({n: tensors[n] for n in part}, folder / file, metadata={"format": "pt"})
            else:
                torch.save({n: tensors[n] for n in part}, folder / file)
        weight_map = {n: file for file, part in shards.items() for n in part}
        (folder / f"{stem}.{ext}.index.json").write_text(
            json.dumps({"metadata": {}, "weight_map": weight_map})
        )
    tokenizer.save_pretrained(folder)
    return folder


def assert_same_weights(loaded, source, *, padded_rows: int = 0):
    """Every source tensor equals the loaded one; padded embedding rows equal the mean of the source rows."""
    got = loaded.state_dict()
    want = source.state_dict()
    assert set(want) == set(got)
    for name, tensor in want.items():
        if padded_rows and name.endswith(("embed_tokens.weight", "lm_head.weight")):
            rows = tensor.shape[0]
            torch.testing.assert_close(got[name][:rows], tensor, rtol=0, atol=0)
            mean = tensor.mean(0).expand(padded_rows, -1)
            torch.testing.assert_close(got[name][rows:], mean, rtol=0, atol=0)
        else:
            torch.testing.assert_close(got[name], tensor, rtol=0, atol=0, msg=name)


def test_hf_format_checkpoint_loads_back_equal(tmp_path):
    tokenizer = build_word_tokenizer(WORDS)
    source = source_model("llama", "mlp2x_gelu", tokenizer)
    source.save_pretrained(tmp_path / "hf")
    tokenizer.save_pretrained(tmp_path / "hf")
    CLIPImageProcessor(size={"shortest_edge": 28}).save_pretrained(tmp_path / "hf")
    preset = Preset("test-hf", "llava", "test", lambda: source.config, "demo")

    built = load(preset, tmp_path / "hf")

    assert not is_llava_med_release(tmp_path / "hf")
    assert type(built.model) is LlavaForConditionalGeneration
    assert_same_weights(built.model, source)


@pytest.mark.parametrize(
    ("kind", "projector", "tower_inside", "weights"),
    [
        ("llama", "linear", True, "safetensors"),
        ("llama", "linear", False, "safetensors"),
        ("mistral", "mlp2x_gelu", True, "safetensors"),
        ("mistral", "mlp2x_gelu", False, "safetensors"),
        # LLaVA-Med v1's delta releases ship pytorch_model-*.bin shards
        ("llama", "linear", True, "bin"),
        ("llama", "linear", True, "single-bin"),
    ],
)
def test_release_layout_converts_every_tensor(tmp_path, kind, projector, tower_inside, weights):
    tokenizer = build_word_tokenizer(WORDS)
    source = source_model(kind, projector, tokenizer)
    path = write_release(
        tmp_path / "rel",
        source,
        tokenizer,
        kind=kind,
        projector=projector,
        tower_inside=tower_inside,
        weights=weights,
    )
    assert bool(list(path.glob("pytorch_model*.bin"))) == (weights != "safetensors")
    preset = tiny_preset(kind, len(tokenizer))

    with (
        pytest.warns(UserWarning) if tower_inside else _no_warning()
    ):  # no processor in the folder -> CLIP default
        built = load(preset, path)

    assert is_llava_med_release(path)
    assert type(built.model) is (
        LinearConnectorLlava if projector == "linear" else LlavaForConditionalGeneration
    )
    assert built.model.config.vision_feature_layer == -2
    assert_same_weights(built.model, source)
    image = built.model.config.image_token_index
    ids = torch.tensor([[1, image, image, image, image, 2, 3]])  # 28 px / 14 px patches = 4 image tokens
    pixels = torch.randn(1, 3, 28, 28)
    got = built.model(input_ids=ids, pixel_values=pixels).logits
    torch.testing.assert_close(got, source(input_ids=ids, pixel_values=pixels).logits)
    assert built.image_processor.crop_size == {"height": 28, "width": 28}


def test_v1_release_keeps_its_vocabulary_and_marks_images_with_im_patch(tmp_path, recwarn):
    # LLaVA-Med v1's tokenizer has <im_patch>/<im_start>/<im_end> and no <image>: <im_patch> is the
    # position its code filled with image features, so nothing is added or padded.
    tokenizer = plain_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": [V1_IMAGE_PATCH, *V1_IMAGE_START_END]})
    patch_id = tokenizer.convert_tokens_to_ids(V1_IMAGE_PATCH)
    source = source_model("llama", "linear", tokenizer)
    source.config.image_token_index = patch_id
    path = write_release(
        tmp_path / "rel", source, tokenizer, kind="llama", projector="linear", tower_inside=True
    )

    built = load(tiny_preset("llama", len(tokenizer)), path)

    assert built.model.config.image_token_index == patch_id
    assert built.model.config.text_config.vocab_size == len(tokenizer)
    assert not [w for w in recwarn if "padded" in str(w.message) or "has no" in str(w.message)]
    assert built.image_wrap == V1_IMAGE_START_END  # the release's config sets mm_use_im_start_end
    assert_same_weights(built.model, source)
    ids = torch.tensor([[1, *[patch_id] * 4, 2]])  # 28 px / 14 px patches = 4 image positions
    pixels = torch.randn(1, 3, 28, 28)
    torch.testing.assert_close(
        built.model(input_ids=ids, pixel_values=pixels).logits,
        source(input_ids=ids, pixel_values=pixels).logits,
    )


def test_release_vocabulary_is_padded_with_the_mean_embedding(tmp_path):
    tokenizer = plain_tokenizer()  # like v1.5: no <image> in the release's vocabulary
    rows = len(tokenizer)
    source = source_model("mistral", "mlp2x_gelu", tokenizer)
    path = write_release(
        tmp_path / "rel", source, tokenizer, kind="mistral", projector="mlp2x_gelu", tower_inside=True
    )

    with pytest.warns(UserWarning, match="padded"):
        built = load_llava_med_release(tiny_preset("mistral", rows + 8), path)

    assert built.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN) == rows == built.model.config.image_token_index
    assert built.model.config.text_config.vocab_size == rows + 8
    state = {k: v for k, v in built.model.state_dict().items() if "embed_tokens" in k or "lm_head" in k}
    for name, tensor in source.state_dict().items():
        if name in state:
            torch.testing.assert_close(state[name][:rows], tensor, rtol=0, atol=0)
            torch.testing.assert_close(state[name][rows:], tensor.mean(0).expand(8, -1), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("drop", "extra", "expected"),
    [
        (
            "model.layers.1.mlp.down_proj.weight",
            None,
            "1 missing tensors (model.language_model.layers.1.mlp.down_proj",
        ),
        (None, "model.mm_projector.3.weight", "unexpected tensor model.mm_projector.3.weight"),
    ],
)
def test_partial_or_foreign_checkpoint_names_the_tensors(tmp_path, drop, extra, expected):
    tokenizer = build_word_tokenizer(WORDS)
    source = source_model("llama", "linear", tokenizer)
    path = write_release(
        tmp_path / "rel",
        source,
        tokenizer,
        kind="llama",
        projector="linear",
        tower_inside=False,
        drop=drop,
        extra=extra,
    )
    with pytest.raises(CheckpointError) as err:
        load(tiny_preset("llama", len(tokenizer)), path)
    assert expected in str(err.value)


def test_separate_tower_that_is_not_local_asks_for_vision_tower(tmp_path):
    tokenizer = build_word_tokenizer(WORDS)
    source = source_model("llama", "linear", tokenizer)
    path = write_release(
        tmp_path / "rel", source, tokenizer, kind="llama", projector="linear", tower_inside=False
    )
    tower = tmp_path / "rel-clip"
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(
        json.dumps(config | {"mm_vision_tower": "openai/clip-vit-large-patch14"})
    )
    preset = tiny_preset("llama", len(tokenizer))

    with pytest.raises(FileNotFoundError, match="pass the CLIP checkpoint folder with --vision-tower DIR"):
        load(preset, path)
    assert_same_weights(load(preset, path, vision_tower=tower).model, source)


def test_release_refuses_a_preset_that_does_not_describe_it(tmp_path):
    tokenizer = build_word_tokenizer(WORDS)
    source = source_model("mistral", "mlp2x_gelu", tokenizer)
    path = write_release(
        tmp_path / "rel", source, tokenizer, kind="mistral", projector="mlp2x_gelu", tower_inside=True
    )
    with pytest.raises(ValueError, match=r"pass --preset llava-med-v1\.5"):
        load("llava-med-v1", path)


class _no_warning:
    """Context manager asserting that the block warns about nothing."""

    def __enter__(self):
        import warnings

        self._catch = warnings.catch_warnings(record=True)
        self._seen = self._catch.__enter__()
        warnings.simplefilter("always")

    def __exit__(self, *exc):
        self._catch.__exit__(*exc)
        assert not [w for w in self._seen if issubclass(w.category, UserWarning)], [
            str(w.message) for w in self._seen
        ]
