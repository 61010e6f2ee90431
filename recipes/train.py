#!/usr/bin/env python3
"""Joint intent + emotion training: one wav2vec2 encoder, two heads.

    python recipes/train.py hparams/demo.yaml
    accelerate launch --config_file hparams/accelerate/multi_gpu.yaml \
        recipes/train.py hparams/train.yaml --train_manifests=... --valid_manifests=...

Rerunning the same command after an interruption resumes from the last checkpoint.
"""

import sys

import speechbrain as sb

from multitask.recipe import load_hparams, parse_arguments
from multitask.train import fit, make_accelerator, prepare_data, test

if __name__ == "__main__":
    # Arguments and hyperparameters, SpeechBrain style.
    hparams_file, overrides = parse_arguments(sys.argv[1:])
    hparams = load_hparams(hparams_file, overrides)

    # Accelerate owns device, data parallelism and precision.
    accelerator = make_accelerator(hparams)
    sb.create_experiment_directory(  # writes on the main process; every process must call it
        experiment_directory=hparams["output_folder"],
        hyperparams_to_save=hparams_file,
        overrides=overrides,
    )

    # Corpus folders -> manifests (main process), and a report of the data.
    prepare_data(hparams, accelerator)

    # Train (or resume), then score the best checkpoint on the test manifests.
    fit(hparams, accelerator)
    test(hparams, accelerator)
