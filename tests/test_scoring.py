"""`flip predict` streams files in chunks: same scores as one pass, same as the pipeline, never half-written."""

import pandas as pd
import pytest
import torch

from tests import test_pipeline
from tests.test_pipeline import reference_probs, rows_frame
from training import cli, predict

tiny_ctr_dirs = test_pipeline.tiny_ctr_dirs  # the shared fixture
WRITERS = {
    ".csv": lambda frame, path: frame.to_csv(path, index=False),
    ".parquet": lambda frame, path: frame.to_parquet(path, index=False),
    ".jsonl": lambda frame, path: frame.to_json(path, orient="records", lines=True),
}
READERS = {".csv": lambda path: pd.read_csv(path, dtype=str), ".parquet": pd.read_parquet}
READERS[".jsonl"] = lambda path: pd.read_json(path, lines=True, dtype=False)


def written_table(folder, suffix: str, rows: int = 23):
    """`rows` raw rows (ids as strings) written as `rows<suffix>`; returns (path, frame)."""
    frame = rows_frame(rows).astype(str)
    path = folder / f"rows{suffix}"
    WRITERS[suffix](frame, path)
    return str(path), frame


@pytest.mark.parametrize(("mode", "suffix"), [("joint", ".csv"), ("id", ".parquet"), ("id", ".jsonl")])
def test_chunked_scoring_equals_one_pass(tiny_ctr_dirs, tmp_path, mode, suffix, capsys):
    source, frame = written_table(tmp_path, suffix)
    chunked, whole = str(tmp_path / f"chunked{suffix}"), str(tmp_path / "whole.parquet")
    cli.main(["predict", tiny_ctr_dirs[mode], source, "--output_file", chunked, "--chunk_size", "5"])
    assert "rows/s" in capsys.readouterr().out
    predict.main([tiny_ctr_dirs[mode], source, "--output_file", whole, "--chunk_size", "1000", "--batch_size", "7"])
    scored, once = READERS[suffix](chunked), pd.read_parquet(whole)
    assert list(scored.columns) == [*frame.columns, "ctr"] and len(scored) == len(frame)
    assert (scored.drop(columns="ctr").astype(str).values == frame.values).all()
    expected = reference_probs(tiny_ctr_dirs[mode], frame).double()
    torch.testing.assert_close(torch.tensor(scored["ctr"].astype(float).values), expected, atol=1e-6, rtol=0)
    assert scored["ctr"].astype(float).tolist() == pytest.approx(once["ctr"].tolist(), abs=1e-6)


def test_chunks_are_bounded(tmp_path):
    source, _ = written_table(tmp_path, ".parquet", rows=12)
    assert [len(chunk) for chunk in predict.iter_chunks(source, 5)] == [5, 5, 2]


def test_failure_midway_leaves_no_partial_output(tiny_ctr_dirs, tmp_path, monkeypatch):
    source, _ = written_table(tmp_path, ".csv")
    destination = tmp_path / "scored.csv"
    destination.write_text("previous result\n")
    real_score_frame, calls = predict.score_frame, []

    def failing_score_frame(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("simulated crash in chunk 3")
        return real_score_frame(*args, **kwargs)

    monkeypatch.setattr(predict, "score_frame", failing_score_frame)
    for output in (destination, tmp_path / "new.csv"):
        calls.clear()
        with pytest.raises(RuntimeError, match="chunk 3"):
            predict.main([tiny_ctr_dirs["id"], source, "--output_file", str(output), "--chunk_size", "5"])
    assert destination.read_text() == "previous result\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["rows.csv", "scored.csv"]


def test_text_model_without_processor_says_what_to_do(tiny_ctr_dirs, tmp_path):
    source, _ = written_table(tmp_path, ".csv", rows=3)
    with pytest.raises(FileNotFoundError, match="--processor"):
        predict.main([tiny_ctr_dirs["joint"], source, "--processor", str(tmp_path)])


def test_empty_input_writes_nothing(tiny_ctr_dirs, tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    output = str(tmp_path / "out.parquet")
    with pytest.raises(ValueError, match="holds no rows"):
        predict.main([tiny_ctr_dirs["id"], str(tmp_path / "empty.jsonl"), "--output_file", output])
    assert sorted(path.name for path in tmp_path.iterdir()) == ["empty.jsonl"]
