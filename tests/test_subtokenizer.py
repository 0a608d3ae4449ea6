import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mdm_prime import SubTokenizer, default_base


def test_default_base_is_smallest():
    for c in [1, 2, 3, 9, 10, 255, 256, 257, 50257]:
        for ell in [1, 2, 3, 4, 8]:
            b = default_base(c, ell)
            assert b**ell >= c
            if ell > 1:
                assert b == 2 or (b - 1) ** ell < c


def test_known_encoding_most_significant_first():
    sub = SubTokenizer(256, 2)
    assert sub.base == 16 and sub.mask_id == 16
    y = sub.encode(torch.tensor([[0, 255, 17, 32]]))
    assert y.tolist() == [[0, 0, 15, 15, 1, 1, 2, 0]]
    assert sub.decode(y).tolist() == [[0, 255, 17, 32]]


def test_gpt2_base_and_digit_table():
    sub = SubTokenizer(50257, 2)
    assert sub.base == 225  # 224**2 = 50176 < 50257 <= 225**2
    assert sub.digit_table.shape == (50257, 2)
    assert SubTokenizer(50257, 4).base == 15
    assert SubTokenizer(256, 8).base == 2


def test_identity_when_length_one():
    sub = SubTokenizer(7, 1)
    x = torch.randint(0, 7, (3, 5))
    assert torch.equal(sub.encode(x), x)
    assert sub.mask_id == 7


def test_larger_base_allowed():
    sub = SubTokenizer(10, 2, base=5)
    assert sub.num_codes == 25
    x = torch.arange(10).view(1, -1)
    assert torch.equal(sub.decode(sub.encode(x)), x)


def test_permutation_round_trip_and_digits():
    perm = torch.randperm(27, generator=torch.Generator().manual_seed(0))
    sub = SubTokenizer(27, 3, permutation=perm)
    x = torch.arange(27).view(3, 9)
    y = sub.encode(x)
    assert torch.equal(sub.decode(y), x)
    # digits are those of pi(c)
    plain = SubTokenizer(27, 3)
    assert torch.equal(y, plain.encode(perm[x]))


def test_image_round_trip_and_layout():
    sub = SubTokenizer(256, 2)
    img = torch.randint(0, 256, (2, 3, 4, 5))
    dig = sub.encode_image(img)
    assert dig.shape == (2, 6, 4, 5)
    # channel c*ell + j holds digit j of channel c
    assert torch.equal(dig[:, 2], img[:, 1] // 16)
    assert torch.equal(dig[:, 3], img[:, 1] % 16)
    assert torch.equal(sub.decode_image(dig), img)
    seq = sub.image_to_sequence(dig)
    assert torch.equal(seq, sub.encode(img.reshape(2, -1)))
    assert torch.equal(sub.sequence_to_image(seq, dig.shape), dig)


def test_config_round_trip():
    sub = SubTokenizer(12, 2, permutation=list(reversed(range(12))))
    assert SubTokenizer.from_config(sub.config()) == sub
    assert SubTokenizer(12, 2) != sub


@settings(max_examples=60, deadline=None)
@given(
    c=st.integers(1, 300),
    ell=st.integers(1, 5),
    extra=st.integers(0, 2),
    permute=st.booleans(),
    seed=st.integers(0, 10**6),
)
def test_round_trip_property(c, ell, extra, permute, seed):
    g = torch.Generator().manual_seed(seed)
    base = default_base(c, ell) + extra if ell > 1 else None
    perm = torch.randperm(c, generator=g) if permute else None
    sub = SubTokenizer(c, ell, base=base, permutation=perm)
    x = torch.randint(0, c, (2, 6), generator=g)
    y = sub.encode(x)
    assert y.shape == (2, 6 * ell)
    assert int(y.min()) >= 0 and int(y.max()) < sub.base
    assert torch.equal(sub.decode(y), x)
    # distinct tokens get distinct codes
    codes = sub.digits_to_codes(sub.digit_table)
    assert codes.unique().numel() == c and int(codes.max()) < sub.base**ell


@pytest.mark.parametrize(
    "kwargs, err, text",
    [
        (dict(num_classes=257, length=2, base=16), ValueError, "16\\*\\*2 = 256 < 257"),
        (dict(num_classes=0, length=2), ValueError, "num_classes must be >= 1, got 0"),
        (dict(num_classes=10, length=0), ValueError, "length must be >= 1, got 0"),
        (dict(num_classes=10.0, length=2), TypeError, "num_classes must be an int"),
        (dict(num_classes=4, length=2, permutation=[0, 1, 1, 2]), ValueError, "permutation"),
        (dict(num_classes=4, length=2, permutation=[0.0, 1.0, 2.0, 3.0]), TypeError, "integers"),
        # limits: nothing may try to allocate a b^ℓ grid of terabytes
        (
            dict(num_classes=256, length=64),
            ValueError,
            "num_classes=256, length=64, base=2 gives base\\*\\*length = "
            "18446744073709551616 codes, more than the limit of 67108864",
        ),
        (
            dict(num_classes=50257, length=40),
            ValueError,
            "length=40, base=2 gives base\\*\\*length = 1099511627776",
        ),
        (
            dict(num_classes=256, length=100),
            ValueError,
            "length \\(sub-tokens per token\\) must be <= 64, got 100",
        ),
        (dict(num_classes=256, length=10**9), ValueError, "must be <= 64, got 1000000000"),
        (dict(num_classes=10, length=1, base=10**12), ValueError, "base=1000000000000 gives"),
        (dict(num_classes=2**27, length=1), ValueError, "num_classes must be <= 67108864"),
        (dict(num_classes=256, length=27), ValueError, "134217728 codes"),
    ],
)
def test_constructor_errors(kwargs, err, text):
    with pytest.raises(err, match=text):
        SubTokenizer(**kwargs)


def test_encode_decode_errors():
    sub = SubTokenizer(10, 2)  # b = 4, codes 10..15 invalid
    with pytest.raises(ValueError, match="found 10"):
        sub.encode(torch.tensor([[1, 10]]))
    with pytest.raises(ValueError, match="found -1"):
        sub.encode(torch.tensor([[-1, 3]]))
    with pytest.raises(TypeError, match="integer tensor"):
        sub.encode(torch.tensor([[1.0, 2.0]]))
    with pytest.raises(ValueError, match="found 5"):
        sub.decode(torch.tensor([[0, 5]]))
    with pytest.raises(ValueError, match="mask 4"):
        sub.decode(torch.tensor([[0, 4]]))
    with pytest.raises(ValueError, match="multiple of length=2"):
        sub.decode(torch.tensor([[0, 1, 2]]))
    with pytest.raises(ValueError, match="code 15"):
        sub.decode(torch.tensor([[3, 3]]))
    with pytest.raises(ValueError, match="\\(B, ch, H, W\\)"):
        sub.encode_image(torch.zeros(2, 3, dtype=torch.long))


def test_limits_are_inclusive():
    from mdm_prime.subtokenizer import MAX_CODES

    assert SubTokenizer(256, 26).num_codes == MAX_CODES == 2**26  # the largest grid accepted
    with pytest.raises(ValueError, match="must be <= 64"):
        default_base(256, 65)


@settings(max_examples=60, deadline=None)
@given(
    c=st.integers(1, 200),
    ell=st.integers(1, 4),
    extra=st.integers(0, 2),
    permute=st.booleans(),
    seed=st.integers(0, 10**6),
)
def test_encode_matches_independent_digits(c, ell, extra, permute, seed):
    # the oracle's digits (Python integer arithmetic) against encode/decode and the digit table
    from mdm_prime.oracle import digits_of

    g = torch.Generator().manual_seed(seed)
    base = default_base(c, ell) + extra if ell > 1 else None
    sub = SubTokenizer(c, ell, base=base, permutation=torch.randperm(c, generator=g) if permute else None)
    table = torch.from_numpy(digits_of(sub))
    assert torch.equal(sub.digit_table, table)
    x = torch.randint(0, c, (3, 5), generator=g)
    assert torch.equal(sub.encode(x), table[x].flatten(1))
    assert torch.equal(sub.decode(table[x].flatten(1)), x)
