#!/usr/bin/env python3
"""Self-supervised pretraining of the demo encoder on unlabelled synthetic speech.

    python recipes/pretrain.py hparams/pretrain.yaml [--key=value ...]

Generates and prepares the demo corpus if needed (the same corpus, seed and splits
as ``make demo``), then trains a wav2vec2 encoder by masked prediction of MFCC
clusters on the training audio (see :mod:`multitask.pretrain`) and writes it to
``encoder_out``. Rerunning the command after an interruption resumes.

With ``call_audio: true`` it also generates call audio spoken by the training
timbres (``multitask synth --domain calls``) and reads it without labels; with
``init_encoder`` it continues from an encoder instead of random weights.
"""

import os
import sys

import speechbrain as sb

from multitask.model import EncoderSourceError, check_encoder_source
from multitask.pretrain import pretrain
from multitask.recipe import check_output_folder, load_hparams, parse_arguments, training_run
from multitask.synth import generate
from multitask.synth.corpus import check_speakers, ensure_banking_corpus, manifest_timbres
from multitask.train import earlier_data_report, make_accelerator, prepare_data

if __name__ == "__main__":
    hparams_file, overrides = parse_arguments(sys.argv[1:])
    hparams = load_hparams(hparams_file, overrides)
    check_output_folder(hparams["output_folder"])
    try:  # before the corpus is generated
        check_encoder_source(hparams["encoder_config"], "encoder_config")
    except EncoderSourceError as err:
        raise SystemExit(str(err)) from None
    accelerator = make_accelerator(hparams)
    try:  # generated once; one found on disk must be this seed's, size's and version's
        ensure_banking_corpus(hparams["synth_folder"], hparams["synth_size"], hparams["corpus_seed"],
                              accelerator.is_main_process, accelerator.wait_for_everyone)
    except ValueError as err:
        raise SystemExit(str(err)) from None
    # A rerun refused as another run (other seed, clusters or targets) puts the run's
    # hyperparams.yaml, data report and frame targets back as they were: they describe
    # its checkpoints.
    targets_file = os.path.relpath(os.path.join(hparams["save_folder"], "frame_targets.pt"),
                                   hparams["output_folder"])
    settings_files = ["hyperparams.yaml", targets_file,
                      *earlier_data_report(hparams["output_folder"], hparams["save_folder"])]
    with training_run(hparams, accelerator, settings_files) as started:
        sb.create_experiment_directory(hparams["output_folder"], hyperparams_to_save=hparams_file,
                                       overrides=overrides)
        prepare_data(hparams, accelerator)
        unlabelled = []
        if hparams.get("call_audio"):
            calls = os.path.join(hparams["synth_folder"], "calls", "calls.csv")
            if accelerator.is_main_process:
                timbres = manifest_timbres(hparams["train_manifests"],
                                           os.path.join(hparams["synth_folder"], "speakers.json"))
                if not os.path.isfile(calls):
                    generate(hparams["synth_folder"], size=hparams["synth_size"],
                             seed=hparams["corpus_seed"], domain="calls", variants=timbres)
                check_speakers(calls, timbres)
            accelerator.wait_for_everyone()
            unlabelled.append(calls)
        pretrain(hparams, accelerator, unlabelled, on_start=started)
    accelerator.print(f"pretrained encoder: {hparams['encoder_out']}")
