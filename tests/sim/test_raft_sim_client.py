"""The simulator's clients: an attempt that gets no answer times out after exactly
``client_timeout_ms`` and the operation is retried elsewhere; answered attempts never
time out (one timer per client serves every attempt)."""

from __future__ import annotations

from trickle.testing.raftsim import ClientOp, RaftSimulation, SimConfig

TIMEOUT_MS = 600.0


def test_an_unanswered_attempt_is_retried_elsewhere_after_the_timeout(sim_seed: int) -> None:
    sim = RaftSimulation(3, seed=sim_seed, config=SimConfig(client_timeout_ms=TIMEOUT_MS))
    leader = sim.check_one_leader()
    client = sim.client()
    done: list[ClientOp] = []
    client.put("k", "v1", done.append)
    assert sim.run_until(lambda: bool(done), 2000)
    assert client.leader == leader  # it asks the node that answered first next time
    sim.disconnect(leader)  # it hears nothing: the next attempt gets no answer
    sent_at = sim.now
    client.put("k", "v2", done.append)
    sim.run_for(TIMEOUT_MS - 1)
    assert len(done) == 1, "answered before its attempt could time out"
    assert sim.run_until(lambda: len(done) == 2, 10_000), "never retried elsewhere"
    op = done[1]
    assert op.call_time == sent_at
    assert op.return_time >= sent_at + TIMEOUT_MS
    sim.connect(leader)
    assert sim.wait_applied_everywhere() > 0
    assert {n.app.data.get("k") for n in sim.nodes.values()} == {"v2"}


def test_answered_attempts_never_time_out(sim_seed: int) -> None:
    sim = RaftSimulation(3, seed=sim_seed, config=SimConfig(client_timeout_ms=TIMEOUT_MS))
    sim.check_one_leader()
    clients = [sim.client() for _ in range(2)]
    sim.start_workload(clients, keys=("a", "b"), duration_ms=3000)
    sim.run_for(4000)
    history = sim.history()
    assert len(history) > 50
    assert all(not op.pending for op in history)
    # one leader all along on a reliable network: every operation took one attempt
    assert all(op.return_time - op.call_time < TIMEOUT_MS for op in history)
    assert sum(c.completed for c in clients) == len(history)
