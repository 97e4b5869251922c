"""A map-style torch Dataset over records (or an Arrow dataset of them) for DataLoader."""

from __future__ import annotations

import datasets
from torch.utils.data import Dataset

from medtune.data.arrow import report_record, vqa_record
from medtune.data.records import ReportRecord, VQARecord


class RecordDataset(Dataset):
    """Index records by position; an Arrow dataset from vqa_dataset/reports_dataset is decoded per item."""

    def __init__(self, records: list[VQARecord] | list[ReportRecord] | datasets.Dataset):
        self.records = records

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> VQARecord | ReportRecord:
        item = self.records[index]
        if isinstance(item, dict):
            return vqa_record(item) if "qid" in item else report_record(item)
        return item
