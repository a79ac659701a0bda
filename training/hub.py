"""Publishing FLIP models: a self-contained folder (weights, config, processor, code files, model card with
model-index metrics) and an upload through an injectable `HfApi` (tests pass a fake one, nothing goes online).

    flip push outputs/demo/flip my-user/flip-movielens-100k --private --dry_run   # offline check: files, sizes
    flip push outputs/demo/flip my-user/flip-movielens-100k --private
"""

import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import HfApi, ModelCard
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, filter_repo_objects, validate_repo_id

from modeling_flip import FlipForCTR
from processing.atomic_io import apply_umask

from .arguments import command_parser
from .card import CardInfo, render_model_card
from .export import human_size
from .pipeline import ship_pipeline

IGNORE_ON_UPLOAD = [".*", "*/.*", "checkpoint-*", "tmp-checkpoint-*", "*.pt", "*.pth", "training_args.bin"]
RUNS_PATTERN = "runs/*"  # TensorBoard logs: uploaded only with --include_runs


def save_for_hub(model, processor, output_dir: str, card_info: CardInfo) -> str:
    """Write a Hub-ready folder: `save_pretrained` of model (code files included through
    `register_for_auto_class`) and processor, plus `README.md` rendered from `model_card.md`, which embeds the
    evaluation PNGs already in the folder (ROC, calibration, training curves). Returns the folder."""
    model.save_pretrained(output_dir)
    if isinstance(model, FlipForCTR):  # a CTR model is a `ctr-prediction` pipeline, also without this package
        ship_pipeline(output_dir)
    processor.save_pretrained(output_dir)
    card_info.plots = card_info.plots or sorted(name for name in os.listdir(output_dir) if name.endswith(".png"))
    render_model_card(card_info).save(os.path.join(output_dir, "README.md"))
    apply_umask(output_dir)  # safetensors writes model.safetensors 0o600
    return output_dir


@dataclass
class PushPlan:
    """What `push_to_hub` uploads: the repository, the commit and the files of `folder`, filtered by
    `ignore_patterns` exactly as `HfApi.upload_folder` filters them (`filter_repo_objects`)."""

    folder: str
    repo_id: str
    private: bool
    commit_message: str
    ignore_patterns: list[str]
    files: list[str]
    excluded: list[str]

    def describe(self) -> str:
        """The plan as text: repository, commit, card, each uploaded file with its size, the excluded files."""
        sizes = {name: os.path.getsize(os.path.join(self.folder, name)) for name in self.files}
        card = ModelCard.load(os.path.join(self.folder, "README.md")) if "README.md" in sizes else None
        lines = [
            f"repository: {self.repo_id} (model, {'private' if self.private else 'public'})",
            f"commit message: {self.commit_message}",
            f"model card: {card_summary(card) if card else 'none (no README.md)'}",
            f"files ({len(self.files)}, {human_size(sum(sizes.values()))}):",
            *(f"  {human_size(size):>10}  {name}" for name, size in sizes.items()),
            f"excluded ({len(self.excluded)}): " + (", ".join(grouped(self.excluded)) or "none"),
        ]
        return "\n".join(lines)


def grouped(paths: list[str]) -> list[str]:
    """`["a.json", "ckpt/x", "ckpt/y"]` -> `["a.json", "ckpt/ (2 files)"]`."""
    counts = Counter(path.split("/", 1)[0] + ("/" if "/" in path else "") for path in paths)
    return [name if name[-1] != "/" else f"{name} ({count} file{'s' * (count > 1)})" for name, count in counts.items()]


def card_summary(card: ModelCard) -> str:
    """`name; tags ...; AUC 0.71` of a model card's metadata."""
    data = card.data
    results = ", ".join(f"{r.metric_name} {r.metric_value}" for r in data.eval_results or [])
    return "; ".join(part for part in (data.model_name, f"tags {', '.join(data.tags or [])}", results) if part)


def ignore_patterns(folder: str, include_runs: bool = False) -> list[str]:
    """What a push leaves out of `folder`: hidden and temporary files, checkpoints, optimizer and trainer states,
    TensorBoard logs (`runs/`, unless `include_runs`), peft's boilerplate `adapter/README.md`, and the whole LoRA
    `adapter/` when its `base_model_name_or_path` is a local path (it loads only where it was trained; the folder's
    weights are already merged)."""
    patterns = [*IGNORE_ON_UPLOAD, *([] if include_runs else [RUNS_PATTERN])]
    adapter_config = Path(folder, "adapter", "adapter_config.json")
    if adapter_config.is_file():
        base = json.loads(adapter_config.read_text()).get("base_model_name_or_path") or ""
        patterns.append("adapter/*" if os.path.isabs(base) or os.path.exists(base) else "adapter/README.md")
    return patterns


def push_plan(
    folder: str,
    repo_id: str,
    private: bool = False,
    commit_message: str = "Upload FLIP model",
    include_runs: bool = False,
) -> PushPlan:
    """Validate the folder (a saved model) and the repository id, and list what a push of `folder` uploads."""
    if not os.path.isfile(os.path.join(folder, "config.json")):
        raise FileNotFoundError(f"{folder!r} holds no config.json: pass a folder written by flip finetune / pretrain")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise ValueError(f"invalid Hub repository id {repo_id!r}: {error}") from None
    patterns = ignore_patterns(folder, include_runs)
    root = Path(folder)
    paths = sorted(path.relative_to(root).as_posix() for path in root.glob("**/*") if path.is_file())
    files = list(filter_repo_objects(paths, ignore_patterns=[*patterns, *DEFAULT_IGNORE_PATTERNS]))
    excluded = [path for path in paths if path not in set(files)]
    return PushPlan(folder, repo_id, private, commit_message, patterns, files, excluded)


def push_to_hub(
    folder: str,
    repo_id: str,
    api: HfApi | None = None,
    token: str | None = None,
    private: bool = False,
    commit_message: str = "Upload FLIP model",
    include_runs: bool = False,
):
    """Create `repo_id` if needed and upload `folder` without what `ignore_patterns` excludes."""
    plan = push_plan(folder, repo_id, private, commit_message, include_runs)
    api = api if api is not None else HfApi(token=token)
    api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True)
    return api.upload_folder(
        folder_path=folder,
        repo_id=repo_id,
        repo_type="model",
        commit_message=commit_message,
        ignore_patterns=plan.ignore_patterns,
    )


def main(argv: list[str] | None = None, prog: str = "python -m training.hub") -> PushPlan:
    """`flip push FOLDER REPO_ID [--private] [--dry_run]`: upload a folder written by the training scripts."""
    parser = command_parser(prog, __doc__)
    parser.add_argument("folder", help="folder written by finetune / pretrain / save_for_hub")
    parser.add_argument("repo_id", help="Hub repository, e.g. my-user/flip-movielens-100k")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument("--token", default=None, help="Hub token (default: the logged-in one / HF_TOKEN)")
    parser.add_argument("--commit_message", default="Upload FLIP model", help="commit message")
    parser.add_argument("--include_runs", action="store_true", help="also upload the TensorBoard logs (runs/)")
    parser.add_argument(
        "--dry_run", action="store_true", help="check offline: validate, list the files and sizes, upload nothing"
    )
    args = parser.parse_args(argv)
    plan = push_plan(args.folder, args.repo_id, args.private, args.commit_message, args.include_runs)
    print(plan.describe())
    if args.dry_run:
        print("dry run: nothing was uploaded")
        return plan
    info = push_to_hub(
        args.folder,
        args.repo_id,
        token=args.token,
        private=args.private,
        commit_message=args.commit_message,
        include_runs=args.include_runs,
    )
    print(f"pushed {args.folder} to {args.repo_id}: {getattr(info, 'commit_url', info)}")
    return plan


if __name__ == "__main__":
    main()
