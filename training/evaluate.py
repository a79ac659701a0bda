"""AUC / LogLoss of a saved CTR model on one split of a dataset, written as JSON.

    python -m training.evaluate outputs/demo/flip --dataset movielens-100k --split test
    flip evaluate my-user/flip-movielens-100k --dataset data/ml100k --split validation

`--dataset` is a recipe name or table schema file (raw rows, encoded with the model's own processor) or a folder
written by `flip prepare` (its schema must match the model's). Metrics go to `--output_file` (default
`MODEL/eval_<split>.json` for a local model folder) and to stdout; `eval_roc_<split>.png`,
`eval_calibration_<split>.png` (and `training_curves.png` from a `trainer_state.json` there, if not yet drawn) go
next to the metrics file. The files that the model card embeds (`roc_test.png`, ...) are never overwritten.
"""

import json
import os

from datasets import load_from_disk

from processing import FlipProcessor, check_compatible
from processing.atomic_io import write_json
from processing.datasets import load_ctr_dataset

from .arguments import command_parser
from .ctr_metrics import ctr_metrics
from .data import is_prepared_dir
from .plots import write_evaluation_plots
from .predict import encode_frame, load_ctr_model, predict_probs
from .run_output import hardware_description

EVAL_PREFIX = "eval_"  # of the plots: the model card embeds the finetuning run's roc_test.png, ...


def load_split(dataset: str, split: str, processor, config, max_samples: int | None):
    """Encoded rows of `split`: from a prepared folder (schema checked) or raw rows + the model's processor."""
    if is_prepared_dir(dataset):
        check_compatible(config, FlipProcessor.from_pretrained(dataset))
        encoded = load_from_disk(dataset)[split]
    else:
        encoded = encode_frame(processor, load_ctr_dataset(dataset)[split].to_pandas())
    return encoded.select(range(min(max_samples, len(encoded)))) if max_samples else encoded


def main(argv: list[str] | None = None, prog: str = "python -m training.evaluate") -> dict:
    parser = command_parser(prog, __doc__)
    parser.add_argument("model", help="saved CTR model folder or Hub repo id")
    parser.add_argument(
        "--dataset", default="movielens-100k", help="recipe name, table schema file or prepared folder"
    )
    parser.add_argument("--split", default="test", choices=["train", "validation", "test"], help="split to score")
    parser.add_argument("--batch_size", type=int, default=256, help="rows per forward pass")
    parser.add_argument("--max_samples", type=int, default=None, help="score only the first N rows")
    parser.add_argument("--output_file", default=None, help="metrics JSON (default: MODEL/eval_SPLIT.json)")
    parser.add_argument("--processor", default=None, help="folder of the FlipProcessor (default: MODEL)")
    args = parser.parse_args(argv)
    model, processor = load_ctr_model(args.model, args.processor)
    encoded = load_split(args.dataset, args.split, processor, model.config, args.max_samples)
    probs = predict_probs(model, processor, encoded, args.batch_size)
    metrics = {f"{args.split}_{name}": value for name, value in ctr_metrics(encoded["labels"], probs).items()}
    record = {"model": args.model, "dataset": args.dataset, "rows": len(encoded), **metrics}
    record["hardware"] = hardware_description()
    output_file = args.output_file or (
        os.path.join(args.model, f"eval_{args.split}.json") if os.path.isdir(args.model) else None
    )
    if output_file:
        write_json(output_file, record)
        folder = os.path.dirname(os.path.abspath(output_file))  # its own names: the card's test plots stay
        plots = write_evaluation_plots(folder, encoded["labels"], probs, args.split, prefix=EVAL_PREFIX)
        print("plots: " + ", ".join(plots))
    print(json.dumps(record, indent=2))
    return record


if __name__ == "__main__":
    main()
