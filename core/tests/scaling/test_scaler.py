"""The cluster scaler in virtual time: packing, inertia, spot fallback, scale-down, join timeout."""

from __future__ import annotations

import pytest

from jobfleet.core.resources import GIB
from jobfleet.core.scaling import NodeType, Shape
from jobfleet.core.scaling.packing import Pool, pack
from jobfleet.core.scaling.scaler import ClusterScaler, ScalerConfig, ScalerError, ScalingEvent
from jobfleet.core.testing.fake_provisioner import (
    FakeProvisioner,
    FakeScalableDistributor,
    Throttled,
)

NODE = Shape(3600, 16 * GIB, 4, 100 * GIB, False)


def task(cores=1, memory=GIB, wall=600, preemptible=False, gpus=0, disk=0):
    return Shape(wall, memory, cores, disk, preemptible, gpus)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


def make(
    clock,
    spec="medium",
    *,
    max_nodes=10,
    min_nodes=0,
    beta=0.0,
    spot=None,
    boot=0.0,
    never_join=(),
    **config,
):
    provisioner = FakeProvisioner("c", clock=clock, spot_capacity=spot)
    distributor = FakeScalableDistributor(provisioner, boot_time=boot, never_join=never_join)
    types = tuple(
        NodeType(*part.split(":"))
        if ":" not in part
        else NodeType(part.split(":")[0], float(part.split(":")[1]))
        for part in spec.split(",")
    )
    events: list[ScalingEvent] = []
    scaler = ClusterScaler(
        provisioner,
        distributor,
        ScalerConfig(
            types,
            max_nodes={t.name: max_nodes for t in types},
            min_nodes={t.name: min_nodes for t in types},
            beta=beta,
            **config,
        ),
        clock=clock,
        record=events.append,
    )
    return scaler, provisioner, distributor, events


# -- packing ----------------------------------------------------------------------------------


def test_short_tasks_share_a_node_in_sequence_within_its_slice():
    pools = [Pool("m", False, NODE)]
    # 24 tasks of 1 core x 10 minutes: 4 side by side x 6 in sequence = one node-hour.
    assert sum(pack([], [task()] * 24, pools, 3600).counts().values()) == 1
    # The same tasks an hour long need 6 nodes.
    assert sum(pack([], [task(wall=3600)] * 24, pools, 3600).counts().values()) == 6
    # A shorter horizon asks for more nodes to finish sooner.
    assert sum(pack([], [task()] * 24, pools, 1200).counts().values()) == 3


def test_packing_covers_every_dimension_and_reports_what_fits_nowhere():
    pools = [Pool("m", False, NODE), Pool("gpu", False, Shape(3600, 64 * GIB, 8, 0, False, 2))]
    result = pack(
        [],
        [task(memory=12 * GIB)] * 2 + [task(gpus=1)] * 2 + [task(disk=200 * GIB)],
        pools,
        600,
    )
    counts = {p.node_type: n for p, n in result.counts().items()}
    assert counts == {"gpu": 1}  # both GPU tasks on one node, the 12G tasks fill it
    assert sum(result.unplaceable.values()) == 1  # 200G of disk fits no node
    memory_bound = pack([], [task(memory=12 * GIB)] * 2, pools[:1], 600)
    assert sum(memory_bound.counts().values()) == 2  # 12G twice does not fit 16G


def test_first_fit_decreasing_places_big_tasks_first_and_fills_gaps_with_small_ones():
    pools = [Pool("m", False, NODE)]
    result = pack([], [task(cores=1)] * 4 + [task(cores=3)] * 4, pools, 600)
    assert sum(result.counts().values()) == 4  # each 3-core task shares with a 1-core one


def test_non_preemptible_tasks_never_go_to_spot_pools():
    pools = [Pool("m", True, NODE), Pool("m", False, NODE)]
    result = pack([], [task(preemptible=True)] * 4 + [task()] * 4, pools, 600)
    assert {(p.preemptible, n) for p, n in result.counts().items()} == {(True, 1), (False, 1)}


def test_running_tasks_count_and_maximum_limits_hold():
    pools = [Pool("m", False, NODE)]
    result = pack([task(cores=4)] * 2, [task(cores=4)] * 5, pools, 600, max_bins={"m": 3})
    assert sum(result.counts().values()) == 3
    assert sum(result.unplaceable.values()) == 4


# -- scaling up, inertia ----------------------------------------------------------------------


def test_scales_up_for_waiting_work_and_records_it(clock):
    scaler, provisioner, _, events = make(clock)
    scaler.step([task(cores=4, wall=3000)] * 3)
    assert len(provisioner.live) == 3
    assert events[-1].message == "3 × medium (on-demand) for 3 waiting tasks"
    assert events[-1].details["action"] == "scale_up"
    scaler.step([task(cores=4, wall=3000)] * 3)  # launching nodes count: nothing more
    assert len(provisioner.live) == 3


def test_maximum_caps_the_cluster(clock):
    scaler, provisioner, _, events = make(clock, max_nodes=2)
    scaler.step([task(cores=4, wall=3000)] * 5)
    assert len(provisioner.live) == 2
    assert any(e.details["action"] == "unplaceable" for e in events)


def test_minimum_is_kept_without_work(clock):
    scaler, provisioner, _, _ = make(clock, min_nodes=2)
    scaler.step([])
    assert len(provisioner.live) == 2


def test_inertia_smooths_the_estimate(clock):
    scaler, provisioner, _distributor, _ = make(clock, beta=0.5, boot=0)
    work = [task(cores=4, wall=3000)] * 4
    scaler.step(work)  # first estimate taken as it is
    assert len(provisioner.live) == 4
    scaler.step([])  # 0.5 * 4 + 0.5 * 0 = 2: half the nodes go, not all
    assert len(provisioner.live) == 2
    scaler.step([])  # 1
    assert len(provisioner.live) == 1
    # Without inertia, the drop is immediate.
    scaler2, provisioner2, _, _ = make(Clock(), beta=0.0)
    scaler2.step(work)
    scaler2.step([])
    assert len(provisioner2.live) == 0


def test_bad_configuration_is_refused():
    with pytest.raises(ScalerError, match="minimum"):
        ScalerConfig((NodeType("m"),), max_nodes={"m": 1}, min_nodes={"m": 2})
    with pytest.raises(ScalerError, match="not a node type"):
        ScalerConfig((NodeType("m"),), max_nodes={"x": 1})
    with pytest.raises(ScalerError, match="beta"):
        ScalerConfig((NodeType("m"),), max_nodes={"m": 1}, beta=1.0)


def test_a_distributor_that_cannot_scale_is_refused(clock):
    provisioner = FakeProvisioner("c", clock=clock)
    config = ScalerConfig((NodeType("medium"),), max_nodes={"medium": 1})
    with pytest.raises(ScalerError, match="not a ScalableDistributor"):
        ClusterScaler(provisioner, object(), config, clock=clock)  # type: ignore[arg-type]


# -- spot -------------------------------------------------------------------------------------


def test_preemptible_tasks_get_spot_nodes_and_fall_back_to_on_demand(clock):
    scaler, provisioner, _, events = make(clock, "medium:0.05", spot=1)
    scaler.step([task(cores=4, wall=3000, preemptible=True)] * 3)
    kinds = sorted(n.preemptible for n in provisioner.live.values())
    assert kinds == [False, False, True]
    actions = [e.details["action"] for e in events]
    assert actions == ["scale_up", "spot_fallback"]
    assert "fell 2 short" in events[-1].message
    assert provisioner.calls[1] == ("add_nodes", ("medium", 3, True))


def test_non_preemptible_tasks_get_on_demand_nodes_of_a_spot_type(clock):
    scaler, provisioner, _, _ = make(clock, "medium:0.05")
    scaler.step([task(cores=4, wall=3000)] * 2)
    assert [n.preemptible for n in provisioner.live.values()] == [False, False]


def test_preempted_nodes_are_noticed_and_replaced(clock):
    scaler, provisioner, _, events = make(clock, "medium:0.05")
    work = [task(cores=4, wall=3000, preemptible=True)]
    scaler.step(work)
    [name] = provisioner.live
    provisioner.preempt(name)
    scaler.step(work)
    assert events[-2].details["action"] == "gone"
    assert len(provisioner.live) == 1
    assert name not in provisioner.live


# -- scaling down -----------------------------------------------------------------------------


def test_scale_down_drains_then_terminates_once_idle(clock):
    scaler, provisioner, distributor, events = make(clock)
    scaler.step([task(cores=4, wall=3000)] * 2)
    names = sorted(provisioner.live)
    for name in names:
        distributor.busy[name] = 4
    scaler.step([], [task(cores=4, wall=3000)] * 2)  # both busy: nothing changes
    assert sorted(provisioner.live) == names
    distributor.busy[names[1]] = 0
    scaler.step([], [task(cores=4, wall=3000)])  # one is enough: the idle one goes
    assert sorted(provisioner.live) == [names[0]]
    assert distributor.ignored == set()  # forgotten once terminated
    scaler.step([])  # nothing runs any more, but the last node is still busy: it drains
    assert distributor.ignored == {names[0]}
    assert names[0] in provisioner.live
    distributor.busy[names[0]] = 0
    scaler.step([])
    assert provisioner.live == {}
    actions = [e.details["action"] for e in events]
    assert actions == ["scale_up", "drain", "scale_down", "drain", "scale_down"]


def test_a_draining_node_is_kept_when_work_comes_back(clock):
    scaler, provisioner, distributor, events = make(clock)
    scaler.step([task(cores=4, wall=3000)])
    [name] = provisioner.live
    distributor.busy[name] = 4
    scaler.step([])
    assert distributor.ignored == {name}
    scaler.step([task(cores=4, wall=3000)])
    assert distributor.ignored == set()
    assert list(provisioner.live) == [name]
    assert events[-1].details["action"] == "undrain"


def test_nodes_that_never_join_are_terminated_after_the_timeout(clock):
    scaler, provisioner, _, events = make(clock, join_timeout=300, never_join=["c-medium-1"])
    scaler.step([task(cores=4, wall=3000)] * 2)
    clock.now = 200
    scaler.step([task(cores=4, wall=3000)] * 2)
    assert len(provisioner.live) == 2
    clock.now = 301
    scaler.step([task(cores=4, wall=3000)] * 2)
    timed_out = [e for e in events if e.details["action"] == "join_timeout"]
    assert timed_out[0].details["nodes"] == ["c-medium-1"]
    assert "never joined within 300 s" in timed_out[0].message
    assert "c-medium-1" not in provisioner.live
    assert len(provisioner.live) == 2  # replaced in the same step
    views = {v.name: v.state for v in scaler.nodes()}
    assert views["c-medium-2"] == "joined"
    assert views["c-medium-3"] == "launching"


# -- errors -----------------------------------------------------------------------------------


def test_throttling_is_recorded_as_retryable_and_the_next_step_goes_on(clock):
    scaler, provisioner, _, events = make(clock)
    provisioner.fail_next.append(Throttled("Rate exceeded"))
    scaler.step([task(cores=4, wall=3000)])
    assert provisioner.live == {}
    assert events[-1].details == {"action": "error", "retryable": True}
    assert "retrying at the next step" in events[-1].message
    scaler.step([task(cores=4, wall=3000)])
    assert len(provisioner.live) == 1


def test_other_errors_are_recorded_as_not_retryable(clock):
    scaler, provisioner, _, events = make(clock)
    provisioner.fail_next.append(ValueError("bad AMI"))
    scaler.step([task(cores=4, wall=3000)])
    assert events[-1].details["retryable"] is False
    assert "bad AMI" in events[-1].message


def test_a_failing_distributor_ends_the_step_not_the_run(clock):
    scaler, provisioner, distributor, events = make(clock)

    def away():
        raise ConnectionError("API server away")

    distributor.get_nodes = away
    scaler.step([task(cores=4, wall=3000)])
    assert "API server away" in events[-1].message
    assert provisioner.live == {}
