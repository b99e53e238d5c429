"""Seeded recipe that trains the departure-coefficient emulator (:mod:`pyinv.nlte.emulator`) with torch.

Data: the columns of :mod:`pyinv.nlte.columns` (a folder of shards). Columns whose backend run did not
converge are dropped (and counted); the held-out columns (``k % 10 == 9``) are never used here; of the rest,
``k % 10 == 8`` is the validation set that picks the epoch (early stopping), the others train. Every
training column is used twice, as drawn and with v_LOS → −v_LOS: with complete redistribution and the
symmetric line profiles of the backends' atoms, reversing the whole velocity field mirrors the frequency
dependence of every radiative rate and leaves the populations unchanged.

Loss: mean squared error of log₁₀ b, in dex, over all levels and depths, with the depths log τ ≤ −1 (where
the lines form) weighted ×4.

    python -m pyinv.nlte.emulator_train COLUMNS_DIR --out FILE.npz [--recipe lw-caii] [--epochs N]
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["EmulatorRecipe", "EMULATOR_RECIPES", "split_columns", "train_emulator", "main"]


@dataclass(frozen=True)
class EmulatorRecipe:
    """Settings of an emulator training run.

    Attributes
    ----------
    name, version : str
        Catalogue name and the version written into the file (and into inversion provenance).
    atom : str
    seed : int
    hidden : tuple of int
        Hidden-layer widths of the perceptron.
    epochs, batch_size, learning_rate, weight_decay, patience :
        AdamW with a cosine learning-rate decay; stop after ``patience`` epochs without a better
        validation loss.
    """

    name: str
    version: str
    atom: str = "CaII"
    seed: int = 1908542
    hidden: tuple = (256, 256, 256)
    epochs: int = 400
    batch_size: int = 128
    learning_rate: float = 1e-3
    weight_decay: float = 1e-5
    patience: int = 100
    upper_weight: float = 4.0

    def with_(self, **changes: Any) -> "EmulatorRecipe":
        return dataclasses.replace(self, **changes)


EMULATOR_RECIPES = {"lw-caii": EmulatorRecipe(name="lw-caii", version="1.0")}


def split_columns(data: dict) -> dict[str, np.ndarray]:
    """Row masks ``train``, ``validation``, ``held_out`` of converged columns and ``failed`` (status ≠ 0 or
    non-finite b) of a :func:`pyinv.nlte.columns.load_shards` dict."""
    from .columns import is_held_out

    k = np.asarray(data["index"])
    ok = (np.asarray(data["status"]) == 0) & np.all(np.isfinite(data["log_b"]), axis=(1, 2))
    held = np.array([is_held_out(i) for i in k])
    val = (k % 10 == 8) & ~held
    return {"train": ok & ~held & ~val, "validation": ok & val, "held_out": ok & held, "failed": ~ok}


def train_emulator(data: dict, recipe: EmulatorRecipe, *, log=print) -> tuple[dict, dict]:
    """Train on ``data`` (:func:`pyinv.nlte.columns.load_shards`); returns (weights, meta) for
    :func:`pyinv.nlte.emulator.write_emulator_file`."""
    import torch

    from .emulator import INPUTS, features_from_profiles

    torch.manual_seed(recipe.seed)
    np.random.seed(recipe.seed)
    m = split_columns(data)
    x = features_from_profiles(data["T"], data["Pe"], data["vmic"], data["vlos"])   # (n, 4, ndep)
    y = np.asarray(data["log_b"], dtype=np.float64)                                  # (n, nlev, ndep)
    lt = np.asarray(data["log_tau"], dtype=np.float64)
    xt, yt = x[m["train"]], y[m["train"]]
    flip = xt.copy()
    flip[:, INPUTS.index("vlos_kms")] *= -1.0
    xt, yt = np.concatenate([xt, flip]), np.concatenate([yt, yt])
    xv, yv = x[m["validation"]], y[m["validation"]]
    n_in, n_out = x.shape[1] * x.shape[2], y.shape[1] * y.shape[2]
    in_mean, in_std = xt.reshape(len(xt), -1).mean(0), np.maximum(xt.reshape(len(xt), -1).std(0), 1e-3)
    out_mean = yt.reshape(len(yt), -1).mean(0)
    out_std = np.maximum(yt.reshape(len(yt), -1).std(0), 0.02)
    w_depth = np.where(lt <= -1.0, recipe.upper_weight, 1.0)
    w_out = np.broadcast_to(w_depth, y.shape[1:]).reshape(-1)
    w_out = w_out / w_out.mean()

    def tens(a):
        return torch.as_tensor(np.asarray(a, dtype=np.float32))

    Xt = tens((xt.reshape(len(xt), -1) - in_mean) / in_std)
    Yt = tens((yt.reshape(len(yt), -1) - out_mean) / out_std)
    Xv = tens((xv.reshape(len(xv), -1) - in_mean) / in_std)
    Yv = tens((yv.reshape(len(yv), -1) - out_mean) / out_std)
    scale = tens(out_std ** 2 * w_out)
    sizes = [n_in, *recipe.hidden, n_out]
    mods: list = []
    for i in range(len(sizes) - 1):
        mods.append(torch.nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            mods.append(torch.nn.SiLU())
    net = torch.nn.Sequential(*mods)
    opt = torch.optim.AdamW(net.parameters(), lr=recipe.learning_rate, weight_decay=recipe.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=recipe.epochs)
    gen = torch.Generator().manual_seed(recipe.seed)

    def loss_of(pred, tgt):
        return torch.mean((pred - tgt) ** 2 * scale)

    best, best_state, best_epoch, t0 = np.inf, None, -1, time.perf_counter()
    for ep in range(recipe.epochs):
        net.train()
        perm = torch.randperm(len(Xt), generator=gen)
        for s in range(0, len(Xt), recipe.batch_size):
            idx = perm[s:s + recipe.batch_size]
            opt.zero_grad()
            loss = loss_of(net(Xt[idx]), Yt[idx])
            loss.backward()
            opt.step()
        sched.step()
        net.eval()
        with torch.no_grad():
            vl = float(loss_of(net(Xv), Yv))
        if vl < best:
            best, best_epoch = vl, ep
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        if ep % 100 == 0 or ep == recipe.epochs - 1:
            log(f"epoch {ep}: validation rms {np.sqrt(vl):.4f} dex (best {np.sqrt(best):.4f} at {best_epoch}); "
                f"{time.perf_counter() - t0:.0f} s")
        if ep - best_epoch > recipe.patience:
            break
    net.load_state_dict(best_state)
    linear = [mod for mod in net if isinstance(mod, torch.nn.Linear)]
    weights = {"in_mean": in_mean, "in_std": in_std, "out_mean": out_mean, "out_std": out_std}
    for i, lin in enumerate(linear):
        weights[f"layers.{i}.weight"] = lin.weight.detach().numpy()
        weights[f"layers.{i}.bias"] = lin.bias.detach().numpy()
    meta = {"name": recipe.name, "version": recipe.version, "atom": recipe.atom, "nlevels": int(y.shape[1]),
            "log_tau": lt.tolist(), "inputs": list(INPUTS), "backend": "lightweaver",
            "architecture": {"kind": "mlp-silu", "hidden": list(recipe.hidden), "layers": len(linear)},
            "training": {"recipe": dataclasses.asdict(recipe), "train_columns": int(m["train"].sum()),
                         "validation_columns": int(m["validation"].sum()),
                         "held_out_columns": int(m["held_out"].sum()), "failed_columns": int(m["failed"].sum()),
                         "best_epoch": int(best_epoch), "validation_rms_dex": float(np.sqrt(best)),
                         "seconds": time.perf_counter() - t0}}
    return weights, meta


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pyinv.nlte.emulator_train", description=__doc__.split("\n")[0])
    ap.add_argument("columns", type=Path, help="folder of column shards (python -m pyinv.nlte.columns)")
    ap.add_argument("--out", type=Path, required=True, help="emulator file to write (.npz)")
    ap.add_argument("--recipe", default="lw-caii", choices=sorted(EMULATOR_RECIPES))
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    import torch

    from .columns import load_shards
    from .emulator import write_emulator_file

    torch.set_num_threads(args.threads)
    rec = EMULATOR_RECIPES[args.recipe]
    if args.epochs is not None:
        rec = rec.with_(epochs=args.epochs)
    w, meta = train_emulator(load_shards(args.columns), rec, log=lambda s: print(s, flush=True))
    write_emulator_file(w, meta, args.out)
    print(f"wrote {args.out}: {meta['training']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
