"""The shared argument checks (mdm_prime/validation.py): what they accept, what they refuse, and the
one wording of each refusal."""

import math
import re

import pytest

from mdm_prime.validation import check_choice, check_int, check_number, check_positive_int, is_int, is_number


@pytest.mark.parametrize("value", [True, False, 1.0, 2.5, "3", None, [1]])
def test_check_int_refuses_non_ints_bools_included(value):
    with pytest.raises(ValueError, match=re.escape(f"n must be an int >= 0, got {value!r}")):
        check_int("n", value, low=0)


def test_check_int_bounds_are_inclusive():
    assert check_int("n", 2, low=2) == 2
    assert check_int("n", 5, low=2, high=5) == 5
    with pytest.raises(ValueError, match=r"^n must be an int >= 2, got 1$"):
        check_int("n", 1, low=2)
    with pytest.raises(ValueError, match=r"^n must be an int in \[0, 5\], got 6$"):
        check_int("n", 6, low=0, high=5)
    with pytest.raises(ValueError, match=r"^n must be an int <= 5, got 6$"):
        check_int("n", 6, high=5)
    assert check_int("n", -(10**30)) == -(10**30)  # no bound: any int


def test_check_int_none_only_with_allow_none():
    assert check_int("n", None, low=1, allow_none=True) is None
    with pytest.raises(ValueError, match=r"^n must be an int >= 1, got None$"):
        check_int("n", None, low=1)


def test_check_int_note_and_what():
    with pytest.raises(ValueError, match=r"^n must be an int >= 1 \(or None\), got 0$"):
        check_int("n", 0, low=1, allow_none=True, note=" (or None)")
    with pytest.raises(ValueError, match=r"^n must be a positive integer, got 0$"):
        check_int("n", 0, low=1, what="a positive integer")


def test_check_int_type_error_splits_the_refusal():
    with pytest.raises(TypeError, match=r"^seed must be an int, got float \(1\.5\)$"):
        check_int("seed", 1.5, type_error=True)
    with pytest.raises(TypeError, match=r"^seed must be an int, got bool \(True\)$"):
        check_int("seed", True, low=0, type_error=True)
    with pytest.raises(ValueError, match=r"^seed must be >= 0, got -1$"):
        check_int("seed", -1, low=0, type_error=True)


def test_check_positive_int_keeps_the_model_and_subtokenizer_messages():
    assert check_positive_int("length", 1) == 1
    with pytest.raises(TypeError, match=r"^length must be an int, got bool \(True\)$"):
        check_positive_int("length", True)
    with pytest.raises(TypeError, match=r"^length must be an int, got str \('2'\)$"):
        check_positive_int("length", "2")
    with pytest.raises(ValueError, match=r"^length must be >= 1, got 0$"):
        check_positive_int("length", 0)


@pytest.mark.parametrize("value", [True, "0.5", None, math.nan, [0.5]])
def test_check_number_refuses_bools_nan_and_non_numbers(value):
    with pytest.raises(ValueError, match=re.escape(f"x must be a number in [0, 1], got {value!r}")):
        check_number("x", value, 0, 1)


def test_check_number_bounds_inclusive_and_exclusive():
    assert check_number("x", 0, 0, 1) == 0 and check_number("x", 1.0, 0, 1) == 1.0
    with pytest.raises(ValueError, match=r"^x must be a number in \(0, 1\], got 0$"):
        check_number("x", 0, 0, 1, low_open=True)
    with pytest.raises(ValueError, match=r"^x must be a number in \[0, 1\), got 1\.0$"):
        check_number("x", 1.0, 0, 1, high_open=True)
    with pytest.raises(ValueError, match=r"^x must be a finite number > 0, got -2$"):
        check_number("x", -2, 0, low_open=True)
    with pytest.raises(ValueError, match=r"^x must be a finite number <= 3, got 4\.5$"):
        check_number("x", 4.5, None, 3)
    assert check_number("x", 1e-300, 0, low_open=True) == 1e-300


def test_check_number_infinity_only_where_allowed():
    for value in (math.inf, -math.inf):
        with pytest.raises(ValueError, match=rf"^x must be a finite number, got {value}$"):
            check_number("x", value)
    assert check_number("x", math.inf, 0, low_open=True, finite=False) == math.inf
    with pytest.raises(ValueError, match=r"^x must be a number > 0, got -inf$"):
        check_number("x", -math.inf, 0, low_open=True, finite=False)
    with pytest.raises(ValueError, match=r"^x must be a number > 0, got nan$"):
        check_number("x", math.nan, 0, low_open=True, finite=False)


def test_check_number_type_error_splits_the_refusal():
    kw = dict(low_open=True, finite=False, type_error=True)
    with pytest.raises(TypeError, match=r"^t must be a number, got bool \(True\)$"):
        check_number("t", True, 0.0, math.inf, **kw)
    with pytest.raises(TypeError, match=r"^t must be a number, got float \(nan\)$"):
        check_number("t", math.nan, 0.0, math.inf, **kw)
    with pytest.raises(ValueError, match=r"^t must be in \(0\.0, inf\], got -1$"):
        check_number("t", -1, 0.0, math.inf, **kw)
    assert check_number("t", math.inf, 0.0, math.inf, **kw) == math.inf


def test_check_choice():
    assert check_choice("mode", "a", ("a", "b")) == "a"
    with pytest.raises(ValueError, match=r"^mode must be one of \('a', 'b'\), got 'c'$"):
        check_choice("mode", "c", ("a", "b"))
    with pytest.raises(ValueError, match=r"got None$"):
        check_choice("mode", None, ("a", "b"))


def test_predicates_agree_with_the_checks():
    assert is_int(3, low=1, high=3) and not is_int(True) and not is_int(3.0) and not is_int(0, low=1)
    assert is_number(0.5, 0, 1) and not is_number(False) and not is_number(math.nan)
    assert not is_number(math.inf) and is_number(math.inf, finite=False)
    assert not is_number(1, 0, 1, high_open=True)
