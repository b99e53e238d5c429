"""The map layer: inversions and syntheses of whole maps, pixel by pixel, on local pools, dask or MPI.

Modules (each concern in one place)
-----------------------------------
``inversion``  :func:`pyinv.invert` (:func:`invert`) and :func:`invert_map` (the same with the pixel
               solver given): checks the inputs, makes the starts, opens the store, runs, builds the result.
``synthesis``  :func:`pyinv.synthesize_map`, :class:`SynthesisMap` and its pixel problem
               (:class:`~pyinv.maps.synthesis.SynthesisPixels`, record ``SYNTHESIS_RECORD``).
``cube``       the input cube: axis order (:func:`load_cube`), normalisation checks (:func:`check_cube`).
``extras``     per-pixel second component and stray light (:class:`~pyinv.maps.extras.PixelExtras`,
               ``stray_profile="local"``).
``pixel``      one pixel: the pixel problems (:class:`~pyinv.maps.pixel.PixelProblem`,
               :class:`~pyinv.maps.pixel.InversionPixels`, record ``INVERSION_RECORD``), the per-process
               :class:`~pyinv.maps.pixel.PixelSolver`, time limits, the starts of a chunk.
``store``      the record schema (:class:`~pyinv.maps.store.Field`, :class:`~pyinv.maps.store.Record`),
               the result store / checkpoint (:class:`~pyinv.maps.store.ResultStore`), input fingerprints.
``pool``       :func:`~pyinv.maps.pool.run_pixels`: the executors (local process pool, ``"serial"``, any
               ``concurrent.futures`` executor: dask, MPI), chunks, retries, progress.
``processes``  OS plumbing: cores, worker processes without ``__main__``, scratch folders and their owner
               processes, SIGTERM.
``isolated``   pixels in a child process with a wall-clock watchdog (time limits where signals cannot
               reach, e.g. dask's threads).
``result``     :class:`InversionResult` (maps, FITS and SIR files, plots).

How a cube flows
----------------
``pyinv.invert(cube, ...)`` → :func:`invert_map`: the cube is read in canonical axes and checked
(``cube``), the init strategy gives the start models (``pyinv.init``), the second component / stray light
become :class:`~pyinv.maps.extras.PixelExtras`; an :class:`~pyinv.maps.pixel.InversionPixels` problem is
made and the :class:`~pyinv.maps.store.ResultStore` is opened for the fingerprints of every input
(resuming a checkpoint). :func:`~pyinv.maps.pool.run_pixels` (``pool``) sends chunks of pending pixels
to the executor; in each worker the problem's :class:`~pyinv.maps.pixel.InversionSolver` (``pixel``)
calls the solver (``pyinv.invert_pixel``, hence the Fortran engine through :mod:`pyinv.engine`) from each
start and turns the best fit into a record of ``INVERSION_RECORD``, which the worker (local pool) or the
parent (other executors) writes into the store. At the end the store's arrays become the
:class:`InversionResult`'s attributes, read from the same record schema.

Layers (a module imports only modules of the layers before its own): ``store``, ``processes``, ``cube``;
``pixel``; ``result``; ``extras``; ``isolated``; ``pool``; ``inversion``, ``synthesis``. They import each
other by their own names, never through this ``__init__`` (tests/test_imports.py: no import cycles).
"""
from __future__ import annotations

from .cube import check_cube, load_cube, pixel_summary
from .inversion import invert, invert_map
from .pool import PoolStartError
from .result import InversionResult
from .synthesis import SynthesisMap, synthesize_map

__all__ = ["invert", "invert_map", "load_cube", "check_cube", "pixel_summary", "InversionResult", "synthesize_map",
           "SynthesisMap", "PoolStartError"]
