"""RH 2 (``rhf1d`` + ``solveray``) as a per-pixel subprocess backend (spec-nlte-rh §2, §8.2).

pyinv neither ships nor builds RH: the user builds RH 2 with its own makefiles and points pyinv at the
build with the environment variable ``PYINV_RH_DIR`` (or ``RH(rh_dir=...)``). Under it pyinv needs
``rhf1d/rhf1d``, ``rhf1d/solveray``, ``Atoms/`` (model atoms, abundances, partition functions, Barklem
tables) and ``Molecules/``.

Each pixel runs in a sandbox ``<workdir>/px/<id>/`` with ``<workdir>/Atoms`` a symbolic link to
``<rh_dir>/Atoms`` (RH opens its Barklem tables as ``../../Atoms/...``). pyinv writes every input there
(MULTI atmosphere, B file, ``keyword.input``, ``atoms.input``, ``molecules.input``, ``ray.input``, the
wavelength table), runs ``rhf1d -logfile rh.log`` then ``solveray``, reads the outputs with NumPy,
decides convergence from the log, and removes the sandbox. The LTE profiles come from a second run in
``<workdir>/px/<id>-lte/`` with the mapped atoms active but started from LTE populations and
``N_MAX_ITER = 0`` (same background, same Zeeman treatment, no iteration).

Polarisation (columns with a field): ``stokes="field_free"`` (default) iterates the populations without
polarisation and does one polarised formal solution (``STOKES_MODE = FIELD_FREE``); ``stokes="full"``
iterates with the full polarised transfer (``FULL_STOKES``) and then chooses RH's ``DELO_PARABOLIC`` solver
for it (``S_INTERPOLATION_STOKES``) unless ``keywords`` names one: RH 2's default there, ``DELO_BEZIER3``,
gives FAL C's Ca II 8542 core ~35 % deeper than ``FIELD_FREE``, ``DELO_PARABOLIC`` or Lightweaver (0.200
against 0.308, 0.290 and ~0.29 of the intensity at −0.15 nm; ../shared/reference/rh_falc_caii). The same
choice is made when ``keywords`` asks for ``STOKES_MODE = FULL_STOKES`` itself.

Line broadening: with ``line_broadening=`` a pyinv line list, the mapped lines take the damping pyinv's
engine gives them (:func:`pyinv.nlte.backend.engine_broadening`: van der Waals by ABO's σ, α — RH's
``ABO_EXPL`` — or Unsöld × the list's enhancement, classical radiative damping 0.22233/λ² s⁻¹, no Stark
broadening), as with Lightweaver. pyinv writes a copy of each active atom's file into the work folder
(``<workdir>/atoms/``) with those lines' damping columns replaced, and RH reads the copy; the user's
``Atoms/`` is never changed.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import time
import weakref
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from . import rh_io
from .backend import (NLTE_CONVERGED, NLTE_CRASHED, NLTE_NOT_CONVERGED, NLTE_TIMEOUT, NlteBackend,
                      NlteConfigurationError, NlteLine, NlteResult, engine_broadening)
from .column import NlteColumn, write_b_file, write_multi_atmosphere

__all__ = ["RH", "RH_ENV", "find_rh_dir", "DEFAULT_PASSIVE_ATOMS", "DEFAULT_MOLECULES"]

#: Environment variable naming the user's RH 2 build.
RH_ENV = "PYINV_RH_DIR"

#: Background atoms in LTE (passive), as in RH's 1-D example; hydrogen first (required by RH).
DEFAULT_PASSIVE_ATOMS: tuple[str, ...] = ("H_6", "C", "O", "Si", "Al", "Fe", "He", "Mg", "N", "Na", "S")
#: Molecules in LTE (H2 first, required by RH).
DEFAULT_MOLECULES: tuple[str, ...] = ("H2", "H2+", "C2", "N2", "O2", "CH", "CO", "CN", "NH", "NO", "OH", "H2O")

_ELEMENT_OF = {"CaII": "Ca", "Fe23": "Fe", "Fe33": "Fe", "Fe52": "Fe", "H_6": "H"}

#: RH's STOKES_MODE for each ``RH(stokes=...)``.
STOKES_MODES = {"field_free": "FIELD_FREE", "full": "FULL_STOKES"}
#: The polarised formal solver pyinv chooses for FULL_STOKES (RH 2's default DELO_BEZIER3 misbehaves there).
FULL_STOKES_SOLVER = "DELO_PARABOLIC"


def find_rh_dir(rh_dir: str | os.PathLike | None = None) -> Path:
    """The RH build directory: ``rh_dir`` or ``$PYINV_RH_DIR``.

    Raises
    ------
    NlteConfigurationError
        Neither given, or the directory lacks ``rhf1d/rhf1d``, ``rhf1d/solveray``, ``Atoms/`` or
        ``Molecules/`` (the message names the missing item).
    """
    if rh_dir is None:
        env = os.environ.get(RH_ENV)
        if not env:
            raise NlteConfigurationError(
                f"RH backend: set the environment variable {RH_ENV} to your RH 2 build (the folder holding "
                "rhf1d/rhf1d, rhf1d/solveray and Atoms/), or pass rh_dir=...")
        rh_dir = env
    d = Path(rh_dir).expanduser().resolve()
    if not d.is_dir():
        raise NlteConfigurationError(f"RH backend: {RH_ENV} / rh_dir = {d} is not a directory")
    for exe in ("rhf1d/rhf1d", "rhf1d/solveray"):
        p = d / exe
        if not (p.is_file() and os.access(p, os.X_OK)):
            raise NlteConfigurationError(f"RH backend: executable {p} is missing or not executable "
                                         f"(build RH 2 with its makefiles: top level, then rhf1d/)")
    for sub in ("Atoms", "Molecules"):
        if not (d / sub).is_dir():
            raise NlteConfigurationError(f"RH backend: data directory {d / sub} is missing")
    return d


def _atom_id(path: Path) -> str:
    """The atom ID (first data word of an RH atom file, upper case): names ``pops.<ID>.out``."""
    for line in path.read_text(errors="replace").splitlines():
        s = line.strip()
        if s and not s.startswith("#"):
            return s.split()[0].upper()
    raise NlteConfigurationError(f"RH backend: {path} holds no atom ID")


class RH(NlteBackend):
    """RH 2 ``rhf1d`` + ``solveray``, one subprocess pair per pixel.

    Parameters
    ----------
    lines : sequence of NlteLine
        The mapped lines (see :func:`pyinv.nlte.level_map`); their atoms are solved in NLTE.
    rh_dir : path, optional
        The RH build (default ``$PYINV_RH_DIR``).
    workdir : path, optional
        Where the sandboxes go (default: a new temporary folder; keep its path short, RH truncates long
        keyword values).
    mu : float
        μ of the emergent ray (``solveray``).
    lte : bool
        Also compute the LTE profiles (a second, non-iterated run).
    passive_atoms, molecules : sequence of str
        Background atoms (RH file stems in ``Atoms/``; hydrogen first) and molecules.
    nrays, n_max_iter, iter_limit, vmicro_char, b_strength_char : RH keywords
        Angles, iteration limit and tolerance, line-grid width [km/s], Zeeman widening [T].
    stokes : ``"field_free"`` or ``"full"``
        For columns with a field: RH's ``FIELD_FREE`` (default) or ``FULL_STOKES`` mode, the latter with
        the ``DELO_PARABOLIC`` polarised solver unless ``keywords`` sets ``S_INTERPOLATION_STOKES``
        (module docstring). Columns without a field are solved without polarisation either way.
    keywords : mapping, optional
        Further keyword.input entries (override the defaults).
    keep : bool
        Keep the sandboxes (debugging).
    line_broadening : pyinv.LineList, optional
        Give the mapped lines this list's damping as pyinv's engine computes it (module docstring); the
        atom files' own broadening otherwise.
    """

    name = "rh"

    def __init__(self, lines: Sequence[NlteLine] = (), *, rh_dir: str | os.PathLike | None = None,
                 workdir: str | os.PathLike | None = None, mu: float = 1.0, lte: bool = True,
                 passive_atoms: Sequence[str] = DEFAULT_PASSIVE_ATOMS, molecules: Sequence[str] = DEFAULT_MOLECULES,
                 nrays: int = 5, n_max_iter: int = 100, iter_limit: float = 1e-3, vmicro_char: float = 3.0,
                 b_strength_char: float = 0.1, stokes: str = "field_free",
                 keywords: Mapping[str, Any] | None = None, keep: bool = False, line_broadening: Any = None):
        super().__init__(lines, mu=mu, lte=lte)
        if stokes not in STOKES_MODES:
            raise ValueError(f"stokes must be one of {tuple(STOKES_MODES)}, got {stokes!r}")
        self.stokes = stokes
        self.rh_dir = find_rh_dir(rh_dir)
        self.workdir = Path(workdir) if workdir is not None else None
        self.passive_atoms = tuple(passive_atoms)
        self.molecules = tuple(molecules)
        self.nrays = int(nrays)
        self.n_max_iter = int(n_max_iter)
        self.iter_limit = float(iter_limit)
        self.vmicro_char = float(vmicro_char)
        self.b_strength_char = float(b_strength_char)
        self.extra = dict(keywords or {})
        self.keep = bool(keep)
        self.active = list(dict.fromkeys(ln.atom for ln in self.lines))
        self.broadening = engine_broadening(self.lines, line_broadening)
        self.check()

    # ------------------------------------------------------------------ configuration
    def atom_file(self, stem: str) -> Path:
        return self.rh_dir / "Atoms" / f"{stem}.atom"

    def check(self) -> None:
        d = find_rh_dir(self.rh_dir)
        need = [d / "Atoms" / "abundance.input", d / "Atoms" / "pf_Kurucz.input"]
        need += [self.atom_file(a) for a in self.active]
        need += [self.atom_file(a) for a in self.passive_atoms]
        need += [d / "Atoms" / f"Barklem_{k}data.dat" for k in ("sp", "pd", "df")]
        need += [d / "Molecules" / f"{m}.molecule" for m in self.molecules]
        for p in need:
            if not p.is_file():
                raise NlteConfigurationError(f"RH backend: data file {p} is missing")
        if self.passive_atoms and not self.passive_atoms[0].upper().startswith("H"):
            raise NlteConfigurationError("RH backend: the first atom must be hydrogen")
        elements = [_ELEMENT_OF.get(a, a) for a in self.active]
        self._passive = [a for a in self.passive_atoms if _ELEMENT_OF.get(a, a) not in elements]
        self._ids = {a: _atom_id(self.atom_file(a)) for a in self.active}

    def _ensure_workdir(self) -> Path:
        if self.workdir is None:  # our own temporary folder, removed with this object or at exit
            self.workdir = Path(tempfile.mkdtemp(prefix="pyinv-rh-"))
            if not self.keep:
                self._cleanup = weakref.finalize(self, shutil.rmtree, str(self.workdir), True)
        wd = self.workdir
        (wd / "px").mkdir(parents=True, exist_ok=True)
        link = wd / "Atoms"
        if not link.exists():
            try:
                link.symlink_to(self.rh_dir / "Atoms", target_is_directory=True)
            except FileExistsError:  # another worker made it
                pass
        for a in self.active:
            if self._atom_damping(a):
                dst = self._broadened_atom(wd, a)
                if not dst.is_file():   # written once per work folder (atomically: workers share it)
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    text = with_line_damping(self.atom_file(a).read_text(), self._atom_damping(a))
                    tmp = dst.with_name(f"{dst.name}.{os.getpid()}.tmp")
                    tmp.write_text(text)
                    os.replace(tmp, dst)
        return wd

    def _atom_damping(self, stem: str) -> list:
        """The engine's damping of the mapped lines of atom ``stem`` (:func:`with_line_damping`'s entries);
        empty without ``line_broadening`` or for an atom without mapped lines."""
        return [b[1:] for b in self.broadening if b[0] == stem]

    def _broadened_atom(self, wd: Path, stem: str) -> Path:
        tag = hashlib.sha1(repr(self._atom_damping(stem)).encode()).hexdigest()[:10]
        return wd / "atoms" / f"{stem}-{tag}.atom"

    def _active_file(self, stem: str) -> Path:
        """The atom file RH reads for an active atom: the user's, or the copy with the engine's damping."""
        if self.workdir is not None and self._atom_damping(stem):
            return self._broadened_atom(self.workdir, stem)
        return self.atom_file(stem)

    def keywords(self, col: NlteColumn, *, lte_run: bool, has_wavetable: bool) -> dict[str, Any]:
        """The keyword.input entries of one run (spec-nlte-rh §2.3, with absolute data paths)."""
        d = self.rh_dir
        kw: dict[str, Any] = {
            "ATMOS_FILE": "atmos.atmos", "ABUND_FILE": d / "Atoms" / "abundance.input",
            "ATOMS_FILE": "atoms.input", "MOLECULES_FILE": "molecules.input",
            "KURUCZ_PF_DATA": d / "Atoms" / "pf_Kurucz.input",
            "NRAYS": self.nrays, "N_MAX_SCATTER": 2, "I_SUM": -1,
            "N_MAX_ITER": 0 if lte_run else self.n_max_iter, "ITER_LIMIT": f"{self.iter_limit:.3E}",
            "NG_DELAY": 10, "NG_ORDER": 2, "NG_PERIOD": 3, "PRD_N_MAX_ITER": 3, "PRD_ITER_LIMIT": "1.0E-2",
            "J_FILE": "J.dat", "STARTING_J": "NEW_J", "BACKGROUND_FILE": "background.dat",
            "OLD_BACKGROUND": False, "SPECTRUM_OUTPUT": "spectrum.out",
            "VMICRO_CHAR": f"{self.vmicro_char:g}", "VMACRO_TRESH": "0.0", "VACUUM_TO_AIR": False,
            "N_THREADS": 1,
        }
        if col.B is not None:
            kw.update(STOKES_INPUT="field.B", STOKES_MODE=STOKES_MODES[self.stokes],
                      B_STRENGTH_CHAR=f"{max(self.b_strength_char, float(np.max(col.B))):g}")
        if has_wavetable:
            kw["WAVETABLE"] = "obs.wave"
        kw.update(self.extra)
        if str(kw.get("STOKES_MODE", "")).upper() == "FULL_STOKES" and "S_INTERPOLATION_STOKES" not in self.extra:
            kw["S_INTERPOLATION_STOKES"] = FULL_STOKES_SOLVER
        return {k: str(v) if isinstance(v, Path) else v for k, v in kw.items()}

    def _write_inputs(self, px: Path, col: NlteColumn, wl: np.ndarray, *, lte_run: bool) -> None:
        write_multi_atmosphere(px / "atmos.atmos", col)
        if col.B is not None:
            write_b_file(px / "field.B", col)
        if wl.size:
            rh_io.write_wavetable(px / "obs.wave", wl)
        rows = [f"{self.atom_file(self._passive[0])}  PASSIVE  ZERO_RADIATION"] if self._passive else []
        for a in self.active:
            start = "LTE_POPULATIONS" if lte_run else "ZERO_RADIATION"
            rows.append(f"{self._active_file(a)}  ACTIVE  {start}  pops.{self._ids[a]}.out")
        for a in self._passive[1:]:
            rows.append(f"{self.atom_file(a)}  PASSIVE  LTE_POPULATIONS")
        (px / "atoms.input").write_text(f"{len(rows)}\n" + "\n".join(rows) + "\n")
        mols = [f"{self.rh_dir / 'Molecules' / (m + '.molecule')}  PASSIVE  LTE_POPULATIONS" for m in self.molecules]
        (px / "molecules.input").write_text(f"{len(mols)}\n" + "\n".join(mols) + "\n")
        rh_io.write_keywords(px / "keyword.input", self.keywords(col, lte_run=lte_run, has_wavetable=wl.size > 0))
        rh_io.write_ray_input(px / "ray.input", self.mu)

    # ------------------------------------------------------------------ running
    def _run(self, px: Path, deadline: float | None) -> tuple[int, str]:
        """Run rhf1d then solveray in ``px``; (status, message)."""
        for exe, log in (("rhf1d", "rh.log"), ("solveray", "ray.log")):
            timeout = None if deadline is None else max(0.01, deadline - time.monotonic())
            try:
                cp = subprocess.run([str(self.rh_dir / "rhf1d" / exe), "-logfile", log], cwd=px,
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                    timeout=timeout)
            except subprocess.TimeoutExpired:
                return NLTE_TIMEOUT, f"{exe} exceeded the time limit"
            if cp.returncode != 0:
                tail = _tail(px / log) or cp.stderr.decode(errors="replace")[-400:]
                how = (f"was killed by signal {-cp.returncode} ({_signame(-cp.returncode)})" if cp.returncode < 0
                       else f"exited with status {cp.returncode}")
                return NLTE_CRASHED, f"{exe} {how}; end of its log: {tail}"
        return NLTE_CONVERGED, ""

    def _read(self, px: Path, wl: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        geo = rh_io.read_geometry(px / "geometry.out")
        spec = rh_io.read_spectrum(px / "spectrum.out", geo.nrays)
        ray = rh_io.read_ray(px / f"spectrum_{self.mu:4.2f}", spec.wavelength.size, geo.ndep)
        if wl.size:
            k = np.searchsorted(spec.wavelength, wl)
            k = np.clip(k, 0, spec.wavelength.size - 1)
            km = np.clip(k - 1, 0, spec.wavelength.size - 1)
            k = np.where(np.abs(spec.wavelength[km] - wl) < np.abs(spec.wavelength[k] - wl), km, k)
            if np.max(np.abs(spec.wavelength[k] - wl) / wl) > 1e-9:
                raise ValueError("RH output lacks some of the requested wavelengths")
            out_wl, stokes = spec.wavelength[k], ray.stokes()[:, k]
        else:
            out_wl, stokes = spec.wavelength, ray.stokes()
        b = {a: rh_io.read_pops(px / f"pops.{self._ids[a]}.out").b for a in self.active}
        return out_wl, stokes, geo.tau_ref, b

    def run_column(self, column: NlteColumn, wavelength_vac_nm: np.ndarray, *, pixel_id: str = "0",
                   time_limit: float | None = None) -> NlteResult:
        t0 = time.perf_counter()
        wl = np.asarray(wavelength_vac_nm, dtype=np.float64).ravel()
        wd = self._ensure_workdir()
        deadline = None if not time_limit else time.monotonic() + float(time_limit)
        px = wd / "px" / str(pixel_id)
        pxl = wd / "px" / f"{pixel_id}-lte"
        try:
            for p in (px, pxl):
                if p.exists():
                    shutil.rmtree(p)
            px.mkdir(parents=True)
            self._write_inputs(px, column, wl, lte_run=False)
            status, msg = self._run(px, deadline)
            log = rh_io.read_log(px / "rh.log")
            if status != NLTE_CONVERGED:
                return NlteResult.failed(wl, status, msg, time.perf_counter() - t0, log.iterations)
            try:
                out_wl, stokes, tau, b = self._read(px, wl)
            except (OSError, ValueError) as exc:
                return NlteResult.failed(wl, NLTE_CRASHED, f"unreadable RH output: {exc}",
                                         time.perf_counter() - t0, log.iterations)
            deltas = [log.delta.get(self._ids[a], np.nan) for a in self.active]
            delta = float(np.nanmax(deltas)) if deltas and np.isfinite(deltas).any() else float("nan")
            if self.active and not (delta <= self.iter_limit):
                status = NLTE_NOT_CONVERGED
                msg = (f"not converged: delta = {delta:.3g} > ITER_LIMIT = {self.iter_limit:g} after "
                       f"{log.iterations} iterations (N_MAX_ITER = {self.n_max_iter})")
            stokes_lte = None
            if self.lte:
                pxl.mkdir(parents=True)
                self._write_inputs(pxl, column, wl, lte_run=True)
                st2, msg2 = self._run(pxl, deadline)
                if st2 != NLTE_CONVERGED:
                    return NlteResult.failed(wl, st2, "LTE run: " + msg2, time.perf_counter() - t0, log.iterations)
                stokes_lte = self._read(pxl, wl)[1]
            return NlteResult(out_wl, stokes, stokes_lte, self._departures(column, tau, b), tau, b, status,
                              log.iterations, delta, time.perf_counter() - t0, msg)
        finally:
            if not self.keep:
                shutil.rmtree(px, ignore_errors=True)
                shutil.rmtree(pxl, ignore_errors=True)

    def close(self) -> None:
        """Remove the work directory if this object created it (also done when it is garbage-collected
        or the interpreter exits)."""
        fin = getattr(self, "_cleanup", None)
        if fin is not None and not self.keep:
            fin()
            self.workdir = None

    def __getstate__(self) -> dict:
        # copies (e.g. in pool workers) never own the parent's temporary folder
        state = dict(self.__dict__)
        state.pop("_cleanup", None)
        return state


_VDW_TYPES = ("UNSOLD", "BARKLEM", "ABO_EXPL", "PARAMTR")


def with_line_damping(atom_text: str, damping: Sequence[tuple]) -> str:
    """An RH model-atom file's text with the damping of some bound-bound transitions replaced.

    Parameters
    ----------
    atom_text : str
        The atom file (RH's format: a line record is ``j i f type nλ symm qcore qwing vdW c0 c1 c2 c3 γ_rad
        C_Stark [g_eff]``, levels 0-based, j the upper).
    damping : sequence of (lower, upper, σ/a₀², α, enhancement, γ_rad [s⁻¹])
        As :func:`pyinv.nlte.backend.engine_broadening` gives them (without the atom name): ``ABO_EXPL σ α 1
        0`` where σ, α > 0 (hydrogen by ABO, helium by Unsöld as RH's own ABO entries), ``UNSOLD E 0 E 0``
        otherwise; γ_rad; Stark off (0).

    Raises
    ------
    NlteConfigurationError
        A transition not in the file, or a record with an unknown layout.
    """
    want = {(int(up), int(lo)): (sig, alp, enh, grad) for lo, up, sig, alp, enh, grad in damping}
    out, done = [], set()
    for line in atom_text.splitlines(keepends=True):
        tok = line.split()
        key = None
        if len(tok) >= 15 and not line.lstrip().startswith("#") and tok[8].upper() in _VDW_TYPES:
            try:
                key = (int(tok[0]), int(tok[1]))
            except ValueError:
                key = None
        if key in want:
            sig, alp, enh, grad = want[key]
            vdw = (["ABO_EXPL", f"{sig:.4f}", f"{alp:.4f}", "1.00", "0.00"] if sig > 0 and alp > 0
                   else ["UNSOLD", f"{enh:.4f}", "0.00", f"{enh:.4f}", "0.00"])
            tok = tok[:8] + vdw + [f"{grad:.6E}", "0.0"] + tok[15:]
            line = "  " + "  ".join(tok) + "\n"
            done.add(key)
        out.append(line)
    missing = set(want) - done
    if missing:
        raise NlteConfigurationError("RH backend: the atom file has no line record "
                                     + ", ".join(f"{j} -> {i}" for j, i in sorted(missing)))
    return "".join(out)


def _signame(num: int) -> str:
    import signal
    try:
        return signal.Signals(num).name
    except ValueError:
        return "?"


def _tail(path: Path, n: int = 400) -> str:
    try:
        return path.read_text(errors="replace")[-n:].strip()
    except OSError:
        return ""
