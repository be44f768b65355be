"""Unsupervised Disentanglement Ranking (Duan et al. 2020), as disentanglement_lib's `compute_udr_sklearn`.

Array level: `udr(representations [M, N, d], kl [M, d])` -> the reference's `model_scores` [M] and
`pairwise_disentanglement_scores` [M, M] (spec model-selection-methods.md §2.1, disentanglement-lib-reference.md
§5.14). Protocol level: `udr_for_runs(run_dirs)` encodes the same `num_points` observations (drawn from the
evaluation seed) with every run's final model and stores `udr.<correlation>.model_score` in each results.json.

The reference's quirks, all kept (each is a line of `udr`'s docstring):
1. Each model's codes are z-scored with sklearn's `StandardScaler` (ddof 0; a constant latent becomes 0), then
   multiplied by the mask KL > 0.01 -- a HARD-CODED 0.01, whatever `kl_threshold` is. The filtering mask is
   KL > `kl_threshold` (both strict).
2. Lasso similarity: `Lasso(alpha=0.1)` with sklearn's other defaults (fit_intercept, cyclic coordinate descent,
   max_iter 1000, tol 1e-4; the reference's random_state is unused by cyclic descent) fitted to predict model j's
   standardised codes from model i's, all d outputs at once; R = |coef|^T, rows = latents of i, columns = latents
   of j. R is therefore asymmetric: pairwise[i, j] != pairwise[j, i].
3. Spearman similarity: R[a, b] = |Spearman rho(z_i,a, z_j,b)| (symmetric under swapping the models). A constant
   (zeroed) latent gives NaN, and numpy's max/sum make every row and column holding a NaN score NaN, i.e. 0
   (quirk 5): a zeroed latent that is not filtered out (`filter_low_kl=False`, or kl_threshold < KL <= 0.01)
   makes the whole pair score 0.
4. With `filter_low_kl` the rows of latents of i and the columns of latents of j with KL <= kl_threshold are
   dropped before scoring; without it, the dead latents stay (as zero rows/columns for the lasso).
5. Pair score ("relative strength"), the code form, not the paper's: 1/2 (mean over columns b of
   max_a R[a,b]^2 / sum_a R[a,b] + mean over rows a of max_b R[a,b]^2 / sum_b R[a,b]); a 0/0 (an all-zero row or
   column) is turned into 0 BEFORE the means, so it counts as a zero, not as missing. The two halves weigh 1/2
   each (the paper weighs them by the numbers of informative latents, 1/(d_a + d_b)).
6. Model score = median over j != i of pairwise[j, i] (column i: the model as the regression TARGET).
7. A model with no latent above the KL threshold: the reference fails (numpy's max of an empty matrix raises);
   here `no_informative="error"` raises an InvalidInputError naming the model; `no_informative="zero"` scores
   every pair involving it 0, as rPU-VAE's copy of UDR does (spec §2.5).
8. The pairwise matrix's diagonal is 0 (never computed); the reference returns it as [M, M, 1], here [M, M].
9. The pair score is not scale-free: relative strength of c R is c times that of R. With the lasso's shrinkage,
   two identical models with uncorrelated latents score 1 - alpha = 0.9, not 1 (Spearman: 1).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence

import numpy as np
from scipy.stats import rankdata
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import Lasso
from sklearn.preprocessing import StandardScaler

from untwine.errors import InvalidInputError

CORRELATIONS = ("lasso", "spearman")
HARD_CODED_ZEROING_THRESHOLD = 0.01  # the reference multiplies codes by KL > 0.01 whatever kl_threshold is
DEFAULTS = {"num_points": 1000, "batch_size": 10, "lasso_alpha": 0.1, "kl_threshold": 0.01}


def relative_strength(matrix: np.ndarray) -> float:
    """The reference's pair score of a similarity matrix R (quirk 5): 1/2 (column half + row half), 0/0 -> 0.

    >>> relative_strength(np.eye(3)), relative_strength(np.ones((3, 3)))
    (1.0, 0.3333333333333333)
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        columns = np.nan_to_num(matrix.max(axis=0) ** 2 / matrix.sum(axis=0))
        rows = np.nan_to_num(matrix.max(axis=1) ** 2 / matrix.sum(axis=1))
    return float((np.nanmean(columns) + np.nanmean(rows)) / 2)


def lasso_similarity(codes_i: np.ndarray, codes_j: np.ndarray, alpha: float = 0.1) -> np.ndarray:
    """|coef|^T of a multi-output Lasso predicting codes_j [N, d] from codes_i [N, d] (quirk 2): [d_i, d_j]."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = Lasso(alpha=alpha).fit(codes_i, codes_j)
    return np.abs(np.atleast_2d(model.coef_)).T


def spearman_similarity(codes_i: np.ndarray, codes_j: np.ndarray) -> np.ndarray:
    """|Spearman rho| between every latent of codes_i and every latent of codes_j (quirk 3): [d_i, d_j].

    Pearson correlation of average ranks (scipy's `spearmanr`); a constant latent gives NaN."""
    ranks_i = rankdata(codes_i, axis=0)
    ranks_j = rankdata(codes_j, axis=0)
    ranks_i = ranks_i - ranks_i.mean(axis=0)
    ranks_j = ranks_j - ranks_j.mean(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (ranks_i.T @ ranks_j) / np.outer(np.linalg.norm(ranks_i, axis=0), np.linalg.norm(ranks_j, axis=0))
    return np.abs(np.clip(rho, -1.0, 1.0))


def _check(representations, kl) -> tuple[np.ndarray, np.ndarray]:
    representations = np.asarray(representations, dtype=np.float64)
    kl = np.asarray(kl, dtype=np.float64)
    if representations.ndim != 3:
        raise InvalidInputError(
            f"representations must have shape [models, points, latents], got {list(representations.shape)}"
        )
    num_models, num_points, num_latents = representations.shape
    if num_models < 2:
        raise InvalidInputError(f"UDR compares models with each other: it needs at least 2, got {num_models}")
    if num_points < 2 or num_latents < 1:
        raise InvalidInputError(f"UDR needs at least 2 points and 1 latent, got {list(representations.shape)}")
    if kl.shape != (num_models, num_latents):
        raise InvalidInputError(f"kl must have shape [{num_models}, {num_latents}], got {list(kl.shape)}")
    if not np.all(np.isfinite(representations)) or not np.all(np.isfinite(kl)):
        raise InvalidInputError("representations and kl must be finite (no NaN or inf)")
    return representations, kl


def udr(
    representations,
    kl,
    correlation: str = "lasso",
    filter_low_kl: bool = True,
    kl_threshold: float = 0.01,
    lasso_alpha: float = 0.1,
    no_informative: str = "error",
    include_raw_correlations: bool = False,
    names: Sequence[str] | None = None,
) -> dict:
    """UDR of M models from their mean codes on the same N observations, as `compute_udr_sklearn`.

    representations: [M, N, d] encoder means; kl: [M, d] each latent's KL to the prior, averaged over the points.
    Returns {"model_scores": [M], "pairwise_disentanglement_scores": [M, M], "num_informative": [M]} (numpy), plus
    "raw_correlations" [M, M, d, d] (the unfiltered similarity matrices) if asked (the reference's gin default
    includes them). Quirks (module docstring):
    z-scored codes zeroed where KL <= 0.01 (hard-coded); lasso alpha 0.1 on standardised codes, R = |coef|^T,
    asymmetric; Spearman |rho|; rows/columns of latents with KL <= kl_threshold dropped if filter_low_kl;
    pair score = 1/2 (column mean + row mean) of max^2/sum with 0/0 -> 0; model score = median of column i;
    a model without informative latents is an error (the reference fails) or, with no_informative="zero",
    scores 0 in every pair (rPU-VAE). `names` label the models in error messages.
    """
    if correlation not in CORRELATIONS:
        raise InvalidInputError(f"unknown correlation {correlation!r}; choose lasso or spearman")
    if no_informative not in ("error", "zero"):
        raise InvalidInputError(f"no_informative must be 'error' or 'zero', got {no_informative!r}")
    representations, kl = _check(representations, kl)
    num_models, _, num_latents = representations.shape
    names = list(names) if names is not None else [f"model {i}" for i in range(num_models)]
    codes, masks = [], []
    for i in range(num_models):
        standardised = StandardScaler().fit_transform(representations[i])
        codes.append(standardised * (kl[i] > HARD_CODED_ZEROING_THRESHOLD))
        masks.append(kl[i] > kl_threshold)
    empty = [names[i] for i in range(num_models) if not masks[i].any()]
    if filter_low_kl and empty and no_informative == "error":
        raise InvalidInputError(
            f"no latent of {', '.join(empty)} has a KL above {kl_threshold:g}: UDR has nothing to compare (the "
            "reference fails here too; no_informative='zero' scores such pairs 0, as rPU-VAE does)"
        )
    raw = np.zeros((num_models, num_models, num_latents, num_latents))
    pairwise = np.zeros((num_models, num_models))
    for i in range(num_models):
        for j in range(num_models):
            if i == j:
                continue
            if correlation == "lasso":
                matrix = lasso_similarity(codes[i], codes[j], lasso_alpha)
            else:
                matrix = spearman_similarity(codes[i], codes[j])
            raw[i, j] = matrix
            if filter_low_kl:
                if not (masks[i].any() and masks[j].any()):
                    continue  # no_informative == "zero": the pair scores 0
                matrix = matrix[masks[i]][:, masks[j]]
            pairwise[i, j] = relative_strength(matrix)
    model_scores = np.array([np.median(np.delete(pairwise[:, i], i)) for i in range(num_models)])
    result = {
        "model_scores": model_scores,
        "pairwise_disentanglement_scores": pairwise,
        "num_informative": np.array([int(m.sum()) for m in masks]),
    }
    if include_raw_correlations:
        result["raw_correlations"] = raw
    return result


# --- protocol: runs -> codes on shared observations -> scores stored in each run ---------------------------------


def gaussian_kl(mean: np.ndarray, logvar: np.ndarray) -> np.ndarray:
    """Per-point, per-latent KL(N(mean, exp(logvar)) || N(0, 1)) = 1/2 (mean^2 + e^logvar - logvar - 1)."""
    return 0.5 * (np.square(mean) + np.exp(logvar) - logvar - 1.0)


def udr_generator(eval_seed: int):
    """The (CPU) torch generator the UDR observations are drawn from: derived from the evaluation seed only, so
    every model of a group (and every group of a study, on any device) sees the same observations."""
    import torch

    words = np.random.SeedSequence([eval_seed, *b"udr"]).generate_state(1, dtype=np.uint64)
    return torch.Generator().manual_seed(int(words[0] >> 1))


def encode_runs(
    run_dirs: Sequence,
    num_points: int = 1000,
    batch_size: int = 10,
    eval_seed: int = 0,
    device: str = "cpu",
    group: str | None = None,
) -> tuple[np.ndarray, np.ndarray, list]:
    """(representations [M, N, d], kl [M, d], runs): every run's final model on the same N observations.

    The KL is the reference's: per-batch means of the per-point KL, averaged over the N / batch_size batches.
    Runs must share the data set (name, options, source) and the latent size; `group` names them in errors."""
    from untwine.runs import RunDir

    runs = [RunDir(r).require() for r in run_dirs]
    label = f" ({group})" if group else ""
    if len(runs) < 2:
        raise InvalidInputError(
            f"UDR compares the models of a group with each other: it needs at least 2 runs{label}, got {len(runs)}"
        )
    configs = [run.config() for run in runs]
    data_of = [(c.dataset, c.dataset_source, sorted(c.dataset_options.items())) for c in configs]
    if len(set(map(repr, data_of))) > 1:
        listing = ", ".join(f"{run.name}: {c.dataset}" for run, c in zip(runs, configs))
        raise InvalidInputError(f"UDR compares models trained on the same data set{label}; got {listing}")
    dims = {c.latent_dim for c in configs}
    if len(dims) > 1:
        listing = ", ".join(f"{run.name}: {c.latent_dim}" for run, c in zip(runs, configs))
        raise InvalidInputError(f"UDR compares models with the same number of latents{label}; got {listing}")
    models = [run.load_model("final", device=device) for run in runs]
    representations, kl = encode_models(models, runs[0].load_dataset(device=device), num_points, batch_size, eval_seed)
    return representations, kl, runs


def encode_models(
    models: Sequence, dataset, num_points: int = 1000, batch_size: int = 10, eval_seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(representations [M, N, d], kl [M, d]) of models in memory (e.g. PBT members) on the same N observations of
    `dataset`, drawn from the evaluation seed; the KL per batch of `batch_size`, averaged over batches. The models
    are left in eval mode."""
    from untwine.evaluation.representation import representation

    if num_points < 2 or batch_size < 1 or num_points % batch_size:
        raise InvalidInputError(
            f"num_points ({num_points}) must be a multiple of batch_size ({batch_size}) and at least 2"
        )
    _, observations = dataset.sample(num_points, udr_generator(eval_seed))
    means, kls = [], []
    for model in models:
        mean, logvar = representation(model, "mean").gaussian_encoder(observations)
        means.append(mean)
        per_batch = gaussian_kl(mean, logvar).reshape(num_points // batch_size, batch_size, -1).mean(axis=1)
        kls.append(per_batch.mean(axis=0))
    return np.stack(means), np.stack(kls)


def udr_for_runs(
    run_dirs: Sequence,
    num_points: int = 1000,
    batch_size: int = 10,
    eval_seed: int = 0,
    correlation: str = "lasso",
    filter_low_kl: bool = True,
    kl_threshold: float = 0.01,
    no_informative: str = "error",
    device: str = "cpu",
    group: str | None = None,
    store: bool = True,
) -> dict:
    """UDR of a group of runs that share everything but the seed (spec §2.1, reference defaults: 1,000 points in
    batches of 10, evaluation seed 0). Returns `udr`'s dict plus "runs" (names) and "elapsed_s"; with `store`,
    merges `udr.<correlation>.model_score` (and `.num_models`, `.num_informative`) into each run's results.json,
    and `udr.<correlation>.pair_scores`: {seed of j: pairwise[j, i]} over the group's other runs j (the run's column
    of the pairwise matrix, from which its score within any subset of the seeds follows:
    `selection.seeds.udr_subset_score`; {} when seeds repeat)."""
    start = time.perf_counter()
    representations, kl, runs = encode_runs(run_dirs, num_points, batch_size, eval_seed, device, group)
    names = [run.name for run in runs]
    result = udr(
        representations,
        kl,
        correlation=correlation,
        filter_low_kl=filter_low_kl,
        kl_threshold=kl_threshold,
        no_informative=no_informative,
        names=names,
    )
    result["runs"] = names
    result["elapsed_s"] = time.perf_counter() - start
    if store:
        seeds = [run.config().seed for run in runs]
        pairwise = result["pairwise_disentanglement_scores"]
        for i, run in enumerate(runs):
            pairs = {str(seeds[j]): float(pairwise[j, i]) for j in range(len(runs)) if j != i}
            run.update_results(
                {
                    f"udr.{correlation}.model_score": float(result["model_scores"][i]),
                    f"udr.{correlation}.num_models": len(runs),
                    f"udr.{correlation}.num_informative": int(result["num_informative"][i]),
                    f"udr.{correlation}.pair_scores": pairs if len(set(seeds)) == len(seeds) else {},
                }
            )
    return result
