#!/usr/bin/env python3
"""The whole product on one CPU machine with no network (`make demo`).

    python recipes/demo.py hparams/demo.yaml [--key=value ...]

1. generate the synthetic banking-IVR corpus (Skit-S2I and CREMA-D layouts + joint test);
2. prepare it with the real Skit-S2I and CREMA-D preparers;
3. train jointly; if asked (``class_bias_tasks``, off by default), fit per-class biases
   for the emotion head on held-out calls spoken by the validation splits' voices; score
   the best checkpoint on the joint IVR test and each corpus's test;
4. export the model folder, reload it with ``from_hparams`` in a new offline process,
   and predict a few files;
5. train and score the feature baseline on the same splits;
6. write ``results/demo/metrics.json``, ``report.md`` and print the results table.
"""

import json
import os
import subprocess
import sys
import time

import speechbrain as sb

from multitask.baseline import run_baseline
from multitask.class_bias import calibrate, check_calls
from multitask.demo import class_bias_summary, demo_metrics, write_json, write_report
from multitask.export import export_model
from multitask.host import machine, matmul_gflops
from multitask.manifest import read_manifest
from multitask.pretrain import check_corpus_seed
from multitask.recipe import (
    check_before_training,
    input_errors_as_exit,
    load_hparams,
    parse_arguments,
    training_run,
)
from multitask.synth import generate
from multitask.synth.corpus import ensure_banking_corpus, manifest_timbres
from multitask.train import fit, make_accelerator, prepare_data, test

if __name__ == "__main__":
    started = time.time()
    hparams_file, overrides = parse_arguments(sys.argv[1:])
    hparams = load_hparams(hparams_file, overrides)
    # The machine's speed, so that the wall times below can be compared across hosts.
    host = {**machine(), "matmul_gflops_at_start": round(matmul_gflops(), 1)}
    demo_folder = hparams["demo_folder"]
    model_dir = os.path.join(demo_folder, "model")
    check_before_training(hparams, hparams_file, model_dir)

    # 1-2. Corpus, then manifests from the real preparers.
    try:
        check_corpus_seed(hparams["encoder_source"], hparams["corpus_seed"])
    except ValueError as err:
        raise SystemExit(str(err)) from None
    accelerator = make_accelerator(hparams)
    try:  # generated once; one found on disk must be this seed's, size's and version's
        ensure_banking_corpus(hparams["synth_folder"], hparams["synth_size"], hparams["corpus_seed"],
                              accelerator.is_main_process, accelerator.wait_for_everyone)
    except ValueError as err:
        raise SystemExit(str(err)) from None
    # A rerun refused as another run (other data, seed or architecture) puts the run's
    # hyperparams.yaml and label files back as they were: they describe its checkpoints.
    with training_run(hparams, accelerator) as training_started:
        sb.create_experiment_directory(hparams["output_folder"], hyperparams_to_save=hparams_file,
                                       overrides=overrides)
        prepare_data(hparams, accelerator)

        # Held-out calls for the class biases: banking queries with a caller's emotion through
        # the telephone line, by the voices of the validation splits (no training, test or
        # joint-test voice); seconds to make.
        own_calls = os.path.join(hparams["synth_folder"], "calls", "calls.csv")
        given_calls = os.path.normpath(str(hparams.get("class_bias_calls")))
        if (hparams.get("class_bias_tasks") and given_calls == os.path.normpath(own_calls)
                and not os.path.isfile(own_calls)):
            if accelerator.is_main_process:
                timbres = manifest_timbres(hparams["valid_manifests"],
                                           os.path.join(hparams["synth_folder"], "speakers.json"))
                generate(hparams["synth_folder"], size=hparams["synth_size"], domain="calls",
                         variants=timbres, seed=hparams["corpus_seed"])
            accelerator.wait_for_everyone()
        check_calls(hparams)  # before training, not after it

        # 3. Joint training, the class biases, testing.
        train_start = time.time()
        fit(hparams, accelerator, on_start=training_started)
    train_seconds = time.time() - train_start
    with input_errors_as_exit():  # ClassBiasError, ManifestError, ... as one line
        class_bias = calibrate(hparams, accelerator)
        test_metrics = test(hparams, accelerator)

    # 4. Export, then reload in a fresh offline process, as a user would.
    # The corpora are synthetic, in the Skit-S2I and CREMA-D layouts: say so on the card.
    export_model(hparams["output_folder"], model_dir, overwrite=True,
                 datasets=["synthetic-banking-ivr (multitask synth)"])
    joint_rows = read_manifest(hparams["test_manifests"]["joint"])
    examples = [row["wav"] for row in joint_rows[:: max(1, len(joint_rows) // 5)][:5]]
    reloaded = subprocess.run(
        [sys.executable, "-m", "multitask.cli", "predict", "--model", model_dir, "--json", *examples],
        capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, check=True,
    )
    predictions = [json.loads(line) for line in reloaded.stdout.splitlines() if line.strip()]

    # 5. The feature baseline on the same splits.
    baseline = run_baseline(hparams["train_manifests"], hparams["valid_manifests"],
                            hparams["test_manifests"],
                            out_json=os.path.join(demo_folder, "baseline.json"))

    # 6. Results.
    metrics = demo_metrics(test_metrics, "joint", train_seconds, time.time() - started, baseline)
    if class_bias:
        metrics["class_bias"] = class_bias_summary(class_bias, test_metrics, "joint")
    metrics["host"] = {**host, "matmul_gflops_at_end": round(matmul_gflops(), 1)}
    write_json(os.path.join(demo_folder, "metrics.json"), metrics)
    report = write_report(demo_folder, test_metrics, metrics, hparams["output_folder"],
                          datasheet=os.path.join(hparams["synth_folder"], "DATASHEET.md"),
                          baseline=baseline, predictions=predictions,
                          best_metric=hparams.get("best_metric", "mean_accuracy"))
    print(open(report, encoding="utf-8").read())
    print(f"metrics: {os.path.join(demo_folder, 'metrics.json')}  model: {model_dir}")
