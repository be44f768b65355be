"""`import untwine` tells glibc's malloc to keep freed memory (untwine/_malloc.py, issue 11's page-fault tax)."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.confstr("CS_GNU_LIBC_VERSION") is None, reason="glibc only"
)

# allocate 64 blocks of 1 MiB, touch every page, free them all; twice. The second round's minor page faults say
# whether the freed memory was kept (no faults) or handed back to the OS and faulted in again (one per page).
ROUNDS = """
import json, resource, sys
import numpy as np
import untwine, untwine._malloc as m

def round_trip():
    blocks = [np.ones(1 << 18, dtype=np.float32) for _ in range(64)]  # 64 x 1 MiB, every page written
    del blocks

round_trip()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
round_trip()
print(json.dumps({"faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before, "applied": m.applied}))
"""
PAGES = 64 * (1 << 20) // os.sysconf("SC_PAGE_SIZE")


def second_round(**env) -> dict:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "UNTWINE_MALLOC"}
    environment.update(env)
    done = subprocess.run([sys.executable, "-c", ROUNDS], env=environment, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_freed_memory_is_kept_unless_opted_out():
    kept = second_round()
    assert set(kept["applied"]) == {"mmap_threshold", "trim_threshold", "top_pad"}
    assert kept["faults"] < PAGES // 10, kept
    default = second_round(UNTWINE_MALLOC="default")
    assert default["applied"] == {}
    assert default["faults"] > PAGES // 2, default  # glibc's default: each 1 MiB block is a fresh mmap


def test_glibc_variables_in_the_environment_win():
    result = second_round(MALLOC_MMAP_THRESHOLD_="131072")
    assert set(result["applied"]) == {"trim_threshold", "top_pad"}, "the user's setting is left to glibc"
