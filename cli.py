"""The ``rnncore`` command line: one root group, one thin function per subcommand."""

import io
import json
import math
from pathlib import Path

import click

from rnncore._version import __version__


class FiniteFloatRange(click.FloatRange):
    """click.FloatRange that also refuses nan and inf (which compare False with any bound)."""

    def convert(self, value, param, ctx):
        value = super().convert(value, param, ctx)
        if not math.isfinite(value):
            self.fail(f"{value} is not a finite number.", param, ctx)
        return value


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, "--version", prog_name="rnncore", message="%(version)s",
                      help="Print the rnncore version and exit.")
def main():
    """Fast, verified recurrent neural networks on the CPU."""


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def info(as_json):
    """Versions, BLAS libraries, Numba threads and whether the kernel cache is warm."""
    from rnncore._info import gather_info

    report = gather_info()
    click.echo(json.dumps(report, indent=2) if as_json else _format_info(report))


def _format_info(report):
    lines = ["Versions"]
    lines += [f"  {name:<9} {version or 'not installed'}" for name, version in report["versions"].items()]

    lines += ["", "BLAS and OpenMP libraries (threadpoolctl)"]
    if not report["blas"]:
        lines.append("  none found")
    for lib in report["blas"]:
        arch = f"  architecture {lib['architecture']}" if lib["architecture"] else ""
        owner = f"  (shipped with {lib['shipped_with']})" if lib["shipped_with"] else ""
        version = f" {lib['version']}" if lib["version"] else ""
        lines.append(f"  {lib['user_api']}: {lib['internal_api']}{version}  "
                     f"threads {lib['num_threads']}{arch}  prefix {lib['prefix']}{owner}")
        lines.append(f"      {lib['filepath']}")
    lines.append("  (the kernels' np.dot calls BLAS through scipy.linalg.cython_blas)")

    nb = report["numba"]
    lines += ["", "Numba"]
    if nb["error"]:
        lines.append(f"  threads: unavailable ({nb['error']})")
    else:
        lines.append(f"  threads {nb['num_threads']}, threading layer {nb['threading_layer']} "
                     f"(requested: {nb['threading_layer_requested']})")

    lines += ["", "Environment"]
    env = [f"  {name}={value}" for name, value in report["env"].items()]
    lines += env or ["  (none of the relevant variables set)"]

    cache = report["numba_cache"]
    lines.append("")
    if cache["state"] == "disabled":
        lines.append("numba cache: disabled (RNNCORE_NUMBA_CACHE=0)")
    else:
        lines.append(f"numba cache: {cache['state']} ({cache['warm']}/{cache['total']} kernels have a fresh "
                     "cached index for this CPU)")
        lines += [f"  cache dir {path}" for path in cache["cache_dirs"]]
        lines += [f"  {name}: {state['status']}" for name, state in cache["kernels"].items()
                  if state["status"] != "warm"]
    return "\n".join(lines)


# -- training ------------------------------------------------------------------------------------
# Shared options of every `rnncore train <task>` command, defined once; each task passes its own
# defaults. A task command collects its options into a config dict and calls _run_task, which
# writes the run directory and calls the task registered in rnncore.train.runs.TASKS.
def train_options(**defaults):
    """The options every ``rnncore train`` subcommand takes; keyword arguments override defaults."""
    d = {"cell": "lstm", "hidden_size": 128, "embedding_dim": 64, "num_layers": 1, "dropout": 0.0,
         "optimizer": "adam", "lr": 2e-3, "weight_decay": 0.0, "momentum": 0.0, "clip": 5.0,
         "schedule": "constant",
         "warmup": 0, "batch_size": 32, "epochs": 1, "seed": 0, "dtype": "float32", "log_every": 10,
         "valid_fraction": 0.05, "blas_threads": 1, **defaults}

    def decorate(f):
        options = [
            click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
                         help="Run directory (config.json, metrics.jsonl, curve.png, checkpoint/). "
                              "[default: runs/<task>, or runs/<task>-2, ... if taken]"),
            click.option("--overwrite", is_flag=True, help="Replace a run already in --out."),
            click.option("--resume", type=click.Path(exists=True, file_okay=False, path_type=Path),
                         default=None,
                         help="Continue the run in this directory (its config; --epochs/--max-steps may "
                              "extend it); the losses match an uninterrupted run."),
            click.option("--cell", type=click.Choice(["rnn", "rnn_relu", "lstm", "gru", "lstm_ln", "gru_ln"]),
                         default=d["cell"], help="Recurrent cell (rnn = Elman tanh; *_ln layer-normalised)."),
            click.option("--hidden-size", type=click.IntRange(min=1), default=d["hidden_size"]),
            click.option("--embedding-dim", type=click.IntRange(min=0), default=d["embedding_dim"],
                         help="Token embedding size; 0 feeds one-hot vectors."),
            click.option("--layers", "num_layers", type=click.IntRange(min=1), default=d["num_layers"]),
            click.option("--dropout", type=FiniteFloatRange(0, 1, max_open=True), default=d["dropout"]),
            click.option("--optimizer", type=click.Choice(["sgd", "adam", "adamw", "adagrad", "rmsprop"]),
                         default=d["optimizer"]),
            click.option("--lr", type=FiniteFloatRange(min=0, min_open=True), default=d["lr"],
                         help="Learning rate."),
            click.option("--weight-decay", type=FiniteFloatRange(min=0), default=d["weight_decay"]),
            click.option("--momentum", type=FiniteFloatRange(0, 1, max_open=True), default=d["momentum"],
                         help="SGD / RMSprop momentum."),
            click.option("--nesterov", is_flag=True, help="Nesterov momentum (SGD)."),
            click.option("--clip", type=FiniteFloatRange(min=0), default=d["clip"],
                         help="Clip gradients to this global norm (0: off)."),
            click.option("--clip-value", type=FiniteFloatRange(min=0), default=0.0,
                         help="Clip each gradient element to [-v, v] (0: off)."),
            click.option("--schedule", type=click.Choice(["constant", "step", "cosine"]),
                         default=d["schedule"], help="Learning-rate schedule."),
            click.option("--warmup", type=click.IntRange(min=0), default=d["warmup"],
                         help="Linear warm-up steps."),
            click.option("--step-size", type=click.IntRange(min=1), default=None,
                         help="Steps between decays of the step schedule [default: a third of the run]."),
            click.option("--gamma", type=FiniteFloatRange(min=0, min_open=True), default=0.5,
                         help="Decay factor of the step schedule."),
            click.option("--batch-size", type=click.IntRange(min=1), default=d["batch_size"]),
            click.option("--epochs", type=click.IntRange(min=1), default=d["epochs"]),
            click.option("--max-steps", type=click.IntRange(min=1), default=None,
                         help="Stop after this many updates."),
            click.option("--valid-fraction", type=FiniteFloatRange(0, 0.5, min_open=True),
                         default=d["valid_fraction"],
                         help="Fraction of the data held out for validation."),
            click.option("--seed", type=int, default=d["seed"]),
            click.option("--dtype", type=click.Choice(["float32", "float64"]), default=d["dtype"]),
            click.option("--tokenizer", type=click.Choice(["char", "word"]), default="char"),
            click.option("--lower", is_flag=True, help="Lower-case text before tokenising."),
            click.option("--min-freq", type=click.IntRange(min=1), default=1,
                         help="Vocabulary: minimum count."),
            click.option("--max-vocab", type=click.IntRange(min=1), default=None,
                         help="Vocabulary: maximum size."),
            click.option("--log-every", type=click.IntRange(min=1), default=d["log_every"],
                         help="Steps between metrics records."),
            click.option("--checkpoint-every", type=click.IntRange(min=1), default=None,
                         help="Also checkpoint every this many steps (always after each epoch)."),
            click.option("--diagnose-every", type=click.IntRange(min=0), default=0,
                         help="Every N steps, record W_hh spectra, gate saturation and per-step gradient "
                              "norms of the step's batch in diagnostics.jsonl (0: off; see 'rnncore "
                              "diagnose')."),
            click.option("--blas-threads", type=click.IntRange(min=0), default=d["blas_threads"],
                         help="BLAS threads while training (0: leave the library default)."),
            click.option("--quiet", is_flag=True, help="No progress lines."),
            click.option("--dry-run", is_flag=True, help="Print the resolved config and exit."),
            click.pass_context,
        ]
        for option in reversed(options):
            f = option(f)
        return f
    return decorate


def _next_run_dir(base):
    """``base``, or ``base-2``, ``base-3``, ... when it already holds a run (default --out only)."""
    candidate, n = base, 1
    while (candidate / "metrics.jsonl").exists() or (candidate / "checkpoint").exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


def _run_task(ctx, task, options):
    """Resolve the config (from --resume's run directory, or the options), write it, run the task."""
    from rnncore.train.runs import TASKS, read_run_config, start_run

    options = dict(options)
    dry_run, overwrite = options.pop("dry_run"), options.pop("overwrite")
    if options["resume"] is not None:
        run_dir = options["resume"]
        try:
            config = read_run_config(run_dir)
        except (FileNotFoundError, ValueError) as err:
            raise click.ClickException(f"--resume: {err}") from None
        if config.get("task") != task:
            raise click.ClickException(f"--resume: {run_dir} is a 'train {config.get('task')}' run, "
                                       f"not '{task}'")
        known = {p.name for p in ctx.command.params} | {"task", "out", "resume"}
        unknown = sorted(set(config) - known)
        if unknown:
            raise click.ClickException(f"--resume: {run_dir}/config.json has unknown keys {unknown} "
                                       f"(not options of 'rnncore train {task}')")
        for name in ("epochs", "max_steps", "quiet", "blas_threads", "diagnose_every"):
            if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE:
                config[name] = options[name]
        config.update(resume=str(run_dir), out=str(run_dir))
    else:
        config = {k: (str(v) if isinstance(v, Path) else v) for k, v in options.items()}
        config["out"] = str(config["out"] or _next_run_dir(Path("runs") / task))
        config["task"] = task
        config["clip"] = config["clip"] or None
        config["clip_value"] = config["clip_value"] or None
    if dry_run:
        click.echo(json.dumps(config, indent=2, sort_keys=True))
        return
    try:
        start_run(config, overwrite=overwrite)
        TASKS[task]["run"](config, echo=click.echo)
    except (FileExistsError, FileNotFoundError, ValueError, ImportError, FloatingPointError) as err:
        raise click.ClickException(str(err)) from None


@main.group()
def train():
    """Train a task model; each run writes a run directory (see --out)."""


@train.command("lm")
@click.option("--text", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Any UTF-8 text file [default: the built-in corpus, CPython's pydoc topics].")
@click.option("--lines", is_flag=True, help="Each line is a separate sequence (<bos> ... <eos>), e.g. names.")
@click.option("--max-chars", type=click.IntRange(min=1), default=None,
              help="Use only the first N characters.")
@click.option("--bptt", type=click.IntRange(min=1), default=64,
              help="Truncated-BPTT length (steps per chunk).")
@click.option("--prime", default=None,
              help="Text the samples start from [default: 'The ', or <bos> with --lines].")
@click.option("--sample-length", type=click.IntRange(min=1), default=200, help="Tokens per printed sample.")
@click.option("--sample-every", type=click.IntRange(min=0), default=100,
              help="Print a sample every N steps (0: at the end only).")
@click.option("--temperature", type=FiniteFloatRange(min=0), default=0.7,
              help="Sampling temperature of the samples.")
@click.option("--top-k", type=click.IntRange(min=1), default=None,
              help="Sample among the k most likely tokens.")
@train_options(hidden_size=256, embedding_dim=32, lr=3e-3, batch_size=32)
def train_lm(ctx, **options):
    """Language model (char or word level) on a text file or the built-in corpus; prints samples."""
    _run_task(ctx, "lm", options)


@train.command("classify")
@click.option("--data", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="A UTF-8 file of 'label<TAB>text' lines.")
@click.option("--dataset", type=click.Choice(["names-gender", "digits"]), default=None,
              help="Built-in data: first-name gender (US census, 'names' package) or scikit-learn digits "
                   "read row by row. [default: names-gender without --data]")
@click.option("--bidirectional", is_flag=True, help="Read each sequence in both directions.")
@click.option("--merge", type=click.Choice(["concat", "sum", "product"]), default="concat",
              help="How the two directions' states are merged.")
@train_options(hidden_size=64, embedding_dim=16, lr=5e-3, epochs=5, valid_fraction=0.1)
def train_classify(ctx, **options):
    """Sequence classifier (many-to-one): the state at each sequence's last step into a linear head."""
    if options["data"] is None and options["dataset"] is None:
        options["dataset"] = "names-gender"
    _run_task(ctx, "classify", options)


@train.command("tag")
@click.option("--data", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="A UTF-8 file of 'text<TAB>tags' lines: tags whitespace-separated, one per token, or one "
                   "character per tag. [default: built-in hyphenation data]")
@click.option("--max-examples", type=click.IntRange(min=10), default=None,
              help="Built-in data: words sampled from CMUdict [default: 24000].")
@click.option("--bidirectional/--unidirectional", default=True, help="Read each sequence in both directions.")
@click.option("--merge", type=click.Choice(["concat", "sum", "product"]), default="concat",
              help="How the two directions' outputs are merged.")
@train_options(hidden_size=64, embedding_dim=24, lr=5e-3, batch_size=64, epochs=3, valid_fraction=0.1)
def train_tag(ctx, **options):
    """Sequence tagger (many-to-many): a tag per token; built-in: hyphenation points per character
    (pyphen's patterns on CMUdict words)."""
    import rnncore.models.sequence_tasks  # noqa: F401  (registers the task)

    _run_task(ctx, "tag", options)


@train.command("seq2seq")
@click.option("--data", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="A UTF-8 file of 'source<TAB>target' lines.")
@click.option("--dataset", type=click.Choice(["numbers-fr", "numbers-en", "g2p"]), default=None,
              help="Built-in data: numbers in digits -> French or English words (num2words), or English "
                   "words -> phonemes (CMUdict). [default: numbers-fr without --data]")
@click.option("--max-examples", type=click.IntRange(min=10), default=None,
              help="Built-in data: examples drawn [default: 20000].")
@click.option("--target-tokenizer", type=click.Choice(["char", "word"]), default="word",
              help="How targets are tokenised (--tokenizer applies to sources).")
@click.option("--bidirectional", is_flag=True, help="Bidirectional encoder.")
@click.option("--merge", type=click.Choice(["concat", "sum", "product"]), default="sum",
              help="How a bidirectional encoder's final states are merged into the decoder's initial state.")
@click.option("--beam", type=click.IntRange(min=1), default=4, help="Beam size of the final test decoding.")
@click.option("--decode-examples", type=click.IntRange(min=1), default=500,
              help="Test sources decoded for the exact-match score.")
@train_options(hidden_size=128, embedding_dim=32, lr=5e-3, batch_size=64, epochs=3, valid_fraction=0.05)
def train_seq2seq(ctx, **options):
    """Encoder-decoder (seq2seq): teacher-forced training; greedy and beam-search decoding of the test part."""
    import rnncore.models.sequence_tasks  # noqa: F401  (registers the task)

    if options["data"] is None and options["dataset"] is None:
        options["dataset"] = "numbers-fr"
    _run_task(ctx, "seq2seq", options)


def _load_task_model(run_dir):
    from rnncore.train.checkpoint import load_model
    from rnncore.train.runs import find_checkpoint

    try:
        return load_model(find_checkpoint(run_dir))
    except (FileNotFoundError, ValueError) as err:
        raise click.ClickException(str(err)) from None


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--prime", default="", help="Text to continue [default: <bos> for line models, else 'The ']")
@click.option("--length", type=click.IntRange(min=1), default=200, help="Tokens to generate.")
@click.option("--temperature", type=FiniteFloatRange(min=0), default=0.8, help="0: greedy.")
@click.option("--top-k", type=click.IntRange(min=1), default=None)
@click.option("--num-samples", "-n", type=click.IntRange(min=1), default=1)
@click.option("--seed", type=int, default=0)
def generate(run_dir, prime, length, temperature, top_k, num_samples, seed):
    """Sample text from a trained language model."""
    model = _load_task_model(run_dir)
    if not hasattr(model, "generate"):
        raise click.ClickException(f"{run_dir} holds a {type(model).__name__}, which does not generate text")
    if not prime and not model.config.get("bos_eos"):
        prime = "The " if model.config.get("tokenizer") == "char" else "the"
    try:
        texts = model.generate(prime, length, temperature, top_k, seed=seed, num_samples=num_samples)
    except ValueError as err:
        raise click.ClickException(str(err)) from None
    for text in texts:
        click.echo(text)


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--data", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="A data file in the task's format [default: the run's own held-out split].")
@click.option("--split", type=click.Choice(["valid", "test"]), default="test",
              help="Without --data: which held-out split of the run.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32)
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
def evaluate(run_dir, data, split, batch_size, as_json):
    """Metrics of a trained model (perplexity, accuracy, ...) on a data file or its run's held-out data."""
    from rnncore.train.loop import evaluate_source
    from rnncore.train.runs import TASKS, read_run_config

    model = _load_task_model(run_dir)
    try:
        if data is not None:
            source = model.read_eval_data(data, batch_size=batch_size)
        else:
            config = read_run_config(run_dir)
            task = TASKS.get(config.get("task"))
            if task is None or task["data"] is None:
                raise click.ClickException("--data is needed: the run's task has no built-in held-out data")
            valid, test = task["data"](config, model)
            source = test if split == "test" else valid
        metrics = evaluate_source(model, source)
    except (FileNotFoundError, ValueError, KeyError, NotImplementedError, ImportError) as err:
        raise click.ClickException(str(err)) from None
    if as_json:
        click.echo(json.dumps(metrics, indent=2))
    else:
        for key, value in metrics.items():
            click.echo(f"{key:<16} {value:.6g}" if isinstance(value, float) else f"{key:<16} {value}")


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--input", "input_file", type=click.File("rb"), default="-",
              help="UTF-8 lines to predict for [default: standard input].")
@click.option("--length", type=click.IntRange(min=1), default=50,
              help="Language models: tokens to add per line.")
@click.option("--temperature", type=FiniteFloatRange(min=0), default=0.0,
              help="Language models: 0 is greedy.")
def predict(run_dir, input_file, length, temperature):
    """One prediction per input line: a class with its probability, tags, a translation or a continuation."""
    from rnncore.data.tokenize import decode_utf8

    model = _load_task_model(run_dir)
    try:
        text = decode_utf8(input_file.read(), getattr(input_file, "name", "--input"))
    except ValueError as err:
        raise click.ClickException(f"--input: {err}") from None
    lines = [line.rstrip("\n") for line in io.StringIO(text, newline=None)]  # as a text-mode file reads
    options = {"length": length, "temperature": temperature} if hasattr(model, "generate") else {}
    try:
        outputs = model.predict_lines(lines, **options)
    except (ValueError, KeyError, NotImplementedError) as err:
        raise click.ClickException(str(err)) from None
    for out in outputs:
        click.echo(out)


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--onnx", "onnx_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the model as an ONNX graph (language models, classifiers, taggers).")
@click.option("--safetensors", "st_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the weights (torch.nn names) with the config in the metadata, as one file.")
@click.option("--opset", type=click.IntRange(14, 22), default=14, help="ONNX opset.")
@click.option("--lengths/--no-lengths", default=None,
              help="ONNX: a 'lengths' input for variable-length batches [default: yes, except for "
                   "language models].")
def export(run_dir, onnx_path, st_path, opset, lengths):
    """Export a trained model: ONNX (runs in onnxruntime) and/or a single safetensors file."""
    from rnncore import io

    if onnx_path is None and st_path is None:
        raise click.ClickException("give --onnx PATH and/or --safetensors PATH")
    model = _load_task_model(run_dir)
    try:
        if onnx_path is not None:
            io.to_onnx(model, onnx_path, lengths=lengths, opset=opset)
            click.echo(f"wrote {onnx_path}")
        if st_path is not None:
            io.save(model, st_path)
            click.echo(f"wrote {st_path}")
    except (TypeError, ValueError, ImportError, OSError) as err:
        raise click.ClickException(str(err)) from None


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Directory for the plots, diagnostics.json and report.md/.html "
                   "[default: RUN_DIR/diagnostics].")
@click.option("--steps", type=click.IntRange(min=2), default=100,
              help="Steps T over which ||dh_T/ds_t|| is followed back (running text: consecutive chunks).")
@click.option("--sequences", type=click.IntRange(min=1), default=4,
              help="Sequences whose Jacobians are computed (each costs a backward pass over H rows).")
@click.option("--split", type=click.Choice(["valid", "test"]), default="valid",
              help="Which held-out split of the run to read.")
def diagnose(run_dir, out, steps, sequences, split):
    """Gradient-flow diagnostics of a trained run: per-step gradient and Jacobian norms, W_hh spectra,
    gate saturation, the training's gradient norms and clip events, and a verdict; plots and a report."""
    from rnncore.diagnostics.report import diagnose_run

    try:
        diagnose_run(run_dir, out, steps=steps, sequences=sequences, split=split, echo=click.echo)
    except (FileNotFoundError, ValueError, KeyError, ImportError, RuntimeError) as err:
        raise click.ClickException(str(err)) from None


@main.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/verify"),
              help="Directory for report.html, report.md, results.json and the plots.")
@click.option("--quick", is_flag=True, help="Smaller networks, fewer points and seeds (what the tests run).")
@click.option("--only", multiple=True, metavar="NAME", help="Run only this derivation (repeatable): "
              "cells, lstm_variants, local, softmax, scalar, bptt, autoencoder, init, layer_norm, regularisers.")
def verify(out, quick, only):
    """Check the kernels against SymPy's reference gradients and the classic results; write a report.

    Prints progress and a summary table; exits with status 1 if any check fails."""
    from derivations.runner import run_verification

    try:
        result = run_verification(out, quick=quick, only=only, echo=click.echo)
    except ValueError as err:
        raise click.ClickException(f"--only: {err}") from None
    except ImportError as err:
        raise click.ClickException(str(err)) from None
    click.echo(result.summary_table())
    if not result.passed:
        raise click.exceptions.Exit(1)


if __name__ == "__main__":
    main()
