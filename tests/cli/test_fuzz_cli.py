"""Fuzzing the command line with hypothesis: random argument lists for train, eval, sample, data and
import never end in a traceback. Parsing may exit (argparse: code 2, or 0 for --help); train is run up
to its config validation (``--print-config``), eval and sample up to their run-folder checks (the run
folders named do not exist); data and import only parse (their work downloads or installs)."""

import contextlib
import io

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mdm_prime.cli import build_parser, main

OPTIONS = {
    "train": [
        "--config",
        "--data",
        "--tokenizer",
        "--family",
        "--subtokens",
        "--objective",
        "--max-steps",
        "--batch-size",
        "--seq-len",
        "--seed",
        "--device",
        "--precision",
        "--set",
        "--resume",
        "--restart",
        "--allow-data-change",
        "--no-progress",
    ],
    "eval": [
        "--split",
        "--seed",
        "--batch-size",
        "--no-ema",
        "--json",
        "--device",
        "--num-sequences",
        "--num-times",
    ],
    "sample": ["--num", "--steps", "--prefix", "--infill", "--temperature", "--top-p", "--device", "--seed"],
    "data": [],
    "import": [],
}
VALUES = [
    "0",
    "1",
    "-1",
    "40",
    "100",
    "1e309",
    "nan",
    "inf",
    "-inf",
    "cuda",
    "banana",
    "cpu",
    "auto",
    "lr=inf",
    "betas=5",
    "betas=[0.9,1.5]",
    "time_eps=0",
    "lr",
    "=",
    "subtokens=1000",
    "model_overrides.dim=x",
    "base=1",
    "seq_len=0",
    "mix",
    "markov:states=0",
    "text:/nonexistent",
    "prime",
    "ar",
    "mdm",
    "",
    " ",
    "\x00",
    "é",
    "--",
    "-",
    "{}",
    "[]",
    "null",
    "true",
    "grad_accum=0",
    "batch_size=-3",
]

token = st.one_of(st.sampled_from(sum(OPTIONS.values(), []) + VALUES), st.text(max_size=12))


def _run(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            parser = build_parser()
            args = parser.parse_args(argv)
        except SystemExit as e:
            assert e.code in (0, 2), (argv, e.code)
            return
        if argv[0] in ("data", "import"):
            return
        if argv[0] == "train":
            argv = [*argv, "--print-config"]
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code
        assert code in (0, 2), (argv, code, err.getvalue())
        assert "Traceback" not in err.getvalue()
    del args


@pytest.mark.parametrize("command", sorted(OPTIONS))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rest=st.lists(token, max_size=8))
def test_no_traceback_for_any_arguments(tmp_path_factory, command, rest):
    if command in ("eval", "sample"):
        rest = ["/nonexistent/run/dir", *rest]
    if command == "train":
        rest = [*rest, "--out", str(tmp_path_factory.getbasetemp() / "fuzz-out-never-written")]
    _run([command, *rest])
    assert not (tmp_path_factory.getbasetemp() / "fuzz-out-never-written").exists()
