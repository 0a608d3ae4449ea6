import pytest

from mdm_prime.data.paths import MissingDataError
from mdm_prime.data.registry import load_data


@pytest.mark.parametrize(
    "spec,kind,name",
    [
        ("brown", "text", "brown"),
        ("mix", "text", "mix"),
        ("mix:brown+kjv", "text", "mix"),
        ("mnist", "image", "mnist"),
        ("fashion-mnist:pad=32,levels=16", "image", "fashion-mnist"),
        ("digits", "image", "digits"),
        ("cifar10:/nowhere", "image", "cifar10"),
        ("toy", "toy", "toy"),
        ("toy:camera,size=512", "toy", "toy"),
        ("markov:states=8", "synthetic", "markov"),
        ("hmm:states=3,vocab=5,seed=2", "synthetic", "hmm"),
    ],
)
def test_parse(spec, kind, name):
    src = load_data(spec)  # parsing only: nothing is installed or loaded here
    assert (src.kind, src.name) == (kind, name)


def test_options_parsed():
    assert load_data("mnist:pad=32,levels=16").options == {"pad": 32, "levels": 16}
    assert load_data("toy:moon,size=64,invert=1").options == {"image": "moon", "size": 64, "invert": True}


@pytest.mark.parametrize(
    "spec,match",
    [
        ("imagenet", "unknown source"),
        ("mnist:pad=x", "not a int"),
        ("mnist:colour=1", "unknown option"),
        ("toy:lena", "unknown toy image"),
        ("markov:seed=1", "states=N"),
        ("hmm:states=2", "vocab=N"),
        ("cifar10", "cifar-10-batches-py"),
        ("mix:brown+wiki", "mix"),
        ("markov:states=0", ">= 1"),
    ],
)
def test_bad_specs_list_valid_ones(spec, match):
    with pytest.raises(ValueError, match=match) as e:
        load_data(spec)
    assert "Valid specs:" in str(e.value) and "text:PATH" in str(e.value)


def test_missing_path_is_checked_at_parse(tmp_path):
    with pytest.raises(MissingDataError, match="does not exist"):
        load_data(f"text:{tmp_path / 'nope.txt'}")


def test_load_kinds(tmp_path):
    assert load_data("markov:states=4,seed=1").load().num_classes == 4
    assert load_data("hmm:states=2,vocab=3").load().num_classes == 3
    assert load_data("toy:camera,size=16").load().pmf.shape == (16, 16)
    f = tmp_path / "t.txt"
    f.write_text("\n\n".join(f"doc {i} " * 20 for i in range(60)))
    src = load_data(f"text:{f}")
    assert len(src.documents()) == 60
    data = src.load(tokenizer_spec="byte", seq_len=32, cache=False)
    assert data["train"].shape[1] == 32
    with pytest.raises(TypeError, match="not text"):
        load_data("digits").documents()


def test_one_kind_per_prefix_names_its_task_type():
    """Every spec of the in-memory path is parsed by the kind registered under its prefix, whose task
    type is a task class; streaming-only kinds are refused by the in-memory path, opened by open_source."""
    from mdm_prime.data.registry import DATA_KINDS, KINDS, VALID_SPECS
    from mdm_prime.tasks import TASK_TYPES

    assert KINDS == ("text", "image", "toy", "synthetic", "shards")
    assert set(KINDS) <= set(TASK_TYPES)
    for spec in VALID_SPECS:
        assert DATA_KINDS[spec.partition(":")[0]].task in KINDS
    streaming_only = sorted(name for name, k in DATA_KINDS.items() if k.task is None)
    assert streaming_only == ["hf", "jsonl", "parquet", "txt"]
    for name in streaming_only:
        with pytest.raises(ValueError, match=f"unknown source '{name}'"):
            load_data(f"{name}:/somewhere")


def test_a_registered_kind_is_parsed_loaded_and_streamed(tmp_path, monkeypatch):
    """Adding a data set is one entry in DATA_KINDS."""
    from mdm_prime.data import registry
    from mdm_prime.data.sources import DocumentSource, open_source

    class Numbers(registry.DataKind):
        task = "synthetic"

        def parse(self, spec, rest):
            return registry.DataSource(self.task, spec, self.name, None, {"n": int(rest)})

        def load(self, source, **kwargs):
            return list(range(source.options["n"]))

        def open(self, spec, rest, sep, text_field, hf_split, root):
            return DocumentSource(spec, "txt", [], text_field)

    monkeypatch.setitem(registry.DATA_KINDS, "numbers", Numbers("numbers", "numbers:N"))
    src = load_data("numbers:3")
    assert (src.kind, src.load()) == ("synthetic", [0, 1, 2])
    assert open_source("numbers:3").spec == "numbers:3"
