"""`verify`'s default tolerances, apart from its NumPy code: `ckpt verify --help` shows them
without importing numpy (start-up, issue 26)."""

# BF16 keeps 8 significant bits (relative step 2^-8 = 0.0039); a converted checkpoint whose
# weights round once to BF16 moves hidden states and logits by a few of those steps.
DEFAULT_ATOL = 1e-3
DEFAULT_RTOL = 0.05
