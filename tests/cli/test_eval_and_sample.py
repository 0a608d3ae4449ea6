"""``mdm-prime eval`` / ``sample`` / ``train-classifier`` end to end on tiny runs made here (seconds each).

The runs are trained in-process for a few steps: the numbers are not good, but every field, unit
conversion and file must be right.
"""

import json
import math

import numpy as np
import pytest
import torch

from mdm_prime.cli import main
from mdm_prime.configs import resolve_config
from mdm_prime.train import train

COMMON = {
    "batch_size": 8,
    "max_steps": 3,
    "lr": 3e-3,
    "warmup_steps": 0,
    "eval_every": 0,
    "log_every": 1,
    "num_preview_samples": 0,
    "final_eval_sequences": 4,
    "final_eval_num_times": 2,
    "checkpoint_every": 0,
    "precision": "fp32",
    "ema_decay": 0.5,
}
TINY_TRANSFORMER = {"model_overrides": {"dim": 32, "depth": 1, "heads": 2}}


@pytest.fixture(scope="module", autouse=True)
def _env(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("MDM_PRIME_DATA", str(tmp_path_factory.mktemp("data_root")))
    yield
    mp.undo()


def _train(out, preset="text-tiny", **overrides):
    cfg = resolve_config(preset, {**COMMON, **overrides})
    train(cfg, out, show_progress=False)
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    words = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran", "to", "red", "door", "and", "then", "slept"]
    rng = np.random.default_rng(0)
    docs = [" ".join(rng.choice(words, size=30)) + "." for _ in range(80)]
    corpus = root / "corpus.txt"
    corpus.write_text("\n\n".join(docs))
    text = dict(data=f"text:{corpus}", tokenizer="byte", seq_len=16, **TINY_TRANSFORMER)
    return {
        "markov": _train(root / "markov", data="markov:states=4", seq_len=8, subtokens=2, **TINY_TRANSFORMER),
        "text": _train(root / "text", subtokens=2, **text),
        "ar": _train(root / "ar", family="ar", subtokens=1, **text),
        "ar_markov": _train(
            root / "ar_markov",
            data="markov:states=5",
            seq_len=8,
            family="ar",
            subtokens=1,
            **TINY_TRANSFORMER,
        ),
        "digits": _train(root / "digits", preset="mnist-small", data="digits", subtokens=2),
        "root": root,
    }


def _eval_json(capsys, *args):
    capsys.readouterr()
    assert main(["eval", *map(str, args), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _check_units(r):
    nats = r["nelbo_nats_per_token"]
    assert r["bits_per_token"] == pytest.approx(nats / math.log(2), rel=1e-12)
    assert r["perplexity"] == pytest.approx(math.exp(nats), rel=1e-12)
    assert r["stderr_nats_per_token"] > 0 and math.isfinite(r["stderr_nats_per_token"])


@pytest.mark.parametrize("name", ["markov", "text", "digits"])
def test_eval_json_fields_are_consistent(runs, capsys, name):
    r = _eval_json(capsys, runs[name], "--num-sequences", 4, "--num-times", 3)
    for key in (
        "nelbo_nats_per_token",
        "bits_per_token",
        "perplexity",
        "stderr_nats_per_token",
        "prime_objective_nats_per_token",
        "num_times",
    ):
        assert key in r, key
    assert r["num_times"] == 3 and r["num_sequences"] == 4 and r["weights"] == "ema"
    _check_units(r)
    meta = json.loads((runs[name] / "task.json").read_text())
    if name == "text":
        assert r["bits_per_char"] == pytest.approx(
            r["bits_per_token"] / meta["characters_per_token"], rel=1e-12
        )
        assert "bits_per_dim" not in r
    elif name == "digits":
        assert r["bits_per_dim"] == pytest.approx(r["bits_per_token"], rel=1e-12)
        assert "bits_per_char" not in r
    else:
        assert "bits_per_char" not in r and "bits_per_dim" not in r
        # the valid bound cannot beat the data entropy by more than noise
        assert r["nelbo_nats_per_token"] > r["data_entropy_nats_per_token"] - 4 * r["stderr_nats_per_token"]


def test_eval_of_the_autoregressive_run_is_exact(runs, capsys):
    r = _eval_json(capsys, runs["ar"], "--num-sequences", 4)
    _check_units(r)
    assert r["num_times"] == 0 and r["family"] == "ar" and "prime_objective_nats_per_token" not in r
    assert r["bits_per_char"] > 0


def test_eval_discrete_time_bound(runs, capsys):
    r = _eval_json(
        capsys,
        runs["markov"],
        "--num-sequences",
        4,
        "--num-times",
        2,
        "--discrete-steps",
        1,
        "--discrete-draws",
        2,
    )
    # T = 1: deterministic, the one-step joint-of-marginals NLL; no standard error
    assert r["discrete_time_steps"] == 1 and r["discrete_time_stderr_nats_per_token"] == pytest.approx(
        0.0, abs=1e-12
    )
    r8 = _eval_json(capsys, runs["markov"], "--num-sequences", 4, "--num-times", 2, "--discrete-steps", 8)
    assert r8["discrete_time_num_draws"] == 8 and r8["discrete_time_stderr_nats_per_token"] > 0
    assert r8["discrete_time_bits_per_token"] == pytest.approx(
        r8["discrete_time_nelbo_nats_per_token"] / math.log(2)
    )
    assert "valid upper bound" in r8["discrete_time_bound"]
    assert main(["eval", str(runs["ar"]), "--discrete-steps", "4"]) == 2
    assert "exact" in capsys.readouterr().err


def test_eval_generative_perplexity(runs, capsys):
    r = _eval_json(
        capsys,
        runs["text"],
        "--num-sequences",
        2,
        "--num-times",
        2,
        "--gen-ppl",
        runs["ar"],
        "--num-samples",
        6,
        "--steps",
        8,
    )
    assert r["num_generated_samples"] == 6 and r["sample_steps"] == 8
    assert r["generative_perplexity"] == pytest.approx(math.exp(r["generative_nats_per_token"]), rel=1e-12)
    assert r["reference_generative_perplexity"] == pytest.approx(
        math.exp(r["reference_generative_nats_per_token"]), rel=1e-12
    )
    for key in ("sample_unigram_entropy_nats", "reference_unigram_entropy_nats"):
        assert 0 < r[key] <= math.log(256)
    assert r["gen_ppl_model"]["tokenizer"] == "byte"
    # a different alphabet is refused with a clear message, before any generation
    assert main(["eval", str(runs["text"]), "--gen-ppl", str(runs["ar_markov"])]) == 2
    err = capsys.readouterr().err
    assert "vocabulary size 256 vs 5" in err and "tokenizer 'byte' vs None" in err
    # a diffusion run is not an AR scorer
    assert main(["eval", str(runs["text"]), "--gen-ppl", str(runs["text"]), "--num-samples", "2"]) == 2
    assert "autoregressive" in capsys.readouterr().err


@pytest.fixture(scope="module")
def classifier(runs):
    out = runs["root"] / "clf"
    assert (
        main(
            [
                "train-classifier",
                "--data",
                "digits",
                "--out",
                str(out),
                "--epochs",
                "1",
                "--max-train",
                "200",
                "--batch-size",
                "64",
            ]
        )
        == 0
    )
    return out


def test_train_classifier_cli_and_frechet_distance(runs, classifier, capsys):
    cfg = json.loads((classifier / "classifier.json").read_text())
    assert 0.0 <= cfg["test_accuracy"] <= 1.0 and cfg["data"] == "digits"
    r = _eval_json(
        capsys,
        runs["digits"],
        "--num-sequences",
        2,
        "--num-times",
        2,
        "--fd",
        classifier,
        "--num-samples",
        8,
        "--steps",
        4,
    )
    assert r["frechet_distance"] > 0 and r["fd_num_samples"] == 8 and r["fd_num_reference"] == 8
    assert "rank-deficient" in r["fd_note"]  # 8 images, 128-d features
    assert "trained on 'digits'" in r["fd_classifier"] and str(classifier) in r["fd_classifier"]
    # text runs have no Fréchet distance; a missing classifier folder is named
    assert main(["eval", str(runs["text"]), "--fd", str(classifier)]) == 2
    assert "image run" in capsys.readouterr().err
    assert main(["eval", str(runs["digits"]), "--fd", str(runs["root"] / "nope")]) == 2
    assert "not a classifier folder" in capsys.readouterr().err


def test_inception_fid_needs_torchvision(runs, capsys, monkeypatch, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "torchvision", None)
    weights = tmp_path / "inception.pt"
    weights.write_bytes(b"")
    assert main(["eval", str(runs["digits"]), "--inception-weights", str(weights)]) == 2
    assert "needs torchvision" in capsys.readouterr().err


def test_sample_cli_text_prefix_and_infill(runs, capsys, tmp_path):
    assert (
        main(["sample", str(runs["text"]), "--num", "2", "--steps", "4", "--out", str(tmp_path / "plain")])
        == 0
    )
    text = (tmp_path / "plain.txt").read_text()
    assert text.count("=== sample") == 2
    assert json.loads((tmp_path / "plain.stats.json").read_text())["steps"] == 4

    assert (
        main(
            ["sample", str(runs["text"]), "--num", "3", "--prefix", "the cat", "--out", str(tmp_path / "pre")]
        )
        == 0
    )
    samples = (tmp_path / "pre.txt").read_text().split("=== sample ")[1:]
    assert len(samples) == 3 and all(s.split("\n", 1)[1].startswith("the cat") for s in samples)

    assert (
        main(
            [
                "sample",
                str(runs["text"]),
                "--num",
                "3",
                "--infill",
                "a ____ b",
                "--out",
                str(tmp_path / "inf"),
            ]
        )
        == 0
    )
    samples = (tmp_path / "inf.txt").read_text().split("=== sample ")[1:]
    for s in samples:
        body = s.split("\n", 1)[1]
        assert body.startswith("a ") and " b" in body[2:], body


def test_infill_keeps_the_given_tokens_exactly(runs):
    from mdm_prime.evaluate import load_run
    from mdm_prime.families import family_of
    from mdm_prime.tasks import parse_infill_pattern

    _, task, model = load_run(runs["text"], with_data=False)
    tokens, generate = parse_infill_pattern("ab__cd_", task.tokenizer, task.seq_len)
    out, _ = family_of(model).generate(
        model, num=4, num_tokens=task.seq_len, steps=5, seed=3, infill=(tokens, generate)
    )
    keep = ~generate
    assert keep.sum() == 4
    assert torch.equal(out[:, keep], tokens[keep].expand(4, -1))


def test_sample_cli_images_write_png_and_npy(runs, tmp_path):
    assert (
        main(["sample", str(runs["digits"]), "--num", "3", "--steps", "4", "--out", str(tmp_path / "img")])
        == 0
    )
    images = np.load(tmp_path / "img.npy")
    assert images.shape == (3, 1, 8, 8) and images.min() >= 0 and images.max() < 17
    png = tmp_path / "img.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_rejects_bad_metric_options_before_work(runs, capsys):
    for args, msg in (
        (["--num-samples", "1", "--fd", "x"], "--num-samples"),
        (["--discrete-steps", "-1"], "--discrete-steps"),
        (["--discrete-draws", "1", "--discrete-steps", "2"], "--discrete-draws"),
        (["--gen-ppl", "/nonexistent"], "/nonexistent does not exist"),
    ):
        assert main(["eval", str(runs["markov"]), *args]) == 2
        assert msg in capsys.readouterr().err


# ----------------------------------------------------------------------------- budgets, --data, the gap
def _counting_likelihood(monkeypatch):
    """Wrap the likelihood that ``score_corpus`` calls and count the tokens it is given."""
    import mdm_prime.scoring as S

    seen = []
    original = S.likelihood

    def counting(model, x0, *args, **kwargs):
        seen.append(x0.numel())
        return original(model, x0, *args, **kwargs)

    monkeypatch.setattr(S, "likelihood", counting)
    return seen


def test_eval_budget_counts_the_scored_tokens(runs, capsys, monkeypatch):
    seen = _counting_likelihood(monkeypatch)
    r = _eval_json(capsys, runs["text"], "--max-sequences", 11, "--num-times", 2, "--no-progress")
    assert sum(seen) == 11 * 16 and r["num_sequences"] == 11 and r["num_tokens"] == 11 * 16
    seen.clear()
    r = _eval_json(capsys, runs["text"], "--max-tokens", 50, "--num-times", 2, "--no-progress")
    assert sum(seen) == 3 * 16 and r["num_sequences"] == 3  # whole sequences: 50 // 16
    seen.clear()
    # --num-sequences and a budget together: the smaller wins
    r = _eval_json(capsys, runs["text"], "--num-sequences", 4, "--max-tokens", 1000, "--num-times", 2)
    assert sum(seen) == 4 * 16 and r["num_sequences"] == 4
    # the autoregressive run obeys the same budget
    r = _eval_json(capsys, runs["ar"], "--max-tokens", 40)
    assert r["num_sequences"] == 2 and r["num_times"] == 0
    assert main(["eval", str(runs["text"]), "--max-tokens", "15"]) == 2
    assert "below one sequence" in capsys.readouterr().err
    assert main(["eval", str(runs["text"]), "--max-sequences", "0"]) == 2
    assert "--max-sequences must be >= 1" in capsys.readouterr().err


def test_eval_data_spec_uses_the_run_tokenizer_and_the_training_split(runs, capsys):
    """``--data`` on the run's own corpus re-tokenizes it with the run's saved tokenizer and splits it by
    document as training did: the same valid sequences, hence the same numbers and bits/char."""
    spec = json.loads((runs["text"] / "task.json").read_text())["spec"]
    own = _eval_json(capsys, runs["text"], "--num-sequences", 5, "--num-times", 2, "--no-progress")
    other = _eval_json(capsys, runs["text"], "--data", spec, "--num-sequences", 5, "--num-times", 2)
    assert other["data"] == spec and other["num_sequences"] == 5
    assert other["nelbo_nats_per_token"] == own["nelbo_nats_per_token"]
    assert other["bits_per_char"] == pytest.approx(own["bits_per_char"], rel=1e-12)
    from mdm_prime.data import load_data
    from mdm_prime.data.dataset import split_documents

    docs = load_data(spec).documents()
    valid = [docs[i] for i in split_documents(docs)["valid"]]
    stream = "".join(d + "\n" for d in valid).encode()  # byte tokens; the separator is one token
    assert other["bits_per_char"] == pytest.approx(
        other["bits_per_token"] * len(stream) / sum(map(len, valid))
    )
    assert main(["eval", str(runs["text"]), "--data", "markov:states=3"]) == 2
    assert "--data scores text" in capsys.readouterr().err
    assert main(["eval", str(runs["digits"]), "--data", spec]) == 2
    assert "needs a text run" in capsys.readouterr().err


def test_eval_prints_the_gap_between_the_valid_bound_and_the_objective(runs, capsys):
    r = _eval_json(capsys, runs["text"], "--num-sequences", 6, "--num-times", 2)
    assert r["gap_nats_per_token"] == pytest.approx(
        r["nelbo_nats_per_token"] - r["prime_objective_nats_per_token"]
    )
    assert r["prime_perplexity"] == pytest.approx(math.exp(r["prime_objective_nats_per_token"]))
    capsys.readouterr()
    assert main(["eval", str(runs["text"]), "--num-sequences", "6", "--num-times", "2", "--no-progress"]) == 0
    out = capsys.readouterr().out
    gap_line = next(line for line in out.splitlines() if "gap L_valid − L_prime" in line)
    printed = float(gap_line.split(":")[1].split()[0])
    assert printed == pytest.approx(r["nelbo_nats_per_token"] - r["prime_objective_nats_per_token"], abs=5e-5)
    assert f"perplexity {r['perplexity']:.3f}" in out


def test_auto_batch_size_keeps_the_logits_within_one_gib(runs, capsys):
    from mdm_prime.scoring import auto_batch_size

    assert auto_batch_size(50257, 1024) == 5  # the published models: 5 rows, 1.03 GB (not 64 rows, 13 GB)
    for c, length in ((50257, 1024), (50257, 128), (256, 16), (10**6, 4096), (7, 3)):
        rows = auto_batch_size(c, length)
        assert 1 <= rows <= 64
        assert rows == 1 or rows * c * length * 4 <= 2**30
        assert rows == 64 or (rows + 1) * c * length * 4 > 2**30 or rows == 1
    assert auto_batch_size(10**6, 4096) == 1
    r = _eval_json(capsys, runs["text"], "--num-sequences", 2, "--num-times", 2)
    assert r["batch_size"] == 64  # C = 256, L = 16
    r = _eval_json(capsys, runs["text"], "--num-sequences", 2, "--num-times", 2, "--batch-size", 3)
    assert r["batch_size"] == 3
    with pytest.raises(ValueError, match="num_classes"):
        auto_batch_size(0, 16)


# ----------------------------------------------------------------------------- eval repeats training
def _final_row(run):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return next(r for r in reversed(rows) if r.get("final"))


@pytest.mark.parametrize("name", ["text", "markov", "ar"])
def test_default_eval_repeats_the_final_evaluation_line_exactly(runs, capsys, name):
    """Same sequences, seed and K as the training's final evaluation: the same draws, so the same
    numbers to the last bit, whatever ``--batch-size`` (rows per network call) is."""
    final = _final_row(runs[name])
    for extra in ([], ["--batch-size", "3"]):
        r = _eval_json(capsys, runs[name], "--num-sequences", 4, "--num-times", 2, "--no-progress", *extra)
        assert r["seed"] == 0 and r["num_sequences"] == final["num_sequences"] == 4
        for key in ("nelbo_nats_per_token", "stderr_nats_per_token", "prime_objective_nats_per_token"):
            assert r.get(key) == final.get(key), (key, extra)


def test_eval_seed_defaults_to_the_run_seed(runs, capsys):
    """A run trained with seed 5: eval's default draws are the ones of its final line (seed 5), and an
    explicit other seed gives other draws."""
    run = _train(
        runs["root"] / "seed5", data="markov:states=4", seq_len=8, subtokens=2, seed=5, **TINY_TRANSFORMER
    )
    final = _final_row(run)
    r = _eval_json(capsys, run, "--num-sequences", 4, "--num-times", 2, "--no-progress")
    assert r["seed"] == 5 and r["nelbo_nats_per_token"] == final["nelbo_nats_per_token"]
    other = _eval_json(capsys, run, "--num-sequences", 4, "--num-times", 2, "--no-progress", "--seed", "0")
    assert other["seed"] == 0 and other["nelbo_nats_per_token"] != final["nelbo_nats_per_token"]


def test_scorer_warnings_name_a_weak_scorer():
    from mdm_prime.cli.eval import scorer_warnings

    base = {"nelbo_nats_per_token": 2.0, "generative_perplexity": 9.0, "reference_generative_perplexity": 8.0}
    assert scorer_warnings({"nelbo_nats_per_token": 2.0}) == []  # no --gen-ppl: nothing to say
    assert scorer_warnings({**base, "reference_generative_nats_per_token": 1.9}) == []  # a stronger scorer
    weak = scorer_warnings({**base, "reference_generative_nats_per_token": 2.1})
    assert len(weak) == 1 and "weaker than the model it judges" in weak[0] and "2.1000" in weak[0]
    flattered = scorer_warnings(
        {**base, "reference_generative_nats_per_token": 1.9, "generative_perplexity": 7.0}
    )
    assert len(flattered) == 1 and "better than real text" in flattered[0] and "7.000 < 8.000" in flattered[0]


def test_eval_prints_the_scorer_nll_and_its_warning(runs, capsys):
    """The tiny AR scorer of these tests is weaker than the diffusion run on its reference text or not;
    either way the scorer's own NLL is printed beside the scored model's bound, and a warning appears
    exactly when the rule says so."""
    from mdm_prime.cli.eval import scorer_warnings

    args = ["--num-sequences", "2", "--num-times", "2", "--gen-ppl", str(runs["ar"]), "--num-samples", "4"]
    assert main(["eval", str(runs["text"]), *args, "--steps", "4", "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert "the scorer's exact NLL on it" in out
    r = _eval_json(capsys, runs["text"], *args, "--steps", 4, "--no-progress")
    assert r.get("gen_ppl_warnings", []) == scorer_warnings(r)
    assert ("WARNING:" in out) == bool(scorer_warnings(r)) and ("warning:" in err) == bool(scorer_warnings(r))


@pytest.mark.parametrize("name", ["markov", "text"])
def test_eval_decoding_order_beside_the_bound(runs, capsys, name):
    """``--decoding ORDER``: the exact NLL of a decoding order on the same sequences as the bound,
    L·ℓ network calls per sequence, in the JSON and printed beside the bound (no order asserted)."""
    r = _eval_json(capsys, runs[name], "--num-sequences", 3, "--num-times", 2, "--decoding", "confidence")
    L = r["tokens_per_sequence"]
    assert r["decoding_order"] == "confidence" and r["decoding_num_sequences"] == r["num_sequences"] == 3
    assert r["decoding_network_calls_per_sequence"] == L * 2
    assert r["decoding_nll_nats_per_token"] > 0 and math.isfinite(r["decoding_nll_nats_per_token"])
    assert math.isclose(r["decoding_bits_per_token"], r["decoding_nll_nats_per_token"] / math.log(2))
    if name == "text":
        scale = r["bits_per_char"] / r["bits_per_token"]
        assert math.isclose(r["decoding_bits_per_char"], r["decoding_bits_per_token"] * scale)
    capsys.readouterr()
    args = [
        "eval",
        str(runs[name]),
        "--max-sequences",
        "2",
        "--num-times",
        "2",
        "--decoding",
        "left_to_right",
    ]
    assert main([*args, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "decoding NLL (exact, order left_to_right)" in out and f"L·ℓ = {L * 2} network calls" in out
    assert "NLL bound (valid)" in out


def test_eval_decoding_refuses_an_unknown_order_and_is_exact_for_the_ar_run(runs, capsys):
    assert main(["eval", str(runs["text"]), "--decoding", "oracle"]) == 2
    err = capsys.readouterr().err
    assert "unknown order 'oracle'" in err and "left_to_right" in err
    r = _eval_json(capsys, runs["ar"], "--num-sequences", 3, "--decoding", "left_to_right")
    assert r["decoding_network_calls_per_sequence"] == 1 and r["decoding_exact_autoregressive"]
    assert math.isclose(r["decoding_nll_nats_per_token"], r["nelbo_nats_per_token"], rel_tol=1e-6)
