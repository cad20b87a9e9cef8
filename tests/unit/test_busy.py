"""Simultaneous calls: a surgeon already on a call is rung after the free ones."""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from routing.busy import prefer_free
from routing.escalation import ChainStep, EscalationChain


def step(phone: str) -> ChainStep:
    return ChainStep(surgeon_id=int(phone[-2:]), name=phone, phone=phone, role="primary", ring_s=20)


CHAIN = EscalationChain("facial", tuple(step(p) for p in ("13700000101", "13700000102", "13700000103")), 1)


def test_nobody_busy_keeps_the_chain():
    assert prefer_free(CHAIN, frozenset()) is CHAIN


def test_the_busy_primary_goes_after_the_free_ones():
    spread = prefer_free(CHAIN, frozenset({"13700000101"}))
    assert [s.phone for s in spread.steps] == ["13700000102", "13700000103", "13700000101"]
    assert (spread.team, spread.repeats) == ("facial", 1)


def test_everyone_busy_keeps_the_order():
    busy = frozenset(s.phone for s in CHAIN.steps)
    assert prefer_free(CHAIN, busy).steps == CHAIN.steps


@given(st.sets(st.sampled_from([s.phone for s in CHAIN.steps])))
def test_never_drops_or_adds_a_step_and_keeps_relative_order(busy):
    spread = prefer_free(CHAIN, frozenset(busy)).steps
    assert sorted(spread, key=lambda s: s.phone) == sorted(CHAIN.steps, key=lambda s: s.phone)
    free = [s for s in spread if s.phone not in busy]
    assert free == [s for s in CHAIN.steps if s.phone not in busy]
    assert spread[: len(free)] == tuple(free)
