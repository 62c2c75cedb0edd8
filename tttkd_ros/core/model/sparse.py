"""spconv's torch API, imported without its import-time FutureWarnings: spconv 2.3 still
decorates its functions with torch.cuda.amp.custom_fwd / custom_bwd, which torch deprecates,
so every command printed eight warnings nobody using this package can act on."""
from __future__ import annotations

import warnings

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r".*torch\.cuda\.amp\.custom_(fwd|bwd)",
                            category=FutureWarning)
    import spconv.pytorch as spconv

__all__ = ["spconv"]
