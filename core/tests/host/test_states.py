"""The transition table itself, without a database."""

from __future__ import annotations

import itertools

import pytest

from jobfleet.core.exit_info import ErrorState
from jobfleet.core.host.ledger import (
    RETRYABLE_STATES,
    TERMINAL_STATES,
    TRANSITIONS,
    InstanceState,
    check_transition,
)

S = InstanceState


def test_jobmon_letters() -> None:
    assert "".join(state.value for state in InstanceState) == "QIORDEZUWTXKF"


def test_every_state_has_a_row() -> None:
    assert set(TRANSITIONS) == set(InstanceState)


def test_error_states_of_the_core_are_instance_states() -> None:
    # A backend's verdict (exit_info.ErrorState) is always a state an instance can end in.
    for error_state in ErrorState:
        assert S(error_state.value).is_final


def test_final_states_have_no_way_out() -> None:
    final = {state for state in InstanceState if state.is_final}
    assert final == TERMINAL_STATES | RETRYABLE_STATES


def test_every_state_is_reachable_from_queued() -> None:
    seen, frontier = {S.QUEUED}, [S.QUEUED]
    while frontier:
        for target in TRANSITIONS[frontier.pop()]:
            if target not in seen:
                seen.add(target)
                frontier.append(target)
    assert seen == set(InstanceState)


@pytest.mark.parametrize(("source", "target"), list(itertools.product(InstanceState, repeat=2)))
def test_check_transition_matches_the_table(source: InstanceState, target: InstanceState) -> None:
    why = check_transition(source, target)
    assert (why is None) == (target in TRANSITIONS[source])
