import time

from torch.utils.data import DataLoader

from medtune.data import RecordDataset, read_reports, read_vqa, reports_dataset, vqa_dataset
from medtune.data.mimic import mimic_studies, read_mimic_split_csv


def test_vqa_dataset_round_trip(tmp_path, builders):
    records = read_vqa(builders.build_slake(tmp_path), "train")
    dataset = vqa_dataset(records)
    assert dataset.column_names[:3] == ["qid", "image", "question"] and len(dataset) == 3
    assert [RecordDataset(dataset)[k] for k in range(3)] == records


def test_reports_dataset_round_trip(tmp_path, builders):
    records = read_reports(builders.build_r2gen(tmp_path), "train")
    back = RecordDataset(reports_dataset(records))
    assert [back[k] for k in range(len(back))] == records


def test_record_dataset_feeds_a_dataloader(tmp_path, builders):
    records = read_vqa(builders.build_slake(tmp_path), "train")
    loader = DataLoader(RecordDataset(records), batch_size=2, collate_fn=lambda rs: [r.qid for r in rs])
    assert list(loader) == [["0", "1"], ["3"]]


def test_mimic_split_csv_at_full_scale(tmp_path):
    # MIMIC-CXR-JPG's split CSV has 377,110 rows; reading and grouping it must take seconds.
    rows = 377_110
    path = tmp_path / "mimic-cxr-2.0.0-split.csv"
    with path.open("w") as f:
        f.write("dicom_id,study_id,subject_id,split\n")
        names = ("train", "validate", "test")
        f.writelines(
            f"d{k},{50000000 + k // 2},{10000000 + k // 6},{names[(k // 2) % 3]}\n" for k in range(rows)
        )
    start = time.perf_counter()
    dataset = read_mimic_split_csv(path)
    test = mimic_studies(dataset.data.table, "test")
    elapsed = time.perf_counter() - start
    assert len(dataset) == rows and dataset.column_names == ["dicom_id", "study_id", "subject_id", "split"]
    assert test.num_rows == len(range(2, (rows + 1) // 2, 3))  # studies k // 2 whose number is 2 mod 3
    first = test.slice(0, 1).to_pylist()[0]
    assert first["study_id"] == 50000002 and first["dicom_ids"] == ["d4", "d5"]
    assert elapsed < 10, f"reading the 377k-row split CSV took {elapsed:.1f} s"
