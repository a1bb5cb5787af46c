"""trees: the one walk over nested inputs that every copy of the user's inputs goes through."""

from collections import namedtuple

import torch

from torchcost.trees import map_tensors, tensors_in

Pair = namedtuple("Pair", "a b")


def test_map_tensors_keeps_identity_structure_and_namedtuples() -> None:
    x, y = torch.zeros(2), torch.ones(3)
    obj = ((x, x), {"k": [y, 5]}, Pair(x, "s"))
    out = map_tensors(obj, lambda t: t.clone())
    (a, b), d, p = out
    assert a is b and a is not x  # passed twice, copied once: the model still sees one tensor
    assert d["k"][1] == 5 and torch.equal(d["k"][0], y)
    assert isinstance(p, Pair) and p.a is a and p.b == "s"


def test_tensors_in_order() -> None:
    x, y = torch.zeros(1), torch.ones(1)
    assert [id(t) for t in tensors_in(([x], {"y": y}, 3))] == [id(x), id(y)]
