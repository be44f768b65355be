"""The peer's training step for benchmarks/train_throughput.py: disent 0.8.0's conv64 beta-VAE, one Adam step on a
fixed batch (its data pipeline excluded). Runs in disent's own virtualenv (benchmarks/disent_peer.sh), never imports
untwine, and prints one JSON line: CPU and wall seconds per timed block, and the step's FLOPs.

    /tmp/disent-venv/bin/python benchmarks/disent_step.py [--steps 20] [--repeats 1] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import warnings

import torch


def framework(beta: float, latent_dim: int):
    from disent.frameworks.vae import BetaVae
    from disent.model import AutoEncoder
    from disent.model.ae import DecoderConv64, EncoderConv64

    model = AutoEncoder(
        encoder=EncoderConv64(x_shape=(1, 64, 64), z_size=latent_dim, z_multiplier=2),
        decoder=DecoderConv64(x_shape=(1, 64, 64), z_size=latent_dim),
    )
    cfg = BetaVae.cfg(
        optimizer="adam",
        optimizer_kwargs={"lr": 1e-4},
        loss_reduction="mean_sum",  # per-image sum, batch mean: the reference's reduction
        recon_loss="bce",
        beta=beta,
    )
    return BetaVae(model=model, cfg=cfg)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--beta", type=float, default=4.0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")  # Lightning's "self.log() without a Trainer", once per step
    logging.disable(logging.WARNING)
    torch.manual_seed(0)
    net = framework(args.beta, 10)
    net.train()
    optimizer = net.configure_optimizers()
    batch = {"x_targ": ((torch.rand(args.batch_size, 1, 64, 64) > 0.9).float(),)}

    def step():
        loss = net.do_training_step(batch, 0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(args.warmup):
        step()
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    cpu, wall = [], []
    for _ in range(args.repeats):
        c, w = time.process_time(), time.perf_counter()
        for _ in range(args.steps):
            step()
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - w)
    print(
        json.dumps(
            {
                "steps": args.steps,
                "cpu_s": cpu,
                "wall_s": wall,
                "flops_per_step": counter.get_total_flops(),
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
            }
        )
    )


if __name__ == "__main__":
    main()
