"""Test support shipped with the package (importable by worker processes, hence not under ``tests/``):
:mod:`~pyinv.testing.solvers` (stand-in pixel solvers that misbehave on request, probes) and
:mod:`~pyinv.testing.fuzz` (the engine fuzzer). Not part of the public API."""
