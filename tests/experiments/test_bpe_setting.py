"""The BPE study's reading: which ℓ wins by the valid bound, and whether L_prime would rank it first."""

from mdm_prime.experiments import bpe_setting


def _row(family, ell, bits, se, prime=None):
    return {
        "family": family,
        "subtokens": ell,
        "family_label": f"{family} ℓ={ell}",
        "valid_bits_per_char": bits,
        "valid_stderr_bits_per_char": se,
        "prime_objective_nats_per_token": prime,
        "gap_nats_per_token": 0.0 if prime is None else 1.0,
    }


def test_reading_names_the_best_ell_and_the_paper_objectives_different_pick():
    rows = [
        _row("mdm", 1, 2.70, 0.002, 6.8),
        _row("prime", 2, 2.50, 0.003, 6.1),
        _row("prime", 3, 2.505, 0.004, 6.0),  # 0.005 behind ℓ = 2: within 2 s.e. (0.010)
        _row("prime", 4, 2.60, 0.004, 6.05),
        _row("ar", 1, 1.90, 0.006),
    ]
    text = " ".join(bpe_setting.reading({"rows": rows}))
    assert "best ℓ is 2, indistinguishable from ℓ = 3" in text
    assert "`L_prime` ℓ = 3 would look best" in text
    assert "behind the autoregressive baseline (1.900 bits/char) by 0.600" in text


def test_reading_separates_ells_beyond_two_standard_errors_and_agrees_when_l_prime_does():
    rows = [
        _row("mdm", 1, 2.70, 0.002, 6.8),
        _row("prime", 2, 2.50, 0.003, 5.9),
        _row("prime", 3, 2.512, 0.004, 6.0),  # 0.012 behind, s.e. 0.005: 2.4 s.e., beyond 2
    ]
    text = " ".join(bpe_setting.reading({"rows": rows}))
    assert "best ℓ is 2, ahead of ℓ = 3 by 0.012 ± 0.005" in text
    assert "the same ℓ would come first" in text
