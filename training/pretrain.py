"""FLIP pretraining: align an ID-based CTR model and a PLM with the ICL, MLM and MTM losses (no labels).

Run it the same way on one CPU, one GPU, several GPUs or several machines (accelerate / DDP; the contrastive
negatives are gathered from every process):

    python -m training.pretrain training/configs/pretrain_demo.yaml                  # CPU / 1 GPU
    accelerate launch -m training.pretrain training/configs/pretrain_full.yaml       # 1 GPU (bf16 in the config)
    accelerate launch --multi_gpu --num_processes 8 -m training.pretrain training/configs/pretrain_full.yaml
    # 2 nodes x 8 GPUs: run on each node, MACHINE_RANK = 0 on the main node, 1 on the other
    accelerate launch --multi_gpu --num_machines 2 --num_processes 16 --machine_rank $MACHINE_RANK \\
        --main_process_ip $MAIN_IP --main_process_port 29500 -m training.pretrain training/configs/pretrain_full.yaml
    # 2 CPU processes (gloo), e.g. to check DDP on a laptop: accelerate launch --multi_gpu --num_processes 2 ...

Any flag overrides the config file (`--max_steps 200 --output_dir out/pt`); `--resume_from_checkpoint true`
continues from the last complete checkpoint in `output_dir`. The output folder loads with
`AutoModelForPreTraining.from_pretrained(dir, trust_remote_code=True)` and feeds `training.finetune --init_from`.
"""

import time

from transformers import set_seed

from modeling_flip import FlipForPretraining
from processing.collators import DataCollatorForFlipPretraining

from .arguments import (
    FINETUNING_ONLY,
    DataArguments,
    FlipPretrainingArguments,
    LoraArguments,
    ModelArguments,
    make_parser,
    parse_args,
)
from .callbacks import training_callbacks
from .card import CardInfo, losses_table
from .data import check_prompt_matches, dataset_name, load_data
from .lora import apply_lora
from .model_builder import build_model
from .run_output import run_record, save_run, saved_model_validation
from .trainer import FlipTrainer

ARGUMENT_CLASSES = (ModelArguments, DataArguments, LoraArguments, FlipPretrainingArguments)


def main(argv: list[str] | None = None, prog: str = "python -m training.pretrain") -> dict:
    """Pretrain, save the final model + processor + code into `output_dir`, return the results record."""
    start = time.time()
    parser = make_parser(ARGUMENT_CLASSES, prog, __doc__, hidden=FINETUNING_ONLY)
    model_args, data_args, lora_args, args = parse_args(parser, argv)
    args.label_names = []  # label-free: the model computes its losses with return_loss=True
    set_seed(args.seed)
    if data_args.streaming and args.max_steps <= 0:
        raise ValueError("--streaming reads the train split as a stream of unknown length: set --max_steps")
    data, processor, text_model_path = load_data(model_args, data_args, seed=args.seed)
    check_prompt_matches(model_args.init_from, processor)
    model = build_model(FlipForPretraining, model_args, processor.schema, text_model_path)
    model.set_feature_frequencies(processor.schema.feature_counts())
    if lora_args.use_lora:
        model = apply_lora(model, lora_args)
    collator = DataCollatorForFlipPretraining(
        processor.tokenizer,
        mlm_field_ratio=data_args.mlm_field_ratio,
        mtm_field_ratio=data_args.mtm_field_ratio,
        mask_same_fields=data_args.mask_same_fields,
        seed=args.seed,
    )
    trainer = FlipTrainer(
        model=model,
        args=args,
        train_dataset=data["train"],
        eval_dataset=data["validation"],
        data_collator=collator,
        processing_class=processor,
        callbacks=training_callbacks(args),
    )
    trainer.train(resume_from_checkpoint=args.checkpoint_to_resume())
    validation = saved_model_validation(trainer)
    config = trainer.model.config
    card = CardInfo(
        model_name=f"flip-pretrained-{dataset_name(data_args)}",
        dataset=dataset_name(data_args),
        text_model=model_args.text_model,
        backbone=config.backbone,
        ctr_mode="pretraining",
        fields=processor.schema.field_names,
        results_table=losses_table(validation),
    )
    results = {"stage": "pretraining", "validation": validation, **run_record(start, trainer, prog, argv)}
    save_run(trainer, processor, lora_args, card, results)
    return results


if __name__ == "__main__":
    main()
