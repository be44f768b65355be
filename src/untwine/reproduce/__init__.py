"""Reproductions of papers' experiments, each through the study layer (a study grid built in code, the Ray Tune
study runner, unsupervised selection, the analyses) with a comparison report: one module per paper
(`holtz2022`, `estermann2020`: its PBT-VAE and rPU-VAE runs, not a study grid), one `untwine reproduce <paper>`
command each."""
