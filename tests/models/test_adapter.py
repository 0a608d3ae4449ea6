"""The input adapter (docs/method.md §3): ℓ digit embeddings concatenated into one token vector."""

import pytest
import torch

from mdm_prime import SubTokenizer
from mdm_prime.models import ADAPTER_VARIANTS, SubTokenEmbedding

from .util import random_subtokens


@pytest.mark.parametrize("length", [1, 2, 3, 4])
@pytest.mark.parametrize("variant", ADAPTER_VARIANTS)
def test_shapes_every_length_and_variant(length, variant):
    sub = SubTokenizer(50, length)
    emb = SubTokenEmbedding(sub, 48, variant)
    out = emb(random_subtokens(sub, 3, 7))
    assert out.shape == (3, 7, 48)


@pytest.mark.parametrize("length", [2, 3])
def test_concat_is_the_hand_built_concatenation_of_shared_rows(length):
    sub = SubTokenizer(30, length)
    emb = SubTokenEmbedding(sub, 12, "concat")
    assert emb.weight.shape == (sub.base + 1, 12 // length)  # one shared (b+1) × d/ℓ table
    y = random_subtokens(sub, 2, 5, seed=1)
    out = emb(y)
    for b in range(2):
        for i in range(5):
            rows = [emb.weight[y[b, i * length + j]] for j in range(length)]  # digits in order
            assert torch.equal(out[b, i], torch.cat(rows))


def test_per_position_and_sum_use_one_table_per_digit_position():
    sub = SubTokenizer(30, 3)
    y = random_subtokens(sub, 2, 4, seed=2)
    per = SubTokenEmbedding(sub, 12, "per_position")
    summed = SubTokenEmbedding(sub, 12, "sum")
    for b in range(2):
        for i in range(4):
            digits = y[b, 3 * i : 3 * i + 3]
            assert torch.equal(per(y)[b, i], torch.cat([per.weight[j, digits[j]] for j in range(3)]))
            expected = sum(summed.weight[j, digits[j]] for j in range(3))
            assert torch.allclose(summed(y)[b, i], expected, atol=1e-6)


@pytest.mark.parametrize("variant", ADAPTER_VARIANTS)
def test_length_one_is_a_plain_mdm_embedding(variant):
    sub = SubTokenizer(20, 1)
    emb = SubTokenEmbedding(sub, 16, variant)
    table = emb.weight.reshape(-1, 16)
    assert table.shape == (21, 16)  # C + 1 rows: the classes and the mask
    x = random_subtokens(sub, 3, 6)
    assert torch.equal(emb(x), torch.nn.functional.embedding(x, table))


def test_mask_only_enters_through_the_mask_row():
    sub = SubTokenizer(16, 2)  # b = 4, mask = 4
    emb = SubTokenEmbedding(sub, 8, "concat")
    y = torch.tensor([[4, 4, 1, 4]])
    out = emb(y)
    assert torch.equal(out[0, 0], torch.cat([emb.weight[4], emb.weight[4]]))
    assert torch.equal(out[0, 1, 4:], emb.weight[4])


@pytest.mark.parametrize("variant", ["concat", "per_position"])
def test_width_not_divisible_by_length_is_rejected(variant):
    with pytest.raises(ValueError, match=r"ℓ=3.*d=10 must be divisible by ℓ"):
        SubTokenEmbedding(SubTokenizer(30, 3), 10, variant)
    SubTokenEmbedding(SubTokenizer(30, 3), 10, "sum")  # summation has no such constraint


def test_bad_variant_and_width():
    with pytest.raises(ValueError, match="adapter variant"):
        SubTokenEmbedding(SubTokenizer(30, 2), 8, "stack")
    with pytest.raises(ValueError, match="positive int"):
        SubTokenEmbedding(SubTokenizer(30, 2), 0)
