"""Smoke test of benchmarks/quality.py on a tiny table and a tiny BERT (seconds, offline, CPU): rows x seeds run
through the library scripts, one shared pretraining cut into segments, cached cells (a rerun trains nothing), the
Markdown tables (the same from the records alone) and their marked section in a results file."""

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from training.ctr_metrics import auc

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "training" / "configs"


def load_quality():
    spec = importlib.util.spec_from_file_location("quality", REPO / "benchmarks" / "quality.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["quality"] = module  # dataclasses resolve string annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def quality():
    return load_quality()


def load_benchmark(name: str):
    """A script of `benchmarks/` that imports `quality` (load that first)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def views(quality):
    return load_benchmark("views")


def tiny_suite(quality, table: str, encoder: str, output_dir: str, records_dir: str):
    text = quality.TextModel(encoder, num_layers=1)
    tiny = {"config": str(CONFIGS / "finetune_tiny.yaml")}
    grid = (quality.REFERENCE, quality.GridPoint("lr 1e-2", ("--learning_rate", "1e-2")))
    rows = [
        quality.Row("DCNv2", "id", "dcnv2", seeds=(0, 1), grid=grid, family="DCNv2", **tiny),
        quality.Row("DCNv2 @ 50%", "id", seeds=(0, 1), train_fraction=0.5, family="DCNv2", **tiny),
        quality.Row("FLIP_ID-DCNv2 [epoch 1]", "id", pretraining="flip", pretraining_epoch=1, seeds=(0, 1), **tiny),
        quality.Row("FLIP_ID-DCNv2", "id", pretraining="flip", seeds=(0, 1), **tiny),
        quality.Row("PLM-only", "text", text_model=text, seeds=(0,), **tiny),
    ]
    return quality.Suite(
        dataset=table,
        tokenizer_model=encoder,
        output_dir=output_dir,
        rows=rows,
        pretrainings={"flip": quality.Pretraining("flip", text, config=str(CONFIGS / "pretrain_tiny.yaml"))},
        max_length=64,
        records_dir=records_dir,
    )


def test_quality_suite_runs_caches_and_tabulates(quality, views, table, tiny_encoder_dir, tmp_path, monkeypatch):
    suite = tiny_suite(quality, table, tiny_encoder_dir, str(tmp_path / "quality"), str(tmp_path / "records"))
    assert quality.run_rows(suite) == []  # rows never start a pretraining: the FLIP rows wait for it
    assert set(quality.load_cells(suite)) == {"DCNv2", "DCNv2 @ 50%", "PLM-only"}
    pretrained = quality.run_pretraining(suite, suite.pretrainings["flip"], max_minutes=1e-6)  # cut by its budget
    assert quality.epoch_checkpoints(pretrained) == {} and quality.latest_checkpoint(pretrained).name == "checkpoint-1"
    assert quality.run_rows(suite) == [] and "FLIP_ID-DCNv2 [epoch 1]" not in quality.load_cells(suite)
    assert quality.run_pretraining(suite, suite.pretrainings["flip"], until_epoch=1) == pretrained  # resumed there
    assert sorted(quality.epoch_checkpoints(pretrained)) == [1] and not quality.pretraining_finished(pretrained)
    segments = quality.load_pretraining_record(suite, "flip")["segments"]
    assert [segment["resumed_from"] for segment in segments] == [None, str(pretrained / "checkpoint-1")]
    assert quality.run_rows(suite) == []  # the epoch-1 row runs, the final-model row still waits
    assert "FLIP_ID-DCNv2" not in quality.load_cells(suite) and "FLIP_ID-DCNv2 [epoch 1]" in quality.load_cells(suite)
    argvs = []
    pretrain_main = quality.pretrain.main
    monkeypatch.setattr(quality.pretrain, "main", lambda argv: argvs.append(argv) or pretrain_main(argv))
    assert quality.run_pretraining(suite, suite.pretrainings["flip"], precision="bf16") == pretrained  # to the end
    assert argvs[0][-2:] == ["--bf16", "true"]  # the last segment ran under bf16 autocast, and its record says so
    record = quality.load_pretraining_record(suite, "flip")
    assert quality.segment_precisions(record) == "fp32 (2 segments), then bf16 (1 segment)"
    assert sorted(quality.epoch_checkpoints(pretrained)) == [1, 2] and quality.pretraining_finished(pretrained)
    diagnostics = [line.split(" | ") for line in quality.diagnostics_table(suite, "flip").splitlines()[2:]]
    assert [row[0] for row in diagnostics] == ["| 1", "| 2"]  # one line per epoch, from the logged gradient norms
    assert all(min(float(value) for value in row[3].split(" / ")) > 0 for row in diagnostics)
    drift = [line.split(" | ") for line in quality.drift_table(suite).splitlines()[2:]]
    assert drift and all(-1 <= float(row[2]) <= 1 and -1 <= float(row[3]) <= 1 for row in drift)
    assert quality.run_rows(suite) == []
    cells = quality.load_cells(suite)
    counts = {name: {label: len(records) for label, records in points.items()} for name, points in cells.items()}
    assert counts == {
        "DCNv2": {"reference": 2, "lr 1e-2": 2},
        "DCNv2 @ 50%": {"reference": 2},
        "FLIP_ID-DCNv2 [epoch 1]": {"reference": 2},
        "FLIP_ID-DCNv2": {"reference": 2},
        "PLM-only": {"reference": 1},
    }
    epoch1, final = cells["FLIP_ID-DCNv2 [epoch 1]"]["reference"], cells["FLIP_ID-DCNv2"]["reference"]
    assert {r["pretraining"]["checkpoint"] for r in final} == {str(pretrained)}
    assert {r["pretraining"]["epoch"] for r in epoch1} == {1.0}
    assert all(r["pretraining"]["checkpoint"].startswith(str(pretrained / "checkpoint-")) for r in epoch1)
    assert all("--init_from" in record["argv"] for record in final)
    assert "1e-2" in cells["DCNv2"]["lr 1e-2"][0]["argv"]
    half, full = cells["DCNv2 @ 50%"]["reference"], cells["DCNv2"]["reference"]
    assert [r["finetune_results"]["train_rows"] * 2 for r in half] == [
        r["finetune_results"]["train_rows"] for r in full
    ]
    for record in half:  # every model of a seed finetunes on the same random half
        start = record["argv"].index("--train_fraction")
        subset = ["--train_fraction", "0.5", "--train_subset", "random", "--train_subset_seed", str(record["seed"])]
        assert record["argv"][start : start + 6] == subset
    text_config = json.loads((pretrained / "config.json").read_text())["text_config"]
    assert text_config["num_hidden_layers"] == 1  # the truncated encoder was pretrained
    for name in ("DCNv2", "PLM-only"):  # every mode's test probabilities reproduce the script's test AUC
        for record in cells[name]["reference"]:
            saved = np.load(quality.predictions_path(suite, suite.row(name), quality.REFERENCE, record["seed"]))
            assert len(saved["labels"]) == record["test_rows"]
            assert auc(saved["labels"], saved["probs"]) == pytest.approx(record["test_auc"], abs=1e-6)

    def no_training(*args, **kwargs):
        raise AssertionError("a finished cell was trained again")

    monkeypatch.setattr(quality.finetune, "main", no_training)
    monkeypatch.setattr(quality.pretrain, "main", no_training)
    assert quality.run_rows(suite) == []
    assert quality.run_pretraining(suite, suite.pretrainings["flip"]) == pretrained

    table_md = quality.markdown_table(suite)
    lines = table_md.splitlines()
    assert len(lines) == 2 + 4 and "(base)" in lines[2] and "+0.00%" in lines[2]  # "@ 50%" is a view's row
    assert "1 seed" in lines[5] and "`flip` epoch 1 (step" in lines[3] and "@ 50%" not in table_md

    slices = views.frequency_slices(quality.prepared_data(suite), "movie_id")
    labels, probs = views.chosen_test_scores(suite, quality.selected_cells(suite)["DCNv2"])
    assert len(slices) == len(labels) == probs.shape[1] and probs.shape[0] == 2
    slice_lines = views.slice_table(suite, "movie_id", ["DCNv2", "FLIP_ID-DCNv2"]).splitlines()
    sizes = [int(cell.split()[0]) for cell in slice_lines[2].split("|")[2:-1]]
    assert sum(sizes) == len(labels) and len(slice_lines) == 5
    frequent = slices == 2
    expected = np.mean([auc(labels[frequent], p[frequent]) for p in probs])
    assert slice_lines[3].split("|")[4].strip().startswith(f"{expected:.4f}")
    assert "vs base" not in slice_lines[3] and "vs base" in slice_lines[4].split("|")[4]  # a tiny slice: bootstrapped
    by_point = views.slice_by_point_table(suite, "movie_id", 2, ["DCNv2", "FLIP_ID-DCNv2"]).splitlines()
    assert by_point[0] == "| model (movie_id: frequent (>= 10)) | reference | lr 1e-2 |"
    dcnv2, flip = ([cell.strip() for cell in line.split("|")[2:-1]] for line in by_point[2:])
    assert flip[1] == "-"  # FLIP_ID has no cells at DCNv2's lr 1e-2 point
    (_, base), (_, pretrained) = (
        views.test_scores(suite, suite.row(name), quality.REFERENCE, (0, 1)) for name in ("DCNv2", "FLIP_ID-DCNv2")
    )
    base_aucs = [auc(labels[frequent], p[frequent]) for p in base]
    differences = [auc(labels[frequent], p[frequent]) - value for p, value in zip(pretrained, base_aucs)]
    assert dcnv2[0] == f"{np.mean(base_aucs):.4f}"
    assert flip[0].split(", ")[1] == f"{np.mean(differences):+.4f} ± {np.std(differences, ddof=1):.4f}"
    whole = views.by_point_table(suite, ["DCNv2", "FLIP_ID-DCNv2"], slice(None), "all").splitlines()
    whole_differences = [auc(labels, p) - auc(labels, b) for p, b in zip(pretrained, base)]
    assert whole[2].split("|")[2].strip() == f"{np.mean([auc(labels, p) for p in base]):.4f}"
    assert (
        whole[3]
        .split("|")[2]
        .strip()
        .endswith(f"{np.mean(whole_differences):+.4f} ± {np.std(whole_differences, ddof=1):.4f}")
    )
    curve = views.label_efficiency(suite)["DCNv2"]
    assert sorted(curve) == [0.5, 1.0] and len(curve[0.5]) == 2

    records = list(suite.records.rglob("*.json"))
    assert len(records) == 12 and not [path for path in records if str(REPO) in path.read_text()]  # no machine paths
    tables = (quality.markdown_table, quality.grid_table, quality.pretraining_table, quality.drift_table)
    tables += (quality.finetuning_curve_table, lambda suite: quality.diagnostics_table(suite, "flip"))
    tables += (lambda suite: views.slice_table(suite, "movie_id", ["DCNv2", "FLIP_ID-DCNv2"]),)
    before = [make(suite) for make in tables]
    assert all(len(text.splitlines()) > 2 for text in before)
    shutil.rmtree(suite.output_dir)  # a new machine: checkpoints and models gone, the records and scores kept
    assert [make(suite) for make in tables] == before
    for seed in (0, 1):  # a cell recorded before its scores were kept beside it: the slices say what is missing
        quality.cell_path(suite, suite.row("DCNv2"), quality.REFERENCE, seed).with_suffix(".npz").unlink()
    missing = views.slice_table(suite, "movie_id", ["DCNv2"]).splitlines()
    assert len(missing) == 3 and missing[2].startswith("| DCNv2 | no test scores on this machine")
    assert views.missing_scores(suite, ["DCNv2", "FLIP_ID-DCNv2"]) == [
        "DCNv2 [reference] seed 0",
        "DCNv2 [reference] seed 1",
    ]
    gaps = views.by_point_table(suite, ["DCNv2", "FLIP_ID-DCNv2"], slice(None), "all").splitlines()
    assert gaps[2].startswith("| DCNv2 | no scores on this machine | 0.")  # its lr 1e-2 cells still have theirs
    assert gaps[3].endswith(" | - |")  # no cells at that point at all: a different gap

    results = tmp_path / "RESULTS.md"
    results.write_text("# Results\n\n<!-- quality:start -->\nold\n<!-- quality:end -->\n\n## Throughput\nkept\n")
    quality.replace_marked_section(str(results), table_md, "quality")
    text = results.read_text()
    assert "old" not in text and "## Throughput\nkept" in text and lines[2] in text


def test_run_rows_runs_only_the_named_points_and_seeds(quality, tmp_path, monkeypatch):
    """`--points` / `--seeds` pick disjoint cells for processes side by side; a label no row has is an error."""
    grid = (quality.REFERENCE, quality.GridPoint("b"))
    suite = quality.Suite("d", "t", str(tmp_path), [quality.Row("DCNv2", "id", grid=grid)])
    ran = []
    monkeypatch.setattr(quality, "prepared_data", lambda suite, split: "data")
    monkeypatch.setattr(quality, "run_cell", lambda suite, row, point, seed, *_: ran.append((point.label, seed)))
    assert quality.run_rows(suite, points=["b"], seeds=[0, 2]) == [] and ran == [("b", 0), ("b", 2)]
    assert quality.run_rows(suite, seeds=[1]) == [] and ran[2:] == [("reference", 1), ("b", 1)]
    with pytest.raises(ValueError, match="grid points \\['c'\\]"):
        quality.run_rows(suite, points=["c"])


def test_command_line_names_holding_a_comma_stay_whole(quality, monkeypatch):
    """`--rows` / `--points` are comma-separated, and a grid label has a comma: split on commas alone, `--points
    "lr 3e-4, L2 1e-4"` asked for two unknown points."""
    known = ["DCNv2", "lr 3e-4", "lr 3e-4, L2 1e-4", "L2 1e-4"]
    assert quality.split_names("lr 3e-4, L2 1e-4", known) == ["lr 3e-4, L2 1e-4"]
    assert quality.split_names("DCNv2,lr 3e-4, L2 1e-4,lr 3e-4", known) == ["DCNv2", "lr 3e-4, L2 1e-4", "lr 3e-4"]
    assert quality.split_names("lr 3e-4,L2 1e-4,typo", known) == ["lr 3e-4", "L2 1e-4", "typo"]
    labels = {point.label for row in quality.default_suite().rows for point in row.grid}
    assert "lr 3e-4, L2 1e-4" in labels  # the default suite has such a label
    asked = []
    monkeypatch.setattr(quality, "run_rows", lambda suite, *selection: asked.append(selection) or [])
    quality.main(["run", "--rows", "DCNv2,DeepFM", "--points", "reference,lr 3e-4, L2 1e-4", "--seeds", "0,2"])
    assert asked == [(["DCNv2", "DeepFM"], [0, 2], ["reference", "lr 3e-4, L2 1e-4"])]


def test_grid_point_is_chosen_on_validation_never_on_test(quality, tmp_path):
    """The reported point is the one with the best mean validation AUC among the points with every seed; its wall
    time is marked as a lower bound when a seed's cell has an untimed segment."""
    grid = (quality.REFERENCE, quality.GridPoint("a"), quality.GridPoint("b"))
    suite = quality.Suite("d", "t", str(tmp_path), [quality.Row("DCNv2", "id", seeds=(0, 1), grid=grid)])
    row = suite.rows[0]
    values = {"reference": [(0.70, 0.80), (0.70, 0.80)], "a": [(0.72, 0.60), (0.71, 0.60)], "b": [(0.99, 0.99)]}
    for point in grid:
        for seed, (val_auc, test_auc) in enumerate(values[point.label]):
            path = quality.cell_path(suite, row, point, seed)
            path.parent.mkdir(parents=True, exist_ok=True)
            record = {"row": "DCNv2", "grid_point": point.label, "seed": seed, "validation_auc": val_auc}
            record |= {"test_auc": test_auc, "test_logloss": 0.6, "test_rows": 10, "wall_time_s": 1, "epoch": 1}
            record |= {"untimed_segments": seed}  # seed 1's time misses a segment: the mean is a lower bound
            path.write_text(json.dumps({**record, "pretraining": None, "hardware": "cpu"}))
    chosen = quality.selected_cells(suite)["DCNv2"]
    assert {r["grid_point"] for r in chosen} == {"a"}  # not the best test AUC, not the 1-seed point "b"
    assert "| a |" in quality.markdown_table(suite) and "0.7150 (2)" in quality.grid_table(suite)
    assert "| 2 | 1.0 | >= 1 s |" in quality.markdown_table(suite)


def write_reference_cells(quality, suite, values: dict[str, tuple[float, float]]) -> None:
    """Cell records at the reference grid point: row name -> (validation AUC, test AUC of seed 0; +0.001 per seed)."""
    for row in suite.rows:
        for seed in row.seeds:
            val_auc, test_auc = values[row.name]
            record = {"row": row.name, "grid_point": "reference", "seed": seed, "validation_auc": val_auc}
            record |= {"test_auc": test_auc + 0.001 * seed, "test_logloss": 0.6, "test_rows": 10, "wall_time_s": 1}
            path = quality.cell_path(suite, row, quality.REFERENCE, seed)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({**record, "epoch": 1, "pretraining": None, "hardware": "cpu"}))


def test_label_efficiency_compares_flip_id_with_dcnv2_at_the_same_fraction(quality, views, tmp_path):
    rows = [
        quality.Row("DCNv2", "id", family="DCNv2"),
        quality.Row("DCNv2 @ 10%", "id", train_fraction=0.1, family="DCNv2"),
        quality.Row("FLIP_ID @ 10%", "id", pretraining="p", train_fraction=0.1, family="FLIP_ID-DCNv2"),
    ]
    suite = quality.Suite("d", "t", str(tmp_path), rows)
    write_reference_cells(
        quality, suite, {"DCNv2": (0.7, 0.71), "DCNv2 @ 10%": (0.6, 0.65), "FLIP_ID @ 10%": (0.6, 0.67)}
    )
    flip_line = views.label_efficiency_table(suite).splitlines()[3]
    expected = "0.6710 ± 0.0010 (3); vs DCNv2: beats (+0.0200, 2 std = 0.0020); paired by seed: +0.0200 ± 0.0000"
    assert flip_line == f"| FLIP_ID-DCNv2 | {expected} | - |"
    plots = load_benchmark("plots")  # the figure comes from plots.py; views.py only writes Markdown
    figure = tmp_path / "figures" / "quality_label_efficiency.png"
    assert plots.plot_label_efficiency(suite, figure) and figure.read_bytes().startswith(b"\x89PNG")
    assert not plots.plot_label_efficiency(quality.Suite("d", "t", str(tmp_path / "none"), []), figure)


def test_readme_table_keeps_one_row_per_model_chosen_on_validation(quality, tmp_path):
    """Per model, the README shows the row with the best mean validation AUC (here FLIP_ID's epoch 2, whose test AUC
    is the lower one); the ablation (not a recipe row) and the label-fraction row (another view) stay out."""
    rows = [
        quality.Row("DCNv2", "id"),
        quality.Row("FLIP_ID e1", "id", pretraining="ref10", pretraining_epoch=1),
        quality.Row("FLIP_ID e2", "id", pretraining="ref10", pretraining_epoch=2),
        quality.Row("FLIP_ID w/o ICL", "id", pretraining="ref10_no_icl", pretraining_epoch=3, recipe_row=False),
        quality.Row("FLIP_ID @ 10%", "id", pretraining="ref10", train_fraction=0.1),
        quality.Row("FLIP", "joint", pretraining="ref10"),
    ]
    suite = quality.Suite("d", "t", str(tmp_path), rows)
    values = {"DCNv2": (0.70, 0.71), "FLIP_ID e1": (0.70, 0.75), "FLIP_ID e2": (0.71, 0.72)}
    values |= {"FLIP_ID w/o ICL": (0.80, 0.80), "FLIP_ID @ 10%": (0.90, 0.90), "FLIP": (0.69, 0.70)}
    write_reference_cells(quality, suite, values)
    lines = quality.readme_table(suite).splitlines()[2:]
    assert [line.split(" | ")[0] for line in lines] == ["| DCNv2", "| FLIP_ID (dcnv2)", "| FLIP (joint)"]
    assert lines[1].split(" | ")[1] == "FLIP_ID e2, reference" and "0.7210 ± 0.0010" in lines[1]
    assert "beats" in lines[1] and "below" in lines[2]


def test_verdict_two_std_rule(quality):
    base = {"auc": (0.712, 0.002), "seeds": 3}
    assert quality.verdict({"auc": (0.715, 0.001), "seeds": 3}, base).startswith("tie")
    assert quality.verdict({"auc": (0.720, 0.001), "seeds": 3}, base).startswith("beats")
    assert quality.verdict({"auc": (0.700, 0.001), "seeds": 3}, base).startswith("below")


def test_joint_table_scores_the_mix_and_each_tower_alone(quality, tmp_path):
    """Joint rows only, per grid point with finished cells: means over the seeds done; a cell run before the towers
    were scored alone shows "-" for them."""
    joint = quality.Row("FLIP (joint)", "joint", pretraining="p", seeds=(0, 1), grid=quality.JOINT_GRID)
    suite = quality.Suite("d", "t", str(tmp_path), [quality.Row("DCNv2", "id", seeds=(0,)), joint])
    cells = [  # (row, grid point, seed, test AUC of the mix, test scores of the towers, alpha)
        (joint, 0, 0, 0.70, {"test_id_auc": 0.71, "test_text_auc": 0.66}, 0.1),
        (joint, 0, 1, 0.72, {"test_id_auc": 0.73, "test_text_auc": 0.68}, 0.3),
        (joint, 1, 0, 0.74, {}, 0.5),
        (suite.rows[0], 0, 0, 0.75, {}, None),
    ]
    for row, point, seed, test_auc, towers, alpha in cells:
        path = quality.cell_path(suite, row, row.grid[point], seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        results = {"validation": {"eval_auc": 0.69, "eval_alpha": alpha}, "test": {"test_auc": test_auc, **towers}}
        record = {"row": row.name, "grid_point": row.grid[point].label, "seed": seed, "validation_auc": 0.69}
        path.write_text(json.dumps(record | {"test_auc": test_auc, "epoch": 4 + seed, "finetune_results": results}))
    lines = quality.joint_table(suite).splitlines()
    assert lines[2:] == [
        "| FLIP (joint) | reference | 0.7100 | 0.7200 | 0.6700 | 0.2000 | 0.6900 | 4.5 | 2 |",
        "| FLIP (joint) | alpha init 0.5 | 0.7400 | - | - | 0.5000 | 0.6900 | 4.0 | 1 |",
    ]
    assert quality.joint_table(quality.Suite("d", "t", str(tmp_path / "none"), [joint])).startswith("(no finished")


def test_tower_drift_measures_what_survives_finetuning(quality, tmp_path):
    """Known tensors: the table's rows double and turn 90 degrees (cosine 0), the rest of the tower is unchanged."""
    from safetensors.torch import save_file

    table, rest = "flip.tabular_model.embeddings.weight", "flip.tabular_model.backbone.logit.weight"
    before = {table: torch.tensor([[3.0, 0.0], [0.0, 4.0]]), rest: torch.tensor([[1.0, 2.0]])}
    after = {table: torch.tensor([[0.0, 6.0], [8.0, 0.0]]), rest: torch.tensor([[2.0, 4.0]])}
    for name, weights in (("pre", before), ("ft", after)):
        (tmp_path / name).mkdir()
        save_file(weights, str(tmp_path / name / "model.safetensors"))
    drift = quality.tower_drift(tmp_path / "pre", tmp_path / "ft")
    assert drift == pytest.approx({"norm_before": 3.5, "norm_after": 7.0, "cos_table": 0.0, "cos_rest": 1.0})


def test_finetuning_curve_table_reads_validation_auc_per_epoch(quality, tmp_path):
    """Known curves for two seeds at the reference point; rows of other views, other modes and rows with a seed
    missing stay out."""
    rows = [
        quality.Row("DCNv2", "id", seeds=(0, 1)),
        quality.Row("DCNv2 @ 10%", "id", seeds=(0, 1), train_fraction=0.1),
        quality.Row("FLIP_PLM", "text", seeds=(0, 1)),
        quality.Row("FLIP_ID", "id", seeds=(0, 1)),
    ]
    suite = quality.Suite("d", "t", str(tmp_path), rows)
    curves = {"DCNv2": [[0.60, 0.70, 0.65], [0.62, 0.68, 0.69]], "DCNv2 @ 10%": [[0.5]] * 2, "FLIP_PLM": [[0.5]] * 2}
    curves["FLIP_ID"] = [[0.6, 0.6, 0.6]]  # seed 1 has not run
    for row in rows:
        for seed, curve in enumerate(curves[row.name]):
            path = quality.cell_path(suite, row, quality.REFERENCE, seed)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"validation_auc_per_epoch": curve}))
    lines = quality.finetuning_curve_table(suite).splitlines()
    assert lines[2:] == ["| DCNv2 | 0.6100 | 0.6900 | 0.6700 | 0.6950 (2.5) | 2 |"]


def test_pretraining_table_names_the_data_options(quality, tmp_path):
    """The split and the hidden prompt fields change the data, not the pretraining argv: the table must still tell
    the runs apart."""
    text = quality.TextModel("t")
    hidden = ("user_id", "zip_code")
    spec = quality.Pretraining(
        "hidden", text, args=("--text_pooling", "mean"), split="random", prompt_hidden_fields=hidden
    )
    suite = quality.Suite("d", "t", str(tmp_path), [], pretrainings={"hidden": spec})
    checkpoint = quality.pretraining_dir(suite, "hidden") / "checkpoint-3"
    checkpoint.mkdir(parents=True)
    history = [{"eval_loss": 1.0, "eval_icl_loss": 0.5, "eval_mlm_loss": 2.0, "eval_mtm_loss": 3.0, "epoch": 1.0}]
    (checkpoint / "trainer_state.json").write_text(
        json.dumps({"epoch": 1.0, "global_step": 3, "log_history": history})
    )
    assert quality.pretraining_table(suite).count("\n") == 1  # no record before a segment ends
    segment = {"started": "now", "hardware": "cpu", "resumed_from": None, "wall_time_s": 5.0, "steps_at_end": 3}
    quality.write_pretraining_record(suite, "hidden", segment, results={})
    line = quality.pretraining_table(suite).splitlines()[2]
    assert "| `--text_pooling mean --split random --prompt_hidden_fields user_id zip_code` | 1 | 3 |" in line
    assert "0.500 / 2.000 / 3.000" in line
    assert "| fp32 (1 segment) |" in line  # a segment recorded before its precision was: fp32


def test_a_pretraining_whose_checkpoints_are_lost_is_not_run_over_its_record(quality, tmp_path, monkeypatch, capsys):
    """A new machine has the records (git) but not the checkpoints. Where finished cells started from the lost run,
    rerunning the key would restart at step 0 and overwrite the history they came from: it stops, the record
    unchanged. Where none did, it starts over and the record keeps the lost segments."""
    spec = quality.Pretraining("ref", quality.TextModel("t"))
    row = quality.Row("FLIP_ID", "id", pretraining="ref", pretraining_epoch=2)
    suite = quality.Suite(
        "d", "t", str(tmp_path / "out"), [row], pretrainings={"ref": spec}, records_dir=str(tmp_path)
    )
    record = {"segments": [{"wall_time_s": 5.0}], "global_step": 40, "epochs_saved": [1, 2]}
    quality.write_json(str(quality.pretraining_record_path(suite, "ref")), record)
    cell = quality.cell_path(suite, row, quality.REFERENCE, 1)
    quality.write_json(str(cell), {"seed": 1})
    monkeypatch.setattr(quality.pretrain, "main", lambda argv: pytest.fail("pretraining ran over its record"))
    with pytest.raises(
        RuntimeError, match="recorded at step 40 .* holds step 0: its checkpoints are lost.* 1 finished"
    ):
        quality.run_pretraining(suite, spec)
    assert quality.load_pretraining_record(suite, "ref") == record
    monkeypatch.setattr(quality, "prepared_data", lambda suite, split: "data")
    quality.run_rows(suite)  # its cells do not wait for a pretraining that will not come: they say why
    assert "its checkpoints are lost" in capsys.readouterr().out
    cell.unlink()  # no cell came from it: it starts over, the lost segments kept apart from the new run's
    quality.restart_lost_pretraining(suite, "ref")
    restarted = quality.load_pretraining_record(suite, "ref")
    assert restarted["lost_segments"] == record["segments"] and restarted["segments"] == []
    assert quality.lost_artefacts(suite, "ref") is None
    line = quality.pretraining_table(suite).splitlines()[2]  # the tables read it before its first new segment ends
    assert "0 segment(s), resumable; started over after 1 segment(s) lost with their checkpoints" in line
    checkpoint = quality.pretraining_dir(suite, "ref") / "checkpoint-10"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text(json.dumps({"epoch": 0.5, "global_step": 10, "log_history": []}))
    quality.write_pretraining_record(suite, "ref", {"wall_time_s": 2.0}, results={})
    written = quality.load_pretraining_record(suite, "ref")
    assert written["segments"] == [{"wall_time_s": 2.0}] and written["lost_segments"] == record["segments"]
    assert written["wall_time_s"] == 2.0 and written["global_step"] == 10


def test_precision_table_compares_the_steps_and_epochs_both_runs_logged(quality, monkeypatch):
    def entry(step, loss, icl):
        return {"step": step, "epoch": step / 10, "loss": loss, "icl_loss": icl, "mlm_loss": 2.0, "mtm_loss": 1.0}

    def evaluation(epoch, loss):
        return {"epoch": epoch, "eval_loss": loss, "eval_icl_loss": 0.5, "eval_mlm_loss": 2.0, "eval_mtm_loss": 1.0}

    histories = {
        "fp32": [entry(5, 4.0, 1.0), entry(10, 4.0, 1.0), evaluation(1.0, 3.0), entry(15, 9.0, 1.0)],
        "bf16": [entry(5, 4.4, 1.0), entry(10, 3.8, 0.5), evaluation(1.0, 3.3), evaluation(1.3, 9.0)],
    }
    monkeypatch.setattr(quality, "pretraining_history", lambda suite, key: histories[key])
    lines = quality.precision_table(None, "fp32", "bf16").splitlines()
    assert "val at epoch [1]: `fp32` / `bf16`" in lines[0]  # a mid-epoch evaluation (1.3) is not an epoch's
    assert lines[2] == "| loss | 2 (5-10) | 4.0000 / 4.1000 | 7.50% / 10.00% | 3.0000 / 3.3000 |"  # step 15: fp32 only
    assert lines[3].startswith("| icl | 2 (5-10) | 1.0000 / 0.7500 | 25.00% / 50.00% |")
    assert lines[4].startswith("| mlm | 2 (5-10) | 2.0000 / 2.0000 | 0.00% / 0.00% |")


def one_row_suite(quality, table: str, encoder: str, output_dir: Path, *args: str, precision: str = "fp32"):
    row = quality.Row(
        "DCNv2", "id", seeds=(0,), args=args, precision=precision, config=str(CONFIGS / "finetune_tiny.yaml")
    )
    records = str(output_dir / "records")
    return quality.Suite(table, encoder, str(output_dir), [row], max_length=64, records_dir=records), row


def test_a_killed_cell_resumes_from_its_last_epoch_and_records_both_segments(
    quality, table, tiny_encoder_dir, tmp_path, monkeypatch
):
    """A cell killed after its first epoch's checkpoint resumes there (not from scratch) and ends with the test AUC
    of an uninterrupted cell; its record lists both segments, each timed, and its wall time is their sum. A cell
    whose arguments changed since starts over."""
    straight_suite, _ = one_row_suite(quality, table, tiny_encoder_dir, tmp_path / "straight")
    assert quality.run_rows(straight_suite) == []
    straight = quality.load_cells(straight_suite)["DCNv2"]["reference"][0]
    suite, row = one_row_suite(quality, table, tiny_encoder_dir, tmp_path / "cut")
    finetune_main, argvs = quality.finetune.main, []

    def killed_after_epoch_1(argv):
        argvs.append(argv)
        finetune_main(argv + ["--stop_after_epochs", "1"])
        raise KeyboardInterrupt  # stands for the session's end: no record is written

    monkeypatch.setattr(quality.finetune, "main", killed_after_epoch_1)
    with pytest.raises(KeyboardInterrupt):
        quality.run_rows(suite)
    out = Path(quality.run_dir(suite, row, quality.REFERENCE, 0))
    checkpoint = quality.latest_checkpoint(out)
    assert checkpoint is not None and not quality.cell_path(suite, row, quality.REFERENCE, 0).is_file()
    monkeypatch.setattr(quality.finetune, "main", lambda argv: argvs.append(argv) or finetune_main(argv))
    assert quality.run_rows(suite) == []
    assert argvs[1][-2:] == ["--resume_from_checkpoint", str(checkpoint)]
    record = quality.load_cells(suite)["DCNv2"]["reference"][0]
    assert [segment["resumed_from"] for segment in record["segments"]] == [None, str(checkpoint)]
    times = [segment["wall_time_s"] for segment in record["segments"]]
    assert min(times) > 0 and record["wall_time_s"] == pytest.approx(sum(times)) and record["untimed_segments"] == 0
    assert record["epoch"] == straight["epoch"] and record["test_auc"] == pytest.approx(straight["test_auc"])

    (out / "checkpoint-1").mkdir()  # a checkpoint of the old arguments would be resumed if the argv were not checked
    shutil.copy(out / "trainer_state.json", out / "checkpoint-1")
    changed, _ = one_row_suite(quality, table, tiny_encoder_dir, tmp_path / "cut", "--embedding_l2", "1e-4")
    changed.records_dir = str(tmp_path / "changed_records")
    monkeypatch.setattr(quality.finetune, "main", lambda argv: argvs.append(argv) or 1 / 0)
    assert quality.run_rows(changed) == ["DCNv2/reference/seed0"]
    assert "--resume_from_checkpoint" not in argvs[-1] and not (out / "checkpoint-1").exists()
    log = json.loads((out / quality.CELL_SEGMENTS).read_text())
    assert len(log["segments"]) == 1 and "--embedding_l2" in log["argv"]


@pytest.mark.parametrize("native", [True, False])
def test_cells_run_in_the_precision_their_row_resolves_to(
    quality, table, tiny_encoder_dir, tmp_path, monkeypatch, native
):
    monkeypatch.setattr(quality, "cpu_has_native_bf16", lambda: native)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    argvs = []

    def captured(argv):
        argvs.append(argv)
        raise RuntimeError("stop before training")

    monkeypatch.setattr(quality.finetune, "main", captured)
    for precision in ("auto", "fp32", "bf16"):
        suite, _ = one_row_suite(quality, table, tiny_encoder_dir, tmp_path / precision, precision=precision)
        assert quality.run_rows(suite) == ["DCNv2/reference/seed0"]
    bf16 = [argv[-2:] == ["--bf16", "true"] for argv in argvs]
    assert bf16 == [native, False, True]


@pytest.mark.parametrize("native", [True, False])
def test_precision_auto_is_bf16_only_on_native_bf16(quality, monkeypatch, native):
    monkeypatch.setattr(quality, "cpu_has_native_bf16", lambda: native)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert quality.resolve_precision("auto") == ("bf16" if native else "fp32")
    assert [quality.resolve_precision(p) for p in ("fp32", "bf16")] == ["fp32", "bf16"]


def test_only_the_reference_pretrainings_feed_recipe_rows(quality):
    """An ablation, a named deviation or a check (another pretraining, bf16 finetuning of an ID row) is never a row
    the README may pick as its model's."""
    recipe = [row for row in quality.default_suite().rows if row.recipe_row]
    assert {row.pretraining for row in recipe} == {None, "ref10", "ref10_rerun", "rand10"}
    assert {row.name for row in recipe if row.pretraining == "ref10_rerun"} == {
        "FLIP_PLM [ref10_rerun]",
        "FLIP (joint) [ref10_rerun]",
    }  # its FLIP_ID row is a check: the README never picks a replicate of ref10's FLIP_ID rows on validation
    assert {row.precision for row in recipe if row.mode == "id"} == {"fp32"}


def test_paired_bootstrap_sees_a_gain_that_overlapping_intervals_hide(views):
    """A model that adds 0.03 to every positive's score beats its base on every resample of the same rows: the paired
    interval of the difference excludes 0 while the two AUC intervals overlap; identical scores give [0, 0]."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    base = rng.random(300) + 0.1 * labels
    better = base + 0.03 * labels
    low, high = views.bootstrap_difference_interval(labels, better[None], base[None])  # one seed each
    assert 0 < low < auc(labels, better) - auc(labels, base) < high
    assert views.bootstrap_auc_interval(labels, better)[0] < views.bootstrap_auc_interval(labels, base)[1]
    assert views.bootstrap_difference_interval(labels, base[None], base[None]) == (0.0, 0.0)
    assert views.bootstrap_difference_interval(labels, base[None], better[None]) == pytest.approx((-high, -low))
    seeds = np.stack([base, better])  # seeds are averaged as AUCs: half the gain of `better` alone
    low2, high2 = views.bootstrap_difference_interval(labels, seeds, base[None])
    assert (low2, high2) == pytest.approx((low / 2, high / 2))


def test_views_refuse_to_write_gaps_over_recorded_numbers(quality, views, tmp_path, monkeypatch):
    """On a machine without the test scores of recorded cells, `--write_results` would turn their slice numbers
    into gaps: it stops and leaves the file as it was, unless asked to."""
    results = tmp_path / "RESULTS.md"
    results.write_text("<!-- views:start -->\nslice numbers\n<!-- views:end -->\n")
    monkeypatch.setattr(views, "missing_scores", lambda suite, names: ["DCNv2 [reference] seed 0"])
    monkeypatch.setattr(views, "views_markdown", lambda suite: "gaps")
    with pytest.raises(SystemExit, match="1 recorded cells have no test scores on this machine"):
        views.main(["--records_dir", str(tmp_path), "--write_results", str(results)])
    assert "slice numbers" in results.read_text()
    views.main(["--records_dir", str(tmp_path), "--write_results", str(results), "--allow_missing_scores"])
    assert "gaps" in results.read_text() and "slice numbers" not in results.read_text()


def test_views_name_rows_of_the_default_suite(quality, views):
    """A renamed row would silently drop out of the slice and random-split views."""
    names = {row.name for row in quality.default_suite().rows}
    assert set(views.SLICE_ROWS) | set(views.POINT_SLICE_ROWS) | set(views.RANDOM_SPLIT_POINT_ROWS) <= names
    assert {quality.model_name(quality.default_suite().row(name)) for name in views.SLICE_ROWS[1:]} == {
        "FLIP_ID (dcnv2)",
        "FLIP_PLM",
        "FLIP (joint)",
        "PLM without FLIP pretraining (MiniLM-L2)",  # a baseline: its own name
    }


@pytest.fixture(scope="module")
def probes(quality):
    return load_benchmark("probes")


def test_probe_attributes_take_each_ids_most_frequent_class_and_drop_reserved_and_rare(probes):
    """Column 0 = the id, column 1 = its attribute: id 2 is class 7 twice and class 8 once -> 7; the reserved ids
    0 / 1 are left out; class 9 has fewer than FOLDS ids -> left out."""
    common = [[id_, 5] for id_ in range(3, 3 + probes.FOLDS)]
    rows = np.array([[2, 7], [2, 8], [2, 7], [1, 7], [0, 7], [40, 9], *common, *[[50 + i, 7] for i in range(4)]])
    ids, classes = probes.id_attributes(rows, 0, 1)
    assert dict(zip(ids.tolist(), classes.tolist())) == {
        2: 7,
        **{id_: 5 for id_ in range(3, 3 + probes.FOLDS)},
        **{50 + i: 7 for i in range(4)},
    }


def test_probe_reads_a_planted_attribute_from_the_embedding_rows_and_not_from_noise(probes, tmp_path, monkeypatch):
    """A saved table whose user_id rows encode the user's class (a mean per class + noise) scores near 1; the same
    ids in a pure-noise table score near chance (1/4); offsets come from the saved config's vocab sizes."""
    from safetensors.torch import save_file

    rng = np.random.default_rng(0)
    names, sizes, num_users = ["gender", "user_id", "occupation"], [4, 202, 6], 200
    classes = rng.integers(2, 6, num_users)  # local occupation ids 2..5
    table = rng.normal(scale=0.01, size=(sum(sizes), 8))
    table[4 + 2 : 4 + 2 + num_users] += rng.normal(size=(4, 8))[classes - 2]  # user rows start at offset 4 + 2
    save_file({probes.TABLE: torch.tensor(table, dtype=torch.float32)}, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({"field_vocab_sizes": sizes, "field_names": names}))
    rows = np.stack([np.full(num_users, 2), np.arange(2, 2 + num_users), classes], axis=1)

    loaded, offsets, loaded_names = probes.embedding_table(tmp_path)
    assert offsets == [0, 4, 206] and loaded_names == names and np.allclose(loaded, table, atol=1e-6)
    user, occupation = names.index("user_id"), names.index("occupation")
    ids, labels = probes.id_attributes(rows, user, occupation)
    assert probes.probe_accuracy(loaded[offsets[user] + ids], labels) > 0.95
    assert probes.probe_accuracy(rng.normal(size=(len(ids), 8)), labels) < 0.4
    monkeypatch.setattr(probes, "PROBES", (("user_id", "occupation"),))
    assert probes.probe_scores(loaded, offsets, names, rows)[0] > 0.95  # the rows at the field's offset


def test_probes_take_the_point_chosen_on_validation_and_the_complete_keeping_point(probes, tmp_path, monkeypatch):
    """Per ID row: its point with the best mean validation AUC (flagged as chosen) and `KEEP_PRETRAINED_TABLES`
    once every seed of it ran, each with its mean validation AUC; never another point, never a text row."""
    quality = probes.quality
    keep, other = quality.KEEP_PRETRAINED_TABLES, quality.GridPoint("a")
    grid = (quality.REFERENCE, other, keep)
    rows = [quality.Row(name, "id", seeds=(0, 1), grid=grid) for name in ("DCNv2", "late")]
    rows.append(quality.Row("FLIP_PLM", "text", seeds=(0, 1)))
    suite = quality.Suite("d", "t", str(tmp_path), rows)
    val_aucs = {"reference": (0.70, 0.72), "a": (0.69, 0.69), keep.label: (0.68, 0.66)}
    for row in rows:
        for point in row.grid:
            for seed in row.seeds if (row.name, point) != ("late", keep) else (0,):
                path = quality.cell_path(suite, row, point, seed)
                path.parent.mkdir(parents=True, exist_ok=True)
                auc = val_aucs.get(point.label, (0.7, 0.7))[seed]
                record = {"row": row.name, "grid_point": point.label, "seed": seed, "validation_auc": auc}
                record |= {"test_auc": 0.7, "test_logloss": 0.6, "test_rows": 10}
                path.write_text(json.dumps(record))
    monkeypatch.setattr(quality, "prepared_data", lambda suite, split="time", hidden=(): f"data-{split}")

    found = {(source.label, source.grid_point): source for source in probes.sources(suite)}
    assert set(found) == {
        ("DCNv2 (finetuned)", "reference (chosen on val)"),
        ("DCNv2 (finetuned)", keep.label),
        ("late (finetuned)", "reference (chosen on val)"),
    }
    kept = found["DCNv2 (finetuned)", keep.label]
    assert kept.validation_auc == pytest.approx(0.67) and kept.data == "data-time"
    assert kept.folders == [Path(quality.run_dir(suite, rows[0], keep, seed)) for seed in (0, 1)]


def test_probe_scores_are_recorded_reused_and_outlive_the_models(probes, tmp_path, monkeypatch):
    """The first table probes every epoch checkpoint and records its scores; a second one reads the records
    (nothing is probed again) until a table's bytes change; with the models gone the table is the same."""
    from safetensors.torch import save_file

    quality = probes.quality
    rng = np.random.default_rng(0)
    names, sizes, num_users = ["gender", "user_id", "occupation"], [4, 202, 6], 200
    classes = rng.integers(2, 6, num_users)
    rows = np.stack([np.full(num_users, 2), np.arange(2, 2 + num_users), classes], axis=1)
    pretraining = quality.Pretraining("flip", quality.TextModel("t"))
    records = str(tmp_path / "rec")
    suite = quality.Suite("d", "t", str(tmp_path / "out"), [], {"flip": pretraining}, records_dir=records)
    for epoch, signal in ((1, 0.0), (2, 1.0)):  # epoch 2's user rows encode the occupation
        table = rng.normal(size=(sum(sizes), 8))
        table[6 : 6 + num_users] += signal * 5 * rng.normal(size=(4, 8))[classes - 2]
        checkpoint = quality.pretraining_dir(suite, "flip") / f"checkpoint-{epoch * 10}"
        checkpoint.mkdir(parents=True)
        save_file({probes.TABLE: torch.tensor(table, dtype=torch.float32)}, str(checkpoint / "model.safetensors"))
        (checkpoint / "config.json").write_text(json.dumps({"field_vocab_sizes": sizes, "field_names": names}))
        (checkpoint / "trainer_state.json").write_text(json.dumps({"epoch": float(epoch)}))
    monkeypatch.setattr(probes, "PROBES", (("user_id", "occupation"),))
    monkeypatch.setattr(quality, "prepared_data", lambda *args: "data")
    monkeypatch.setattr(quality, "split_field_ids", lambda data, split: rows)

    table = probes.probe_table(suite)
    lines = table.splitlines()
    assert [line.split(" | ")[0] for line in lines[4:]] == [f"| `flip` epoch {k} (pretrained)" for k in (1, 2)]
    noise_epoch, signal_epoch = (float(line.split(" | ")[2]) for line in lines[4:])
    assert noise_epoch < 0.5 and signal_epoch > 0.9
    recorded = sorted(path.name for path in (tmp_path / "rec" / "probes" / "pretrain" / "flip").iterdir())
    assert recorded == ["checkpoint-10.json", "checkpoint-20.json"]

    real_scores, probed = probes.probe_scores, []
    monkeypatch.setattr(probes, "probe_scores", lambda *args: probed.append(1) or real_scores(*args))
    assert probes.probe_table(suite) == table and len(probed) == 1  # only the random-table control is probed
    weights = quality.pretraining_dir(suite, "flip") / "checkpoint-10" / "model.safetensors"
    save_file({probes.TABLE: torch.zeros(sum(sizes), 8)}, str(weights))  # another table: probed again
    assert probes.probe_table(suite) != table and len(probed) == 3
    save_file({probes.TABLE: torch.tensor(rng.normal(size=(sum(sizes), 8)), dtype=torch.float32)}, str(weights))
    table = probes.probe_table(suite)
    shutil.rmtree(suite.output_dir)  # a new machine
    assert probes.probe_table(suite) == table
