"""Plain NumPy oracles: the ANN forward pass and the clock-driven SNN simulator."""

from evsnn.reference.ann import ann_forward, ann_levels, eval_node

__all__ = ["ann_forward", "ann_levels", "eval_node"]
from evsnn.reference.simulate import simulate  # noqa: E402

__all__ += ["simulate"]
