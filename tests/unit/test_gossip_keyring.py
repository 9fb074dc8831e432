"""The gossip keyring: AES-GCM round trips, key rotation without a partition, and every
kind of bad input (wrong key, plaintext, tampering, bad keys) refused with a clear error."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trickle.errors import TrickleError, ValidationError
from trickle.gossip.keyring import (
    ENCRYPTION_VERSION,
    KEY_SIZES,
    DecryptError,
    Keyring,
    KeyringError,
    decode_key,
    encode_key,
    generate_key,
    is_encrypted,
)
from trickle.gossip.messages import Ack, Alive
from trickle.gossip.wire import ENCRYPTION_OVERHEAD, WireError, decode_packet, encode_packet

K1 = bytes(range(32))
K2 = bytes(range(100, 132))
K3 = bytes(range(200, 216))


@pytest.mark.parametrize("size", KEY_SIZES)
def test_round_trip_with_each_key_size(size: int) -> None:
    ring = Keyring([generate_key(size)])
    packet = encode_packet([Alive(1, "a", ("10.0.0.1", 8946), {"dc": "dc1"}), Ack(3, "a")])
    sealed = ring.encrypt(packet)
    assert len(sealed) == len(packet) + ENCRYPTION_OVERHEAD
    assert sealed[0] == ENCRYPTION_VERSION and is_encrypted(sealed)
    assert packet not in sealed
    assert ring.decrypt(sealed) == packet


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=2000))
def test_any_plaintext_round_trips_and_adds_exactly_the_overhead(plaintext: bytes) -> None:
    ring = Keyring([K1])
    sealed = ring.encrypt(plaintext)
    assert len(sealed) == len(plaintext) + ENCRYPTION_OVERHEAD
    assert ring.decrypt(sealed) == plaintext


def test_each_encryption_uses_a_fresh_nonce() -> None:
    ring = Keyring([K1])
    assert ring.encrypt(b"same") != ring.encrypt(b"same")


def test_rotation_keeps_every_node_readable_until_the_old_key_is_removed() -> None:
    a = Keyring([K1])
    b = Keyring([K1])
    # step 1: A installs K2 and starts using it while B still sends with K1
    a.install(K2)
    a.use(K2)
    assert a.primary == K2 and a.keys == (K2, K1)
    from_a = a.encrypt(b"from a")
    from_b = b.encrypt(b"from b")
    assert a.decrypt(from_b) == b"from b"  # A still accepts K1
    with pytest.raises(DecryptError, match="no installed key"):
        b.decrypt(from_a)  # B has not installed K2: why step 1 is "install on all" first
    b.install(K2)
    assert b.primary == K1 and b.decrypt(from_a) == b"from a"
    # step 2: B uses K2 too; both read each other
    b.use(K2)
    assert a.decrypt(b.encrypt(b"x")) == b"x" and b.decrypt(a.encrypt(b"y")) == b"y"
    # step 3: K1 is removed everywhere; a straggler's K1 packet is now refused
    straggler = Keyring([K1])
    assert a.remove(K1) and b.remove(K1)
    assert a.keys == (K2,) and b.keys == (K2,)
    with pytest.raises(DecryptError, match="no installed key"):
        a.decrypt(straggler.encrypt(b"old"))
    assert a.decrypt(b.encrypt(b"z")) == b"z"


def test_rotation_steps_are_idempotent() -> None:
    ring = Keyring([K1])
    ring.install(K2)
    ring.install(K2)
    ring.use(K2)
    ring.use(K2)
    assert ring.keys == (K2, K1)
    assert ring.remove(K1) is True
    assert ring.remove(K1) is False
    assert ring.keys == (K2,)


def test_decrypt_tries_the_primary_and_then_every_other_key() -> None:
    ring = Keyring([K1, K2, K3])
    assert ring.primary == K1
    for key in (K1, K2, K3):
        assert ring.decrypt(Keyring([key]).encrypt(b"m")) == b"m"


def test_the_primary_cannot_be_removed() -> None:
    ring = Keyring([K1, K2])
    with pytest.raises(ValidationError, match="cannot remove the primary key"):
        ring.remove(K1)
    assert ring.keys == (K1, K2)


def test_a_key_must_be_installed_before_it_is_used() -> None:
    ring = Keyring([K1])
    with pytest.raises(ValidationError, match="not installed"):
        ring.use(K2)
    assert ring.primary == K1


def test_constructor_orders_primary_first_and_drops_duplicates() -> None:
    assert Keyring([K1, K2, K1]).keys == (K1, K2)
    assert Keyring([K1, K2], primary=K2).keys == (K2, K1)
    assert Keyring([K1], primary=K3).keys == (K3, K1)
    assert Keyring(primary=K2).keys == (K2,)


def test_from_base64_decodes_the_primary_and_extra_keys() -> None:
    ring = Keyring.from_base64(encode_key(K2), encode_key(K1), f"  {encode_key(K3)}\n")
    assert ring.keys == (K2, K1, K3)
    with pytest.raises(ValidationError, match="not valid base64"):
        Keyring.from_base64(encode_key(K1), "not base64!")


def test_a_disabled_keyring_refuses_to_encrypt_or_decrypt() -> None:
    ring = Keyring()
    assert not ring.enabled and ring.primary is None and ring.keys == ()
    with pytest.raises(KeyringError, match="not enabled"):
        ring.encrypt(b"x")
    with pytest.raises(DecryptError, match="not enabled"):
        ring.decrypt(Keyring([K1]).encrypt(b"x"))
    assert repr(ring) == "Keyring(disabled)"


def test_installing_into_a_disabled_keyring_enables_it_with_that_key_primary() -> None:
    ring = Keyring()
    ring.install(K3)
    assert ring.enabled and ring.primary == K3
    assert ring.decrypt(ring.encrypt(b"x")) == b"x"


def test_wrong_key_is_refused() -> None:
    with pytest.raises(DecryptError, match="no installed key decrypts it \\(1 tried\\)"):
        Keyring([K2]).decrypt(Keyring([K1]).encrypt(b"secret"))


def test_plaintext_packet_is_refused_as_not_encrypted() -> None:
    packet = encode_packet([Ack(1, "a")] * 10)
    assert not is_encrypted(packet)
    with pytest.raises(DecryptError, match="not encrypted: the first byte is 0x92"):
        Keyring([K1]).decrypt(packet)
    with pytest.raises(DecryptError, match="too short to be encrypted: 7 bytes"):
        Keyring([K1]).decrypt(encode_packet([Ack(1)]))


def test_truncated_data_is_refused() -> None:
    ring = Keyring([K1])
    sealed = ring.encrypt(b"a message of some length")
    for cut in range(len(sealed)):
        with pytest.raises(DecryptError):
            ring.decrypt(sealed[:cut])


def test_every_single_bit_flip_is_detected() -> None:
    ring = Keyring([K1])
    sealed = ring.encrypt(b"tamper with me")
    for i in range(len(sealed)):
        for bit in range(8):
            tampered = bytearray(sealed)
            tampered[i] ^= 1 << bit
            with pytest.raises(DecryptError):
                ring.decrypt(bytes(tampered))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_data_only_raises_decrypt_error(data: bytes) -> None:
    with pytest.raises(DecryptError):
        Keyring([K1, K2]).decrypt(data)


def test_an_encrypted_packet_is_malformed_to_a_node_without_a_key() -> None:
    sealed = Keyring([K1]).encrypt(encode_packet([Ack(1, "a")]))
    with pytest.raises(WireError):
        decode_packet(sealed)


def test_decrypt_error_is_a_trickle_error_with_a_400_status() -> None:
    assert issubclass(DecryptError, TrickleError) and DecryptError.http_status == 400


# -- keys ------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", KEY_SIZES)
def test_generated_keys_have_the_size_asked_and_differ(size: int) -> None:
    a, b = generate_key(size), generate_key(size)
    assert len(a) == size and a != b
    assert decode_key(encode_key(a)) == a


def test_generate_key_defaults_to_32_bytes_and_refuses_other_sizes() -> None:
    assert len(generate_key()) == 32
    with pytest.raises(ValidationError, match="key size must be 16, 24 or 32 bytes, not 20"):
        generate_key(20)


def test_encode_key_is_standard_base64() -> None:
    assert encode_key(K1) == base64.b64encode(K1).decode()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "the encryption key is empty"),
        ("   ", "the encryption key is empty"),
        ("not base64!", "not valid base64"),
        ("QUJD", "must decode to 16, 24 or 32 bytes, not 3 bytes"),
        (base64.b64encode(b"x" * 20).decode(), "not 20 bytes"),
        (base64.b64encode(b"x" * 64).decode(), "not 64 bytes"),
        (base64.b64encode(b"x" * 32).decode()[:-1], "not valid base64"),  # bad padding
        (base64.urlsafe_b64encode(b"\xff" * 32).decode(), "not valid base64"),
        ("clé", "not valid base64"),
    ],
)
def test_bad_base64_keys_are_refused_naming_the_problem(text: str, problem: str) -> None:
    with pytest.raises(ValidationError, match=problem) as info:
        decode_key(text)
    assert info.value.field == "encrypt"


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        (b"", "16, 24 or 32 bytes .* not 0 bytes"),
        (b"k" * 15, "not 15 bytes"),
        (b"k" * 33, "not 33 bytes"),
        ("k" * 32, "must be bytes, not text"),
        (None, "must be bytes, not NoneType"),
    ],
)
def test_bad_keys_are_refused_at_every_entry_point(key: object, problem: str) -> None:
    ring = Keyring([K1])
    calls = [
        lambda: Keyring([key]),  # type: ignore[list-item]
        lambda: ring.install(key),  # type: ignore[arg-type]
        lambda: ring.use(key),  # type: ignore[arg-type]
        lambda: ring.remove(key),  # type: ignore[arg-type]
        lambda: encode_key(key),  # type: ignore[arg-type]
    ]
    if key is not None:  # primary=None is the default: the first key
        calls.append(lambda: Keyring([K1], primary=key))  # type: ignore[arg-type]
    for call in calls:
        with pytest.raises(ValidationError, match=problem):
            call()
    assert ring.keys == (K1,)


def test_one_key_instead_of_a_sequence_is_refused() -> None:
    with pytest.raises(ValidationError, match="not one key"):
        Keyring(K1)


def test_repr_never_shows_a_key() -> None:
    ring = Keyring([K1, K2])
    assert repr(ring) == "Keyring(2 keys, AES-256 primary)"
    assert encode_key(K1) not in repr(ring) and str(K1) not in repr(ring)
