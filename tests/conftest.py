"""Suite-wide settings. The tensors in these tests are small: one intra-op thread is faster than two
and immune to oversubscription when other work shares the cores. (Subprocesses the tests start, such
as the torchrun and kill-and-resume runs, choose their own threads.)"""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_intra_op_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
