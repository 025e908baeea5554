"""A resumable, seeded, distributed sampler that yields ``(index, seed)`` keys.

Epoch ``e`` is a permutation drawn from ``seed + e``; process ``r`` of ``n`` takes every n-th
entry.  Each key carries its own seed (a function of the run seed, epoch and index), so crops,
flips and synthetic degradations do not depend on worker count or scheduling, and a resumed run
continues with exactly the samples the uninterrupted run would have seen."""
from __future__ import annotations

import itertools

import numpy as np
import torch
from torch.utils.data import Sampler

from osir.data.io import DataError


#: independent random streams of one sample (``SeedSequence`` children): its crop and flips, its
#: per-sample degradation, and the draw of a batch degradation never share random numbers
AUGMENT, DEGRADATION, BATCH_DEGRADATION = 0, 1, 2


def sample_rng(seed: int, stream: int) -> np.random.Generator:
    """The generator of ``stream`` for the sample with ``seed`` (equal to
    ``default_rng(SeedSequence(seed).spawn(stream + 1)[stream])``)."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(stream,)))


class SeededSampler(Sampler):
    def __init__(self, size: int, seed: int = 0, shuffle: bool = True, rank: int = 0, world_size: int = 1,
                 start: int = 0):
        if size == 0:
            raise DataError("the training dataset is empty")
        self.size, self.seed, self.shuffle = size, seed, shuffle
        self.rank, self.world_size, self.start = rank, world_size, start

    def _epoch(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.size))
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.size, generator=gen).tolist()

    def __iter__(self):
        """Infinite: this process's keys, from its ``start``-th onward."""
        def keys():
            for epoch in itertools.count():
                for position, index in enumerate(self._epoch(epoch)):
                    if position % self.world_size == self.rank:
                        yield index, (self.seed * 7919 + epoch) * 1_000_003 + index
        return itertools.islice(keys(), self.start, None)
