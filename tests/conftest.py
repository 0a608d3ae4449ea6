"""Suite-wide settings.

* One intra-op thread: the tensors in these tests are small, so one thread is faster than two and immune
  to oversubscription when other work shares the cores. (Subprocesses the tests start, such as the
  torchrun and kill-and-resume runs, choose their own threads.)
* A private data root: the user's data root (``$MDM_PRIME_DATA`` or ``~/.cache/mdm-prime``) is never
  written. The suite runs with ``MDM_PRIME_DATA`` set to a temporary folder that links to the installed
  sources (read only; install them with ``mdm-prime data install all``) and holds its own ``cache/``
  (tokenized corpora, trained tokenizers); subprocesses inherit it. The user's root is fingerprinted
  (every file's bytes) before the suite and checked after it: a test that wrote there fails the run.
* A ``device`` fixture (cpu, and cuda where there is a GPU) for the tests of code with CUDA paths,
  marked ``@pytest.mark.device``.
"""

import os

import pytest
import torch

from mdm_prime.data.paths import ENV_VAR, data_root

from .helpers import tree_fingerprint


@pytest.fixture(autouse=True, scope="session")
def _one_intra_op_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True, scope="session")
def private_data_root(tmp_path_factory):
    """The suite's data root (a temporary folder); see the module docstring. Yields ``(private root,
    user's root)``."""
    user_root = data_root()
    private = tmp_path_factory.mktemp("mdm_prime_data")
    if user_root.is_dir():
        for entry in sorted(user_root.iterdir()):
            if entry.name != "cache":  # installed sources only: caches are written, so they stay private
                (private / entry.name).symlink_to(entry.resolve(), target_is_directory=entry.is_dir())
    before = tree_fingerprint(user_root)
    previous = os.environ.get(ENV_VAR)
    os.environ[ENV_VAR] = str(private)
    yield private, user_root
    if previous is None:
        os.environ.pop(ENV_VAR, None)
    else:
        os.environ[ENV_VAR] = previous
    changed = sorted(set(before.items()) ^ set(tree_fingerprint(user_root).items()))
    assert not changed, (
        f"the test suite wrote into the user's data root {user_root}: "
        f"{sorted({path for path, _ in changed})[:20]}"
    )


def _test_devices() -> list:
    """``$MDM_PRIME_TEST_DEVICES`` (default ``cpu,cuda``) as pytest params; CUDA skips without a GPU."""
    params = []
    for name in os.environ.get("MDM_PRIME_TEST_DEVICES", "cpu,cuda").split(","):
        marks = (
            [pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]
            if name == "cuda"
            else []
        )
        params.append(pytest.param(name.strip(), marks=marks, id=name.strip()))
    return params


@pytest.fixture(params=_test_devices())
def device(request):
    """The device of a device-parametrised test (``@pytest.mark.device``): each of ``cpu`` and ``cuda``;
    ``bench/gpu_check.sh`` runs them with ``MDM_PRIME_TEST_DEVICES=cuda``."""
    return torch.device(request.param)
