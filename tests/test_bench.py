"""The benchmarks run end to end in a tiny mode, and the fast CPU paths keep predictions."""

import copy
import importlib.util
import json
import os
import sys

import numpy as np
import pytest
import torch
from conftest import REPO

from multitask.model import MultitaskModel, Wav2Vec2Encoder, build_heads, tiny_config
from multitask.optimize import optimize_for_cpu

BENCH = os.path.join(REPO, "benchmarks")


def _tiny_model(tmp_path, **overrides):
    tiny_config(**overrides).save_pretrained(tmp_path)
    torch.manual_seed(0)
    encoder = Wav2Vec2Encoder(tmp_path, save_path=tmp_path)
    return MultitaskModel(encoder, build_heads(encoder, {"intent": 5, "emotion": 3},
                                               proj_size=16, hidden_size=16)).eval()


@pytest.mark.parametrize("norm", ["group", "layer"])
def test_fp32_rewrite_matches_transformers_modules(tmp_path, norm):
    model = _tiny_model(tmp_path, feat_extract_norm=norm, do_stable_layer_norm=norm == "layer",
                        conv_bias=norm == "layer")
    wavs = torch.randn(3, 12000)
    wavs[1, 7000:] = 0  # a padded row
    lens = torch.tensor([1.0, 7000 / 12000, 1.0])
    with torch.inference_mode():
        before = model(wavs, lens)
        after = optimize_for_cpu(copy.deepcopy(model), "fp32")(wavs, lens)
    for task in before:
        torch.testing.assert_close(after[task], before[task], atol=1e-4, rtol=1e-4)


def test_int8_path_agrees_with_fp32(tmp_path):
    model = _tiny_model(tmp_path)
    t = torch.arange(16000) / 16000
    low, high, slow = (torch.sin(2 * torch.pi * hz * t) for hz in (220, 1500, 3))
    wavs = torch.stack([torch.randn(16000), low, high, torch.sign(slow)])  # unlike each other
    with torch.inference_mode():
        before = model(wavs, torch.ones(4))
        quantised = optimize_for_cpu(copy.deepcopy(model), "int8")
        after = quantised(wavs, torch.ones(4))
        other_audio = model(wavs.roll(1, dims=0), torch.ones(4))  # each row another's audio
    from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear

    assert isinstance(quantised.encoder.model.encoder.layers[0].feed_forward.output_dense, DynamicInt8Linear)
    front_end = quantised.encoder.model.feature_extractor  # kept fp32 (see multitask.optimize)
    assert all(type(m) is torch.nn.Linear for m in front_end.layers[0].pieces)
    for task in before:
        # A random tiny model's logits move little with the input: the bound is a share of
        # how far they move for the wrong audio, which it must stay well below.
        wrong_audio = (other_audio[task] - before[task]).abs().max()
        assert (after[task] - before[task]).abs().max() < 0.2 * wrong_audio


def test_unknown_method_is_refused(tmp_path):
    with pytest.raises(ValueError, match="method must be one of"):
        optimize_for_cpu(_tiny_model(tmp_path), "fp8")


def _bench_module(script):
    if BENCH not in sys.path:
        sys.path.insert(0, BENCH)
    spec = importlib.util.spec_from_file_location(f"bench_{script[:-3]}", os.path.join(BENCH, script))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module   # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _run(script, *args):
    """Run a benchmark's ``main`` in this process (a fresh interpreter costs more than the run)."""
    module = _bench_module(script)
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        module.main(list(args))
    finally:
        os.chdir(cwd)


@pytest.mark.slow
def test_benchmarks_write_their_json_and_the_readme_table(tmp_path, toy_corpus, group_norm_encoder):
    bench = tmp_path / "bench"
    _run("inference.py", "--tiny", "--rounds", "1", "--demo-model", "",
         "--out", str(bench / "inference.json"))
    result = json.loads((bench / "inference.json").read_text())
    assert {"machine", "flops", "ceiling", "throughput", "summary", "mixed_durations",
            "profile_b4", "peak_rss_mb"} <= set(result)
    assert result["machine"]["logical_cpus"] >= 1 and result["machine"]["date"]
    assert abs(result["flops"]["hand_vs_counter"] - 1) < 0.02  # hand count = FlopCounterMode
    assert result["ceiling"]["matmul_gflops_best"] > 0
    for name in ("multitask/eager/b4", "multitask/fp32/b4", "multitask/int8/b4",
                 "two_single_task/fp32/b4", "multitask/fp32/b1", "multitask/fp32/b16"):
        assert result["throughput"][name]["audio_s_per_s_best"] > 0
    mixed = result["mixed_durations"]
    assert (mixed["length_sorted"]["padded_share_of_computed_samples"]
            <= mixed["arrival_order"]["padded_share_of_computed_samples"])

    _run("train.py", "--hparams", "hparams/tiny.yaml", "--seconds", "2", "--max-steps", "5",
         "--train-manifests", toy_corpus["train"], "--out", str(bench / "train.json"),
         "--override", f"encoder_source={group_norm_encoder}", "valid_manifests=unused")
    train = json.loads((bench / "train.json").read_text())
    assert train["audio_hours_per_hour"] > 0 and 0 <= train["data_wait_share"] <= 1
    assert set(train["padding"]) == {"length_aware", "fixed_size_shuffled"}
    assert sum(train["step_split"].values()) == pytest.approx(1.0, abs=1e-3)
    convs = train["profile"]["convolutions_ms_per_step"]
    assert {"front end layer 0", "positional conv"} <= set(convs)
    # every convolution of the encoder ran forward and backward inside the profiled steps
    assert all(c["forward_ms"] > 0 and c["backward_ms"] > 0 for c in convs.values()), convs

    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- bench:start -->\nold\n<!-- bench:end -->\nrest\n")
    _run("report.py", "--bench", str(bench), "--readme", str(readme))
    text = readme.read_text()
    assert "old" not in text and "audio-hours per hour" in text and text.endswith("rest\n")
    assert (bench / "README_table.md").read_text() in text


def test_shift_conditions_differ_only_by_their_factor_and_are_scored(tmp_path):
    import soundfile as sf

    shift = _bench_module("shift.py")
    plan = shift.plan_conditions(["en-us+f2", "en+m3"], per_intent=1, per_emotion=1, seed=0,
                                 root=str(tmp_path))
    neutral, high = plan["intent_neutral"], plan["intent_emotion_hi"]
    assert len(neutral) == len(high) == 14
    for a, b in zip(neutral, high, strict=True):  # same query, voice and seed; only the emotion moves
        assert (a.utterance.text, a.utterance.speaker, a.utterance.seed, a.intent) == \
               (b.utterance.text, b.utterance.speaker, b.utterance.seed, b.intent)
        assert a.utterance.emotion == "neutral" and a.emotion is None and b.emotion is not None
    wide, tel = plan["emotion_wideband"], plan["emotion_telephone"]
    assert [w.utterance.text for w in wide] == [t.utterance.text for t in tel]
    assert {w.utterance.channel for w in wide} == {"wideband"}
    assert sorted(w.emotion for w in wide) == sorted(shift.EMOTIONS)

    small = {"emotion_wideband": wide[:2], "emotion_telephone": tel[:2]}
    shift.render_all([it.utterance for items in small.values() for it in items], 1, False)
    assert sf.info(tel[0].utterance.path).samplerate == 8000
    assert sf.info(wide[0].utterance.path).samplerate == 16000

    def first_emotion_always(paths):
        return [{"emotion": {"label": wide[0].emotion}} for _ in paths]

    result = shift.score(small, first_emotion_always)
    first, second = (it.emotion for it in wide[:2])
    assert result["emotion_wideband"] == {"clips": 2, "errors": [], "emotion_accuracy": 0.5,
                                          "emotion_recall": {first: 1.0, second: 0.0}}


def test_shift_development_voices_map_crema_actors_to_their_timbres(tmp_path):
    shift = _bench_module("shift.py")
    skit, crema, speakers = tmp_path / "skit.csv", tmp_path / "crema.csv", tmp_path / "speakers.json"
    skit.write_text("id,speaker\na,Mario\nb,f1\n")
    crema.write_text("id,speaker\nc,1009\n")
    speakers.write_text(json.dumps({"crema_d_actors": {"1009": {"variant": "Andy"}}}))
    voices = shift.voices_for("valid", [str(skit), str(crema)], str(speakers))
    assert sorted({v.split("+", 1)[1] for v in voices}) == ["Andy", "Mario", "f1"]
    crema.write_text("id,speaker\nc,1010\n")
    with pytest.raises(SystemExit, match=r"actors \['1010'\] are not in"):
        shift.voices_for("valid", [str(crema)], str(speakers))


def _skewed_classifier(names, truth_of, skew):
    """A fake ``classify``: 0.6 on the true class, the rest spread, then ``skew`` added to
    the log-probabilities (so some classes never win), and an error for 'bad' paths."""
    def classify(paths):
        out = []
        for path in paths:
            if "bad" in path:
                out.append({"file": path, "error": "unreadable"})
                continue
            lp = np.log(np.where(np.array(names) == truth_of[path], 0.6, 0.4 / (len(names) - 1)))
            p = np.exp(lp + skew)
            p /= p.sum()
            out.append({"emotion": {"probs": {n: float(v) for n, v in zip(names, p, strict=True)}}})
        return out
    return classify


def test_class_bias_finds_a_constant_skew_across_voices_and_skips_bad_clips():
    bench = _bench_module("class_bias.py")
    names = ["angry", "happy", "neutral"]
    calls = [(f"c_{v}_{k}_{i}.wav", names[k], v) for v in "ABCD" for k in range(3) for i in range(4)]
    test = [(f"t_{v}_{k}_{i}.wav", names[k], v) for v in "EF" for k in range(3) for i in range(5)]
    test.append(("t_bad.wav", "angry", "E"))
    truth_of = {path: label for path, label, _ in calls + test}
    classify = _skewed_classifier(names, truth_of, skew=np.array([1.5, 0.0, -2.0]))

    report = bench.evaluate(classify, names, "emotion", calls, test)
    assert report["calls_clips"] == 48 and report["test_clips"] == 30
    assert report["test_errors"] == ["t_bad.wav: unreadable"]
    assert len(report["cross_validation"]["folds"]) == 6  # 3 ways of 2+2 voices, both ways
    assert report["test_without"]["recall"] == {"angry": 1.0, "happy": 0.0, "neutral": 0.0}
    assert report["cross_validation"]["with"] == 1.0 and report["test_with"]["accuracy"] == 1.0
    # the fitted bias undoes the skew (up to the first class's anchor)
    np.testing.assert_allclose(np.diff(report["bias"]), -np.diff([1.5, 0.0, -2.0]), atol=1e-3)


def test_class_bias_refuses_unknown_labels_and_missing_columns(tmp_path):
    bench = _bench_module("class_bias.py")
    with pytest.raises(SystemExit, match="labels \\['bored'\\]"):
        bench.evaluate(lambda paths: [], ["angry"], "emotion", [("a.wav", "bored", "A")], [])
    manifest = tmp_path / "calls.csv"
    manifest.write_text("wav,emotion\na.wav,angry\n")
    with pytest.raises(SystemExit, match="calls.csv: missing column\\(s\\) id, duration"):
        bench.labelled_rows(str(manifest), "emotion")
    manifest.write_text("id,wav,duration,emotion\nc1,a.wav,1.0,angry\n")
    with pytest.raises(SystemExit, match="calls.csv: 1 row\\(s\\) name no speaker \\(e.g. c1\\)"):
        bench.labelled_rows(str(manifest), "emotion")
    manifest.write_text("id,wav,duration,emotion,speaker\nc1,a.wav,1.0,angry,A\n")
    assert bench.labelled_rows(str(manifest), "emotion") == [(str(tmp_path / "a.wav"), "angry", "A")]
    with pytest.raises(SystemExit, match="no such manifest"):
        bench.labelled_rows(str(tmp_path / "none.csv"), "emotion")
