"""The resource pool: what fits, what is handed out, what can never fit."""

import pytest

from jobfleet.core.errors import ResourceError
from jobfleet.core.local.pool import Need, ResourcePool

GIB = 1024**3


def pool() -> ResourcePool:
    return ResourcePool(cores=4.0, memory=8 * GIB, gpu_ids=("0", "1", "3"))


def test_fractions_of_cores_add_up_without_leaking():
    shared = pool()
    needs = [Need(0.1, 0, 0) for _ in range(40)]
    for need in needs:
        assert shared.fits(need)
        shared.take(need)
    assert not shared.fits(Need(0.1, 0, 0))
    for need in needs:
        shared.give_back(need, ())
    assert shared.fits(Need(4.0, 0, 0))


def test_memory_and_cores_both_count():
    shared = pool()
    shared.take(Need(1, 6 * GIB, 0))
    assert not shared.fits(Need(1, 3 * GIB, 0))
    assert shared.fits(Need(3, 2 * GIB, 0))


def test_gpus_are_distinct_device_ids():
    shared = pool()
    first = shared.take(Need(1, 0, 2))
    second = shared.take(Need(1, 0, 1))
    assert set(first) | set(second) == {"0", "1", "3"}
    assert not set(first) & set(second)
    assert not shared.fits(Need(1, 0, 1))
    shared.give_back(Need(1, 0, 2), first)
    assert shared.fits(Need(1, 0, 2))


@pytest.mark.parametrize(
    ("need", "field"),
    [(Need(5, 0, 0), "cores"), (Need(1, 9 * GIB, 0), "memory"), (Need(1, 0, 4), "gpus")],
)
def test_a_request_that_can_never_fit_names_the_resource(need, field):
    with pytest.raises(ResourceError) as caught:
        pool().check_fits_at_all(need)
    assert caught.value.field == field
    assert "more than this pool has" in str(caught.value)


def test_no_free_cores_means_nothing_can_start():
    shared = pool()
    shared.take(Need(4, 0, 0))
    assert not shared.has_free_cores()
