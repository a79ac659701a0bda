"""Expected messages stay quiet (issue 15 item 19; the help scope: tests/test_cli.py; the non-deprecated all-gather:
tests/test_distributed.py)."""

import warnings

import pytest
from transformers import BertModel

from modeling_flip import FlipForPretraining
from training.arguments import FlipPretrainingArguments, FlipTrainingArguments


def test_the_unused_pooler_gets_no_load_report(tiny_text_config, tmp_path, capfd):
    BertModel(tiny_text_config, add_pooling_layer=True).save_pretrained(tmp_path)  # like MiniLM: with a pooler
    capfd.readouterr()
    model = FlipForPretraining.from_text_pretrained(str(tmp_path), field_names=["a"], field_vocab_sizes=[5])
    assert "LOAD REPORT" not in capfd.readouterr().err
    assert model.flip.text_model.pooler is None
    assert BertModel._keys_to_ignore_on_load_unexpected is None  # the class is left as it was


@pytest.mark.parametrize("arguments_class", [FlipTrainingArguments, FlipPretrainingArguments])
def test_cpu_runs_pin_no_memory_and_ddp_searches_no_unused_parameters(arguments_class, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no pin_memory or other warning from the arguments themselves
        args = arguments_class(output_dir=str(tmp_path), use_cpu=True)
    assert args.dataloader_pin_memory is False and args.ddp_find_unused_parameters is False
