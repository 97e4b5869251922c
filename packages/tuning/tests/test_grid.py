"""`medtune grid`: finished cells are skipped, a killed cell resumes, rates are chosen without the test split."""

from __future__ import annotations

import json
import shutil

import pytest

import medtune.tuning.train as train_module
from medtune.data import DataError, demo_dataset
from medtune.tuning.cli import main
from medtune.tuning.errors import UsageError
from medtune.tuning.grid import run_grid
from medtune.tuning.grid_spec import built_in_specs, read_spec, spec_from_dict


@pytest.fixture
def site(demo_cache, tmp_path) -> str:
    """Return a small copy of the demo's downstream set (16 train, 8 validation, 8 test questions)."""
    folder = tmp_path / "site"
    shutil.copytree(demo_dataset("downstream"), folder)
    for name, keep in (("train.json", 16), ("validate.json", 8), ("test.json", 8)):
        rows = json.loads((folder / name).read_text())
        (folder / name).write_text(json.dumps(rows[:keep]))
    return str(folder)


def two_cells(train: str, **top) -> dict:
    """Return a spec of LN-tuning tiny-llava at two rates, two steps each."""
    return {
        "name": "t",
        "train": train,
        "lrs": [1e-2, 3e-2],
        "settings": {"max_steps": 2, "log_every": 1, "batch_size": 8},
        "experiment": [{"family": "llava", "methods": ["ln"], "paradigms": ["F,F,PEFT,F"]}],
        **top,
    }


def test_a_finished_grid_runs_no_cell_again(site, tmp_path, monkeypatch):
    spec = spec_from_dict(two_cells(site))
    first = run_grid(spec, tmp_path / "grid", progress=False)
    assert len(first.trained) == 2 and first.skipped == []
    selection = json.loads((tmp_path / "grid" / "selection.json").read_text())
    assert selection[0]["method"] == "ln" and selection[0]["lr"] in (1e-2, 3e-2)
    table = (first.written[0]).read_text()
    assert "| ln | F | F | LayerNorm | F |" in table and "Closed majority (%)" in table
    assert "chosen by the mean validation loss" in table

    def no_training(*args, **kwargs):
        raise AssertionError("a finished cell was trained again")

    monkeypatch.setattr(train_module, "train", no_training)
    again = run_grid(spec, tmp_path / "grid", progress=False)
    assert again.trained == [] and len(again.skipped) == 2
    assert len(list((tmp_path / "grid" / "runs").glob("*/*/adapter"))) == 2  # one run per cell, none added


def test_a_cell_killed_after_a_checkpoint_resumes_from_it(site, tmp_path, monkeypatch, capsys):
    data = two_cells(site, settings={"max_steps": 4, "log_every": 1, "batch_size": 8, "save_every": 2})
    data["lrs"] = [1e-2]
    spec = spec_from_dict(data)
    original = train_module.save_checkpoint

    def killed_after_first_checkpoint(run_dir, **kwargs):
        original(run_dir, **kwargs)
        raise KeyboardInterrupt  # the process dies right after step 2's checkpoint

    monkeypatch.setattr(train_module, "save_checkpoint", killed_after_first_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        run_grid(spec, tmp_path / "grid", progress=False)
    monkeypatch.setattr(train_module, "save_checkpoint", original)
    result = run_grid(spec, tmp_path / "grid", progress=False)
    assert "resuming" in capsys.readouterr().out
    (run,) = (tmp_path / "grid" / "runs").glob("*/*/adapter")
    steps = [json.loads(line).get("step") for line in (run.parent / "metrics.jsonl").read_text().splitlines()]
    assert [s for s in steps] == [1, 2, 3, 4]  # steps 1-2 kept, 3-4 trained after the resume, none twice
    assert len(result.trained) == 1


def test_a_cell_killed_before_any_checkpoint_starts_again_cleanly(site, tmp_path, monkeypatch):
    data = two_cells(site)
    data["lrs"] = [1e-2]
    spec = spec_from_dict(data)

    class Killed(BaseException):
        pass

    def killed(*args, **kwargs):
        raise Killed

    monkeypatch.setattr(train_module, "save_adapter", killed)  # dies after training, before the adapter
    with pytest.raises(Killed):
        run_grid(spec, tmp_path / "grid", progress=False)
    (half,) = (tmp_path / "grid" / "runs").glob("*/*/config.json")
    monkeypatch.undo()
    run_grid(spec, tmp_path / "grid", progress=False)
    runs = list((tmp_path / "grid" / "runs").glob("*/*/config.json"))
    assert len(runs) == 1 and (runs[0].parent / "adapter" / "manifest.json").is_file()
    assert not half.exists() or half == runs[0]


@pytest.mark.parametrize("select", ["val_loss", "val_accuracy"])
def test_rates_are_chosen_before_and_without_the_test_split(site, tmp_path, select):
    (tmp_path / "site" / "test.json").write_text("this test split is poisoned: not JSON")
    spec = spec_from_dict(two_cells(site, select=select))
    with pytest.raises((UsageError, DataError), match="test"):
        run_grid(spec, tmp_path / "grid", progress=False)
    (chosen,) = json.loads((tmp_path / "grid" / "selection.json").read_text())
    assert chosen["by"] == select and set(map(float, chosen["values"])) == {1e-2, 3e-2}
    best = (min if select == "val_loss" else max)(chosen["values"], key=chosen["values"].get)
    assert float(best) == chosen["lr"]


def test_grid_specs_are_checked_before_anything_runs():
    with pytest.raises(UsageError, match="unknown key"):
        spec_from_dict({**two_cells("demo:downstream"), "lr": 1e-3})
    with pytest.raises(UsageError, match="learning rate"):
        spec_from_dict({**two_cells("demo:downstream"), "lrs": [2]})
    with pytest.raises(UsageError, match="test split is never used"):
        spec_from_dict({**two_cells("demo:downstream"), "select": "test_accuracy"})
    assert {"quick"} <= set(built_in_specs())
    for name in built_in_specs():
        assert read_spec(name).cells()  # every built-in spec parses and has cells
    assert main(["grid", "no-such-spec"]) == 2


def test_an_experiment_with_its_own_training_set_has_its_own_cells():
    vqa = {"family": "llava", "methods": ["ln"], "paradigms": ["F,F,PEFT,F"]}
    reports = {**vqa, "train": "demo:iu-xray", "eval": [{"dataset": "demo:mimic", "role": "zero-shot"}]}
    spec = spec_from_dict({"train": "demo:downstream", "experiment": [vqa, reports]})
    ids = [cell.id for cell in spec.cells()]
    assert ids == ["tiny-llava-ln-F-F-PEFT-F-lrrecipe-s0", "tiny-llava-ln-F-F-PEFT-F-on-iu-xray-lrrecipe-s0"]
    assert len({cell.key for cell in spec.cells()}) == 2  # rates are chosen per training set too
    with pytest.raises(UsageError, match="more than once"):
        spec_from_dict({"train": "demo:downstream", "experiment": [vqa, vqa]})
    demo = read_spec("demo").cells()  # its report experiment repeats a VQA experiment's cells on iu-xray
    assert len({cell.id for cell in demo}) == len(demo)
