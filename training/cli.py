"""`flip` console script: one entry point for the data, training, evaluation and publishing commands.

    flip demo                                   # the README's quick CPU run (movielens-100k + bundled MiniLM)
    flip prepare movielens-100k                 # processing.prepare
    flip pretrain training/configs/pretrain_demo.yaml [--flag value ...]
    flip finetune training/configs/finetune_demo.yaml --init_from outputs/pretrain --ctr_mode joint
    flip evaluate MODEL_DIR --dataset movielens-100k --split test
    flip predict MODEL_DIR rows.csv --output_file scored.csv
    flip export-id MODEL_DIR exported/flip-id    # ID tower + schema only (no text weights, no tokenizer)
    flip export-onnx MODEL_DIR exported/flip-id-onnx   # FLIP_ID as an ONNX Runtime graph + schema (serving)
    flip push MODEL_DIR user/repo [--private]

`flip COMMAND --help` lists each command's options. Bad input (a missing file, a malformed config or schema, an
unreachable model) ends with one line on stderr and exit code 2; `--debug` shows the traceback instead.
"""

import importlib
import inspect
import io
import re
import sys
from contextlib import redirect_stdout, suppress
from typing import NoReturn

import yaml

COMMANDS = {
    "prepare": ("processing.prepare", "download/parse a dataset, fit the schema, tokenise and cache it"),
    "pretrain": ("training.pretrain", "FLIP pretraining (ICL + MLM + MTM)"),
    "finetune": ("training.finetune", "CTR finetuning (FLIP_ID / FLIP_PLM / FLIP) and baselines"),
    "evaluate": ("training.evaluate", "AUC / LogLoss of a saved model on a dataset split"),
    "predict": ("training.predict", "add a `ctr` probability column to a CSV / Parquet / JSONL table"),
    "export-id": ("training.export", "write the ID tower + schema of a FLIP_ID / FLIP model as a small folder"),
    "export-onnx": ("training.onnx_export", "write FLIP_ID as an ONNX graph + schema: serving without torch"),
    "push": ("training.hub", "upload a saved model folder to the Hugging Face Hub"),
    "demo": ("training.demo", "end-to-end CPU demo: prepare, pretrain, finetune, compare with DCNv2"),
}


# What bad input, missing files and an unreachable Hub raise (Hub and connection errors are OSErrors).
USER_ERRORS = (OSError, ValueError, TypeError, ImportError, yaml.YAMLError)
DEBUG_FLAG = "--debug"


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {help_text}" for name, (_, help_text) in COMMANDS.items()]
    return "usage: flip COMMAND [ARGS ...]\n\ncommands:\n" + "\n".join(lines) + "\n\n" + __doc__


EXAMPLE_LINE = re.compile(r"^ {4}(flip|python|accelerate) ", re.MULTILINE)


def examples(command: str) -> list[str]:
    """This docstring's example lines for `command` (`flip prepare movielens-100k ...`)."""
    return [line.strip() for line in __doc__.splitlines() if line.strip().startswith(f"flip {command} ")]


def run_command(command: str, args: list[str]) -> None:
    """`COMMAND`'s module `main(ARGS, prog="flip COMMAND")`."""
    command_main = importlib.import_module(COMMANDS[command][0]).main
    accepts_prog = "prog" in inspect.signature(command_main).parameters
    command_main(args, **({"prog": f"flip {command}"} if accepts_prog else {}))


def show_help(command: str, args: list[str]) -> NoReturn:
    """`flip COMMAND --help`: the command's own help, ending with usage examples when it shows none."""
    with redirect_stdout(io.StringIO()) as text, suppress(SystemExit):
        run_command(command, args)
    print(text.getvalue(), end="")
    if not EXAMPLE_LINE.search(text.getvalue()):
        print("\nexample:\n" + "\n".join(f"    {line}" for line in examples(command)))
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    """Dispatch `flip COMMAND ARGS...` to `COMMAND`'s module `main(ARGS, prog="flip COMMAND")`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv[0] not in COMMANDS:
        print(f"flip: unknown command {argv[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    if {"-h", "--help"} & set(argv[1:]):
        show_help(argv[0], argv[1:])
    debug = DEBUG_FLAG in argv
    try:
        run_command(argv[0], [arg for arg in argv[1:] if arg != DEBUG_FLAG])
    except USER_ERRORS as error:
        if debug:
            raise
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"flip {argv[0]}: error: {message} ({DEBUG_FLAG} shows the traceback)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
