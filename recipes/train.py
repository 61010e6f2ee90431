#!/usr/bin/env python3
"""Joint intent + emotion training: one wav2vec2 encoder, two heads.

    python recipes/train.py hparams/demo.yaml
    accelerate launch --config_file hparams/accelerate/multi_gpu.yaml \
        recipes/train.py hparams/train.yaml --train_manifests=... --valid_manifests=...

Rerunning the same command after an interruption resumes from the last checkpoint.
At the end, the best checkpoint is exported to ``export_folder`` (a folder that
``MultitaskClassifier.from_hparams`` loads and ``multitask push`` uploads).
"""

import sys

import speechbrain as sb

from multitask.class_bias import calibrate, check_calls
from multitask.export import export_model
from multitask.recipe import (
    check_before_training,
    input_errors_as_exit,
    load_hparams,
    parse_arguments,
    training_run,
)
from multitask.train import fit, make_accelerator, prepare_data, test

if __name__ == "__main__":
    # Arguments and hyperparameters, SpeechBrain style.
    hparams_file, overrides = parse_arguments(sys.argv[1:])
    hparams = load_hparams(hparams_file, overrides)
    check_before_training(hparams, hparams_file, hparams.get("export_folder"))

    # Accelerate owns device, data parallelism and precision.
    accelerator = make_accelerator(hparams)
    # A rerun refused as another run (other data, seed or architecture) puts the run's
    # hyperparams.yaml and label files back as they were: they describe its checkpoints.
    with training_run(hparams, accelerator) as training_started:
        sb.create_experiment_directory(  # writes on the main process; every process must call it
            experiment_directory=hparams["output_folder"],
            hyperparams_to_save=hparams_file,
            overrides=overrides,
        )

        # Corpus folders -> manifests (main process), and a report of the data.
        prepare_data(hparams, accelerator)

        # Train (or resume); per-class biases from held-out calls if the hparams name them
        # (class_bias_tasks); then score the best checkpoint on the test manifests.
        check_calls(hparams)  # before training, not after it
        fit(hparams, accelerator, on_start=training_started)
    with input_errors_as_exit():  # ClassBiasError, ManifestError, ... as one line
        calibrate(hparams, accelerator)
        test(hparams, accelerator)

    # The best checkpoint as one loadable model folder (see multitask export / push).
    if accelerator.is_main_process and hparams.get("export_folder"):
        export_model(hparams["output_folder"], hparams["export_folder"], overwrite=True)
