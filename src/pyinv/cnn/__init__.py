"""CNN-assisted inversions (Gafeira et al. 2021, A&A 651, A31): a 1D CNN trained on inversion results (or on
generated atmospheres) predicts each pixel's atmosphere; one short inversion cycle from there replaces the
three-cycle standard inversion.

Workflow::

    import pyinv, pyinv.cnn as cnn
    model = cnn.pretrained("hinode-sp-fe6301")                     # catalogue model, numpy only
    pred = cnn.predict(cube, model, mu=0.9)                        # CNN only: pred.atmospheres
    res = pyinv.invert(cube, lines, grid, None, init="cnn")        # assisted: one cycle + fallback

    # training (pip install "pyinv[train]"): from a recipe, or from a map and its inversion
    ts = cnn.generate_training_set("hinode-sp-fe6301", "work/ts")  # resumable shards, truth targets
    model = cnn.train(ts, epochs=200)                              # AdaMax, batch 64
    model.save("my_cnn.npz")

Modules: :mod:`.model` (:class:`CNNModel`: plain weights + metadata), :mod:`.forward` (numpy forward
pass), :mod:`.torch_net` (the torch network, training only), :mod:`.dataset` (training sets at the ten
nodes log τ = 1.0 … −3.5), :mod:`.trainingdata` (generated training sets at scale, resumable),
:mod:`.recipes` and :mod:`.catalogue` (pretrained models per instrument), :mod:`.train`, :mod:`.nodes`
(numpy interpolator, hydrostatic Pe), :mod:`.predict` (CNN-only mode, k-means clustering),
:mod:`.resample`, :mod:`.io` (``.npz`` files), :mod:`.init` (``init="cnn"``: one cycle, fallback),
:mod:`.configs` (the paper's Table 3 set-ups). Prediction needs numpy only; training needs torch.
"""
from __future__ import annotations

from .configs import WEIGHTS, assisted_config, reference_config, training_config  # noqa: F401
from .nodes import NODES, interpolate_nodes, nodes_to_atmospheres  # noqa: F401
from .model import CNNModel, OUTPUTS, SCALES  # noqa: F401
from .dataset import (TrainingSet, build_training_set, join, normalise_stokes, quiet_sun_continuum,  # noqa: F401
                      sample_nodes)
from .train import train  # noqa: F401  (imports torch only when called)
from .io import convert_torch_file, load_model, load_pretrained, pretrained_path, save_model  # noqa: F401
from .catalogue import CATALOGUE, catalogue_names, pretrained  # noqa: F401
from .recipes import RECIPES, Recipe, get_recipe  # noqa: F401
from .trainingdata import generate_training_set, random_atmospheres  # noqa: F401
from .predict import CNNPrediction, as_model, cluster, cluster_outputs, predict  # noqa: F401
from .init import CNNInit  # noqa: F401

__all__ = ["NODES", "interpolate_nodes", "nodes_to_atmospheres", "CNNModel", "OUTPUTS", "SCALES",
           "convert_torch_file", "CATALOGUE", "catalogue_names", "pretrained", "RECIPES", "Recipe", "get_recipe",
           "generate_training_set", "random_atmospheres",
           "TrainingSet", "build_training_set", "join", "normalise_stokes", "quiet_sun_continuum", "sample_nodes",
           "train", "load_model", "load_pretrained", "pretrained_path", "save_model", "CNNPrediction", "as_model",
           "cluster", "cluster_outputs", "predict", "CNNInit", "reference_config", "training_config", "assisted_config", "WEIGHTS"]
