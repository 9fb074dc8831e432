"""Membership arithmetic: applying a single-server change to a configuration, and checking it."""

from __future__ import annotations

from trickle.errors import ValidationError
from trickle.raft.messages import ConfChange, ConfChangeOp, ConfState
from trickle.raft.wire import decode_conf_change


def apply_change(conf: ConfState, change: ConfChange) -> ConfState:
    """The configuration after ``change``. A change that makes no sense (promoting a
    non-learner, adding a voter as a learner, removing an unknown node) leaves ``conf`` as
    it is, identically on every node, so a bad entry can never split the cluster."""
    node = change.node
    voters, learners = conf.voters, conf.learners
    op = change.op
    if op == ConfChangeOp.ADD_VOTER:
        if node in voters:
            return conf
        return ConfState(voters=voters | {node}, learners=learners - {node})
    if op == ConfChangeOp.ADD_LEARNER:
        if node in voters or node in learners:
            return conf
        return ConfState(voters=voters, learners=learners | {node})
    if op == ConfChangeOp.PROMOTE:
        if node not in learners:
            return conf
        return ConfState(voters=voters | {node}, learners=learners - {node})
    if op == ConfChangeOp.REMOVE:
        if node not in voters and node not in learners:
            return conf
        return ConfState(voters=voters - {node}, learners=learners - {node})
    return conf


def apply_entry_data(conf: ConfState, data: bytes) -> ConfState:
    """Apply the encoded ConfChange of a CONF_CHANGE entry; malformed data changes nothing."""
    try:
        change = decode_conf_change(data)
    except ValidationError:
        return conf
    return apply_change(conf, change)


def rejection_reason(conf: ConfState, change: ConfChange) -> str | None:
    """Why ``change`` cannot be proposed against ``conf``, or None when it can."""
    node = change.node
    if not isinstance(node, str) or not node:
        return "a conf change needs a non-empty node id"
    op = change.op
    if op == ConfChangeOp.ADD_VOTER:
        if node in conf.voters:
            return f"{node} is already a voter"
        if node in conf.learners:
            return f"{node} is a learner: promote it instead"
    elif op == ConfChangeOp.ADD_LEARNER:
        if node in conf.voters:
            return f"{node} is already a voter"
        if node in conf.learners:
            return f"{node} is already a learner"
    elif op == ConfChangeOp.PROMOTE:
        if node not in conf.learners:
            return f"{node} is not a learner"
    elif op == ConfChangeOp.REMOVE:
        if node not in conf.voters and node not in conf.learners:
            return f"{node} is not a member"
        if conf.voters == frozenset({node}):
            return f"{node} is the last voter"
    else:
        return f"unknown conf change op {op!r}"
    return None
