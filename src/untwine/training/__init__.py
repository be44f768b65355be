"""Training: the loop (`Trainer`, `train`), atomic checkpoints, and logs."""


def __getattr__(name):  # lazy, so that `untwine.runs` can import `training.checkpoint` without a cycle
    if name in ("Trainer", "train"):
        from untwine.training import trainer

        return getattr(trainer, name)
    raise AttributeError(name)


__all__ = ["Trainer", "train"]
