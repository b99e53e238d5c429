"""pyinv.status: the one table of status codes (issue 18) and the names importable from elsewhere."""
from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

import pytest

from pyinv import status

README = Path(__file__).resolve().parents[1] / "README.md"


def test_table_codes_and_names_unique():
    codes = [row.code for row in status.TABLE]
    names = [row.name for row in status.TABLE]
    assert len(set(codes)) == len(codes)
    assert len(set(names)) == len(names)
    assert all(row.meaning for row in status.TABLE)
    # the engine's range is not repeated in the table and does not overlap it
    assert not set(codes) & set(status.ENGINE_CODES)
    assert set(status.MAP_CODES) <= set(codes) and set(status.NLTE_CODES) <= set(codes)


def test_values():
    assert (status.STATUS_PENDING, status.STATUS_CONVERGED) == (-1, 0)
    assert [status.STATUS_MASKED, status.STATUS_BAD_INPUT, status.STATUS_FAILED, status.STATUS_TIMEOUT,
            status.STATUS_WORKER_DIED] == [101, 102, 103, 104, 105]
    assert [status.NLTE_CONVERGED, status.NLTE_NOT_CONVERGED, status.NLTE_CRASHED, status.NLTE_TIMEOUT] == \
        [0, 201, 202, 104]


def test_old_public_names_are_the_tables():
    from pyinv import nlte
    from pyinv.physics import inversion
    from pyinv.maps import result
    from pyinv.nlte import backend

    assert inversion.STATUS_OK == status.STATUS_CONVERGED
    for name in ("NLTE_CONVERGED", "NLTE_NOT_CONVERGED", "NLTE_CRASHED", "NLTE_TIMEOUT"):
        assert getattr(nlte, name) == getattr(backend, name) == getattr(status, name), name
    assert nlte.NLTE_STATUS_NAMES == {c: status.status_name(c) for c in status.NLTE_CODES}
    assert nlte.NLTE_STATUS_NAMES[202] == "NLTE code failed"
    # result.STATUS_CODES is derived from the table
    assert result.STATUS_CODES == {c: status.describe(c) for c in status.MAP_CODES}
    assert list(result.STATUS_CODES) == [-1, 0, 101, 102, 103, 104, 105]


def test_status_name_and_describe():
    assert status.status_name(0) == "converged"
    assert status.status_name(104) == "time limit"
    assert status.status_name(7) == "solver status 7"
    assert status.status_name(999) == "status 999"
    assert status.describe(101).startswith("masked")
    assert status.describe(999) == "unknown status 999"
    text = status.describe(6)   # the engine's text (or "engine error 6" without a built engine)
    assert isinstance(text, str) and text


def test_status_has_no_pyinv_imports():
    src = Path(status.__file__).read_text()
    top = [ln for ln in src.splitlines() if ln.startswith(("import ", "from "))]
    assert all("pyinv" not in ln and not ln.startswith("from .") for ln in top), top


def _readme_status_rows() -> dict[str, str]:
    text = README.read_text(encoding="utf-8")
    start = text.index("**Status codes**")
    rows = {}
    for line in text[start:].splitlines()[1:]:
        if not line.strip():
            if rows:
                break
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or set(cells[0]) <= set("-: ") or cells[0] == "code":
            continue
        rows[cells[0].replace("\u2212", "-")] = cells[1]
    return rows


def test_readme_status_table_matches():
    rows = _readme_status_rows()
    assert "1–100" in rows and "engine" in rows["1–100"]
    numeric = {int(k): v for k, v in rows.items() if re.fullmatch(r"-?\d+", k)}
    assert sorted(numeric) == sorted(status.MAP_CODES)
    for code, meaning in numeric.items():
        assert status.status_name(code).lower() in meaning.lower(), (code, meaning)


#: Number tokens equal to a status code that are not statuses (cli.py: the default seed 101).
_NOT_STATUSES = {"cli.py": {"101"}}
_PACKAGE = Path(status.__file__).parent


def test_no_literal_codes():
    """The codes appear in src/pyinv only through pyinv.status's names (number tokens; strings and comments
    may cite them)."""
    found = []
    for path in sorted(_PACKAGE.rglob("*.py")):
        rel = str(path.relative_to(_PACKAGE))
        if rel == "status.py":
            continue
        codes = {"101", "102", "103", "104", "105", "201", "202"} - _NOT_STATUSES.get(rel, set())
        src = path.read_text(encoding="utf-8")
        found += [(rel, tok.start[0], tok.string) for tok in tokenize.generate_tokens(io.StringIO(src).readline)
                  if tok.type == tokenize.NUMBER and tok.string in codes]
    assert not found, found
