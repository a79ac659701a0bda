"""Data-parallel training through FlipTrainer: 2 CPU processes (gloo) x batch B == 1 process x batch 2B for the
FLIP pretraining loss with ICL, MLM and MTM on, the logged component losses and the parameters after one SGD step.

The collator draws a batch's masks from (seed, the batch's rows), so the 2B batch and its two halves would get
different masks: the rows are masked once, as the 2B batch, and both runs stack those masked rows. MTM uses the
exact `softmax` loss (NCE noise comes from each process's own RNG) and every dropout is off."""

import os
import socket

import torch
import torch.multiprocessing as mp
from accelerate.state import AcceleratorState
from datasets import Dataset

from modeling_flip import FlipConfig, FlipForPretraining
from processing import FlipProcessor, PromptTemplate
from processing.collators import IGNORE_INDEX, DataCollatorForFlipPretraining
from processing.schema import FIELD_OOV_ID
from tests._data_fixtures import ml_rows, ml_schema
from training.arguments import FlipPretrainingArguments
from training.trainer import FlipTrainer

GLOBAL_BATCH = 8


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def masked_rows(rows: list[dict], tokenizer) -> list[dict]:
    """The processor rows masked and padded once, as one batch, split back into rows. The first row's MTM-masked
    field becomes a missing value (OOV: no MTM target), so that the processes hold unequal numbers of MTM targets,
    as they hold unequal numbers of MLM tokens."""
    batch = DataCollatorForFlipPretraining(tokenizer, seed=0)(rows)
    masked_field = batch["mtm_labels"][0] != IGNORE_INDEX
    batch["field_ids"][0, masked_field] = batch["mtm_labels"][0, masked_field] = FIELD_OOV_ID
    return [{key: value[i].tolist() for key, value in batch.items()} for i in range(len(rows))]


def stack_rows(features: list[dict]) -> dict[str, torch.Tensor]:
    """Collator of already masked, equally padded rows."""
    return {key: torch.tensor([feature[key] for feature in features]) for key in features[0]}


def train_one_step(model: FlipForPretraining, rows: list[dict], output_dir: str) -> dict:
    """One plain-SGD step on all `GLOBAL_BATCH` rows (split over the processes); the first log entry and params."""
    AcceleratorState._reset_state(reset_partial_state=True)  # each run builds its own (gloo or single) state
    args = FlipPretrainingArguments(
        output_dir=output_dir,
        per_device_train_batch_size=GLOBAL_BATCH // int(os.environ.get("WORLD_SIZE", "1")),
        max_steps=1,
        optim="sgd",
        learning_rate=0.5,
        lr_scheduler_type="constant",
        weight_decay=0.0,
        logging_steps=1,
        eval_strategy="no",
        save_strategy="no",
        load_best_model_at_end=False,
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    args.label_names = []
    trainer = FlipTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), data_collator=stack_rows)
    trainer.train()
    params = {name: param.detach().clone() for name, param in model.named_parameters()}
    return {"log": trainer.state.log_history[0], "params": params, "world_size": trainer.accelerator.num_processes}


def _worker(rank: int, world_size: int, port: int, model, rows, output_dir: str, results) -> None:
    torch.set_num_threads(1)
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    outcome = train_one_step(model, rows, output_dir)
    if rank == 0:
        results["outcome"] = outcome
    torch.distributed.destroy_process_group()


def test_two_processes_match_one_process(tiny_tokenizer, tiny_text_config, tmp_path):
    text_config = tiny_text_config.to_dict() | {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    schema = ml_schema()
    config = FlipConfig(
        text_config=text_config,
        field_names=schema.field_names,
        field_vocab_sizes=schema.field_vocab_sizes,
        embedding_dim=8,
        mlp_hidden_sizes=[16],
        projection_dim=8,
        projection_dropout=0.0,
        mlm_head_dropout=0.0,
        mtm_loss="softmax",
    )
    torch.manual_seed(0)
    model = FlipForPretraining(config)
    processor = FlipProcessor(tiny_tokenizer, schema, PromptTemplate(), max_length=64)
    encoded = processor(ml_rows(GLOBAL_BATCH))
    rows = masked_rows([{key: encoded[key][i] for key in encoded} for i in range(GLOBAL_BATCH)], tiny_tokenizer)

    initial = {name: param.detach().clone() for name, param in model.named_parameters()}
    results = mp.get_context("spawn").Manager().dict()
    # spawn, not fork: a fork after this process ran torch's thread pools (other tests) can deadlock the workers
    args = (2, free_port(), model, rows, str(tmp_path / "two"), results)
    mp.start_processes(_worker, args=args, nprocs=2, start_method="spawn")
    two = results["outcome"]
    one = train_one_step(model, rows, str(tmp_path / "one"))

    assert (one["world_size"], two["world_size"]) == (1, 2)
    for key in ("loss", "icl_loss", "mlm_loss", "mtm_loss"):
        assert abs(one["log"][key] - two["log"][key]) < 1e-3, (key, one["log"], two["log"])
    changed = 0
    for name, value in one["params"].items():
        torch.testing.assert_close(two["params"][name], value, atol=1e-5, rtol=1e-4, msg=name)
        changed += not torch.equal(value, initial[name])
    assert changed > 0


def _agreement_worker(rank: int, world_size: int, port: int, results) -> None:
    from training.callbacks import any_process

    torch.distributed.init_process_group(
        "gloo", rank=rank, world_size=world_size, init_method=f"tcp://127.0.0.1:{port}"
    )
    cpu = torch.device("cpu")
    results[rank] = (any_process(rank == 0, cpu, 10), any_process(False, cpu, 10), any_process(rank == 0, cpu, 11))
    torch.distributed.destroy_process_group()


def test_a_stop_seen_by_one_process_stops_all():
    """The time budget and the signal checkpoint stop every process at the same step (`any_process`): one that
    stopped alone would leave the others waiting in their next collective."""
    results = mp.get_context("spawn").Manager().dict()
    mp.start_processes(_agreement_worker, args=(2, free_port(), results), nprocs=2, start_method="spawn")
    assert dict(results) == {0: (True, False, False), 1: (True, False, False)}  # step 11: no all-reduce, no stop
