"""Training the CNN (Gafeira et al. 2021): AdaMax, batch 64, 200 epochs by default, a validation split
and optional early stopping (the weights of the best validation epoch are kept)."""
from __future__ import annotations

import math
import time
from typing import Any, Callable

import numpy as np

from .dataset import TrainingSet
from .model import CNNModel

__all__ = ["train"]


def train(data: TrainingSet, *, model: CNNModel | None = None, epochs: int = 200, batch_size: int = 64,
          learning_rate: float = 2e-3, validation: float = 0.1, patience: int | None = 30, seed: int = 0,
          threads: int | None = 1, device: str = "cpu", progress: bool | Callable = True,
          filters=(32, 32, 16), mu_input: bool | None = None, lr_decay: str | None = None) -> CNNModel:
    """Train a CNN on ``data``.

    Parameters
    ----------
    data : TrainingSet
        From :func:`pyinv.cnn.build_training_set` (joined with ``+`` for several maps).
    model : CNNModel, optional
        Start from this network (fine-tuning); default a new one for ``data.grid``.
    epochs, batch_size, learning_rate :
        AdaMax settings (paper: 200 epochs, batch 64; torch's default AdaMax rate 2e-3).
    validation : float
        Fraction of pixels held out (random, seeded) for validation / early stopping (0 = none).
    patience : int or None
        Stop when the validation loss has not improved for this many epochs (None = never).
    seed : int
        Seeds the split, the initial weights and the batch order (CPU runs repeat exactly).
    threads : int or None
        torch intra-op threads during training (restored afterwards). Default 1: this small network gains
        little from more, and on a loaded machine (inversions running beside it) several spinning threads
        make training up to 10x slower. None = torch's default.
    device : str
        ``"cpu"`` (default) or e.g. ``"cuda"``; the returned model lives on the CPU.
    progress : bool or callable
        Print one line every ~10 % of the epochs; a callable gets ``(epoch, train_loss, val_loss)``.
    filters : three ints
        Convolution filters of a new network.
    mu_input : bool, optional
        Give a new network μ as an input (default: when the training set's μ values differ).
    lr_decay : {None, "cosine"}
        None (default): a constant learning rate. ``"cosine"``: the rate falls from ``learning_rate`` to
        1 % of it over ``epochs`` along a half cosine, set at the start of each epoch (the last epochs refine
        with small steps; early stopping still applies).

    Returns
    -------
    CNNModel
        With ``meta["provenance"]`` holding the training set's provenance, epochs run, best epoch,
        losses (standardised MSE), seconds and the settings.
    """
    import torch

    if lr_decay not in (None, "cosine"):
        raise ValueError(f"lr_decay must be None or 'cosine', got {lr_decay!r}")
    if len(data) < 2:
        raise ValueError(f"a training set needs at least 2 pixels, got {len(data)}")
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    mus = data.mu_array()
    if mu_input is None:
        mu_input = bool(np.ptp(mus) > 1e-6)
    cm = model.copy() if model is not None else CNNModel.new(data.grid, data.lines, node_log_tau=data.node_log_tau,
                                                             seed=seed, filters=filters, mu_input=mu_input,
                                                             mu_range=(float(mus.min()), float(mus.max())))
    cm.check_compatible(data.grid, data.lines, what="training set")
    if data.y.shape[1] != cm.net.n_out:
        raise ValueError(f"the training targets have {data.y.shape[1]} outputs, the network {cm.net.n_out}")
    n = len(data)
    perm = rng.permutation(n)
    nval = int(round(validation * n)) if validation > 0 else 0
    nval = min(nval, n - 1)
    iv, it = perm[:nval], perm[nval:]
    x = torch.from_numpy(np.ascontiguousarray(data.x, dtype=np.float32))
    y = torch.from_numpy(np.ascontiguousarray(data.y, dtype=np.float32))
    m = torch.from_numpy(np.ascontiguousarray(mus.reshape(-1, 1), dtype=np.float32))
    net = cm.net
    if model is None:  # standardise the outputs on the training part
        mean = y[it].mean(0)
        std = y[it].std(0)
        net.out_mean.copy_(mean)
        net.out_std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    dev = torch.device(device)
    net.to(dev)
    xd, yd, md = x.to(dev), y.to(dev), m.to(dev)
    use_mu = cm.mu_input
    mu_, sd_ = net.out_mean, net.out_std
    opt = torch.optim.Adamax(net.parameters(), lr=learning_rate)
    gen = torch.Generator(device="cpu").manual_seed(seed)

    def loss_on(idx: np.ndarray) -> float:
        net.eval()
        with torch.no_grad():
            tot = 0.0
            for i in range(0, idx.size, 4096):
                b = torch.from_numpy(idx[i:i + 4096]).to(dev)
                pred = net.forward_standardised(xd[b], md[b] if use_mu else None)
                tot += float(((pred - (yd[b] - mu_) / sd_) ** 2).sum())
        return tot / max(1, idx.size * net.n_out)

    t0 = time.perf_counter()
    best = (np.inf, 0, None)
    hist_t, hist_v = [], []
    it_t = torch.from_numpy(it)
    ep = 0
    for ep in range(1, int(epochs) + 1):
        if lr_decay == "cosine":
            frac = (ep - 1) / max(int(epochs) - 1, 1)
            for grp in opt.param_groups:
                grp["lr"] = learning_rate * (0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * frac)))
        net.train()
        order = it_t[torch.randperm(it_t.numel(), generator=gen)].to(dev)
        tot, cnt = 0.0, 0
        for i in range(0, order.numel(), batch_size):
            b = order[i:i + batch_size]
            pred = net.forward_standardised(xd[b], md[b] if use_mu else None)
            loss = ((pred - (yd[b] - mu_) / sd_) ** 2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tot += float(loss.detach()) * b.numel()
            cnt += b.numel()
        tl = tot / max(cnt, 1)
        vl = loss_on(iv) if nval else tl
        hist_t.append(tl)
        hist_v.append(vl)
        if vl < best[0]:
            best = (vl, ep, {k: v.detach().clone() for k, v in net.state_dict().items()})
        if callable(progress):
            progress(ep, tl, vl)
        elif progress and (ep == 1 or ep % max(1, epochs // 10) == 0):
            print(f"  epoch {ep:4d}/{epochs}: train loss {tl:.4f}  validation {vl:.4f}  "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
        if patience is not None and nval and ep - best[1] >= patience:
            break
    seconds = time.perf_counter() - t0
    if best[2] is not None and nval:
        net.load_state_dict(best[2])
    net.to("cpu")
    net.eval()
    if threads:
        torch.set_num_threads(old_threads)
    cm.meta["provenance"].update({
        "training_set": data.provenance, "training_pixels": int(it.size), "validation_pixels": int(nval),
        "epochs_requested": int(epochs), "epochs_run": int(ep), "best_epoch": int(best[1]),
        "train_loss": float(hist_t[best[1] - 1] if best[1] else hist_t[-1]),
        "validation_loss": float(best[0]) if nval else None, "loss": "MSE of standardised outputs",
        "optimizer": "Adamax", "learning_rate": float(learning_rate), "lr_decay": lr_decay,
        "batch_size": int(batch_size),
        "seed": int(seed), "seconds": float(seconds), "device": str(dev),
        "fine_tuned_from": model.provenance.get("created") if model is not None else None})
    cm.detach_net()  # plain weights from here on (prediction is numpy)
    cm.history = {"train": hist_t, "validation": hist_v}  # type: ignore[attr-defined]
    return cm
