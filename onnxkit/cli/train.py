"""`onnxkit train` and `onnxkit eval`."""

from __future__ import annotations

import itertools
import json
import sys
import warnings
from pathlib import Path
from typing import Any

import click

from onnxkit.cli import as_flags
from onnxkit.cli import options as opt
from onnxkit.cli.options import flag_names
from onnxkit.errors import OnnxkitError
from onnxkit.evaluate import shown_metric as metric
from onnxkit.train.backends import backend_names
from onnxkit.train.losses import ALIASES as LOSS_ALIASES
from onnxkit.train.losses import NAMES as LOSSES
from onnxkit.train.optim import OPTIMIZERS, Optimizer, get_optimizer

OPTIMIZER_OPTIONS = ("momentum", "dampening", "nesterov", "betas", "eps", "amsgrad", "alpha", "centered", "rho",
                     "lr_decay", "initial_accumulator_value")
MONITOR_NAMES = ("val_loss", "val_accuracy", "val_macro_f1", "train_loss")


@click.command("train")
@click.argument("model", required=False, type=click.Path())
@opt.data("Dataset (given alone, a model is built for it): iris, digits, digits-images, wine, breast-cancer, "
          "diabetes, bbc-news, tweets-sentiment (text: tokenized by the model's tokenizer), a .npz / .csv / .tsv / "
          ".parquet file, or a folder of class folders of images.")
@click.option("-o", "--out", "--output", "out_dir", type=click.Path(file_okay=False),
              help="Run folder to create (default: runs/MODEL, the model file's name, else the data's, or "
                   "runs/MODEL-2, -3, ...).")
@click.option("--resume", type=click.Path(file_okay=False), help="Continue the run in this folder.")
@click.option("--loss", type=click.Choice([*LOSSES, *LOSS_ALIASES]),
              help="Default: from the model's task and the labels (ce, bce, l2, mae: short names).")
@click.option("--label-smoothing", type=opt.Number(float, 0, high=1),
              help="Cross-entropy's, as PyTorch's CrossEntropyLoss(label_smoothing=): e.g. 0.1 (default: the model's "
                   "recipe's, else 0).")
@click.option("--optimizer", type=click.Choice(OPTIMIZERS),
              help="torch.optim's algorithm, option names and defaults (default: the model's recipe's, else adamw).")
@click.option("--lr", type=opt.POSITIVE,
              help="Learning rate (default: the model's recipe's, else torch's for the optimizer, e.g. 1e-3 for "
              "adamw).")
@click.option("--weight-decay", type=opt.NON_NEGATIVE, help="Default: 0.01 for adamw, 0 for the others.")
@click.option("--momentum", type=opt.NON_NEGATIVE, help="sgd, rmsprop.")
@click.option("--dampening", type=opt.NON_NEGATIVE, help="sgd.")
@click.option("--nesterov", is_flag=True, default=None, help="sgd (needs --momentum).")
@click.option("--betas", type=(float, float), help="adam, adamw: e.g. --betas 0.9 0.98.")
@click.option("--eps", type=opt.NON_NEGATIVE, help="adam, adamw, adagrad, rmsprop, adadelta.")
@click.option("--amsgrad", is_flag=True, default=None, help="adam, adamw.")
@click.option("--alpha", type=opt.NON_NEGATIVE, help="rmsprop's smoothing constant.")
@click.option("--centered", is_flag=True, default=None, help="rmsprop.")
@click.option("--rho", type=opt.NON_NEGATIVE, help="adadelta.")
@click.option("--lr-decay", type=opt.NON_NEGATIVE, help="adagrad.")
@click.option("--initial-accumulator-value", type=opt.NON_NEGATIVE, help="adagrad.")
@click.option("--clip-grad-norm", type=opt.POSITIVE, help="Clip the global gradient norm to this value.")
@click.option("--schedule", type=click.Choice(("constant", "linear", "cosine")),
              help="Default: the model's recipe's, else constant.")
@click.option("--warmup", type=opt.NON_NEGATIVE,
              help="Warm-up steps (or a fraction < 1). Default: the recipe's, else 0.")
@click.option("--epochs", type=opt.COUNT,
              help="Default: the model's recipe's, else enough for 2,000 steps (5 to 500 epochs) with early stopping.")
@click.option("--steps", type=opt.COUNT, help="Stop after this many optimizer steps instead.")
@opt.batch_size(None, "Examples per batch (default: the model's recipe's, else 32).")
@click.option("--grad-accum", "grad_accumulation", type=opt.COUNT, default=1, show_default=True,
              help="Batches per optimizer step.")
@click.option("--seed", type=opt.NON_NEGATIVE_INT, default=0, show_default=True, help="Shuffling and dropout seed.")
@opt.data_seed(0)
@click.option("--label", metavar="COLUMN",
              help="The CSV column holding the labels, by its header (default: the one headed label, labels, "
                   "target, y or class, else the last; a text CSV's, the one beside text).")
@click.option("--drop", metavar="COLUMN", multiple=True,
              help="A CSV or Parquet column to leave out, by its header (repeatable): a row id, a column that gives "
                   "the labels away.")
@click.option("--tokenizer", type=click.Path(dir_okay=False),
              help="A tokenizer.json for text data (bbc-news, tweets-sentiment) when the model carries none; the "
                   "trained model carries it, for eval and predict --text.")
@click.option("--max-length", type=opt.COUNT,
              help="Tokens kept per text (default: the length the model carries with its tokenizer, else 128, or the "
                   "length the model's token inputs fix).")
@click.option("--no-shuffle", is_flag=True, help="Keep the data order.")
@click.option("--no-dropout", is_flag=True, help="Train with dropout off.")
@click.option("--freeze", multiple=True, metavar="GLOB", help="Keep matching parameters fixed (repeatable).")
@click.option("--train-only", multiple=True, metavar="GLOB", help="Train only matching parameters (repeatable).")
@click.option("--lora-rank", type=opt.COUNT, help="Train LoRA adapters of this rank; the base weights stay frozen.")
@click.option("--lora-alpha", type=opt.POSITIVE, help="LoRA scale alpha / rank (default alpha: 2 x rank).")
@click.option("--lora-targets", multiple=True, metavar="GLOB",
              help="MatMul or Gemm weights to adapt, by name or the PyTorch parameter an export made them from "
                   "(repeatable; default: '*attn.q.weight' '*attn.v.weight', else a Hugging Face model's query and "
                   "value weights).")
@click.option("--lora-train", multiple=True, metavar="GLOB",
              help="Also train these parameters fully (repeatable; default: a 'classifier.*' or 'head.*' head).")
@click.option("--standardize/--no-standardize", default=None,
              help="Put the training split's feature mean/std in the model as its first node (and, for regression, "
              "scale the targets and un-scale the output in the graph); the model keeps taking raw features. "
              "Default: on for clearly unscaled data when the whole model trains.")
@click.option("--no-cache-features", is_flag=True,
              help="Run the frozen part every step, even when only a head after it trains.")
@opt.model_output("The model output that feeds the loss (default: the one trained before, else the scores beside a "
                  "first output that is the predicted label, else the first).")
@click.option("--monitor", type=click.Choice(MONITOR_NAMES),
              help="Metric that picks the best epoch (default: the recipe's, else val_loss; train_loss without a "
              "validation split).")
@click.option("--patience", type=opt.COUNT,
              help="Stop after this many epochs without improvement (default: the recipe's; with no epochs given, a "
              "tenth of the epochs, 5 at least; else never).")
@click.option("--last", is_flag=True, help="Write the last epoch's weights, not the best epoch's.")
@opt.device()
@click.option("--backend", type=click.Choice(backend_names()),
              help="onnx (default: onnxkit's own gradient graphs on any ONNX Runtime) or ort-training "
              "(onnxruntime-training 1.19.2, its own environment: make venv-ort). Default: $ONNXKIT_BACKEND or onnx.")
@opt.threads("CPU threads (default: all cores; with --workers, cores / workers each).")
@click.option("--workers", type=opt.COUNT,
              help="Data-parallel training processes, started with this environment's mpiexec (extra "
              "`distributed`); --batch-size stays the global batch.")
@click.option("--quiet", is_flag=True, help="No progress output.")
def train_cmd(model: str | None, data_argument: tuple[str, ...], **options: Any) -> None:
    """Train or fine-tune MODEL.onnx (any inference-form ONNX model) on a dataset; with DATA alone, a model
    built for it (a table: tabular-mlp; images: image-cnn; sized to the data, as the first line says).

    Writes a run folder: run.json, metrics.jsonl, checkpoints/, curves.svg and
    model.onnx (the trained inference model). Ctrl-C saves a checkpoint;
    --resume continues from it.

    \b
    Examples:
      onnxkit train wine.csv                                             # an MLP sized to the table, into runs/wine
      onnxkit train photos/                                              # a CNN sized to the images and classes
      onnxkit train digits.onnx digits-images                            # into runs/digits (then runs/digits-2, ...)
      onnxkit train digits.onnx --data digits-images -o runs/digits      # the same, spelled out
      onnxkit train digits.onnx --data digits-images --epochs 20 -o runs/digits20
      onnxkit train mlp.onnx --data wine --standardize -o runs/wine
      onnxkit train reg.onnx --data cars.csv --label mpg -o runs/cars    # the CSV column to predict
      onnxkit train iris.onnx --data iris --lr 0.01 --batch-size 16 -o runs/iris
      onnxkit train model.onnx --data my.npz --train-only 'head.*' -o runs/head
      onnxkit train bert.onnx --data bbc-news --lora-rank 8 --lr 2e-3 --epochs 2 -o runs/lora
      onnxkit train --resume runs/digits                                 # after Ctrl-C or a crash
      onnxkit train digits.onnx --data digits-images --workers 2 -o runs/dp

    Settings not given come from the model's training recipe (zoo models carry one;
    pretrained ones their fine-tuning defaults), else from defaults sized to the data;
    the run says which in one line.

    Head-only fine-tuning of a pretrained model is --train-only 'classifier.*'; the
    frozen encoder then runs once over the data and the head trains on its cached output.
    --resume alone continues a LoRA run with its stored --lora-* settings.
    """
    from onnxkit.mpi_environment import rank, size
    from onnxkit.train import TrainingInterrupted, fit

    resume = options.pop("resume")
    options["data"] = opt.given_data(data_argument, options["data"])
    if resume and (model or options["data"] or options["out_dir"]):
        raise click.UsageError("--resume continues a run with its stored settings; give only --resume RUN_DIR",
                               click.get_current_context())
    if model and not options["data"] and _is_data(model):  # data alone: a model is built for it
        model, options["data"] = None, model
    _model_first("train", model, options["data"])
    if not resume and not options["data"]:
        missing = f"{model}: no such file, folder or dataset; " if model and not Path(model).exists() else ""
        raise click.UsageError(f"{missing}give DATA, with MODEL.onnx before it or not (a model is then built for the "
                               "data), or --resume RUN_DIR", click.get_current_context())
    if not resume and not options["out_dir"]:
        options["out_dir"] = _new_run_folder(Path(model).name.removesuffix(".onnx") if model
                                             else Path(options["data"]).stem)
    if options["epochs"] is not None and options["steps"] is not None:
        raise click.UsageError("give --epochs or --steps, not both: --steps ends the run wherever it is in its epochs",
                               click.get_current_context())
    if resume:
        _refuse_settings_on_resume()
    optimizer, adapter = _optimizer(options), _lora_adapter(options)  # checked before any worker starts
    if adapter is not None and model is None and not resume:
        raise click.UsageError("--lora-rank adapts a trained model's weights, and with DATA alone train builds a fresh "
                               "model: give MODEL.onnx before DATA, or leave --lora-* out", click.get_current_context())
    model = _with_tokenizer(model, options["data"], options.pop("tokenizer"),
                            options.pop("max_length"))  # before any worker starts
    workers = options.pop("workers")
    if workers and workers > 1:
        from onnxkit.train.launch import launch_training

        sys.exit(launch_training(workers, resume or options["out_dir"], None if resume else options["backend"],
                                 resume=bool(resume)))
    try:
        with warnings.catch_warnings():  # --quiet's warnings (fit warns through `warnings` then) as warning: lines
            from onnxkit.cli import warning_lines
            from onnxkit.train import TrainingWarning

            warnings.showwarning = warning_lines(warnings.showwarning, TrainingWarning)
            result = fit(
                model,
                options["data"],
                options["out_dir"],
                loss=options["loss"],
                label_smoothing=options["label_smoothing"],
                optimizer=optimizer,
                lr=options["lr"],
                weight_decay=options["weight_decay"],
                backend=options["backend"],
                clip_grad_norm=options["clip_grad_norm"],
                schedule=options["schedule"],
                warmup=options["warmup"],
                epochs=options["epochs"],
                steps=options["steps"],
                batch_size=options["batch_size"],
                grad_accumulation=options["grad_accumulation"],
                seed=options["seed"],
                data_seed=options["data_seed"],
                label=options["label"],
                drop=options["drop"],
                shuffle=not options["no_shuffle"],
                dropout=not options["no_dropout"],
                freeze=options["freeze"],
                train_only=options["train_only"],
                output=options["output"],
                monitor=options["monitor"],
                patience=options["patience"],
                keep_best=not options["last"],
                device=options["device"],
                threads=options["threads"],
                adapter=adapter,
                cache_features=not options["no_cache_features"],
                standardize=options["standardize"],
                resume=resume,
                quiet=options["quiet"],
            )
    except TrainingInterrupted as stop:
        if rank():
            sys.exit(128 + stop.signum)
        click.echo(
            f"interrupted in epoch {stop.epoch} after step {stop.step}: checkpoint saved to {stop.checkpoint}; "
            f"continue with: onnxkit train --resume {stop.run_dir}" + (f" --workers {size()}" if size() > 1 else ""),
            err=True,
        )
        sys.exit(128 + stop.signum)  # 130 after Ctrl-C, 143 after SIGTERM, as the shell reports them
    if rank():
        return  # data-parallel: worker 0 reports
    test = result.metrics.get("test", {})
    shown = "  ".join(f"{k} {metric(test[k])}" for k in ("accuracy", "macro_f1", "r2", "mae", "loss")
                      if test.get(k) is not None)  # r2 is None for constant targets
    click.echo(f"wrote {result.model_path}" + (f"  (test: {shown})" if shown else ""))


def _is_data(argument: str) -> bool:
    """Whether a lone argument is data, not a model: a data file, an image folder (not a run's folder, which holds
    run.json or a model) or a built-in dataset's name (`onnxkit train wine.csv` trains a model built for it)."""
    from onnxkit.data import datasets
    from onnxkit.data.formats import READERS

    path = Path(argument)
    images = path.is_dir() and not (path / "run.json").exists() and not any(path.glob("*.onnx"))
    return path.suffix.lower() in READERS or images or argument in datasets()


def _model_first(command: str, model: str | None, data: str | None) -> None:
    """A usage error for the data given first and the model after it (`onnxkit train digits-images digits.onnx`: it
    said 'digits-images: no such file; pass the path of an .onnx model')."""
    if model and data and data.lower().endswith(".onnx") and _is_data(model):
        raise click.UsageError(f"{model} is the data and {data} the model: give the model first (onnxkit {command} "
                               f"{data} {model})", click.get_current_context())


def _new_run_folder(stem: str) -> str:
    """The run folder when none is given: runs/<stem> (the model file's, else the data's), else the first of
    runs/<stem>-2, -3, ... that does not exist yet."""
    stem = stem or "run"
    folders = (Path("runs") / (stem if k == 1 else f"{stem}-{k}") for k in itertools.count(1))
    return str(next(folder for folder in folders if not folder.exists()))


def _optimizer(options: dict[str, Any]) -> Optimizer | None:
    """The optimizer the options name (adamw when only its options are given), or None for the default."""
    given = {k: options[k] for k in OPTIMIZER_OPTIONS if options[k] is not None}
    if options["optimizer"] is None and not given:
        return None
    try:
        return get_optimizer(options["optimizer"] or "adamw", **given)
    except OnnxkitError as e:  # an option that algorithm lacks, or values out of its range: a malformed command
        ctx = click.get_current_context()
        message = as_flags(str(e), (*OPTIMIZER_OPTIONS, "weight_decay"), flag_names(ctx.command))
        raise click.UsageError(message, ctx) from None


# what --resume may be given beside it: how and where the run goes on, not what it trains
KEPT_ON_RESUME = frozenset({"resume", "quiet", "device", "threads", "workers"})


def _refuse_settings_on_resume() -> None:
    """A usage error naming the options given beside --resume that would change the run (--seed, --freeze, ...:
    they were ignored, and the run went on with its stored ones)."""
    ctx = click.get_current_context()
    given = [p.secondary_opts[0] if getattr(p, "secondary_opts", None) and not ctx.params[p.name] else p.opts[0]
             for p in ctx.command.params if p.name not in KEPT_ON_RESUME
             and ctx.get_parameter_source(p.name) is click.core.ParameterSource.COMMANDLINE]
    if given:
        raise click.UsageError(f"--resume continues a run with its stored settings; leave out {', '.join(given)} "
                               "(or start a new run with them)", ctx)


def _with_tokenizer(model: str | None, data: str, tokenizer: str | None, max_length: int | None) -> Any:
    """The model to train: the path given, or with --tokenizer the model carrying it, or with --max-length alone
    the model carrying its own tokenizer at that length (the run keeps that copy)."""
    if tokenizer is None and max_length is None:
        return model
    if model is None:
        from onnxkit.train.default_model import text_models

        flag = "--tokenizer" if tokenizer is not None else "--max-length"
        raise click.UsageError(f"{flag} goes with a model that reads text, and train picks none for text: "
                               f"{text_models(data)}", click.get_current_context())
    from onnxkit.data.text import carry_tokenizer, tokenizer_options
    from onnxkit.files import load_model

    loaded = load_model(model)  # type: ignore[arg-type]
    if tokenizer is None:
        tokenizer = tokenizer_options(loaded).get("tokenizer")
        if tokenizer is None:
            raise click.UsageError(f"--max-length sets the tokens a text keeps, but {model} carries no tokenizer: "
                                   "give one with --tokenizer PATH/tokenizer.json", click.get_current_context())
    return carry_tokenizer(loaded, tokenizer, max_length)


def _lora_adapter(options: dict[str, Any]):  # type: ignore[no-untyped-def]
    """A LoraAdapter from the --lora-* options, or None without --lora-rank."""
    rank, alpha, targets, train = (options[k] for k in ("lora_rank", "lora_alpha", "lora_targets", "lora_train"))
    if rank is None:
        if alpha is not None or targets or train:
            raise click.UsageError("--lora-alpha, --lora-targets and --lora-train need --lora-rank R (e.g. "
                                   "--lora-rank 8)", click.get_current_context())
        return None
    if options["train_only"]:
        raise click.UsageError("--train-only would leave the LoRA adapters frozen; with --lora-rank, name what else "
                               "trains with --lora-train GLOB", click.get_current_context())
    from onnxkit.train.lora import DEFAULT_TARGETS, LoraAdapter, LoraConfig

    config = LoraConfig(rank=rank, alpha=alpha, targets=list(targets) or list(DEFAULT_TARGETS))
    return LoraAdapter(config, train=list(train) or None)


@click.command("eval")
@click.argument("model", type=click.Path())
@opt.data("Dataset name, .npz / .csv / .tsv / .parquet file or folder of class folders of images (default: the one the "
          "model was trained on).")
@click.option("--split", type=click.Choice(("train", "validation", "test", "all")), default=None,
              help="The split to score (default: test, of the data the model trained on; all of other data).")
@opt.data_seed(None, "Seed of the split (default: the training run's, else 0).")
@click.option("--label", metavar="COLUMN",
              help="The CSV column holding the labels, by its header (default: the one the model trained on, else "
                   "as train chooses).")
@opt.batch_size(256)
@opt.model_output("The output to score (default: the one trained, else the scores beside a first output that is "
                  "the predicted label, else the first).")
@opt.device()
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
def eval_cmd(
    model: str, data_argument: tuple[str, ...], data: str | None, split: str | None, data_seed: int | None,
    label: str | None, batch_size: int, output: str | None, device: str, as_json: bool,
) -> None:
    """Evaluate MODEL.onnx on a dataset split: loss, accuracy, macro-F1, confusion matrix (R² for regression).

    \b
    Examples:
      onnxkit eval runs/digits/model.onnx
      onnxkit eval digits.onnx --data digits-images --split validation --json
    """
    from onnxkit.data.builtin import sklearn_scale_warning
    from onnxkit.evaluate import evaluate, named_split
    from onnxkit.files import load_model
    from onnxkit.runtime.session import parse_device, providers_for

    data = opt.given_data(data_argument, data)
    _model_first("eval", model, data)
    proto = load_model(model)
    chosen, data, seed = named_split(proto, split, data, data_seed, label=label)
    if warning := sklearn_scale_warning(data, proto):
        click.echo(warning, err=True)
    providers = providers_for(*parse_device(device))  # model by path: errors name the file
    metrics = evaluate(model, chosen, batch_size=batch_size, output=output, providers=providers)
    metrics.update(data=data, split=chosen.name, data_seed=seed)
    if as_json:
        click.echo(json.dumps(metrics, indent=2))
        return
    shown = "  ".join(f"{k} {metric(metrics[k])}" for k in ("accuracy", "macro_f1", "loss", "mae", "r2")
                      if metrics.get(k) is not None)
    click.echo(f"{data} {metrics['split']} split ({metrics['examples']} examples): {shown}")
    if "confusion" in metrics:
        click.echo(format_confusion(metrics["confusion"], metrics.get("labels")))
    if "per_label" in metrics:
        click.echo(format_labels(metrics))


def format_labels(metrics: dict) -> str:
    """A multi-label model's rows right in full, its mean F1 over labels, and a table of each label's figures."""
    width = max(5, *(len(e["label"]) for e in metrics["per_label"]))
    lines = [f"every label right in {metric(metrics['subset_accuracy'])} of rows; F1 averaged over labels "
             f"{metric(metrics['label_f1'])}", f"{'label':<{width}}  precision  recall      f1  support"]
    lines += [f"{e['label']:<{width}}  {e['precision']:9.4f}  {e['recall']:6.4f}  {e['f1']:6.4f}  {e['support']:7d}"
              for e in metrics["per_label"]]
    return "\n".join(lines)


def format_confusion(confusion: list[list[int]], names: list[str] | None) -> str:
    """The confusion matrix as a text table (rows: true class, columns: predicted)."""
    names = names or [str(i) for i in range(len(confusion))]
    label_width = max(len(n) for n in names)
    width = max(max(len(n) for n in names), *(len(str(v)) for row in confusion for v in row))
    header = " " * label_width + "  " + " ".join(f"{n[:width]:>{width}}" for n in names)
    rows = [
        f"{n:>{label_width}}  " + " ".join(f"{v:>{width}}" for v in row)
        for n, row in zip(names, confusion, strict=True)
    ]
    return "\n".join(["confusion matrix (rows: true class, columns: predicted)", header, *rows])
