"""llm_glossary: the tested implementation behind every glossary page."""

import torch as _torch

# Denormal (subnormal) floats make the CPU's matrix kernels 10-20x slower: a training step of
# the walkthrough's model took 3.5 s instead of 0.16 s until they were flushed to zero. The
# flag is per thread and PyTorch's worker threads copy it when they start, so it is set here,
# at import, before the first parallel operation of a process creates them. Values below
# 1.2e-38 become 0; nothing the package computes depends on them. TensorFlow flushes
# denormals by default for the same reason.
_torch.set_flush_denormal(True)
