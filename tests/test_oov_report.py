"""Unseen and missing values are shown, not only counted (issue 15 item 12): `flip predict` and `flip prepare`
print the per-field share and warn above `OOV_WARNING_SHARE`."""

import pandas as pd

from processing.prepare import format_stats
from processing.schema import OOV_WARNING_SHARE, describe_oov
from tests import test_pipeline
from tests._data_fixtures import ml_rows
from training import predict

tiny_ctr_dirs = test_pipeline.tiny_ctr_dirs  # the shared fixture


def test_predict_prints_the_share_of_unseen_values_per_field(tiny_ctr_dirs, tmp_path, capsys):
    frame = pd.DataFrame(ml_rows(10)).drop(columns=["label"])
    frame.loc[:5, "user_id"] = "a user never seen"  # 6 of 10
    frame.loc[:0, "genre"] = None  # 1 of 10: missing
    frame.to_csv(tmp_path / "rows.csv", index=False)
    predict.main([tiny_ctr_dirs["joint"], str(tmp_path / "rows.csv")])
    out = capsys.readouterr().out
    assert "unseen in train or missing, per field: user_id 60.0%, gender 0.0%" in out and "genre 10.0%" in out
    assert "warning: 60% of the 'user_id' values are unseen in train or missing" in out
    assert "'genre' values" not in out  # below the warning share


def test_prepare_statistics_show_the_shares_per_split():
    split = {"rows": 10, "tokens": {"mean": 9.0, "p50": 9, "p95": 9, "max": 9}, "truncated_rows": 0}
    splits = {
        "train": {**split, "truncated_values": 0, "oov_rate": {"user": 0.0, "item": 0.1}},
        "test": {**split, "truncated_values": 0, "oov_rate": {"user": 0.5, "item": 0.1}},
    }
    text = format_stats({"dataset": "t", "rows_per_second": 10.0, "num_proc": 1, "splits": splits})
    assert "  train      user 0.0%, item 10.0%" in text and "  test       user 50.0%, item 10.0%" in text
    assert text.splitlines()[-1].startswith("warning: 50% of the 'user' values") and text.endswith("(test split)")


def test_the_warning_threshold():
    shares = {"at": OOV_WARNING_SHARE, "above": OOV_WARNING_SHARE + 0.01}
    assert [warning.split("'")[1] for warning in describe_oov(shares)[1]] == ["above"]
