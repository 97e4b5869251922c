"""Collators for a built model (its prompt template, image processor and image tokens), and length-grouped order."""

from __future__ import annotations

import torch

from medtune.core_models import Built
from medtune.data import BlipVQACollator, LlavaCollator, get_template
from medtune.tuning.checkpoint import EpochShuffle

# Length-grouped order sorts windows of this many batches: wide enough that a batch's rows nearly match, narrow
# enough that which samples meet stays random.
GROUP_WINDOW = 50


def make_collator(built: Built, *, train: bool, max_length: int = 512):
    """Return the collator that turns records into model inputs for ``built``'s family."""
    if built.family == "miss":
        return BlipVQACollator(built.tokenizer, built.image_processor, train=train)
    if built.family == "vlm":  # the checkpoint's own chat template and processor
        from medtune.data.chat_collator import ChatTemplateCollator

        return ChatTemplateCollator(built.processor, train=train)
    return LlavaCollator(
        built.tokenizer,
        built.image_processor,
        get_template(built.preset.template),
        num_image_tokens=built.num_image_tokens,
        # The checkpoint's own image token (LLaVA-Med v1 calls it <im_patch>, llava-hf <image>).
        image_token=built.tokenizer.convert_ids_to_tokens(built.model.config.image_token_index),
        image_wrap=built.image_wrap,
        # Room for the text beside the image: LLaVA-Med v1.5's 576 image tokens alone outgrow a 512 budget.
        max_length=max(max_length, built.num_image_tokens + 256),
        padding_side="right" if train else "left",
        train=train,
    )


def sample_lengths(collator, records: list) -> list[int]:
    """Return each record's token count as ``collator`` would build it (no image is read).

    LLaVA-style collators count prompt plus answer (``encode``); BLIP counts question plus answer tokens.
    A collator this does not know is asked for ``length(record)``, else the characters of its text.
    """
    from medtune.data.collators import REPORT_INFERENCE_INSTRUCTION, _sample

    if isinstance(collator, LlavaCollator):
        lengths = []
        for record in records:
            sample_id, question, answer, _ = _sample(record, REPORT_INFERENCE_INSTRUCTION)
            lengths.append(len(collator.encode(sample_id, question, answer)[0]))
        return lengths
    if isinstance(collator, BlipVQACollator):
        tok = collator.tokenizer  # question with its special tokens; answer between [DEC] and [SEP]
        return [
            min(len(tok(r.question, add_special_tokens=True)["input_ids"]), collator.max_question_length)
            + len(tok(r.answer, add_special_tokens=False)["input_ids"])
            + 2
            for r in records
        ]
    if hasattr(collator, "length"):
        return [int(collator.length(r)) for r in records]
    return [
        len(getattr(r, "question", "")) + len(getattr(r, "answer", getattr(r, "report", ""))) for r in records
    ]


def cached_sample_lengths(collator, records: list, data_fingerprint: str) -> list[int]:
    """Return sample_lengths through ``datasets.map`` with a cache file, so a second run of the data reads them.

    Counting tokens up front (for --group-by-length) takes about a second per 20,000 reports; the cache
    file is named by the data's fingerprint and a hash of the collator (tokenizer, template, limits),
    which datasets computes, so changed data or another tokenizer counts afresh.
    """
    import hashlib

    import datasets
    from datasets.fingerprint import Hasher

    from medtune.data.demo import cache_dir

    key = hashlib.sha256(f"{data_fingerprint}:{Hasher.hash(collator)}".encode()).hexdigest()[:24]
    folder = cache_dir() / "lengths"
    folder.mkdir(parents=True, exist_ok=True)
    positions = datasets.Dataset.from_dict({"index": list(range(len(records)))})
    counted = positions.map(
        lambda batch: {"length": sample_lengths(collator, [records[i] for i in batch["index"]])},
        batched=True,
        batch_size=2000,
        cache_file_name=str(folder / f"{key}.arrow"),
        load_from_cache_file=True,
        new_fingerprint=key,
        desc="counting tokens",
    )
    return list(counted["length"])


class LengthGroupedShuffle(EpochShuffle):
    """EpochShuffle whose order keeps samples of like length together, so batches carry little padding.

    Each epoch's permutation is cut into windows of ``window`` samples (many batches' worth) and each window is
    sorted longest first: batches stay random in which samples meet, but a batch's rows have similar lengths.
    The order depends only on (seed, epoch), so a resumed run skips exactly what it had seen.
    """

    def __init__(self, lengths: list[int], seed: int, window: int):
        super().__init__(len(lengths), seed)
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        self.lengths, self.window = torch.tensor(lengths), window

    def __iter__(self):
        order = self.permutation()
        windows = [order[i : i + self.window] for i in range(0, len(order), self.window)]
        grouped = torch.cat(
            [w[torch.argsort(self.lengths[w], descending=True, stable=True)] for w in windows]
        )
        return iter(grouped[self.skip :].tolist())


def padding_fraction(lengths: list[int], order: list[int], batch_size: int) -> float:
    """Return the share of pad positions when ``order`` is cut into batches of ``batch_size`` and padded."""
    padded = real = 0
    for i in range(0, len(order), batch_size):
        batch = [lengths[j] for j in order[i : i + batch_size]]
        padded += max(batch) * len(batch)
        real += sum(batch)
    return 1 - real / padded if padded else 0.0
