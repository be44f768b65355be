"""The PBT schedule of PBT-VAE and rPU-VAE as pure, seeded functions (Estermann et al. 2020; spec:
model-selection-methods.md §1.3 and §1.5 Phase A; the rPU code's explorer.py, utils.py, vae_trainer.py).

Everything random draws from an explicit `numpy.random.Generator`; nothing here trains or scores a model. The
pieces, in the order the reference's explorer applies them after every member of a generation has been scored:

1. `rank` the members by score (best first);
2. `IterationBest`: remember the best member of the round if it beats the best so far (strict >);
3. `halve` the initial population after the first round (supervised runs: 56 -> 28, `init_population_factor=2`);
4. stop rules: `fixed_length_stop` (supervised runs: stop after round `max_epoch + 1`, i.e. max_epoch + 2 rounds),
   `failed` (rPU: best score < 0.1) and `converged` (rPU: the per-round best changed by < 0.005 six times in a row);
5. otherwise `exploit_and_explore`: the bottom k = ceil(0.2 P) members each copy a top-k member chosen uniformly
   with replacement, then `perturb` its hyperparameters.

`Explorer` strings these together with the round/iteration counters, the lineage record and a JSON-able state.

Decisions on the spec's §1.10 quirks taken here:

- §1.10.3: convergence is tested on the *per-round* best score (not a running best), as the code; the exported
  model is the best over all rounds of the iteration (`IterationBest`).
- §1.10.4: a ready interval is a number of *samples*; `interval_batch_sizes` turns it into batch sizes (below).
- §1.10.5: "epoch > max_epoch" tested after scoring gives max_epoch + 2 rounds; kept, and `fixed_length_rounds`
  names the count.
- Ties in score are ranked by member id (the reference's order among ties is the order members finished in);
  a NaN score counts as 0, the score the reference gives a member whose scoring fails.
- Perturbation arithmetic is the reference's float64: batch `min(ceil(f * bs), 1024)`, beta `ceil(f * beta)`.

Ready interval -> Trainer steps (§1.3.3). The reference trains exactly S samples per interval: batches of the
member's batch size b, the last one cut short to the remainder, and S reduced by one first when S mod b == 1 (so
that no batch holds a single sample, which BatchNorm cannot train on). `interval_batch_sizes` gives that list:
floor(S'/b) batches of b and one of S' mod b if non-zero; the optimiser takes one step per batch. untwine's Trainer
draws each batch i.i.d. with replacement (disentanglement_lib's protocol) rather than in shuffled passes over the
data set, so the reference's extra short batch at the end of each pass over the data is not reproduced: the sample
count and the step count per interval are the reference's, the order of the images is not.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from untwine.errors import InvalidInputError

# §1.3.2 initial values, computed as the reference computes them (utils.get_init_*)
LR_CHOICES: tuple[float, ...] = tuple(float(v) for v in np.logspace(-5, 0, num=30, base=10))
BATCH_SIZE_CHOICES: tuple[int, ...] = tuple(int(v) for v in np.logspace(3, 10, base=2, num=8, dtype=int))
BETA_CHOICES: tuple[int, ...] = tuple(int(v) for v in np.logspace(1, 15, base=1.5, num=24, dtype=int)[1:])
PERTURB_FACTORS: tuple[float, ...] = (2.0, 1.2, 0.8, 0.5)  # exploit_and_explore.perturb_factors
MAX_BATCH_SIZE = 1024  # the reference's memory cap on perturbed batch sizes
CUTOFF = 0.2  # GeneralExplorer.cutoff
EVOLVED = ("lr", "batch_size", "beta")  # hyper_parameters in every gin
CONVERGENCE_WINDOW = 6  # next_iteration_condition: six consecutive round-to-round changes
CONVERGENCE_TOLERANCE = 0.005
FAILURE_THRESHOLD = 0.1  # end_condition: best score below this stops the rPU run
ADAPTIVE_MIN_SAMPLES = 10_000  # leaf runs: max(10,000, |D_cur|) samples per interval


@dataclass(frozen=True)
class Hyperparameters:
    """A member's evolved hyperparameters: Adam's learning rate, the batch size, and the beta-TCVAE TC weight."""

    lr: float
    batch_size: int
    beta: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def _check_generator(rng) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise InvalidInputError(f"expected a numpy.random.Generator, got {type(rng).__name__}")
    return rng


def initial_hyperparameters(rng: np.random.Generator) -> Hyperparameters:
    """One member's initial values (§1.3.2), each uniform over its list; drawn in the reference's order (beta,
    batch size, lr)."""
    rng = _check_generator(rng)
    beta = BETA_CHOICES[int(rng.integers(len(BETA_CHOICES)))]
    batch_size = BATCH_SIZE_CHOICES[int(rng.integers(len(BATCH_SIZE_CHOICES)))]
    lr = LR_CHOICES[int(rng.integers(len(LR_CHOICES)))]
    return Hyperparameters(lr=lr, batch_size=batch_size, beta=beta)


def initial_population(size: int, rng: np.random.Generator) -> list[Hyperparameters]:
    """Initial hyperparameters of members 0..size-1, drawn independently in member order."""
    if size < 1:
        raise InvalidInputError(f"a population needs at least one member, got {size}")
    return [initial_hyperparameters(rng) for _ in range(size)]


def perturb(
    hyperparameters: Hyperparameters,
    rng: np.random.Generator,
    factors: Sequence[float] = PERTURB_FACTORS,
    evolve: Sequence[str] = EVOLVED,
    max_batch_size: int = MAX_BATCH_SIZE,
) -> tuple[Hyperparameters, dict[str, float]]:
    """Explore (§1.3.6): an independent factor per evolved hyperparameter, drawn uniformly from `factors` in the
    order lr, batch size, beta. lr * f (no bounds); batch min(ceil(f * bs), max_batch_size); beta ceil(f * beta)
    (an integer, >= 1 since beta >= 1 and f > 0). Returns (new values, {name: factor used})."""
    rng = _check_generator(rng)
    unknown = sorted(set(evolve) - set(EVOLVED))
    if unknown:
        raise InvalidInputError(f"cannot evolve {', '.join(unknown)}; evolved hyperparameters are {', '.join(EVOLVED)}")
    if not factors or any(not f > 0 for f in factors):
        raise InvalidInputError(f"perturbation factors must be positive, got {list(factors)}")
    values = hyperparameters.as_dict()
    used: dict[str, float] = {}
    for name in EVOLVED:  # fixed order: the draws are the reference's
        if name not in evolve:
            continue
        f = float(factors[int(rng.integers(len(factors)))])
        used[name] = f
        if name == "lr":
            values["lr"] = values["lr"] * f
        elif name == "batch_size":
            values["batch_size"] = int(min(math.ceil(f * values["batch_size"]), max_batch_size))
        else:
            values["beta"] = int(math.ceil(f * values["beta"]))
    return Hyperparameters(**values), used


def truncation_size(population: int, cutoff: float = CUTOFF) -> int:
    """k = ceil(cutoff * P) members at each end (12 of 56, 6 of 28). The top and bottom k must not overlap."""
    if not 0 < cutoff <= 0.5:
        raise InvalidInputError(f"the truncation cutoff must be in (0, 0.5], got {cutoff}")
    k = math.ceil(cutoff * population)
    if population < 2 or 2 * k > population:
        raise InvalidInputError(
            f"a population of {population} is too small for truncation selection with cutoff {cutoff} "
            f"(top and bottom {k} would overlap); use at least 2 members"
        )
    return k


def _clean(score: float) -> float:
    score = float(score)
    return 0.0 if math.isnan(score) else score


def rank(scores: Mapping[int, float]) -> list[int]:
    """Member ids, best score first; ties by member id; a NaN score counts as 0."""
    return sorted(scores, key=lambda member: (-_clean(scores[member]), member))


def halve(ranked: Sequence[int], factor: int = 2) -> list[int]:
    """The initial-population reduction after the first round (§1.3.7): keep the best len // factor members."""
    if factor < 1:
        raise InvalidInputError(f"the initial population factor must be >= 1, got {factor}")
    return list(ranked[: len(ranked) // factor])


@dataclass(frozen=True)
class Exploit:
    """One lineage record: `target` (a bottom member) copied `source` (a top member) and perturbed its values."""

    iteration: int
    round: int
    target: int
    source: int
    target_score: float
    source_score: float
    inherited: Hyperparameters  # the source's values, which the copy starts from
    factors: dict[str, float]
    hyperparameters: Hyperparameters  # the target's values after exploring

    def as_dict(self) -> dict:
        return asdict(self)


def exploit_and_explore(
    scores: Mapping[int, float],
    hyperparameters: Mapping[int, Hyperparameters],
    rng: np.random.Generator,
    cutoff: float = CUTOFF,
    factors: Sequence[float] = PERTURB_FACTORS,
    evolve: Sequence[str] = EVOLVED,
    max_batch_size: int = MAX_BATCH_SIZE,
    iteration: int = 0,
    round: int = 0,
) -> list[Exploit]:
    """Truncation selection (§1.3.5) and perturbation (§1.3.6) for one generation.

    The bottom k = ceil(cutoff * P) members, from the k-th worst to the worst, each pick a source uniformly (with
    replacement) among the top k, copy everything (the caller copies the state) and perturb the source's values.
    The middle members and the top k keep theirs.
    """
    rng = _check_generator(rng)
    missing = sorted(set(scores) - set(hyperparameters))
    if missing:
        raise InvalidInputError(f"members {missing} have scores but no hyperparameters")
    ranked = rank(scores)
    k = truncation_size(len(ranked), cutoff)
    tops, bottoms = ranked[:k], ranked[len(ranked) - k :]
    records = []
    for target in bottoms:
        source = tops[int(rng.integers(k))]
        new, used = perturb(hyperparameters[source], rng, factors, evolve, max_batch_size)
        records.append(
            Exploit(
                iteration=iteration,
                round=round,
                target=target,
                source=source,
                target_score=_clean(scores[target]),
                source_score=_clean(scores[source]),
                inherited=hyperparameters[source],
                factors=used,
                hyperparameters=new,
            )
        )
    return records


def interval_batch_sizes(samples: int, batch_size: int) -> list[int]:
    """Batch sizes of one ready interval of `samples` samples (§1.3.3; see the module docstring): S' = S - 1 when
    S mod b == 1, then floor(S'/b) batches of b and one batch of S' mod b if that is not zero."""
    if samples < 0 or batch_size < 1:
        raise InvalidInputError(f"an interval needs samples >= 0 and batch_size >= 1, got {samples}, {batch_size}")
    if batch_size > 1 and samples % batch_size == 1:
        samples -= 1
    full, rest = divmod(samples, batch_size)
    return [batch_size] * full + ([rest] if rest else [])


def adaptive_interval(dataset_size: int, minimum: int = ADAPTIVE_MIN_SAMPLES) -> int:
    """Samples per interval of a leaf run (epoch_train_steps = None): max(10,000, |D_cur|)."""
    return max(minimum, int(dataset_size))


def fixed_length_stop(round: int, max_epoch: int) -> bool:
    """ClassicExplorer: after scoring round `round` (counted from 0), stop if round > max_epoch."""
    return round > max_epoch


def fixed_length_rounds(max_epoch: int) -> int:
    """The number of training and scoring rounds a fixed-length run makes: max_epoch + 2 (17 for 15, 28 for 26)."""
    return max_epoch + 2


def converged(
    best_scores: Sequence[float], window: int = CONVERGENCE_WINDOW, tolerance: float = CONVERGENCE_TOLERANCE
) -> bool:
    """rPU convergence (§1.5 A.2) on the per-round best scores of this iteration, oldest first: every one of the
    last `window` round-to-round changes is < tolerance in absolute value. A missing round counts as not converged,
    so it needs window + 1 rounds; a NaN change is not < tolerance."""
    if len(best_scores) < window + 1:
        return False
    recent = np.asarray(best_scores[-(window + 1) :], dtype=float)
    return bool(np.all(np.abs(np.diff(recent)) < tolerance))


def failed(best_score: float, threshold: float = FAILURE_THRESHOLD) -> bool:
    """rPU failure stop (§1.5 A.2): the round's best score is below the threshold."""
    return _clean(best_score) < threshold


@dataclass
class IterationBest:
    """The best member over all rounds of an iteration (export_best_model: strictly better replaces it)."""

    member: int | None = None
    round: int | None = None
    score: float = -1.0

    def update(self, member: int, round: int, score: float) -> bool:
        score = _clean(score)
        if score > self.score:
            self.member, self.round, self.score = member, round, score
            return True
        return False


@dataclass
class RoundResult:
    """What the explorer decided after one scored generation."""

    iteration: int
    round: int
    scores: dict[int, float]
    ranked: list[int]
    best: int
    best_score: float
    new_best: bool  # the round's best beat the iteration's best so far: copy its checkpoint as the export candidate
    removed: list[int] = field(default_factory=list)  # dropped by the initial-population halving
    stop: str | None = None  # "max_epoch" (fixed length), "failed" (best < threshold), "converged"
    exploits: list[Exploit] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


STOP_RULES = ("fixed", "converge")


class Explorer:
    """The synchronous explorer's per-generation procedure (GeneralExplorer + ClassicExplorer / RPUVAEExplorer).

    stop="fixed" (PBT-S-VAE): stop after round max_epoch + 1. stop="converge" (rPU x-run and leaf runs): stop with
    "failed" when the best score is < failure_threshold, else with "converged" by `converged`; max_epoch, if given,
    caps the rounds of an iteration (the rPU code has no cap). On "converged" the caller either ends (x-run) or
    reduces the data set and calls `next_iteration` (leaf runs). No exploit happens in a round that stops.

    >>> explorer = Explorer(dict(enumerate(initial_population(8, rng))), rng, stop="fixed", max_epoch=3)
    >>> result = explorer.step({0: 0.1, 1: 0.5, ...})   # every member's score of this round
    >>> for e in result.exploits: copy_state(e.source, e.target); set_hyperparameters(e.target, e.hyperparameters)
    """

    def __init__(
        self,
        hyperparameters: Mapping[int, Hyperparameters],
        rng: np.random.Generator,
        stop: str = "fixed",
        max_epoch: int | None = None,
        cutoff: float = CUTOFF,
        factors: Sequence[float] = PERTURB_FACTORS,
        evolve: Sequence[str] = EVOLVED,
        max_batch_size: int = MAX_BATCH_SIZE,
        init_population_factor: int = 1,
        window: int = CONVERGENCE_WINDOW,
        tolerance: float = CONVERGENCE_TOLERANCE,
        failure_threshold: float = FAILURE_THRESHOLD,
    ):
        if stop not in STOP_RULES:
            raise InvalidInputError(f"unknown stop rule {stop!r}; choose {', '.join(STOP_RULES)}")
        if stop == "fixed" and (max_epoch is None or max_epoch < 0):
            raise InvalidInputError("the fixed-length stop rule needs max_epoch >= 0")
        if init_population_factor < 1:
            raise InvalidInputError(f"init_population_factor must be >= 1, got {init_population_factor}")
        self.rng = _check_generator(rng)
        self.hyperparameters = dict(hyperparameters)
        truncation_size(len(self.hyperparameters) // init_population_factor, cutoff)  # validates the population
        self.stop_rule, self.max_epoch = stop, max_epoch
        self.cutoff, self.factors, self.evolve = cutoff, tuple(factors), tuple(evolve)
        self.max_batch_size = max_batch_size
        self.init_population_factor = init_population_factor
        self.window, self.tolerance, self.failure_threshold = window, tolerance, failure_threshold
        self.iteration = 0
        self.round = 0
        self.best_per_round: list[float] = []
        self.best = IterationBest()
        self.history: list[RoundResult] = []
        self.stopped: str | None = None

    @property
    def members(self) -> list[int]:
        return sorted(self.hyperparameters)

    @property
    def lineage(self) -> list[Exploit]:
        return [e for r in self.history for e in r.exploits]

    def step(self, scores: Mapping[int, float]) -> RoundResult:
        """Process one generation's scores (every current member's) and decide: halve, stop or exploit/explore."""
        if self.stopped:
            raise InvalidInputError(f"the explorer has stopped ({self.stopped}); start a new iteration or run")
        if set(scores) != set(self.hyperparameters):
            raise InvalidInputError(f"need a score for exactly the members {self.members}, got {sorted(scores)}")
        scores = {int(m): _clean(s) for m, s in scores.items()}
        ranked = rank(scores)
        best = ranked[0]
        result = RoundResult(self.iteration, self.round, scores, ranked, best, scores[best], False)
        result.new_best = self.best.update(best, self.round, scores[best])
        self.best_per_round.append(scores[best])
        if self.init_population_factor != 1:
            kept = halve(ranked, self.init_population_factor)
            result.removed = ranked[len(kept) :]
            self.hyperparameters = {m: self.hyperparameters[m] for m in kept}
            scores = {m: scores[m] for m in kept}
            self.init_population_factor = 1
        result.stop = self._stop(scores[best])
        if result.stop is None:
            result.exploits = exploit_and_explore(
                scores,
                self.hyperparameters,
                self.rng,
                self.cutoff,
                self.factors,
                self.evolve,
                self.max_batch_size,
                self.iteration,
                self.round,
            )
            for e in result.exploits:
                self.hyperparameters[e.target] = e.hyperparameters
            self.round += 1
        self.stopped = result.stop
        self.history.append(result)
        return result

    def _stop(self, best_score: float) -> str | None:
        if self.stop_rule == "fixed":
            return "max_epoch" if fixed_length_stop(self.round, self.max_epoch) else None
        if failed(best_score, self.failure_threshold):
            return "failed"
        if converged(self.best_per_round, self.window, self.tolerance):
            return "converged"
        if self.max_epoch is not None and fixed_length_stop(self.round, self.max_epoch):
            return "max_epoch"
        return None

    def next_iteration(self) -> dict[int, Hyperparameters]:
        """rPU leaf runs after a reduction (§1.5 B.5): every member restarts with hyperparameters drawn afresh
        (in member order, from the explorer's generator), the round counter and the best tracking are reset.
        Returns the new hyperparameters; the caller re-initialises the members' weights and generators."""
        if self.stopped != "converged":
            raise InvalidInputError(f"a new iteration follows a converged one, not {self.stopped or 'a running one'}")
        self.hyperparameters = {m: initial_hyperparameters(self.rng) for m in self.members}
        self.iteration += 1
        self.round = 0
        self.best_per_round = []
        self.best = IterationBest()
        self.stopped = None
        return dict(self.hyperparameters)

    # state (JSON-able) for resuming a killed run ----------------------------------------------------------------

    def state_dict(self) -> dict:
        return {
            "rng": self.rng.bit_generator.state,
            "hyperparameters": {str(m): h.as_dict() for m, h in self.hyperparameters.items()},
            "init_population_factor": self.init_population_factor,
            "iteration": self.iteration,
            "round": self.round,
            "best_per_round": list(self.best_per_round),
            "best": asdict(self.best),
            "history": [r.as_dict() for r in self.history],
            "stopped": self.stopped,
        }

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.hyperparameters = {int(m): Hyperparameters(**h) for m, h in state["hyperparameters"].items()}
        self.init_population_factor = state["init_population_factor"]
        self.iteration, self.round = state["iteration"], state["round"]
        self.best_per_round = list(state["best_per_round"])
        self.best = IterationBest(**state["best"])
        self.history = [_round_from_dict(r) for r in state["history"]]
        self.stopped = state["stopped"]


def _round_from_dict(data: dict) -> RoundResult:
    data = dict(data)
    data["scores"] = {int(m): s for m, s in data["scores"].items()}
    data["exploits"] = [
        Exploit(
            **{
                **e,
                "inherited": Hyperparameters(**e["inherited"]),
                "hyperparameters": Hyperparameters(**e["hyperparameters"]),
            }
        )
        for e in data["exploits"]
    ]
    return RoundResult(**data)
