"""Every random draw comes from an explicit generator derived from the run's seed (DESIGN.md principles)."""

from __future__ import annotations

import numpy as np
import torch

STREAMS = {"init": 0, "data": 1, "noise": 2, "eval": 3, "viz": 4, "discriminator": 5, "permute": 6}


def stream_seed(seed: int, stream: str) -> int:
    """A 63-bit seed for a named stream of a run, independent across streams (numpy SeedSequence)."""
    words = np.random.SeedSequence([seed, STREAMS[stream]]).generate_state(2, dtype=np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])


def make_generator(seed: int, stream: str, device: str | torch.device = "cpu") -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.manual_seed(stream_seed(seed, stream))
    return generator
