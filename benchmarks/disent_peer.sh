#!/usr/bin/env bash
# The peer of benchmarks/train_throughput.py --peer: disent 0.8.0 (conv64 beta-VAE) in its own virtualenv.
# A benchmark recipe, not a dependency of untwine. Usage: bash benchmarks/disent_peer.sh [VENV] (default
# /tmp/disent-venv), then: python benchmarks/train_throughput.py --peer VENV/bin/python
#
# - Python 3.11 ($PYTHON to override); torch held at the version untwine's venv runs (2.13.0, CPU wheel) by a
#   constraints file, so that both sides run the same kernels.
# - disent pulls in PyPI's torchvision, a build that cannot load beside the CPU torch: it is removed, and a stub
#   package stands in for it (disent and torchmetrics import it at module load; the model and loss never use it).
set -euo pipefail
VENV=${1:-/tmp/disent-venv}
PYTHON=${PYTHON:-python3.11}
TORCH=${TORCH_VERSION:-2.13.0}

"$PYTHON" -m venv "$VENV"
echo "torch==$TORCH" > "$VENV/constraints.txt"
"$VENV/bin/pip" install -q -c "$VENV/constraints.txt" "torch==$TORCH" "disent==0.8.0"
"$VENV/bin/pip" uninstall -y -q torchvision

SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
mkdir -p "$SITE/torchvision/transforms"
cat > "$SITE/torchvision/__init__.py" <<'PY'
"""Stub (benchmarks/disent_peer.sh): disent imports torchvision at module load; the conv64 beta-VAE never uses it."""
from . import datasets, models, transforms  # noqa: F401
PY
ABSENT='"""Stub (benchmarks/disent_peer.sh): any name is a callable that says torchvision is absent."""


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)

    def absent(*args, **kwargs):
        raise NotImplementedError(f"torchvision is stubbed in this benchmark venv ({name})")

    return absent'
echo "$ABSENT" > "$SITE/torchvision/models.py"
echo "$ABSENT" > "$SITE/torchvision/transforms/functional.py"
echo 'from . import functional  # noqa: F401' > "$SITE/torchvision/transforms/__init__.py"
cat > "$SITE/torchvision/datasets.py" <<'PY'
"""Stub (benchmarks/disent_peer.sh): disent subclasses ImageFolder at import; never instantiated here."""


class ImageFolder:
    def __init__(self, *args, **kwargs):
        raise NotImplementedError("torchvision is stubbed in this benchmark venv")
PY
"$VENV/bin/python" -c "from disent.frameworks.vae import BetaVae; from disent.model.ae import EncoderConv64" 2>/dev/null
echo "disent peer ready: $VENV/bin/python"
