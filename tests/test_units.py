import pytest

from desim.units import UnitError, format_ns, parse_rate_per_ns, parse_size_bytes, parse_time_ns


@pytest.mark.parametrize(
    "text,ns",
    [
        ("25ns", 25),
        ("2us", 2000),
        ("3ms", 3_000_000),
        ("1.5 s", 1_500_000_000),
        (40, 40),
        ("10", 10),
    ],
)
def test_times(text, ns):
    assert parse_time_ns(text) == ns


@pytest.mark.parametrize(
    "text,b", [("4KiB", 4096), ("64 KiB", 65536), ("2MiB", 2 << 20), (512, 512)]
)
def test_sizes(text, b):
    assert parse_size_bytes(text) == b


def test_rates():
    assert parse_rate_per_ns("500/s") == pytest.approx(5e-7)
    assert parse_rate_per_ns("2/ms") == pytest.approx(2e-6)
    assert parse_rate_per_ns(1000) == pytest.approx(1e-6)


@pytest.mark.parametrize(
    "fn,text",
    [
        (parse_time_ns, "5 KiB"),
        (parse_size_bytes, "3ms"),
        (parse_rate_per_ns, "3ms"),
        (parse_time_ns, "three"),
        (parse_time_ns, True),
    ],
)
def test_wrong_dimension_is_refused(fn, text):
    with pytest.raises(UnitError):
        fn(text)


def test_format():
    assert format_ns(1_500_000) == "1.5 ms"
    assert format_ns(float("nan")) == "-"


# --- what a quantity may be: one number, one unit of the right kind, finite and bounded ------


@pytest.mark.parametrize(
    "fn,text,needle",
    [
        (parse_time_ns, "9**9**9 ns", "cannot read"),  # pint would evaluate it for ever
        (parse_time_ns, "20 ms / s", "cannot read"),  # pint read it as 20 ns
        (parse_time_ns, "1 percent", "not a unit of time"),
        (parse_size_bytes, "1 percent", "not a unit of size"),  # pint read it as 1 byte
        (parse_size_bytes, "2 bits x", "cannot read"),
        (parse_rate_per_ns, "5/KiB", "not a unit of time"),
        (parse_rate_per_ns, "5 percent", "not a unit of rate"),
        (parse_time_ns, "3 parsecs", "not a unit of time"),
        (parse_time_ns, "3 foo", "unknown unit 'foo'"),
        (parse_time_ns, "1e400", "not a finite"),
        (parse_time_ns, float("inf"), "not a finite"),
        (parse_time_ns, float("nan"), "not a finite"),
        (parse_time_ns, "1e30 s", "longer than 1 day"),
        (parse_time_ns, 10**30, "longer than 1 day"),
        (parse_size_bytes, "2 PiB", "larger than 1 PiB"),
        (parse_time_ns, [1, 2], "not a list"),  # was: unhashable type (lru_cache)
        (parse_size_bytes, {"a": 1}, "not a mapping"),
        (parse_rate_per_ns, None, "not nothing"),
        (parse_time_ns, "1" * 200 + " ns", "cannot read"),
    ],
)
def test_bad_quantities_are_unit_errors(fn, text, needle):
    with pytest.raises(UnitError, match=needle):
        fn(text)


@pytest.mark.parametrize(
    "fn,text,value",
    [
        (parse_time_ns, "1 day", 86_400 * 10**9),
        (parse_time_ns, "5 µs", 5000),
        (parse_time_ns, "1e-3 s", 1_000_000),
        (parse_time_ns, ".5ms", 500_000),
        (parse_time_ns, " 3 ms ", 3_000_000),
        (parse_time_ns, 2.6, 3),
        (parse_time_ns, "-5ms", -5_000_000),
        (parse_size_bytes, "1 bytes", 1),
        (parse_size_bytes, "1.5 KiB", 1536),
        (parse_rate_per_ns, "3 kHz", pytest.approx(3e-6)),
        (parse_rate_per_ns, "500 / s", pytest.approx(5e-7)),
    ],
)
def test_quantities_still_read(fn, text, value):
    assert fn(text) == value


def test_every_element_writes_its_default_times_with_units():
    """Element params validate their defaults inside ``units_required`` (a user's config): a
    default time written as a bare number would be refused there, naming a field the user never
    wrote."""
    from desim.distributions import TIME_UNITS
    from desim.workloads import ELEMENTS

    bare = []
    for name in ELEMENTS.names():
        for field, info in ELEMENTS.get(name).Params.model_fields.items():
            d = info.default
            is_time = TIME_UNITS in info.metadata
            if is_time and isinstance(d, int | float) and not isinstance(d, bool) and d:
                bare.append(f"{name}.{field}={d}")
    assert bare == []
