"""Plain-data descriptions: the ANN graph (:mod:`.ann`) and the SNN network (:mod:`.snn`)."""

from evsnn.ir.ann import (
    ACTIVATIONS, LINEAR, Add, AnnGraph, AvgPool, ClipAct, Conv, Dense, Flatten, Identity, Input,
    MaxPool, Node, QuantAct, Relu, check_input,
)
from evsnn.ir.snn import (
    INPUT, ConvProjection, DenseProjection, IdentityProjection, MaxProjection, Network, PoolProjection,
    Population, Projection, Readout, fanout, source_fanouts,
)

__all__ = [
    "ACTIVATIONS", "LINEAR", "Add", "AnnGraph", "AvgPool", "ClipAct", "Conv", "Dense", "Flatten", "Identity",
    "Input", "MaxPool", "Node", "QuantAct", "Relu", "check_input",
    "INPUT", "ConvProjection", "DenseProjection", "IdentityProjection", "MaxProjection", "Network",
    "PoolProjection", "Population", "Projection", "Readout", "fanout", "source_fanouts",
]
