"""`medtune bench methods` on the tiny preset: it runs every method, writes well-formed CSV rows and a plot."""

from __future__ import annotations

import csv
import importlib.util
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from medtune.tuning.cli import main

ROOT = Path(__file__).resolve().parents[3]
HARNESS = ROOT / "benchmarks" / "methods" / "bench_methods.py"
METHODS = ["full", "ln", "attention", "ffn", "lora", "prefix"]
INT_COLUMNS = [
    "batch",
    "seq_len",
    "threads",
    "steps",
    "weights_bytes",
    "grads_bytes",
    "optimizer_bytes",
    "activations_bytes",
    "peak_bytes",
    "total_params",
    "trainable_params",
    "adapter_bytes",
]
FLOAT_COLUMNS = ["p20_ms", "p50_ms", "p80_ms", "tokens_per_s"]


def load_harness():
    spec = importlib.util.spec_from_file_location("bench_methods_under_test", HARNESS)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    argv = ["bench", "methods", "--preset", "tiny-llava", "--rounds", "1", "--steps", "1", "--warmup", "0"]
    status = main([*argv, "--batch", "2", "--text-tokens", "12", "--out", str(out), "--quiet"])
    return status, out


def read_rows(path: Path) -> tuple[list[str], list[dict]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def test_writes_one_well_formed_row_per_method(tiny_run):
    status, out = tiny_run
    assert status == 0
    header, rows = read_rows(out / "results.csv")
    assert header == load_harness().COLUMNS
    assert [r["method"] for r in rows] == METHODS
    assert len({r["run_id"] for r in rows}) == 1
    for r in rows:
        assert r["preset"] == "tiny-llava" and r["paradigm"] == "F,F,PEFT,F" and r["dtype"] == "float32"
        assert r["torch"] and r["transformers"] and r["device"]
        assert (int(r["steps"]), int(r["batch"])) == (1, 2)
        assert int(r["seq_len"]) == 1 + 36 + 12  # bos + tiny-llava's 36 image tokens + text
        for c in INT_COLUMNS:
            assert int(r[c]) >= 0, c
        p20, p50, p80 = (float(r[c]) for c in ("p20_ms", "p50_ms", "p80_ms"))
        assert 0 < p20 <= p50 <= p80
        assert float(r["tokens_per_s"]) == pytest.approx(2 * int(r["seq_len"]) / (p50 / 1e3), rel=0.01)
        assert 0 < int(r["trainable_params"]) < int(r["total_params"])
    assert (out / "results.png").stat().st_size > 0


def test_memory_split_adds_up_and_follows_what_trains(tiny_run):
    _, out = tiny_run
    rows = {r["method"]: r for r in read_rows(out / "results.csv")[1]}
    for r in rows.values():
        parts = sum(
            int(r[c]) for c in ("weights_bytes", "grads_bytes", "optimizer_bytes", "activations_bytes")
        )
        assert parts == int(r["peak_bytes"])
        assert int(r["activations_bytes"]) > 0
        # fp32 gradients: 4 bytes per trainable element; AdamW: two fp32 moments plus a step counter per tensor
        assert int(r["grads_bytes"]) == 4 * int(r["trainable_params"])
        assert (
            8 * int(r["trainable_params"])
            <= int(r["optimizer_bytes"])
            <= 8 * int(r["trainable_params"]) + 8 * 400
        )
    full, ln = rows["full"], rows["ln"]
    assert int(ln["optimizer_bytes"]) < 0.01 * int(full["optimizer_bytes"])
    # the adapter holds exactly the trainable fp32 tensors, plus the safetensors header and manifest; a prefix
    # adapter holds (as PEFT's own prefix layout does) the virtual keys/values its MLP produces, not the MLP
    for r in (r for m, r in rows.items() if m != "prefix"):
        assert (
            4 * int(r["trainable_params"])
            < int(r["adapter_bytes"])
            < 4 * int(r["trainable_params"]) + 64 * 1024
        )


def test_appends_to_an_existing_csv_and_refuses_a_foreign_one(tmp_path):
    harness = load_harness()
    row = harness.Row(*[0] * len(harness.COLUMNS))
    path = tmp_path / "results.csv"
    harness.append_rows(path, [asdict(row)], harness.COLUMNS)
    harness.append_rows(path, [asdict(row), asdict(row)], harness.COLUMNS)
    assert len(read_rows(path)[1]) == 3
    foreign = tmp_path / "other.csv"
    foreign.write_text("a,b\n1,2\n")
    with pytest.raises(SystemExit, match="differ from this script's"):
        harness.append_rows(foreign, [asdict(row)], harness.COLUMNS)
    # main refuses before measuring anything, so a long run is never lost to the file at the end
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "results.csv").write_text("a,b\n1,2\n")
    argv = ["--preset", "tiny-llava", "--rounds", "1", "--steps", "1", "--out", str(tmp_path / "old")]
    with pytest.raises(SystemExit, match="move it aside"):
        harness.main(argv)
    assert not (tmp_path / "old" / "results.png").exists()


def test_bad_method_is_refused_with_a_sentence(tmp_path, capsys):
    status = main(["bench", "methods", "--methods", "ln,dora", "--out", str(tmp_path)])
    assert status == 2
    assert "unknown method(s) dora" in capsys.readouterr().err
    assert not (tmp_path / "results.csv").exists()


def test_kernels_suite_says_it_needs_a_gpu(capsys, tmp_path):
    pytest.importorskip("triton")
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: the kernel benchmark would really run")
    assert main(["bench", "kernels", "--out", str(tmp_path)]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err


def test_4bit_rows_hold_nf4_weights(tmp_path):
    pytest.importorskip("bitsandbytes")
    argv = ["bench", "methods", "--preset", "tiny-llava", "--methods", "ln", "--rounds", "1", "--steps", "1"]
    common = [*argv, "--warmup", "0", "--batch", "1", "--text-tokens", "4", "--no-plot", "--quiet"]
    assert main([*common, "--out", str(tmp_path)]) == 0
    assert main([*common, "--4bit", "--out", str(tmp_path)]) == 0
    plain, nf4 = read_rows(tmp_path / "results.csv")[1]
    assert (plain["four_bit"], nf4["four_bit"]) == ("False", "True")
    # frozen linears at ~4.1 bits instead of 32: well under half the fp32 weight bytes, but not zero
    assert 0 < int(nf4["weights_bytes"]) < 0.5 * int(plain["weights_bytes"])
    assert nf4["trainable_params"] == plain["trainable_params"]


def test_gpu_script_runs_its_whole_path_on_a_tiny_model(tmp_path):
    pytest.importorskip("bitsandbytes")
    spec = importlib.util.spec_from_file_location("gpu_7b_under_test", HARNESS.parent / "gpu_7b.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "gpu.csv"
    argv = [
        "--preset",
        "tiny-llava",
        "--device",
        "cpu",
        "--text-tokens",
        "4",
        "--warmup",
        "0",
        "--rounds",
        "1",
    ]
    assert module.main([*argv, "--steps", "1", "--out", str(out)]) == 0
    _, rows = read_rows(out)
    assert [r["method"] for r in rows] == ["ln", "ln-fused", "lora"]
    assert all(float(r["p50_ms"]) > 0 and int(r["seq_len"]) == 1 + 36 + 4 for r in rows)
    # the memory planner's estimate for the same model and batch rides along (ln-fused shares ln's)
    assert all(float(r["planned_gib"]) > 0 for r in rows)
    assert rows[0]["planned_gib"] == rows[1]["planned_gib"] != rows[2]["planned_gib"]
    if not __import__("torch").cuda.is_available():
        assert (
            module.main(["--out", str(out)]) == 2
        )  # the real run refuses without a GPU, writing nothing more
        assert len(read_rows(out)[1]) == 3


@pytest.mark.parametrize("preset", ["tiny-miss", "tiny-llava"])
def test_fused_step_script_times_both_variants_per_batch_and_restores_the_norms(
    tmp_path, capsys, monkeypatch, preset
):
    spec = importlib.util.spec_from_file_location("fused_step_under_test", HARNESS.parent / "fused_step.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    built = {}
    build = module.build

    def keep(*args):  # the script's own build, remembered so the test can look at the model afterwards
        built["model"], opt, family = build(*args)
        return built["model"], opt, family

    monkeypatch.setattr(module, "build", keep)
    out = tmp_path / "fused.csv"
    argv = ["--preset", preset, "--device", "cpu", "--batch", "1", "2", "--text-tokens", "5"]
    assert module.main([*argv, "--warmup", "0", "--rounds", "1", "--steps", "1", "--out", str(out)]) == 0
    _, rows = read_rows(out)
    assert [(r["batch"], r["variant"]) for r in rows] == [
        ("1", "eager"),
        ("1", "fused"),
        ("2", "eager"),
        ("2", "fused"),
    ]
    assert all(float(r["p50_ms"]) > 0 for r in rows)
    seq = {"tiny-miss": 5, "tiny-llava": 1 + 36 + 5}[preset]  # MISS: the question alone enters the encoder
    assert {int(r["seq_len"]) for r in rows} == {seq}
    printed = capsys.readouterr().out
    assert "| fused / eager |" in printed and printed.count("\n| 1 | ") == 1
    # the fused modules were patched in for their turns only: the model ends as it began
    assert not [m for m in built["model"].modules() if type(m).__name__.startswith("Fused")]
    if not __import__("torch").cuda.is_available():
        assert module.main(["--out", str(out)]) == 2  # the real run refuses without a GPU
