!> Equation of state of spec-forward.md §4 (Mihalas 1967 / Wittmann 1974 strategy): hydrogen (H, H+,
!> H-, H2, H2+) exactly through a quadratic, electron donors He..Ni in three ionisation stages.
!>
!> pyinv decisions (spec §4.3, §4.4, §12 items 2-3):
!>  * double precision, cancellation-free root of the hydrogen quadratic;
!>  * non-hydrogen nuclei per H nucleus in P_g = sum_{Z>=2} eps_Z of the given abundances
!>    (sir_compat = 1 restores SIR's constant 0.1014);
!>  * non-positive or non-finite T, P_e are errors (no silent substitution);
!>  * SIR's single-precision magnitude clips (§4.3 "numerical guards") are not applied: in double
!>    precision they are never needed, and the clip of c1 to 1e15 gives a wrong hydrogen root in hot
!>    tenuous gas. The clips of the Saha value of H- and of log K1, log K2 to [-30, 30] are kept.
module pyinv_eos
  use pyinv_kinds, only: dp, ln10, k_boltz, r_gas, n_avogadro
  use pyinv_errors, only: err_ok, err_nonpositive_t, err_nonpositive_pe, err_not_finite, &
                          err_no_convergence, err_bad_input
  use pyinv_atomic, only: partition_functions, ionisation_energies, atomic_weights
  implicit none
  private

  public :: eos_state, saha_phi, eos_solve, eos_solve_deriv, pe_from_pg, eos_state_to_array, &
            eos_tfactors, eos_solve_tf, pe_from_pg_tf, &
            eos_state_from_array

  !> number of real components of eos_state (see eos_state_to_array)
  integer, parameter, public :: n_eos_fields = 25
  !> SIR's hard-wired number of non-hydrogen nuclei per H nucleus (sir_compat = 1)
  real(dp), parameter, public :: sir_nonh_nuclei = 0.1014_dp
  !> Saha constant log10[2(2 pi m_e)^1.5 k^2.5 / h^3] + 2.5 log10(5040)
  real(dp), parameter :: saha_const = 9.0805126_dp
  real(dp), parameter :: chi_h = 13.595_dp, chi_hminus = 0.754_dp

  !> Thermodynamic state at one depth.
  type, public :: eos_state
    real(dp) :: t = 0, pe = 0, theta = 0
    real(dp) :: f1 = 0, f2 = 0, f3 = 0, f4 = 0, f5 = 0, fe = 0
    real(dp) :: g1 = 0, g2 = 0, g3 = 0, g4 = 0, g5 = 0
    real(dp) :: ph = 0, nh = 0, ne = 0
    real(dp) :: p_he = 0, p_c = 0, p_na = 0, p_mg = 0
    real(dp) :: pg = 0, mu_m = 0, rho = 0, per_gram = 0
  end type eos_state

  !> Temperature-only factors of the EOS (partition functions, Saha and molecular constants,
  !> abundance sums), computed once per temperature by eos_tfactors and reused for any number of
  !> electron pressures by eos_solve_tf (the P_e iterations of pe_from_pg and hydrostatic_eq).
  type, public :: eos_tfac
    real(dp) :: t = 0, theta = 0
    real(dp) :: s2 = 0            ! g2 * pe
    real(dp) :: s3 = 0            ! Saha value of H- (before the clip) * pe
    real(dp) :: k1 = 0, k2 = 0    ! 10**log K1, 10**log K2 (clipped exponents)
    real(dp) :: sa(2:28) = 0, sb(2:28) = 0   ! a_Z * pe, b_Z * pe
    real(dp) :: eps(2:28) = 0
    real(dp) :: nonh = 0, se = 0, sew = 0
  end type eos_tfac

contains

  !> Saha ratio n_upper/n_lower (§4.1); chi [eV], pe [dyn cm-2].
  pure elemental function saha_phi(theta, chi, ul, uu, pe) result(phi)
    real(dp), intent(in) :: theta, chi, ul, uu, pe
    real(dp) :: phi
    phi = (uu / ul) * 10.0_dp**(saha_const - theta * chi) / (pe * theta**2.5_dp)
  end function saha_phi

  !> sign-preserving magnitude clip of x to [lo, hi]
  pure elemental function sclip(x, lo, hi) result(y)
    real(dp), intent(in) :: x, lo, hi
    real(dp) :: y
    y = sign(min(max(abs(x), lo), hi), x)
  end function sclip

  !> T-dependent factors of the EOS at temperature t (validated: err_nonpositive_t).
  pure subroutine eos_tfactors(t, eps, tf, ierr, sir_compat)
    real(dp), intent(in) :: t, eps(92)
    type(eos_tfac), intent(out) :: tf
    integer, intent(out) :: ierr
    integer, intent(in), optional :: sir_compat
    real(dp) :: theta, th25, u1, u2, u3, uh, chi1, chi2, lk1, lk2
    integer :: iz
    logical :: compat

    ierr = err_ok
    compat = .false.
    if (present(sir_compat)) compat = sir_compat /= 0
    if (.not. (t > 0.0_dp) .or. t > huge(1.0_dp)) then
      ierr = err_nonpositive_t; return
    end if
    theta = 5040.0_dp / t
    th25 = theta**2.5_dp
    tf%t = t; tf%theta = theta
    call partition_functions(1, t, uh, u2, u3)
    tf%s2 = (1.0_dp / uh) * exp(ln10 * (saha_const - theta * chi_h)) / th25
    tf%s3 = uh * exp(ln10 * (saha_const - theta * chi_hminus)) / th25
    lk1 = -11.206998_dp + theta * (2.7942767_dp + theta * (0.079196803_dp - 0.024790744_dp * theta))
    lk2 = -12.533505_dp + theta * (4.9251644_dp + theta * (-0.056191273_dp + 0.0032687661_dp * theta))
    tf%k1 = exp(ln10 * min(max(lk1, -30.0_dp), 30.0_dp))
    tf%k2 = exp(ln10 * min(max(lk2, -30.0_dp), 30.0_dp))
    do iz = 2, 28
      call partition_functions(iz, t, u1, u2, u3)
      call ionisation_energies(iz, chi1, chi2)
      tf%sa(iz) = (u2 / u1) * exp(ln10 * (saha_const - theta * chi1)) / th25
      tf%sb(iz) = (u3 / u2) * exp(ln10 * (saha_const - theta * chi2)) / th25
    end do
    tf%eps = eps(2:28)
    tf%se = sum(eps)
    tf%sew = dot_product(eps, atomic_weights())
    if (compat) then
      tf%nonh = sir_nonh_nuclei
    else
      tf%nonh = tf%se - eps(1)
    end if
  end subroutine eos_tfactors

  !> Solve the EOS at temperature t [K] and electron pressure pe [dyn cm-2] (§4.2-§4.4).
  !> eps(92) = N_Z/N_H (linear, eps(1) = 1). sir_compat = 1: P_g with 0.1014 non-H nuclei.
  pure subroutine eos_solve(t, pe, eps, st, ierr, sir_compat)
    real(dp), intent(in) :: t, pe, eps(92)
    type(eos_state), intent(out) :: st
    integer, intent(out) :: ierr
    integer, intent(in), optional :: sir_compat
    type(eos_tfac) :: tf

    if (.not. (t > 0.0_dp) .or. t > huge(1.0_dp)) then
      ierr = err_nonpositive_t; return
    end if
    if (.not. (pe > 0.0_dp) .or. pe > huge(1.0_dp)) then
      ierr = err_nonpositive_pe; return
    end if
    call eos_tfactors(t, eps, tf, ierr, sir_compat)
    if (ierr /= err_ok) return
    call eos_solve_tf(tf, pe, st, ierr)
  end subroutine eos_solve

  !> EOS at electron pressure pe from the temperature factors tf of eos_tfactors (same result as
  !> eos_solve(tf%t, pe, ...)).
  pure subroutine eos_solve_tf(tf, pe, st, ierr)
    type(eos_tfac), intent(in) :: tf
    real(dp), intent(in) :: pe
    type(eos_state), intent(out) :: st
    integer, intent(out) :: ierr
    real(dp) :: a, b, c, p, g1, g2, g3, g4, g5, rpe
    real(dp) :: ca, cb, cc, cd, ce, c1, c2, c3, disc, f1, f2, f3, f4, f5, fe, ph
    integer :: iz, k

    ierr = err_ok
    if (.not. (pe > 0.0_dp) .or. pe > huge(1.0_dp)) then
      ierr = err_nonpositive_pe; return
    end if
    st%t = tf%t; st%pe = pe; st%theta = tf%theta
    rpe = 1.0_dp / pe
    g2 = tf%s2 * rpe
    g3 = 1.0_dp / min(max(tf%s3 * rpe, 1.0e-30_dp), 1.0e30_dp)
    g4 = pe * tf%k1
    g5 = pe * tf%k2

    ! metals He..Ni
    g1 = 0.0_dp
    do iz = 2, 28
      a = tf%sa(iz) * rpe
      b = tf%sb(iz) * rpe
      c = 1.0_dp + a * (1.0_dp + b)
      p = tf%eps(iz) / c
      g1 = g1 + p * a * (1.0_dp + 2.0_dp * b)
    end do
    st%p_he = tf%eps(2) / (1.0_dp + tf%sa(2) * rpe * (1.0_dp + tf%sb(2) * rpe))
    st%p_c = tf%eps(6) / (1.0_dp + tf%sa(6) * rpe * (1.0_dp + tf%sb(6) * rpe))
    st%p_na = tf%eps(11) / (1.0_dp + tf%sa(11) * rpe * (1.0_dp + tf%sb(11) * rpe))
    st%p_mg = tf%eps(12) / (1.0_dp + tf%sa(12) * rpe * (1.0_dp + tf%sb(12) * rpe))

    ! hydrogen quadratic (§4.3)
    ! SIR's single-precision magnitude clips of A..E and c1 to [1e-15, 1e15] are NOT applied:
    ! they are unnecessary in double precision and the c1 clip selects a wrong root in hot,
    ! tenuous gas (e.g. T = 15000 K, Pe = 1e-3, where c1 ~ 4e15); only zero guards remain.
    ce = g2 * g4 / g5
    ca = 1.0_dp + g2 + g3
    cb = 2.0_dp * (1.0_dp + ce)
    cc = g5
    cd = g2 - g3
    c1 = cc * cb**2 + ca * cd * cb - ce * ca**2
    c2 = 2.0_dp * ca * ce - cd * cb + ca * cb * g1
    c3 = -(ce + cb * g1)
    if (c1 == 0.0_dp) c1 = tiny(1.0_dp)
    disc = max(c2**2 - 4.0_dp * c1 * c3, 0.0_dp)
    if (c2 > 0.0_dp) then
      f1 = -2.0_dp * c3 / (c2 + sqrt(disc))
    else
      f1 = (-c2 + sqrt(disc)) / (2.0_dp * c1)
    end if
    f5 = (1.0_dp - ca * f1) / cb
    f4 = ce * f5
    f3 = g3 * f1
    f2 = g2 * f1
    fe = max(f2 - f3 + f4 + g1, tiny(1.0_dp))
    ph = pe / fe
    if (f5 <= 1.0e-4_dp) then
      do k = 1, 5
        f5 = ph * tf%k2 * f1**2
        f4 = ce * f5
        fe = max((f2 - f3 + g1) + f4, tiny(1.0_dp))
        ph = pe / fe
      end do
    end if

    ! derived quantities (§4.4)
    st%f1 = f1; st%f2 = f2; st%f3 = f3; st%f4 = f4; st%f5 = f5; st%fe = fe
    st%g1 = g1; st%g2 = g2; st%g3 = g3; st%g4 = g4; st%g5 = g5
    st%ph = ph
    st%nh = ph / (k_boltz * tf%t)
    st%ne = pe / (k_boltz * tf%t)
    st%pg = pe * (1.0_dp + (f1 + f2 + f3 + f4 + f5 + tf%nonh) / fe)
    st%mu_m = tf%sew / (tf%se + fe)
    st%rho = st%mu_m * st%pg / (r_gas * tf%t)
    st%per_gram = n_avogadro / tf%sew
    if (.not. (abs(st%pg) <= huge(1.0_dp)) .or. .not. (abs(f1) <= huge(1.0_dp))) ierr = err_not_finite
  end subroutine eos_solve_tf

  !> eos_state as a flat array (order of the type components).
  pure function eos_state_to_array(st) result(v)
    type(eos_state), intent(in) :: st
    real(dp) :: v(n_eos_fields)
    v = [st%t, st%pe, st%theta, st%f1, st%f2, st%f3, st%f4, st%f5, st%fe, st%g1, st%g2, st%g3, &
         st%g4, st%g5, st%ph, st%nh, st%ne, st%p_he, st%p_c, st%p_na, st%p_mg, st%pg, st%mu_m, &
         st%rho, st%per_gram]
  end function eos_state_to_array

  !> inverse of eos_state_to_array
  pure function eos_state_from_array(v) result(st)
    real(dp), intent(in) :: v(n_eos_fields)
    type(eos_state) :: st
    st%t = v(1); st%pe = v(2); st%theta = v(3); st%f1 = v(4); st%f2 = v(5); st%f3 = v(6)
    st%f4 = v(7); st%f5 = v(8); st%fe = v(9); st%g1 = v(10); st%g2 = v(11); st%g3 = v(12)
    st%g4 = v(13); st%g5 = v(14); st%ph = v(15); st%nh = v(16); st%ne = v(17); st%p_he = v(18)
    st%p_c = v(19); st%p_na = v(20); st%p_mg = v(21); st%pg = v(22); st%mu_m = v(23)
    st%rho = v(24); st%per_gram = v(25)
  end function eos_state_from_array

  !> EOS and the partial derivatives of every component w.r.t. T (fixed Pe) and Pe (fixed T),
  !> by Richardson-extrapolated central differences in ln T and ln Pe (relative accuracy ~1e-9
  !> away from the switches of the piecewise partition-function fits).
  pure subroutine eos_solve_deriv(t, pe, eps, st, dst_dt, dst_dpe, ierr, sir_compat)
    real(dp), intent(in) :: t, pe, eps(92)
    type(eos_state), intent(out) :: st, dst_dt, dst_dpe
    integer, intent(out) :: ierr
    integer, intent(in), optional :: sir_compat
    real(dp), parameter :: h = 2.0e-4_dp
    real(dp) :: d1(n_eos_fields), d2(n_eos_fields), vp(n_eos_fields), vm(n_eos_fields)
    type(eos_state) :: sp, sm
    type(eos_tfac) :: tf
    integer :: ie, k
    real(dp) :: hk

    call eos_solve(t, pe, eps, st, ierr, sir_compat)
    if (ierr /= err_ok) return
    ! temperature
    do k = 1, 2
      hk = h / real(k, dp)
      call eos_solve(t * exp(hk), pe, eps, sp, ie, sir_compat); if (ie /= 0) ierr = ie
      call eos_solve(t * exp(-hk), pe, eps, sm, ie, sir_compat); if (ie /= 0) ierr = ie
      vp = eos_state_to_array(sp); vm = eos_state_to_array(sm)
      if (k == 1) then
        d1 = (vp - vm) / (2.0_dp * hk)
      else
        d2 = (vp - vm) / (2.0_dp * hk)
      end if
    end do
    dst_dt = eos_state_from_array((4.0_dp * d2 - d1) / 3.0_dp / t)
    ! electron pressure (temperature factors computed once)
    call eos_tfactors(t, eps, tf, ie, sir_compat)
    do k = 1, 2
      hk = h / real(k, dp)
      call eos_solve_tf(tf, pe * exp(hk), sp, ie); if (ie /= 0) ierr = ie
      call eos_solve_tf(tf, pe * exp(-hk), sm, ie); if (ie /= 0) ierr = ie
      vp = eos_state_to_array(sp); vm = eos_state_to_array(sm)
      if (k == 1) then
        d1 = (vp - vm) / (2.0_dp * hk)
      else
        d2 = (vp - vm) / (2.0_dp * hk)
      end if
    end do
    dst_dpe = eos_state_from_array((4.0_dp * d2 - d1) / 3.0_dp / pe)
  end subroutine eos_solve_deriv

  !> Inverse problem (§4.5): electron pressure pe such that P_g(t, pe) = pg, to 1e-11 relative.
  !> Bracketing + Illinois regula falsi in ln pe (P_g increases monotonically with P_e).
  !> pe_guess: optional starting value (e.g. the neighbouring depth's pe). T < 500 K is raised to
  !> 500 K here, as in SIR (a numerical guard).
  pure subroutine pe_from_pg(t, pg, eps, pe, ierr, pe_guess, sir_compat)
    real(dp), intent(in) :: t, pg, eps(92)
    real(dp), intent(out) :: pe
    integer, intent(out) :: ierr
    real(dp), intent(in), optional :: pe_guess
    integer, intent(in), optional :: sir_compat
    type(eos_tfac) :: tf

    ierr = err_ok
    pe = 0.0_dp
    if (.not. (t > 0.0_dp) .or. t > huge(1.0_dp)) then
      ierr = err_nonpositive_t; return
    end if
    call eos_tfactors(max(t, 500.0_dp), eps, tf, ierr, sir_compat)
    if (ierr /= err_ok) return
    call pe_from_pg_tf(tf, pg, pe, ierr, pe_guess)
  end subroutine pe_from_pg

  !> pe_from_pg with the temperature factors of eos_tfactors (at max(t, 500 K), as pe_from_pg).
  pure subroutine pe_from_pg_tf(tf, pg, pe, ierr, pe_guess)
    type(eos_tfac), intent(in) :: tf
    real(dp), intent(in) :: pg
    real(dp), intent(out) :: pe
    integer, intent(out) :: ierr
    real(dp), intent(in), optional :: pe_guess
    real(dp), parameter :: tol = 1.0e-11_dp
    real(dp) :: x0, r0, r1, xlo, xhi, rlo, rhi, xn, lpg, g, xh
    integer :: it, nexp

    ierr = err_ok
    pe = 0.0_dp
    if (.not. (pg > 0.0_dp) .or. pg > huge(1.0_dp)) then
      ierr = err_bad_input; return
    end if
    lpg = log(pg)
    ! start value: guess, or pure-hydrogen Saha estimate (P_g = P_H'(1 + x), P_e = x P_H')
    if (present(pe_guess)) then
      if (pe_guess > 0.0_dp .and. pe_guess < pg) then
        x0 = log(pe_guess)
      else
        x0 = log(0.01_dp * pg)
      end if
    else
      ! x^2/(1-x^2) = Phi * P_e/... : with P_e = x P_g/(1+x), x^2/(1-x^2) = Phi(P=1)/P_g
      g = tf%s2 / pg
      xh = sqrt(g / (1.0_dp + g))
      xh = max(xh, 1.0e-4_dp)   ! metals provide electrons in cool gas
      x0 = log(max(xh * pg / (1.0_dp + xh), 1.0e-30_dp))
    end if
    ! Bracket [xlo, xhi] in x = ln pe with r(xlo) < 0 < r(xhi) (P_g increases with P_e), then
    ! Illinois regula falsi (bisection while a bracket end has an overflowed residual).
    call pg_resid(tf, x0, lpg, r0)
    if (abs(r0) <= tol) then
      pe = exp(x0); return
    end if
    if (r0 < 0.0_dp) then
      xlo = x0; rlo = r0
      xhi = x0 + max(-r0, 0.1_dp)
      do it = 1, 200
        call pg_resid(tf, xhi, lpg, rhi)
        if (rhi > 0.0_dp) exit
        xlo = xhi; rlo = rhi
        xhi = xhi + max(-rhi, 0.1_dp)
      end do
    else
      xhi = x0; rhi = r0
      xlo = x0 - max(min(r0, 10.0_dp), 0.1_dp)
      do it = 1, 200
        call pg_resid(tf, xlo, lpg, rlo)
        if (rlo < 0.0_dp) exit
        xhi = xlo; rhi = rlo
        xlo = xlo - max(min(rlo, 10.0_dp), 1.0_dp)
      end do
    end if
    if (.not. (rlo < 0.0_dp .and. rhi > 0.0_dp)) then
      ierr = err_no_convergence; pe = exp(x0); return
    end if
    nexp = 0
    do it = 1, 300
      if (rhi < 1.0e30_dp .and. -rlo < 1.0e30_dp) then
        xn = xlo - rlo * (xhi - xlo) / (rhi - rlo)
      else
        xn = 0.5_dp * (xlo + xhi)
      end if
      if (.not. (xn > xlo .and. xn < xhi)) xn = 0.5_dp * (xlo + xhi)
      call pg_resid(tf, xn, lpg, r1)
      if (abs(r1) <= tol .or. xhi - xlo < 1.0e-13_dp) then
        pe = exp(xn); return
      end if
      if (r1 < 0.0_dp) then
        xlo = xn; rlo = r1
        if (nexp == -1) rhi = 0.5_dp * rhi   ! Illinois: same end kept twice
        nexp = -1
      else
        xhi = xn; rhi = r1
        if (nexp == 1) rlo = 0.5_dp * rlo
        nexp = 1
      end if
    end do
    ierr = err_no_convergence
    pe = exp(xn)
  end subroutine pe_from_pg_tf

  !> ln P_g(t, exp(x)) - lpg
  pure subroutine pg_resid(tf, x, lpg, r)
    type(eos_tfac), intent(in) :: tf
    real(dp), intent(in) :: x, lpg
    real(dp), intent(out) :: r
    type(eos_state) :: st
    integer :: ierr
    call eos_solve_tf(tf, exp(x), st, ierr)
    if (ierr /= err_ok .or. .not. (st%pg > 0.0_dp .and. st%pg <= huge(1.0_dp))) then
      ! overflow at absurdly large trial P_e: treat as "P_e too large"
      r = huge(1.0_dp)
    else
      r = log(st%pg) - lpg
    end if
  end subroutine pg_resid

end module pyinv_eos
