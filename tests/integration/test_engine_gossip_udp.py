"""Engines gossiping over real UDP/TCP sockets on 127.0.0.1: /v1/members in Dkron's shape,
encryption with a shared key, and a node with the wrong key kept out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import trio

from trickle import Engine, EngineConfig
from trickle.engine._engine import DEAD_NODE_RECLAIM_TIME
from trickle.engine.events import EventKind
from trickle.gossip.config import local
from trickle.gossip.keyring import encode_key, generate_key
from trickle.http.app import create_app


def _config(name: str, *, join: Sequence[str] = (), encrypt: Sequence[str] = ()) -> EngineConfig:
    return EngineConfig(
        data_dir=None,
        node_name=name,
        gossip_bind="127.0.0.1:0",
        join=tuple(join),
        encrypt=tuple(encrypt),
        join_retry_interval=0.2,
    )


def _address(engine: Engine) -> str:
    address = engine.gossip_address
    assert address is not None
    return f"{address[0]}:{address[1]}"


async def _members_json(engine: Engine) -> list[dict[str, Any]]:
    app = create_app(engine)
    async with app.test_app() as test_app:
        response = await test_app.test_client().get("/v1/members")
        assert response.status_code == 200
        assert response.headers["X-Total-Count"] == str(len(await response.get_json()))
        members: list[dict[str, Any]] = await response.get_json()
        return members


async def _wait_members(engine: Engine, names: set[str], status: str = "alive") -> None:
    """Until exactly `names` have `status`, checked after every membership event."""
    kinds = [kind for kind in EventKind if kind.startswith("member_")]
    with trio.fail_after(20), engine.subscribe(kinds=kinds) as events:
        while {m.name for m in engine.members() if m.status == status} != names:
            await events.receive()


async def test_v1_members_lists_gossip_members_in_dkrons_shape() -> None:
    async with Engine(_config("one"), gossip_config=local()) as one:
        async with Engine(_config("two", join=[_address(one)]), gossip_config=local()) as two:
            await _wait_members(one, {"one", "two"})
            members = {m["Name"]: m for m in await _members_json(one)}
            assert set(members) == {"one", "two"}
            peer = members["two"]
            assert f"{peer['Addr']}:{peer['Port']}" == _address(two)
            assert peer["Status"] == 1 and peer["statusText"] == "alive"
            assert peer["Tags"]["server"] == "true" and peer["Tags"]["region"] == "global"
            assert await two.leave(timeout=5)
        await _wait_members(one, {"two"}, status="left")
        members = {m["Name"]: m for m in await _members_json(one)}
        assert members["two"]["Status"] == 3 and members["two"]["statusText"] == "left"


async def test_encrypted_gossip_admits_the_key_holder_and_rejects_the_wrong_key() -> None:
    key, wrong = encode_key(generate_key()), encode_key(generate_key())
    async with Engine(_config("one", encrypt=[key]), gossip_config=local()) as one:
        async with Engine(
            _config("two", join=[_address(one)], encrypt=[key]), gossip_config=local()
        ) as two:
            await _wait_members(one, {"one", "two"})
            await _wait_members(two, {"one", "two"})
            app = create_app(one)
            async with app.test_app() as test_app:
                client = test_app.test_client()
                index = await (await client.get("/v1/")).get_json()
                assert index["serf"]["encrypted"] == "true"
                assert index["serf"]["members"] == "2"
                metrics = await (await client.get("/metrics")).get_data(as_text=True)
                assert 'trickle_gossip_members{state="alive"} 2.0' in metrics
                assert "trickle_gossip_rejected_decrypt_total 0.0" in metrics
        intruder_config = _config("intruder", join=[_address(one)], encrypt=[wrong])
        async with Engine(intruder_config, gossip_config=local()) as intruder:
            gossip = one.gossip
            assert gossip is not None
            with trio.fail_after(20):
                while gossip.statistics().rejected_decrypt == 0:  # noqa: ASYNC110 (a counter)
                    await trio.sleep(0.05)
            assert "intruder" not in {m.name for m in one.members()}
            assert {m.name for m in intruder.members()} == {"intruder"}


async def test_an_engine_lets_a_dead_members_name_be_reclaimed_by_default() -> None:
    engine = Engine(EngineConfig(data_dir=None, node_name="x", gossip_bind="127.0.0.1:0"))
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        assert engine.gossip is not None
        assert engine.gossip.config.dead_node_reclaim_time == DEAD_NODE_RECLAIM_TIME > 0
        nursery.cancel_scope.cancel()
