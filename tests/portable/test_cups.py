from firmware.cups import check_letters, cups_error


def test_reference_example_from_stdnum():
    # python-stdnum doctest: ES 1234-123456789012-JY
    assert check_letters("1234123456789012") == "JY"
    assert cups_error("ES1234123456789012JY") is None
    assert cups_error("ES1234123456789012JY1F") is None


def test_every_point_type_letter_is_accepted():
    for t in "FPRCXYZ":
        assert cups_error("ES1234123456789012JY0" + t) is None


def test_wrong_check_letters_name_the_expected_ones():
    why = cups_error("ES1234123456789012XY")
    assert "JY" in why and "XY" in why


def test_bad_shapes():
    assert "20 or 22" in cups_error("ES123412345678901JY")
    assert "20 or 22" in cups_error("ES1234123456789012JY1")
    assert "ES" in cups_error("FR1234123456789012JY")
    assert "digits" in cups_error("ES12341234567X9012JY")
    assert "type" in cups_error("ES1234123456789012JY1T")
    assert "border" in cups_error("ES1234123456789012JYXF")
    assert cups_error(1234) == "must be a string"


def test_check_letters_match_the_modulo_rule_for_many_numbers():
    table = "TRWAGMYFPDXBNJZSQVHLCKE"
    n = 1
    for _ in range(200):
        digits = "%016d" % n
        q, m = divmod(int(digits) % 529, 23)
        assert check_letters(digits) == table[q] + table[m]
        n = (n * 7919 + 104729) % 10000000000000000
