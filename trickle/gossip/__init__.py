"""SWIM membership with Lifeguard: who is alive, where it listens, which tags it carries.

`Membership` is the protocol as a pure state machine; `GossipDriver` runs it on Trio over
UDP and TCP (`UdpTcpTransport`), encrypted with a `Keyring` when given keys. See
docs/gossip.md.
"""

from trickle.gossip.config import GossipConfig, fast, lan, local, wan
from trickle.gossip.core import GossipStats, Membership
from trickle.gossip.driver import EventsLost, GossipDriver, GossipDriverStats, GossipSubscription
from trickle.gossip.keyring import DecryptError, Keyring, generate_key
from trickle.gossip.messages import Member, MemberEvent, State, UserEventReceived
from trickle.gossip.transport import UdpTcpTransport

__all__ = [
    "DecryptError",
    "EventsLost",
    "GossipConfig",
    "GossipDriver",
    "GossipDriverStats",
    "GossipStats",
    "GossipSubscription",
    "Keyring",
    "Member",
    "MemberEvent",
    "Membership",
    "State",
    "UdpTcpTransport",
    "UserEventReceived",
    "fast",
    "generate_key",
    "lan",
    "local",
    "wan",
]
