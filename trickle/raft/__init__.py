"""trickle.raft: Raft consensus as a pure core (core.py) with storage, transport and a Trio driver."""
