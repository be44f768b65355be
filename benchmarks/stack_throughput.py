"""Throughput of a ModelStack: K conv64 beta-VAEs (batch 64 each) trained as one batched computation vs K single
models stepped one after the other, in model-steps per second (K x steps / wall seconds, median of repeats).

A step is what the trainer does: draw each member's batch from its own ``data`` generator (procedural dSprites on
the device), forward with per-member noise, beta-VAE loss (a different beta per member), backward, one Adam step.
The variants run interleaved within each repeat, so their ratios stay meaningful on a loaded machine. The run also
measures a 2048 x 2048 float32 matmul (the machine's practical GEMM ceiling) and counts one training step's FLOPs
with `torch.utils.flop_counter.FlopCounterMode`, to report the achieved fraction of that ceiling.

    python benchmarks/stack_throughput.py [--device cuda] [--ks 1,5,10,30] [--steps 10] [--repeats 5]
        [--modes loop,grouped,vmap] [--layouts channels_last,nchw] [--threads N]

On a machine whose cores are busy with other work, pass --threads 1: a second OpenMP thread with no free core to
run on makes every variant several times slower and the comparison meaningless.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from common import machine, save, timed
from torch.utils.flop_counter import FlopCounterMode

from untwine.data import get_dataset
from untwine.methods import beta_vae_loss
from untwine.nn.conv import GaussianVAE
from untwine.nn.stack import ModelStack, stack_batches, stacked_terms
from untwine.seeding import make_generator

BETAS = (1.0, 2.0, 4.0, 6.0, 8.0, 16.0)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def matmul_gflops(device: str, n: int = 2048, repeats: int = 5) -> dict:
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    a @ b
    sync(device)
    times = []
    inner = 20 if device.startswith("cuda") else 2
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            a @ b
        sync(device)
        times.append((time.perf_counter() - start) / inner)
    t = statistics.median(times)
    return {"n": n, "seconds_median": t, "gflops": 2 * n**3 / t / 1e9, "seconds": times}


class Single:
    """K ordinary models, each with its own Adam and generators, stepped one after another (the trainer's loop)."""

    def __init__(self, K, dataset, batch_size, device, channels_last):
        self.models, self.optimizers, self.gens, self.betas = [], [], [], []
        for k in range(K):
            model = GaussianVAE((1, 64, 64), 10, "conv", make_generator(k, "init")).to(device)
            if channels_last:
                model = model.to(memory_format=torch.channels_last)
            self.models.append(model)
            self.optimizers.append(torch.optim.Adam(model.parameters(), lr=1e-4))
            self.gens.append((make_generator(k, "data", device), make_generator(k, "noise", device)))
            self.betas.append(torch.tensor(BETAS[k % len(BETAS)], device=device))
        self.dataset, self.batch_size, self.channels_last = dataset, batch_size, channels_last

    def step(self):
        for k in range(len(self.models)):
            data, noise = self.gens[k]
            _, x = self.dataset.sample(self.batch_size, data)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            mean, logvar, z, logits = self.models[k](x, noise)
            loss = beta_vae_loss(logits, x, mean, logvar, self.betas[k])["loss"]
            self.optimizers[k].zero_grad(set_to_none=True)
            loss.backward()
            self.optimizers[k].step()


class Stacked:
    def __init__(self, K, dataset, batch_size, device, channels_last, mode):
        self.stack = ModelStack.from_seeds(range(K), device=device, mode=mode, channels_last=channels_last)
        self.optimizer = torch.optim.Adam(self.stack.parameters(), lr=1e-4)
        self.data = [make_generator(k, "data", device) for k in range(K)]
        self.noise = [make_generator(k, "noise", device) for k in range(K)]
        self.betas = torch.tensor([BETAS[k % len(BETAS)] for k in range(K)], device=device)
        self.dataset, self.batch_size = dataset, batch_size

    def step(self):
        _, x = stack_batches(self.dataset, self.batch_size, self.data)
        mean, logvar, z, logits = self.stack(x, self.noise)
        terms = stacked_terms(beta_vae_loss, logits, x, mean, logvar, z, beta=self.betas)
        self.optimizer.zero_grad(set_to_none=True)
        terms["loss"].sum().backward()
        self.optimizer.step()


def count_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--ks", default="1,5,10,30", help="stack sizes, comma-separated")
    parser.add_argument("--steps", type=int, default=10, help="steps per timed repeat (each step = K model-steps)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--modes", default="loop,grouped,vmap", help="ModelStack modes to measure")
    parser.add_argument("--layouts", default="channels_last,nchw", help="channels_last and/or nchw")
    parser.add_argument("--no-sequential", action="store_true", help="skip the K-single-models baseline")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    info = machine()
    device = args.device
    ks = [int(k) for k in args.ks.split(",")]
    modes = [m for m in args.modes.split(",") if m]
    layouts = [name for name in args.layouts.split(",") if name]
    dataset = get_dataset("dsprites").to(device)
    ceiling = matmul_gflops(device)
    print(f"matmul 2048^2 float32: {ceiling['gflops']:.1f} GFLOP/s; load average {info['load_average_1_5_15']}")

    single_flops = count_flops(Single(1, dataset, args.batch_size, device, False).step)
    results = {}
    for K in ks:
        variants = {}
        for layout in layouts:
            cl = layout == "channels_last"
            if not args.no_sequential:
                variants[f"sequential_{layout}"] = Single(K, dataset, args.batch_size, device, cl).step
            for mode in modes:
                variants[f"stack_{mode}_{layout}"] = Stacked(K, dataset, args.batch_size, device, cl, mode).step
        some_stack = next((v for name, v in variants.items() if name.startswith("stack_")), None)
        stack_flops = count_flops(some_stack) if some_stack else None

        def run(fn):
            def steps():
                for _ in range(args.steps):
                    fn()
                sync(device)

            return steps

        for fn in variants.values():  # warm-up (allocator, oneDNN primitive caches, vmap tracing)
            fn()
        sync(device)
        per_repeat = {name: [] for name in variants}
        for _ in range(args.repeats):
            for name, fn in variants.items():
                per_repeat[name].append(timed(run(fn), 1))
        rows = {}
        for name, runs in per_repeat.items():
            walls = [r["wall_s_median"] for r in runs]
            cpus = [r["cpu_s_median"] for r in runs]
            model_steps_per_s = K * args.steps / statistics.median(walls)
            rows[name] = {
                "model_steps_per_second_median": model_steps_per_s,
                "model_steps_per_cpu_second_median": K * args.steps / statistics.median(cpus),
                "wall_s_per_repeat": walls,
                "cpu_s_per_repeat": cpus,
                "achieved_gflops": model_steps_per_s * single_flops / 1e9,
                "fraction_of_matmul_ceiling": model_steps_per_s * single_flops / 1e9 / ceiling["gflops"],
            }
        base = rows.get("sequential_channels_last") or rows.get("sequential_nchw")
        if base:
            for row in rows.values():
                speedup = row["model_steps_per_second_median"] / base["model_steps_per_second_median"]
                row["speedup_over_sequential"] = speedup
        results[str(K)] = {"stack_step_flops": stack_flops, "variants": rows}
        for name, row in rows.items():
            extra = f", x{row['speedup_over_sequential']:.2f} vs sequential" if "speedup_over_sequential" in row else ""
            print(
                f"K={K:3d} {name:28s} {row['model_steps_per_second_median']:7.2f} model-steps/s "
                f"({row['model_steps_per_cpu_second_median']:6.2f}/CPU-s, "
                f"{100 * row['fraction_of_matmul_ceiling']:5.1f}% of matmul){extra}"
            )
    payload = {
        "machine": info,
        "settings": vars(args),
        "matmul_ceiling": ceiling,
        "flops_per_model_step": single_flops,
        "results": results,
    }
    path = save(f"stack_throughput_{device.split(':')[0]}", payload)
    print(f"one model-step = {single_flops / 1e9:.2f} GFLOP (FlopCounterMode); -> {path}")


if __name__ == "__main__":
    main()
