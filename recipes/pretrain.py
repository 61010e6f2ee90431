#!/usr/bin/env python3
"""Self-supervised pretraining of the demo encoder on unlabelled synthetic speech.

    python recipes/pretrain.py hparams/pretrain.yaml [--key=value ...]

Generates and prepares the demo corpus if needed (the same corpus, seed and splits
as ``make demo``), then trains a wav2vec2 encoder by masked prediction of MFCC
clusters on the training audio (see :mod:`multitask.pretrain`) and writes it to
``encoder_out``. Rerunning the command after an interruption resumes.
"""

import os
import sys

import speechbrain as sb

from multitask.pretrain import pretrain
from multitask.recipe import load_hparams, parse_arguments
from multitask.synth import generate
from multitask.train import make_accelerator, prepare_data

if __name__ == "__main__":
    hparams_file, overrides = parse_arguments(sys.argv[1:])
    hparams = load_hparams(hparams_file, overrides)
    accelerator = make_accelerator(hparams)
    if accelerator.is_main_process and not os.path.isfile(
            os.path.join(hparams["synth_folder"], "DATASHEET.md")):
        generate(hparams["synth_folder"], size=hparams["synth_size"], seed=hparams["corpus_seed"])
    accelerator.wait_for_everyone()
    sb.create_experiment_directory(hparams["output_folder"], hyperparams_to_save=hparams_file,
                                   overrides=overrides)
    prepare_data(hparams, accelerator)
    pretrain(hparams, accelerator)
    accelerator.print(f"pretrained encoder: {hparams['encoder_out']}")
