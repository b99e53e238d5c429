"""Generate fortran/atomic_data.f90 from Appendix A of shared/docs/spec-forward.md.

Usage: python tools/gen_atomic_data.py [path/to/spec-forward.md] > fortran/atomic_data.f90
The table is parsed mechanically (so the Fortran data is a faithful transcription of the spec);
tests/test_eos.py re-parses the spec and checks the compiled values at many temperatures.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

NUM = r"[-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?"


def parse_appendix_a(text: str):
    start = text.index("## Appendix A")
    end = text.index("## Appendix B")
    rows = {}
    cur = None
    for line in text[start:end].splitlines():
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 7 or cells[5] not in ("U_I", "U_II", "U_III"):
            continue
        if cells[0]:
            cur = int(cells[0])
            rows[cur] = dict(sym=cells[1], w=float(cells[2]), chi1=float(cells[3]),
                             chi2=float(cells[4]), U={})
        rows[cur]["U"][cells[5]] = parse_rules(cells[6])
    assert sorted(rows) == list(range(1, 93)), "missing elements"
    return rows


def parse_poly(expr: str, var: str):
    """'a + b T - c T^2' -> coefficient list in powers of var."""
    s = expr.replace(" ", "")
    coef = {}
    pos = 0
    pat = re.compile(r"([-+]?)(\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)?(" + var + r"(?:\^(\d+))?)?")
    while pos < len(s):
        m = pat.match(s, pos)
        if not m or m.end() == pos:
            raise ValueError(f"cannot parse {expr!r} at {s[pos:]!r}")
        sign, num, v, p = m.groups()
        c = float(num) if num else 1.0
        if sign == "-":
            c = -c
        k = 0 if not v else (int(p) if p else 1)
        coef[k] = coef.get(k, 0.0) + c
        pos = m.end()
    n = max(coef) + 1
    return [coef.get(i, 0.0) for i in range(n)]


def parse_expr(expr: str):
    expr = expr.strip()
    m = re.fullmatch(r"same as (U_I{1,3})", expr)
    if m:
        return ("same", m.group(1))
    m = re.fullmatch(rf"max\(({NUM}),(.*)\)", expr.replace(" ", ""))
    if m:
        return ("max", float(m.group(1)), parse_poly(m.group(2), "T"))
    m = re.fullmatch(rf"({NUM})\+exp\((.*)\)", expr.replace(" ", ""))
    if m:
        return ("cexp", float(m.group(1)), parse_poly(m.group(2), "X"))
    if "Y" in expr:
        return ("polyY", parse_poly(expr, "Y"))
    return ("polyT", parse_poly(expr, "T"))


def parse_rules(cell: str):
    rules = []
    for part in cell.split(";"):
        part = part.strip()
        m = re.fullmatch(r"always:\s*(.*)", part)
        if m:
            rules.append(("always", None, parse_expr(m.group(1))))
            continue
        m = re.fullmatch(rf"T\s*([<>])\s*({NUM}):\s*(.*)", part)
        if not m:
            raise ValueError(f"bad rule {part!r}")
        rules.append((m.group(1), float(m.group(2)), parse_expr(m.group(3))))
    assert rules[0][0] == "always"
    return rules


def evaluate(rules, t, stages=None):
    """Python reference evaluation of one stage (used by the tests)."""
    import math
    u = None
    for cond, tc, ex in rules:
        if cond == ">" and not t > tc:
            continue
        if cond == "<" and not t < tc:
            continue
        kind = ex[0]
        if kind == "same":
            u = evaluate(stages[ex[1]], t, stages)
        elif kind == "max":
            u = max(ex[1], sum(c * t**i for i, c in enumerate(ex[2])))
        elif kind == "cexp":
            x = math.log(5040.0 / t)
            u = ex[1] + math.exp(sum(c * x**i for i, c in enumerate(ex[2])))
        elif kind == "polyY":
            y = t / 1000.0
            u = sum(c * y**i for i, c in enumerate(ex[1]))
        else:
            u = sum(c * t**i for i, c in enumerate(ex[1]))
    return u


def f(x: float) -> str:
    r = repr(float(x))
    if "e" in r:
        mant, ex = r.split("e")
        if "." not in mant:
            mant += ".0"
        return f"{mant}e{int(ex)}_dp"
    return r + "_dp"


def arr(cs):
    return "[" + ", ".join(f(c) for c in cs) + "]"


def emit_expr(ex, out, ind):
    kind = ex[0]
    if kind == "same":
        src = {"U_I": "u1", "U_II": "u2", "U_III": "u3"}[ex[1]]
        out.append(f"{ind}u = {src}; du = d{src}")
    elif kind == "max":
        out.append(f"{ind}call fmax({f(ex[1])}, {arr(ex[2])}, t, u, du)")
    elif kind == "cexp":
        out.append(f"{ind}call fcexp({f(ex[1])}, {arr(ex[2])}, t, u, du)")
    elif kind == "polyY":
        out.append(f"{ind}call fpoly({arr(ex[1])}, 1.0e-3_dp, t, u, du)")
    else:
        out.append(f"{ind}call fpoly({arr(ex[1])}, 1.0_dp, t, u, du)")


def generate(rows) -> str:
    o = []
    o.append("!> Atomic data of spec-forward.md Appendix A (Z = 1..92): atomic weights, first and second")
    o.append("!> ionisation energies, and Wittmann's piecewise partition-function fits U_I, U_II, U_III(T)")
    o.append("!> with their analytic temperature derivatives.")
    o.append("!> GENERATED by tools/gen_atomic_data.py from the spec table -- do not edit by hand.")
    o.append("module pyinv_atomic")
    o.append("  use pyinv_kinds, only: dp")
    o.append("  implicit none")
    o.append("  private")
    o.append("  public :: atomic_weight, atomic_weights, ionisation_energies, partition_functions, &")
    o.append("            partition_functions_dt")
    o.append("  integer, parameter, public :: n_elements = 92")
    for name, key in (("weights", "w"), ("chi_i", "chi1"), ("chi_ii", "chi2")):
        vals = [rows[z][key] for z in range(1, 93)]
        lines = []
        for i in range(0, 92, 6):
            lines.append(", ".join(f(v) for v in vals[i:i + 6]))
        o.append(f"  real(dp), parameter :: tab_{name}(92) = [ &")
        o.append("    " + ", &\n    ".join(lines) + " ]")
    o.append("contains")
    o.append("""
  !> Atomic weight [amu] of element iz (0 outside 1..92).
  pure function atomic_weight(iz) result(w)
    integer, intent(in) :: iz
    real(dp) :: w
    w = 0.0_dp
    if (iz >= 1 .and. iz <= n_elements) w = tab_weights(iz)
  end function atomic_weight

  !> Atomic weights [amu] of all elements Z = 1..92.
  pure function atomic_weights() result(w)
    real(dp) :: w(n_elements)
    w = tab_weights
  end function atomic_weights

  !> First and second ionisation energies [eV] of element iz (0 outside 1..92).
  pure subroutine ionisation_energies(iz, chi1, chi2)
    integer, intent(in) :: iz
    real(dp), intent(out) :: chi1, chi2
    chi1 = 0.0_dp; chi2 = 0.0_dp
    if (iz < 1 .or. iz > n_elements) return
    chi1 = tab_chi_i(iz); chi2 = tab_chi_ii(iz)
  end subroutine ionisation_energies

  !> Partition functions U_I, U_II, U_III of element iz at temperature t [K].
  pure subroutine partition_functions(iz, t, u1, u2, u3)
    integer, intent(in) :: iz
    real(dp), intent(in) :: t
    real(dp), intent(out) :: u1, u2, u3
    real(dp) :: d1, d2, d3
    call partition_functions_dt(iz, t, u1, u2, u3, d1, d2, d3)
  end subroutine partition_functions

  !> polynomial sum_k c(k) (s t)^(k-1) and its t-derivative
  pure subroutine fpoly(c, s, t, u, du)
    real(dp), intent(in) :: c(:), s, t
    real(dp), intent(out) :: u, du
    integer :: k
    real(dp) :: y
    y = s * t
    u = c(size(c)); du = 0.0_dp
    do k = size(c) - 1, 1, -1
      du = du * y + u
      u = u * y + c(k)
    end do
    du = du * s
  end subroutine fpoly

  !> max(c0, c(1) + c(2) t) and its t-derivative
  pure subroutine fmax(c0, c, t, u, du)
    real(dp), intent(in) :: c0, c(:), t
    real(dp), intent(out) :: u, du
    call fpoly(c, 1.0_dp, t, u, du)
    if (c0 > u) then
      u = c0; du = 0.0_dp
    end if
  end subroutine fmax

  !> c0 + exp(P(X)), X = ln(5040/t), and its t-derivative
  pure subroutine fcexp(c0, c, t, u, du)
    real(dp), intent(in) :: c0, c(:), t
    real(dp), intent(out) :: u, du
    real(dp) :: x, p, dp_dx, e
    x = log(5040.0_dp / t)
    call fpoly(c, 1.0_dp, x, p, dp_dx)
    e = exp(p)
    u = c0 + e
    du = -e * dp_dx / t
  end subroutine fcexp
""")
    o.append("  !> Partition functions and their analytic derivatives dU/dT (Appendix A rules, in order).")
    o.append("  pure subroutine partition_functions_dt(iz, t, u1, u2, u3, du1, du2, du3)")
    o.append("    integer, intent(in) :: iz")
    o.append("    real(dp), intent(in) :: t")
    o.append("    real(dp), intent(out) :: u1, u2, u3, du1, du2, du3")
    o.append("    real(dp) :: u, du")
    o.append("    u1 = 0.0_dp; u2 = 0.0_dp; u3 = 0.0_dp; du1 = 0.0_dp; du2 = 0.0_dp; du3 = 0.0_dp")
    o.append("    u = 0.0_dp; du = 0.0_dp")
    o.append("    select case (iz)")
    for z in range(1, 93):
        r = rows[z]
        o.append(f"    case ({z})  ! {r['sym']}")
        # evaluate stages whose 'same as' sources come first
        order = ["U_I", "U_II", "U_III"]
        deps = {s: [ex[1] for _, _, ex in r["U"][s] if ex[0] == "same"] for s in order}
        done = []
        while len(done) < 3:
            for s in order:
                if s not in done and all(d in done for d in deps[s]):
                    done.append(s)
        for s in done:
            var = {"U_I": "u1", "U_II": "u2", "U_III": "u3"}[s]
            for cond, tc, ex in r["U"][s]:
                if cond == "always":
                    emit_expr(ex, o, "      ")
                else:
                    o.append(f"      if (t {cond} {f(tc)}) then")
                    emit_expr(ex, o, "        ")
                    o.append("      end if")
            o.append(f"      {var} = u; d{var} = du")
    o.append("    case default")
    o.append("      return")
    o.append("    end select")
    o.append("  end subroutine partition_functions_dt")
    o.append("end module pyinv_atomic")
    return "\n".join(o) + "\n"


if __name__ == "__main__":
    spec = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / ".." / "shared" / "docs" / "spec-forward.md"
    sys.stdout.write(generate(parse_appendix_a(spec.read_text())))
