"""``replace`` and ``setter`` copy attrs instances as ``attrs.evolve`` would, slotted or not."""

from __future__ import annotations

import attrs
import pytest

from trickle.engine._replace import replace, setter


@attrs.frozen(kw_only=True)
class Slotted:
    a: int
    b: str = attrs.field(default="x", converter=str)
    c: tuple[int, ...] = ()


@attrs.frozen(kw_only=True, slots=False)
class Plain:
    a: int
    b: str = attrs.field(default="x", converter=str)
    c: tuple[int, ...] = ()


@pytest.mark.parametrize("cls", [Slotted, Plain])
def test_replace_and_setter_copy_every_field_but_the_ones_given(cls: type) -> None:
    inst = cls(a=1, b="y", c=(1, 2))
    assert replace(inst, b=5) == attrs.evolve(inst, b=5) == cls(a=1, b="5", c=(1, 2))
    assert replace(inst, a=2).c is inst.c
    set_ab = setter(cls, ("a", "b"))
    assert set_ab(inst, 3, "z") == cls(a=3, b="z", c=(1, 2))
    assert set_ab(inst, 3, 7).b == 7  # no converter: the caller's values as they are
    with pytest.raises(TypeError, match="no field 'nope'"):
        replace(inst, nope=1)
    with pytest.raises(TypeError, match="no field 'nope'"):
        setter(cls, ("a", "nope"))
