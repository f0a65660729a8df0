import pytest

from desim.units import UnitError, format_ns, parse_rate_per_ns, parse_size_bytes, parse_time_ns


@pytest.mark.parametrize("text,ns", [("25ns", 25), ("2us", 2000), ("3ms", 3_000_000),
                                     ("1.5 s", 1_500_000_000), (40, 40), ("10", 10)])
def test_times(text, ns):
    assert parse_time_ns(text) == ns


@pytest.mark.parametrize("text,b", [("4KiB", 4096), ("64 KiB", 65536), ("2MiB", 2 << 20), (512, 512)])
def test_sizes(text, b):
    assert parse_size_bytes(text) == b


def test_rates():
    assert parse_rate_per_ns("500/s") == pytest.approx(5e-7)
    assert parse_rate_per_ns("2/ms") == pytest.approx(2e-6)
    assert parse_rate_per_ns(1000) == pytest.approx(1e-6)


@pytest.mark.parametrize("fn,text", [(parse_time_ns, "5 KiB"), (parse_size_bytes, "3ms"),
                                     (parse_rate_per_ns, "3ms"), (parse_time_ns, "three"),
                                     (parse_time_ns, True)])
def test_wrong_dimension_is_refused(fn, text):
    with pytest.raises(UnitError):
        fn(text)


def test_format():
    assert format_ns(1_500_000) == "1.5 ms"
    assert format_ns(float("nan")) == "-"
