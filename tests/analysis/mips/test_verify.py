"""MIPS verification can fail: a program wrong on one long sequence, unsafe source, crashes."""

from workbench.analysis.mips.verify import exhaustive_length, verify_program

PARITY = """
def program(xs):
    q = 0
    ys = []
    for x in xs:
        q = q ^ x
        ys.append(q)
    return ys
"""


def test_a_correct_program_verifies_with_its_exhaustive_length():
    v = verify_program(PARITY, "Parity_All")
    assert v.passed and v.exhaustive_length == 8 and v.n_exhaustive == 510 and v.n_random == 11_000


def test_a_program_wrong_only_on_long_sequences_fails():
    wrong = PARITY.replace("ys.append(q)", "ys.append(q if len(ys) < 60 else 1 - q)")
    v = verify_program(wrong, "Parity_All")
    assert not v.passed and len(v.counterexample) == 100 and v.expected != v.got


def test_unsafe_or_crashing_programs_fail_with_a_reason():
    assert "Import" in verify_program("import os\ndef program(xs):\n    return xs\n", "Parity_All").error
    assert not verify_program("def program(xs):\n    return open('x')\n", "Parity_All").passed
    v = verify_program("def program(xs):\n    return [1 // 0 for x in xs]\n", "Parity_All")
    assert not v.passed and "ZeroDivisionError" in v.error


def test_exhaustive_length_shrinks_with_the_alphabet():
    assert exhaustive_length(2) == 8 and exhaustive_length(4) == 8 and exhaustive_length(100) == 2


def test_the_summary_says_why_a_large_alphabet_stops_the_exhaustive_check_early():
    assert "over the" not in verify_program(PARITY, "Parity_All").summary()
    add = ("def program(xs):\n    ys = []\n    prev = 0\n    for x in xs:\n        ys.append(x + prev)\n"
           "        prev = x\n    return ys\n")
    v = verify_program(add, "Sum_Last2", n_random=10, n_long=1)
    assert v.passed, v.summary()
    assert v.exhaustive_length == 2
    assert "of 100 symbols: length 8 would be 1.01e+16 sequences, over the 200,000 budget" in v.summary()
