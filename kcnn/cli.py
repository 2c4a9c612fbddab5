"""The `kcnn` command: parses arguments, then calls the library.

The library is imported inside the commands, not at the top: `TF_CPP_MIN_LOG_LEVEL` must be set
before TensorFlow loads, and `kcnn --help` answers without loading it."""

import argparse
import json
import os
import sys
from pathlib import Path

# kcnn.viz.METHODS, spelled out because the library is imported only inside the commands
# (tests/test_cli.py keeps the two equal).
EXPLAIN_METHODS = (
    "saliency",
    "smoothgrad",
    "occlusion",
    "gradcam",
    "guided",
    "guided_gradcam",
    "deconvnet",
)
# kcnn.export.options.QUANTIZATIONS, spelled out for the same reason (tests/test_cli.py).
QUANTIZATIONS = ("none", "fp16", "dynamic", "int8", "int16x8")

# Exit status after Ctrl-C, as a shell reports a process ended by SIGINT (128 + 2).
INTERRUPTED = 130

USAGE_EXAMPLES = """examples:
  kcnn train configs/fashion_mnist.yaml
  kcnn train configs/digits.yaml --override train.epochs=3 --override data.batch_size=64
  kcnn evaluate runs/fashion_mnist
  kcnn export runs/fashion_mnist --quantization none fp16 dynamic int8
  kcnn analyze configs/fashion_mnist.yaml
  kcnn tune configs/tune_fashion.yaml --workers 2
  kcnn explain runs/fashion_mnist --image shirt.png --method gradcam --output gradcam.png
"""


def _add_override_argument(parser, example):
    parser.add_argument(
        "--override",
        "-o",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"replace one config value, e.g. {example} (repeatable)",
    )


def _parser():
    parser = argparse.ArgumentParser(
        prog="kcnn",
        description="Train, evaluate, export and analyse Keras CNNs.",
        epilog=USAGE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train, evaluate, plot and export an experiment")
    train.add_argument("config", help="YAML experiment file (see configs/)")
    _add_override_argument(train, "train.epochs=3")
    train.add_argument("--run-dir", help="run folder (default: runs/<name>, never overwritten)")
    train.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="train with MultiWorkerMirroredStrategy on N local worker processes (TF_CONFIG "
        "is set for each; worker 0 writes the run folder)",
    )

    tune = commands.add_parser(
        "tune",
        help="architecture search: Optuna trials of `kcnn train` over the config's `tune` "
        "block; trials.csv, Pareto plot, the front's configs",
    )
    tune.add_argument("config", help="YAML experiment file with a `tune` block")
    _add_override_argument(tune, "tune.n_trials=40")
    tune.add_argument(
        "--run-dir", help="study folder (default: runs/<name>; the same command resumes it)"
    )
    tune.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="run N local worker processes on the study (trials are shared, never repeated)",
    )

    evaluate = commands.add_parser("evaluate", help="evaluate a finished run on its test split")
    evaluate.add_argument("run", help="run folder")

    export = commands.add_parser(
        "export",
        help="export a finished run to SavedModel/TFLite and check each file against Keras",
    )
    export.add_argument("run", help="run folder")
    export.add_argument(
        "--quantization",
        nargs="+",
        choices=list(QUANTIZATIONS),
        help="TFLite modes, one file each (default: the run's export.quantization)",
    )
    export.add_argument(
        "--int8-io",
        action="store_true",
        default=None,
        help="int8 file with int8 input and output tensors (full-integer model)",
    )
    export.add_argument(
        "--allow-flex",
        action="store_true",
        default=None,
        help="allow TensorFlow (Flex) ops that the stock LiteRT interpreter lacks",
    )

    analyze = commands.add_parser(
        "analyze", help="per-layer params, MACs, receptive field of a config's model or a run"
    )
    analyze.add_argument("target", help="YAML experiment file or run folder")

    explain = commands.add_parser(
        "explain", help="draw what a trained classifier looks at in an image (PNG)"
    )
    explain.add_argument("run", help="run folder")
    explain.add_argument("--image", required=True, help="PNG or JPEG file")
    explain.add_argument(
        "--method",
        choices=EXPLAIN_METHODS,
        required=True,
    )
    explain.add_argument("--output", required=True, help="PNG file to write")
    explain.add_argument(
        "--class-index", type=int, help="class to explain (default: the predicted class)"
    )
    explain.add_argument(
        "--layer",
        help="Grad-CAM layer of gradcam and guided_gradcam (default: the last conv layer)",
    )
    return parser


def _analyze(target):
    from kcnn.analysis import analyze
    from kcnn.training import build_model, load_config, load_data, load_run

    if Path(target).is_dir():
        _, model = load_run(target)
    else:
        config = load_config(target)
        dataset = load_data(config.data, seed=config.runtime.seed, task=config.task)
        model = build_model(config, dataset.x_train.shape[1:], len(dataset.class_names))
    print(analyze(model).to_table())


def _tune(arguments):
    from kcnn.training import load_config
    from kcnn.tuning import tune, tune_with_workers

    config = load_config(arguments.config, arguments.override)
    if arguments.workers is not None and arguments.workers != 1:
        forwarded = ["tune", arguments.config]
        for override in arguments.override:
            forwarded += ["--override", override]
        code, study_dir = tune_with_workers(
            config, forwarded, arguments.workers, run_dir=arguments.run_dir
        )
    else:
        code, study_dir = 0, tune(config, run_dir=arguments.run_dir)
    print(f"study folder: {study_dir}")
    return code


def main(argv=None):
    arguments = _parser().parse_args(argv)
    # TensorFlow's C++ start-up INFO/WARNING lines bury the progress bar; errors still show.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from kcnn.export import ExportError, ExportParityError
    from kcnn.training.checkpoint import TrainingDivergedError, TrainingInterruptedError
    from kcnn.training.distribute import is_chief

    try:
        if arguments.command == "train" and arguments.workers is not None:
            from kcnn.training import load_config
            from kcnn.training.distribute import launch_workers

            load_config(arguments.config, arguments.override)  # fail early, in one process
            forwarded = ["train", arguments.config]
            for override in arguments.override:
                forwarded += ["--override", override]
            if arguments.run_dir:
                forwarded += ["--run-dir", arguments.run_dir]
            return launch_workers(forwarded, arguments.workers)
        if arguments.command == "train":
            from kcnn.training import load_config, train

            config = load_config(arguments.config, arguments.override)
            run_dir = train(config, run_dir=arguments.run_dir)
            if is_chief():
                print(f"run folder: {run_dir}")
        elif arguments.command == "tune":
            return _tune(arguments)
        elif arguments.command == "evaluate":
            from kcnn.training import evaluate

            print(json.dumps(evaluate(arguments.run), indent=2))
        elif arguments.command == "export":
            from kcnn.training import export

            report = export(
                arguments.run,
                arguments.quantization,
                allow_flex=arguments.allow_flex,
                int8_io=arguments.int8_io,
            )
            print(json.dumps(report, indent=2))
        elif arguments.command == "analyze":
            _analyze(arguments.target)
        elif arguments.command == "explain":
            if Path(arguments.output).is_dir():
                raise ValueError(
                    f"`--output` {arguments.output} is a folder; give the PNG file to write, "
                    f"e.g. {Path(arguments.output) / 'explanation.png'}"
                )
            from kcnn.training.explain_run import explain_run

            path = explain_run(
                arguments.run,
                arguments.image,
                arguments.method,
                arguments.output,
                class_index=arguments.class_index,
                layer_name=arguments.layer,
            )
            print(path)
    except (FileNotFoundError, ValueError) as error:
        print(f"kcnn {arguments.command}: error: {error}", file=sys.stderr)
        return 2
    except TrainingInterruptedError as error:
        print(f"kcnn {arguments.command}: {error}", file=sys.stderr)
        return INTERRUPTED
    except KeyboardInterrupt:
        print(f"kcnn {arguments.command}: interrupted.", file=sys.stderr)
        return INTERRUPTED
    except TrainingDivergedError as error:
        print(f"kcnn {arguments.command}: error: {error}", file=sys.stderr)
        return 1
    except ExportError as error:
        print(f"kcnn {arguments.command}: export failed: {error}", file=sys.stderr)
        return 1
    except ExportParityError as error:
        print(f"kcnn {arguments.command}: export failed the parity check: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
