"""Checks of restored outputs shared by every command that restores (test.py, validation, restore, web)."""
from __future__ import annotations

import torch

from osir.data.io import DataError


def check_finite_output(method, out: torch.Tensor, names: list[str], sources: dict) -> None:
    """``DataError`` when a restored batch holds NaN or Inf (clamping keeps NaN: the image would be written
    black): names the first such image and the network whose weights are the likely cause, the one with
    non-finite parameters if there is one, else every network with the files its weights came from."""
    finite = torch.isfinite(out.detach()).flatten(1).all(1)
    if bool(finite.all()):
        return
    index = int((~finite).nonzero()[0])
    name = names[index] if index < len(names) else f"image {index}"
    count = int((~torch.isfinite(out[index].detach())).sum())
    networks = getattr(method, "networks", {})
    where = lambda n: f" from '{sources[n]}'" if n in sources else ""  # noqa: E731
    broken = [n for n, net in networks.items()
              if any(not bool(torch.isfinite(p).all()) for p in net.parameters())]
    if broken:
        cause = "; ".join(f"network '{n}' has NaN/Inf weights{where(n)}" for n in broken)
    else:
        cause = ("the weights of network " + ", ".join(f"'{n}'{where(n)}" for n in networks)
                 + " are the likely cause (values overflowing on this input)")
    raise DataError(f"restoring '{name}' with {type(method).__name__} gave {count} NaN/Inf value(s): {cause}")
