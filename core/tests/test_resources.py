"""The resource model: parsers, the canonical request, queue limits, validate and coerce."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from jobfleet.core.errors import ResourceError
from jobfleet.core.resources import (
    CLAMPED_TO_MAXIMUM,
    FILLED_FROM_DEFAULT,
    GIB,
    KIB,
    MAX_CORES,
    MAX_GPUS,
    MAX_MEMORY,
    MAX_RUNTIME,
    MIB,
    MIN_TASK_MEMORY,
    PIB,
    RAISED_TO_MINIMUM,
    TIB,
    Adjustment,
    QueueLimits,
    ResourceRequest,
    check_task_memory,
    coerce,
    format_memory,
    format_runtime,
    memory_text,
    parse_cores,
    parse_gpus,
    parse_memory,
    parse_runtime,
    validate,
)

# Values of the wrong type, rejected by every parser.
WRONG_TYPES: list[object] = [True, False, None, [1], {"a": 1}, b"4G", (1,), object()]
NOT_FINITE: list[float] = [math.nan, math.inf, -math.inf]
BLANK: list[str] = ["", " ", "\t\n"]


def error_of(parser: Any, value: object, **kwargs: Any) -> ResourceError:
    with pytest.raises(ResourceError) as caught:
        parser(value, **kwargs)
    return caught.value


def assert_names_everything(error: ResourceError, field: str, value: object) -> None:
    """The message names the field and the value, and shows the accepted forms."""
    message = str(error)
    assert error.field == field
    assert error.value is value or error.value == value
    assert repr(field) in message
    assert repr(value) in message
    assert "Accepted: " in message
    assert error.accepted in message
    assert message.endswith(".")


# --- memory --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("512M", 512 * MIB),
        ("4G", 4 * GIB),
        ("1.5T", 1536 * GIB),
        ("4GiB", 4 * GIB),
        ("300MB", 300 * MIB),
        ("1024K", MIB),
        ("100B", 100),
        ("2 GiB", 2 * GIB),
        ("4g", 4 * GIB),
        ("4gib", 4 * GIB),
        ("4gb", 4 * GIB),
        ("1kb", KIB),
        ("1KiB", KIB),
        ("1P", PIB),
        ("0.5G", 512 * MIB),
        (".5G", 512 * MIB),
        ("  4G  ", 4 * GIB),
        ("1b", 1),
        ("1.4B", 1),  # rounded to whole bytes
        ("0.1K", 102),
    ],
)
def test_memory_forms(value: str, expected: int) -> None:
    assert parse_memory(value) == expected


def test_memory_units_are_binary() -> None:
    # "MB" means MiB, as Slurm reads it: 1000-based units would make "4GB" 7% smaller.
    assert parse_memory("1MB") == parse_memory("1MiB") == parse_memory("1M") == 1024**2
    assert parse_memory("1TB") == 1024**4


@pytest.mark.parametrize("value", [4, 4.0, "4", " 4 ", 0.5])
def test_bare_memory_is_rejected_as_ambiguous(value: object) -> None:
    error = error_of(parse_memory, value)
    assert_names_everything(error, "memory", value)
    assert "no unit" in str(error)
    assert "'4G'" in error.accepted


@pytest.mark.parametrize(
    ("value", "bare_unit", "expected"),
    [
        (4, "G", 4 * GIB),
        ("4", "G", 4 * GIB),
        (4.5, "G", 4 * GIB + 512 * MIB),
        (512, "M", 512 * MIB),
        (100, "B", 100),
        ("2G", "M", 2 * GIB),  # a unit always wins over the bare unit
        (3, "gib", 3 * GIB),
    ],
)
def test_bare_memory_in_the_callers_unit(value: object, bare_unit: str, expected: int) -> None:
    assert parse_memory(value, bare_unit=bare_unit) == expected


def test_bare_unit_is_named_in_accepted_forms() -> None:
    error = error_of(parse_memory, "lots", bare_unit="G")
    assert "a bare number of G" in error.accepted


def test_unknown_bare_unit_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="bare memory unit 'X'"):
        parse_memory(4, bare_unit="X")


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (4 * GIB, "4G"),
        (1536 * MIB, "1536M"),
        (1000, "1000B"),
        (3 * KIB, "3K"),
        (2 * PIB // 2, "1P"),
    ],
)
def test_memory_text_is_exact_and_reads_back(size: int, text: str) -> None:
    assert memory_text(size) == text
    assert parse_memory(text) == size


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("4X", "unknown unit 'X'"),
        ("4Gb5", "is not a memory size"),
        ("G4", "is not a memory size"),
        ("--5", "is not a memory size"),
        ("-5G", "is negative"),
        (-1, "is negative"),
        (-0.5, "is negative"),
        ("4 G B", "is not a memory size"),
        ("four G", "is not a memory size"),
        ("1e3M", "is not a memory size"),
        ("4.G", "is not a memory size"),
        ("0G", "at least one byte"),
        ("0.1B", "at least one byte"),
        ("0", "no unit"),
        ("1025T", "the most any request may ask for"),
        ("2P", "the most any request may ask for"),
        (f"{MAX_MEMORY + 1}B", "the most any request may ask for"),
        ("nan", "is not a memory size"),
        ("inf", "is not a memory size"),
        ("4G,", "is not a memory size"),
    ],
)
def test_bad_memory(value: object, problem: str) -> None:
    error = error_of(parse_memory, value)
    assert_names_everything(error, "memory", value)
    assert problem in str(error)


@pytest.mark.parametrize("value", WRONG_TYPES + NOT_FINITE + BLANK, ids=repr)
def test_memory_wrong_types_and_blanks(value: object) -> None:
    error = error_of(parse_memory, value, bare_unit="G")
    assert_names_everything(error, "memory", value)


def test_memory_limit_is_inclusive() -> None:
    assert parse_memory("1P") == MAX_MEMORY
    assert parse_memory(f"{MAX_MEMORY}B") == MAX_MEMORY


def test_memory_field_name_is_the_callers() -> None:
    error = error_of(parse_memory, "lots", field="max_memory")
    assert_names_everything(error, "max_memory", "lots")


# --- runtime -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (30, 30),
        (1.5, 2),  # rounded up
        (0.2, 1),
        ("30", 30),  # seconds, as Jobmon reads it; Slurm would read minutes
        ("2.5", 3),
        ("90s", 90),
        ("15m", 900),
        ("2h", 7200),
        ("1d", 86400),
        ("1h30m", 5400),
        ("2d12h", 216000),
        ("1d2h3m4s", 93784),
        ("1.5h", 5400),
        ("0.5s", 1),
        ("1 h 30 m", 5400),
        ("2 days", 172800),
        ("10min", 600),
        ("3hours", 10800),
        ("1H30M", 5400),
        ("1:30:00", 5400),
        ("30:00", 1800),
        ("90:00", 5400),  # the leading field of a clock may be large
        ("100:00:00", 360000),
        ("0:05", 5),
        ("1-00:00:00", 86400),
        ("1-12", 129600),
        ("1-12:30", 131400),
        ("2-03:04:05", 2 * 86400 + 3 * 3600 + 4 * 60 + 5),
        (" 15m ", 900),
        (MAX_RUNTIME, MAX_RUNTIME),
        ("366d", MAX_RUNTIME),
    ],
)
def test_runtime_forms(value: object, expected: int) -> None:
    assert parse_runtime(value) == expected


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("1:2:3:4", "is not a duration"),
        ("--5", "is not a duration"),
        ("-5", "is negative"),
        ("-1h", "is negative"),
        ("-1:00", "is negative"),
        (-1, "is negative"),
        (-0.5, "is negative"),
        (0, "at least one second"),
        ("0", "at least one second"),
        ("0s", "at least one second"),
        ("0:00", "at least one second"),
        ("lots", "is not a duration"),
        ("4X", "is not a duration"),
        ("h1", "is not a duration"),
        ("1h30", "is not a duration"),
        ("30m1h", "is not a duration"),  # units go largest first
        ("1h1h", "is not a duration"),
        ("1:75:00", "75 minutes"),
        ("1:00:60", "60 seconds"),
        ("1-24", "24 hours"),
        ("1-12:60", "60 minutes"),
        ("1-", "is not a duration"),
        ("1.5:00", "is not a duration"),
        ("367d", "the most any request may ask for"),
        (MAX_RUNTIME + 1, "the most any request may ask for"),
        (1e300, "the most any request may ask for"),
        ("UNLIMITED", "is not a duration"),
    ],
)
def test_bad_runtime(value: object, problem: str) -> None:
    error = error_of(parse_runtime, value)
    assert_names_everything(error, "runtime", value)
    assert problem in str(error)
    assert "'1:30:00'" in error.accepted


@pytest.mark.parametrize("value", WRONG_TYPES + NOT_FINITE + BLANK, ids=repr)
def test_runtime_wrong_types_and_blanks(value: object) -> None:
    assert_names_everything(error_of(parse_runtime, value), "runtime", value)


# --- cores ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [(1, 1.0), (4, 4.0), (0.5, 0.5), ("2", 2.0), (" 0.25 ", 0.25), (MAX_CORES, float(MAX_CORES))],
)
def test_cores_forms(value: object, expected: float) -> None:
    result = parse_cores(value)
    assert result == expected
    assert isinstance(result, float)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (0, "more than zero"),
        ("0", "more than zero"),
        (0.0, "more than zero"),
        (-1, "is negative"),
        ("-2", "is negative"),
        ("--5", "is not a number"),
        ("lots", "is not a number"),
        ("4X", "is not a number"),
        ("1e3", "is not a number"),
        ("nan", "is not a number"),
        (MAX_CORES + 1, "the most any request may ask for"),
    ],
)
def test_bad_cores(value: object, problem: str) -> None:
    error = error_of(parse_cores, value)
    assert_names_everything(error, "cores", value)
    assert problem in str(error)


@pytest.mark.parametrize("value", WRONG_TYPES + NOT_FINITE + BLANK, ids=repr)
def test_cores_wrong_types_and_blanks(value: object) -> None:
    assert_names_everything(error_of(parse_cores, value), "cores", value)


# --- GPUs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (2, (2, None)),
        (0, (0, None)),
        (2.0, (2, None)),
        ("2", (2, None)),
        ("0", (0, None)),
        ("a100:2", (2, "a100")),
        ("gpu:a100:2", (2, "a100")),
        ("GPU:v100-32gb:1", (1, "v100-32gb")),
        ("gpu:2", (2, None)),  # Slurm's untyped gres form
        (" a100 : 4 ", (4, "a100")),
        ("nvidia-tesla-t4:1", (1, "nvidia-tesla-t4")),
        (MAX_GPUS, (MAX_GPUS, None)),
    ],
)
def test_gpu_forms(value: object, expected: tuple[int, str | None]) -> None:
    assert parse_gpus(value) == expected


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (-1, "is negative"),
        ("-1", "is negative"),
        ("a100:-1", "is negative"),
        (1.5, "not a whole number"),
        ("1.5", "is not a GPU request"),
        ("lots", "is not a GPU request"),
        ("a100", "is not a GPU request"),
        ("a100:", "is not a GPU request"),
        (":2", "is not a GPU type"),
        ("2:2", "is not a GPU type"),
        ("a b:2", "is not a GPU type"),
        ("x:a100:2", "is not a GPU request"),
        ("gpu:a100:2:3", "is not a GPU request"),
        ("--5", "is not a GPU request"),
        (MAX_GPUS + 1, "the most any request may ask for"),
        ("a100:5000", "the most any request may ask for"),
    ],
)
def test_bad_gpus(value: object, problem: str) -> None:
    error = error_of(parse_gpus, value)
    assert_names_everything(error, "gpus", value)
    assert problem in str(error)
    assert "'a100:2'" in error.accepted


@pytest.mark.parametrize("value", WRONG_TYPES + NOT_FINITE + BLANK, ids=repr)
def test_gpus_wrong_types_and_blanks(value: object) -> None:
    assert_names_everything(error_of(parse_gpus, value), "gpus", value)


# --- formatting ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (1, "1B"),
        (1023, "1023B"),
        (KIB, "1K"),
        (1536 * MIB, "1.5G"),
        (4 * GIB, "4G"),
        (2 * TIB, "2T"),
        (PIB, "1P"),
        (GIB + 1, "1G"),
    ],
)
def test_format_memory(size: int, text: str) -> None:
    assert format_memory(size) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (45, "45s"), (60, "1m"), (5400, "1h30m"), (216000, "2d12h"), (93784, "1d2h3m4s")],
)
def test_format_runtime(seconds: int, text: str) -> None:
    assert format_runtime(seconds) == text
    if seconds:
        assert parse_runtime(text) == seconds  # the label reads back


# --- ResourceRequest -----------------------------------------------------------------------


def test_parse_reads_every_field_and_keeps_extra_keys() -> None:
    request = ResourceRequest.parse(
        {
            "cores": "2",
            "memory": "4G",
            "runtime": "1h",
            "gpus": "a100:1",
            "queue": "all.q",
            "account": "proj",
            "stdout": "/tmp/out",
            "constraint": ["avx2"],
        }
    )
    assert request == ResourceRequest(
        cores=2.0,
        memory=4 * GIB,
        runtime=3600,
        gpus=1,
        gpu_type="a100",
        queue="all.q",
        extra={"account": "proj", "stdout": "/tmp/out", "constraint": ["avx2"]},
    )


def test_extra_values_are_kept_exactly() -> None:
    value = {"nested": [1, 2]}
    request = ResourceRequest.parse({"labels": value})
    assert request.extra["labels"] is value


def test_to_dict_is_canonical_and_ordered() -> None:
    request = ResourceRequest.parse(
        {"zeta": 1, "queue": "q", "memory": "1.5G", "cores": 2, "runtime": "90m", "gpus": 0}
    )
    result = request.to_dict()
    assert result == {
        "cores": 2,
        "memory": "1536M",
        "runtime": 5400,
        "gpus": 0,
        "queue": "q",
        "zeta": 1,
    }
    assert list(result) == ["cores", "memory", "runtime", "gpus", "queue", "zeta"]
    assert type(result["cores"]) is int
    assert json.loads(json.dumps(result)) == result


def test_to_dict_keeps_fractional_cores_and_omits_none() -> None:
    assert ResourceRequest.parse({"cores": 0.5}).to_dict() == {"cores": 0.5}
    assert ResourceRequest().to_dict() == {}


def test_to_dict_reads_back_unchanged() -> None:
    first = ResourceRequest.parse({"memory": "3G", "runtime": "2h", "gpus": "a100:2", "x": 1})
    assert ResourceRequest.parse(first.to_dict()) == first
    assert ResourceRequest.parse(json.loads(json.dumps(first.to_dict()))) == first


@pytest.mark.parametrize(("memory", "expected"), [("3G", 3), ("1536M", 1.5), ("1000B", 1000 / GIB)])
def test_to_dict_in_a_bare_unit_reads_back_in_that_unit(memory: str, expected: float) -> None:
    first = ResourceRequest.parse({"memory": memory})
    written = first.to_dict(bare_memory_unit="G")
    assert written["memory"] == expected
    again = ResourceRequest.parse(json.loads(json.dumps(written)), bare_memory_unit="G")
    assert again == first


def test_none_canonical_values_count_as_absent() -> None:
    request = ResourceRequest.parse({"memory": None, "cores": None, "stdout": None})
    assert request == ResourceRequest(extra={"stdout": None})
    assert request.to_dict() == {"stdout": None}  # a pass-through key is kept as given


def test_parse_uses_the_bare_memory_unit() -> None:
    assert ResourceRequest.parse({"memory": 4}, bare_memory_unit="G").memory == 4 * GIB
    with pytest.raises(ResourceError, match="no unit"):
        ResourceRequest.parse({"memory": 4})


@pytest.mark.parametrize(
    ("mapping", "field"),
    [
        ({"memory": "4X"}, "memory"),
        ({"runtime": "soon"}, "runtime"),
        ({"cores": True}, "cores"),
        ({"gpus": -1}, "gpus"),
        ({"gpu_type": 3}, "gpu_type"),
        ({"gpu_type": "a b"}, "gpu_type"),
        ({"queue": ""}, "queue"),
        ({"queue": 5}, "queue"),
    ],
)
def test_parse_names_the_bad_field(mapping: dict[str, Any], field: str) -> None:
    with pytest.raises(ResourceError) as caught:
        ResourceRequest.parse(mapping)
    assert caught.value.field == field


def test_gpu_type_key() -> None:
    request = ResourceRequest.parse({"gpus": 2, "gpu_type": "a100"})
    assert (request.gpus, request.gpu_type) == (2, "a100")
    same = ResourceRequest.parse({"gpus": "a100:2", "gpu_type": "a100"})
    assert same == request


def test_conflicting_gpu_types_are_an_error() -> None:
    with pytest.raises(ResourceError) as caught:
        ResourceRequest.parse({"gpus": "a100:2", "gpu_type": "v100"})
    assert "'a100'" in str(caught.value)
    assert "'v100'" in str(caught.value)


def test_request_is_frozen_and_hashable() -> None:
    request = ResourceRequest.parse({"cores": 1, "account": "a"})
    with pytest.raises(AttributeError):
        request.cores = 2  # type: ignore[misc]
    with pytest.raises(TypeError):
        request.extra["account"] = "b"  # type: ignore[index]
    assert hash(request) == hash(ResourceRequest.parse({"cores": 1, "account": "b"}))


def test_direct_construction_is_checked() -> None:
    assert ResourceRequest(memory=1024).memory == 1024  # canonical: a bare number is bytes
    with pytest.raises(ResourceError):
        ResourceRequest(memory=0)
    with pytest.raises(ResourceError):
        ResourceRequest(cores=-1)
    with pytest.raises(ValueError, match="fields of their own"):
        ResourceRequest(extra={"memory": "4G"})


# --- QueueLimits ---------------------------------------------------------------------------

PARAMETERS: dict[str, Any] = {
    "max_cores": 16,
    "min_cores": 1,
    "max_memory": "64G",
    "max_runtime": "1d",
    "max_gpus": 4,
    "default_cores": 1,
    "default_memory": "2G",
    "default_runtime": "1h",
    "default_gpus": 0,
    "partition": "batch",  # a backend's own key, ignored here
}


def test_limits_from_parameters() -> None:
    assert QueueLimits.from_parameters(PARAMETERS) == QueueLimits(
        max_cores=16,
        max_memory=64 * GIB,
        max_runtime=86400,
        max_gpus=4,
        min_cores=1,
        default_cores=1,
        default_memory=2 * GIB,
        default_runtime=3600,
        default_gpus=0,
    )


def test_limits_from_empty_parameters() -> None:
    assert QueueLimits.from_parameters({}) == QueueLimits()
    assert QueueLimits.from_parameters({"max_memory": None}) == QueueLimits()


def test_limits_with_a_bare_memory_unit() -> None:
    limits = QueueLimits.from_parameters({"max_memory": 64}, bare_memory_unit="G")
    assert limits.max_memory == 64 * GIB


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("max_memory", "64"),
        ("max_memory", "lots"),
        ("default_memory", -1),
        ("max_runtime", "forever"),
        ("default_runtime", 0),
        ("max_cores", 0),
        ("min_cores", "x"),
        ("default_cores", True),
        ("max_gpus", -1),
        ("max_gpus", "a100:2"),
        ("default_gpus", 1.5),
    ],
)
def test_bad_limit_names_its_key(key: str, value: object) -> None:
    with pytest.raises(ResourceError) as caught:
        QueueLimits.from_parameters({key: value})
    assert caught.value.field == key
    assert repr(key) in str(caught.value)


@pytest.mark.parametrize(
    ("parameters", "key"),
    [
        ({"max_memory": "64G", "default_memory": "128G"}, "default_memory"),
        ({"max_runtime": "1h", "default_runtime": "2h"}, "default_runtime"),
        ({"max_cores": 4, "default_cores": 8}, "default_cores"),
        ({"max_gpus": 0, "default_gpus": 1}, "default_gpus"),
        ({"max_cores": 4, "min_cores": 8}, "min_cores"),
        ({"min_cores": 2, "default_cores": 1}, "min_cores"),
    ],
)
def test_inconsistent_limits(parameters: dict[str, Any], key: str) -> None:
    with pytest.raises(ResourceError) as caught:
        QueueLimits.from_parameters(parameters)
    assert caught.value.field == key
    assert "is larger than the queue's" in str(caught.value)


def test_default_equal_to_max_is_fine() -> None:
    limits = QueueLimits.from_parameters({"max_memory": "4G", "default_memory": "4096M"})
    assert limits.default_memory == limits.max_memory


# --- validate and coerce -------------------------------------------------------------------

LIMITS = QueueLimits.from_parameters(PARAMETERS)


def test_adjustment_sentences() -> None:
    clamp = Adjustment("memory", 128 * GIB, 64 * GIB, CLAMPED_TO_MAXIMUM)
    assert str(clamp) == "The memory request of 128G was clamped to the queue maximum (64G)."
    fill = Adjustment("runtime", None, 5400, FILLED_FROM_DEFAULT)
    assert (
        str(fill)
        == "The runtime request was missing and was filled from the queue default (1h30m)."
    )
    raise_ = Adjustment("cores", 0.5, 1.0, RAISED_TO_MINIMUM)
    assert str(raise_) == "The cores request of 0.5 was raised to the queue minimum (1)."


@pytest.mark.parametrize(
    ("given", "expected", "adjusted"),
    [
        ({"memory": "128G"}, {"memory": 64 * GIB}, {"memory": CLAMPED_TO_MAXIMUM}),
        ({"runtime": "2d"}, {"runtime": 86400}, {"runtime": CLAMPED_TO_MAXIMUM}),
        ({"cores": 32}, {"cores": 16}, {"cores": CLAMPED_TO_MAXIMUM}),
        ({"cores": 0.5}, {"cores": 1}, {"cores": RAISED_TO_MINIMUM}),
        ({"gpus": "a100:8"}, {"gpus": 4, "gpu_type": "a100"}, {"gpus": CLAMPED_TO_MAXIMUM}),
        ({"memory": "64G"}, {"memory": 64 * GIB}, {}),
    ],
)
def test_coerce(given: dict[str, Any], expected: dict[str, Any], adjusted: dict[str, str]) -> None:
    full = {"cores": 2, "memory": "4G", "runtime": 60, "gpus": 1, **given}
    coerced, adjustments = coerce(ResourceRequest.parse(full), LIMITS)
    for key, value in expected.items():
        assert getattr(coerced, key) == value
    assert {adjustment.field: adjustment.reason for adjustment in adjustments} == adjusted


def test_coerce_fills_every_default() -> None:
    coerced, adjustments = coerce(ResourceRequest(extra={"account": "a"}), LIMITS)
    assert coerced.to_dict() == {
        "cores": 1,
        "memory": "2G",
        "runtime": 3600,
        "gpus": 0,
        "account": "a",
    }
    assert [adjustment.field for adjustment in adjustments] == [
        "cores",
        "memory",
        "runtime",
        "gpus",
    ]
    assert all(adjustment.reason == FILLED_FROM_DEFAULT for adjustment in adjustments)
    assert all(adjustment.requested is None for adjustment in adjustments)


def test_coerce_without_limits_changes_nothing() -> None:
    request = ResourceRequest.parse({"cores": 999, "memory": "1T"})
    assert coerce(request, QueueLimits()) == (request, [])


def test_validate_fitting_request() -> None:
    request = ResourceRequest.parse({"cores": 2, "memory": "4G", "runtime": "1h"})
    assert validate(request, LIMITS, strict=True) == (True, "")
    assert validate(request, LIMITS, strict=False) == (True, "")


def test_validate_over_the_limits() -> None:
    request = ResourceRequest.parse({"cores": 32, "memory": "128G"})
    ok, message = validate(request, LIMITS, strict=True)
    assert not ok
    assert message == (
        "The request does not fit the queue: cores 32 is above the queue maximum of 16; "
        "memory 128G is above the queue maximum of 64G."
    )
    ok, message = validate(request, LIMITS, strict=False)
    assert ok
    assert message.startswith("The request will be coerced to fit the queue:")
    assert "memory 128G is above the queue maximum of 64G, so 64G will be used" in message


def test_validate_below_the_minimum() -> None:
    ok, message = validate(ResourceRequest(cores=0.5), LIMITS, strict=True)
    assert not ok
    assert "cores 0.5 is below the queue minimum of 1" in message


@pytest.mark.parametrize("strict", [True, False])
def test_validate_missing_required(strict: bool) -> None:
    ok, message = validate(
        ResourceRequest(), QueueLimits(), strict=strict, required=["memory", "runtime"]
    )
    assert not ok
    assert "no value for memory, runtime" in message
    assert "no default for them" in message


def test_required_resource_with_a_default_is_not_missing() -> None:
    assert validate(ResourceRequest(), LIMITS, strict=True, required=["memory"]) == (True, "")


def test_required_extra_key() -> None:
    assert not validate(ResourceRequest(), LIMITS, strict=False, required=["account"])[0]
    request = ResourceRequest(extra={"account": None})
    assert not validate(request, LIMITS, strict=False, required=["account"])[0]
    request = ResourceRequest(extra={"account": "a"})
    assert validate(request, LIMITS, strict=False, required=["account"]) == (True, "")


def test_validate_after_coerce_is_valid_strict() -> None:
    request = ResourceRequest.parse({"cores": 0.25, "memory": "1T", "runtime": "9d", "gpus": 99})
    coerced, _ = coerce(request, LIMITS)
    assert validate(coerced, LIMITS, strict=True) == (True, "")
    assert coerce(coerced, LIMITS) == (coerced, [])


@pytest.mark.parametrize(
    ("parser", "value"),
    [(parse_memory, "٤G"), (parse_runtime, "٤h"), (parse_cores, "٤"), (parse_gpus, "٤")],
)
def test_only_ascii_digits(parser: Any, value: str) -> None:
    with pytest.raises(ResourceError):
        parser(value)


HUGE_INT = 10**5000  # repr() of it raises: the message must not try
LONG_TEXTS = ["9" * 5000 + "G", "9" * 5000, "1-" + "9" * 5000, "a100:" + "9" * 5000, "1h" * 100]


@pytest.mark.parametrize("parser", [parse_memory, parse_runtime, parse_cores, parse_gpus])
@pytest.mark.parametrize(
    "value",
    [HUGE_INT, -HUGE_INT, *LONG_TEXTS],
    ids=["huge", "-huge", "long-G", "long", "long-days", "long-gpus", "long-units"],
)
def test_absurd_values_give_short_messages(parser: Any, value: object) -> None:
    with pytest.raises(ResourceError) as caught:
        parser(value)
    assert len(str(caught.value)) < 600


def test_long_gpu_type_is_rejected() -> None:
    with pytest.raises(ResourceError, match="longer than 100 characters"):
        ResourceRequest.parse({"gpu_type": "a" * 101})


def test_integer_too_large_for_a_float_is_elided() -> None:
    error = error_of(parse_cores, 10**400)
    assert "<an integer of 1329 bits> is more than 100000" in str(error)


def test_the_task_memory_floor() -> None:
    check_task_memory(MIN_TASK_MEMORY)
    check_task_memory(4 * GIB)
    with pytest.raises(ResourceError, match=r"'1023K' is below 1M.*MIN_TASK_MEMORY"):
        check_task_memory(1023 * KIB)
    with pytest.raises(ResourceError, match=r"Resource 'max_memory': '1B' is below 1M"):
        check_task_memory(1, field="max_memory", value="1B")


# --- preemptible (an extra key with a reader of its own) ------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, True),
        (False, False),
        (1, True),
        (0, False),
        ("yes", True),
        (" TRUE ", True),
        ("off", False),
        ("0", False),
    ],
)
def test_preemptible_reads_yes_and_no(value: object, expected: bool) -> None:
    from jobfleet.core.resources import ResourceRequest, parse_preemptible

    assert parse_preemptible(value) is expected
    assert ResourceRequest.parse({"preemptible": value}).preemptible is expected


@pytest.mark.parametrize("value", ["maybe", 2, 0.5, "", [], "spot"])
def test_preemptible_refuses_anything_else_naming_the_field(value: object) -> None:
    from jobfleet.core.resources import ResourceRequest

    with pytest.raises(ResourceError, match="'preemptible'"):
        _ = ResourceRequest.parse({"preemptible": value}).preemptible


def test_preemptible_stays_an_extra_key_and_defaults_to_false() -> None:
    from jobfleet.core.resources import ResourceRequest

    request = ResourceRequest.parse({"cores": 1, "preemptible": "yes"})
    assert request.to_dict() == {"cores": 1, "preemptible": "yes"}
    assert ResourceRequest.parse({"cores": 1}).preemptible is False
    assert ResourceRequest.parse({"preemptible": None}).preemptible is False


# --- pack (an extra key with a reader of its own) -------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"max_tasks": 50, "max_runtime": "10m"}, {"max_tasks": 50, "max_runtime": 600}),
        ("max_tasks=50,max_runtime=10m", {"max_tasks": 50, "max_runtime": 600}),
        (" max_tasks = 7 ", {"max_tasks": 7}),
        ({"max_tasks": "3", "max_runtime": None}, {"max_tasks": 3}),
    ],
)
def test_pack_reads_a_mapping_or_the_command_line_text(value: object, expected: dict) -> None:
    from jobfleet.core.resources import ResourceRequest, parse_pack

    pack = parse_pack(value)
    assert pack is not None
    assert pack.to_dict() == expected
    assert ResourceRequest.parse({"pack": value}).pack == pack


@pytest.mark.parametrize("value", [False, "off", "no", "False"])
def test_pack_off_means_no_packing(value: object) -> None:
    from jobfleet.core.resources import ResourceRequest, parse_pack

    assert parse_pack(value) is None
    assert ResourceRequest.parse({}).pack is None


@pytest.mark.parametrize(
    ("value", "field", "fragment"),
    [
        ({"max_runtime": "10m"}, "pack", "has no max_tasks"),
        ({"max_tasks": 0}, "pack", "not a whole number from 1 to 10000"),
        ({"max_tasks": 10001}, "pack", "not a whole number from 1 to 10000"),
        ({"max_tasks": 2.5}, "pack", "not a whole number"),
        ({"max_tasks": True}, "pack.max_tasks", "is a bool"),
        ("max_tasks=x", "pack", "'x', not a whole number"),
        ("max_tasks=2,tasks=3", "pack", "'tasks', which is not one of max_tasks, max_runtime"),
        ("max_tasks=2,max_tasks=3", "pack", "gives max_tasks twice"),
        ("max_tasks", "pack", "'max_tasks', which is not KEY=VALUE"),
        ({"max_tasks": 2, "max_runtime": "10 parsecs"}, "pack.max_runtime", "duration"),
        (True, "pack", "is a bool, not a mapping or text"),
        (50, "pack", "is a int, not a mapping or text"),
        ("", "pack", "is empty"),
    ],
)
def test_pack_refuses_bad_values_naming_the_field_and_the_accepted_form(
    value: object, field: str, fragment: str
) -> None:
    from jobfleet.core.resources import parse_pack

    with pytest.raises(ResourceError) as caught:
        parse_pack(value)
    assert caught.value.field == field
    assert fragment in str(caught.value)
    assert "Accepted:" in str(caught.value)
