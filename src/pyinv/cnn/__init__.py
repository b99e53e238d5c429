"""CNN-assisted inversions (Gafeira et al. 2021, A&A 651, A31): a 1D CNN trained on inversion results
predicts each pixel's atmosphere; one short inversion cycle from there replaces the three-cycle standard
inversion.

Workflow::

    import pyinv, pyinv.cnn as cnn
    from pyinv.synthetic import generate_map
    m = generate_map(32, seed=1)                                   # or your own map
    res = pyinv.invert(m.cube, m.lines, m.grid, cnn.training_config(), psf=m.psf)
    ts = cnn.build_training_set(m.cube, res, m.grid, m.lines)
    model = cnn.train(ts, epochs=200)                              # AdaMax, batch 64
    model.save("my_cnn.pt")
    pred = cnn.predict(cube, model)                                # CNN only: pred.atmospheres
    res2 = pyinv.invert(cube, m.lines, m.grid, cnn.assisted_config(), init="cnn", guess=model, psf=m.psf)

Modules: :mod:`.model` (network, :class:`CNNModel`; the azimuth is predicted as cos 2φ, sin 2φ),
:mod:`.dataset` (training sets at the ten nodes log τ = 1.0 … −3.5), :mod:`.train`, :mod:`.nodes` (numba
interpolator, hydrostatic Pe), :mod:`.predict` (CNN-only mode, k-means clustering), :mod:`.io`
(save/load with metadata; ``load_pretrained()`` = the packaged Hinode SP model), :mod:`.init`
(``init="cnn"``), :mod:`.configs` (the paper's Table 3 set-ups). Requires torch and numba.
"""
from __future__ import annotations

from .configs import WEIGHTS, assisted_config, reference_config, training_config  # noqa: F401
from .nodes import NODES, interpolate_nodes, nodes_to_atmospheres  # noqa: F401
from .model import CNNModel, StokesCNN, OUTPUTS, SCALES  # noqa: F401
from .dataset import (TrainingSet, build_training_set, join, normalise_stokes, quiet_sun_continuum,  # noqa: F401
                      sample_nodes)
from .train import train  # noqa: F401
from .io import load_model, load_pretrained, pretrained_path, save_model  # noqa: F401
from .predict import CNNPrediction, as_model, cluster, predict  # noqa: F401
from .init import CNNInit  # noqa: F401

__all__ = ["NODES", "interpolate_nodes", "nodes_to_atmospheres", "CNNModel", "StokesCNN", "OUTPUTS", "SCALES",
           "TrainingSet", "build_training_set", "join", "normalise_stokes", "quiet_sun_continuum", "sample_nodes",
           "train", "load_model", "load_pretrained", "pretrained_path", "save_model", "CNNPrediction", "as_model",
           "cluster", "predict", "CNNInit", "reference_config", "training_config", "assisted_config", "WEIGHTS"]
