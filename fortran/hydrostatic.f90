!> Hydrostatic equilibrium on the log tau_5 grid and the geometrical height (spec-forward.md §5,
!> spec-inversion.md §4.6).
!>
!> pyinv decisions: g_eff = |mu| g_sun in every call (§5.6, no reset); rho_i from mu_m at depth i
!> (§5.3; sir_compat = 1 uses the top-point mu_m with P_g/rho boundaries, as SIR); the trapezoid
!> fixed point at each depth is iterated to 1e-10 relative (SIR: 1e-5); z zero point as SIR (§5.5).
!> For the inversion: he_solve (hydrostatic_eq with a P_e guess), he_tangent (the tangent-linear of the
!> HE solution: d Pe for given d T, the temperature response functions' HE coupling) and he_pe_jacobian.
module pyinv_hydrostatic
  use pyinv_kinds, only: dp, ln10, g_sun, r_gas
  use pyinv_errors, only: err_ok, err_bad_input, err_bad_size, err_logtau_order, err_no_convergence, &
                          err_nonpositive_t, err_nonpositive_pe, err_not_finite
  use pyinv_eos, only: eos_state, eos_solve, pe_from_pg, eos_tfac, eos_tfactors, eos_solve_tf, pe_from_pg_tf
  use pyinv_continuum, only: kappa_continuum, kappa_coefficients, kappa_from_coef, n_kappa_coef
  implicit none
  private
  public :: hydrostatic_eq, geometric_height, density_boundary_pg, he_solve, he_tangent, he_tangent_terms, &
            he_pe_jacobian
  !> columns of he_tangent_terms
  integer, parameter, public :: het_kg = 1, het_kg_t = 2, het_kg_p = 3, het_pg_t = 4, het_pg_p = 5, &
                                het_rho_t = 6, het_rho_p = 7, n_he_terms = 7

  integer, parameter, public :: he_boundary_pe = 0, he_boundary_pg = 1, he_boundary_rho = 2
  real(dp), parameter :: lambda5 = 5.0e-5_dp

contains

  !> Integrate HE downward from the top point (index n).
  !> boundary: 0 = keep pe_top; 1 = top P_g = bvalue; 2 = top density = bvalue [g cm-3].
  !> Outputs pe, pg [dyn cm-2], rho [g cm-3], z [km, SIR zero point], kappa5_gram [cm2 g-1].
  !> pmag (optional, spec-inversion §4.6): the magnetic pressure B^2/8pi [dyn cm-2] per depth. With a
  !> P_g or rho boundary, HE is then integrated for the total pressure P_g + P_mag (the P_g boundary value
  !> is the total pressure; with a rho boundary the total is the gas pressure of (T, rho) plus P_mag) and
  !> P_g = P_tot - min(P_mag, 0.95 P_tot) at each depth. Ignored with the P_e boundary (as SIR).
  !> pe_guess (optional): an approximate P_e column (e.g. the previous model's during an inversion)
  !> used only to start the iterations; entries <= 0 are ignored. The result does not depend on it
  !> beyond the 1e-11 convergence tolerance.
  !> The temperature-only factors of the EOS (eos_tfactors) and of kappa_5 (kappa_coefficients) are
  !> computed once per depth and reused over the P_e and trapezoid iterations.
  pure subroutine hydrostatic_eq(n, logtau, t, pe_top, boundary, bvalue, mu, eps, pe, pg, rho, z, &
                                 kappa5_gram, ierr, sir_compat, pe_guess, pmag)
    integer, intent(in) :: n, boundary
    real(dp), intent(in) :: logtau(n), t(n), pe_top, bvalue, mu, eps(92)
    real(dp), intent(out) :: pe(n), pg(n), rho(n), z(n), kappa5_gram(n)
    integer, intent(out) :: ierr
    integer, intent(in), optional :: sir_compat
    real(dp), intent(in), optional :: pe_guess(n), pmag(n)
    type(eos_state) :: st
    type(eos_tfac) :: tf, tfp
    real(dp) :: pt(n), pm(n)
    real(dp) :: geff, delta, ptop, pstar, pnew, tau(n), kap, pe_i, peg, mu_top, coef(n_kappa_coef), y1
    real(dp) :: res, res_prev, p_prev, psec, pnext
    logical :: have_prev
    integer :: i, it
    logical :: compat, conv

    ierr = err_ok
    pe = 0; pg = 0; rho = 0; z = 0; kappa5_gram = 0
    compat = .false.
    if (present(sir_compat)) compat = sir_compat /= 0
    if (n < 1) then
      ierr = err_bad_size; return
    end if
    if (any(.not. (abs(logtau) <= huge(1.0_dp)))) then
      ierr = err_not_finite; return
    end if
    do i = 2, n
      if (.not. logtau(i) < logtau(i - 1)) then
        ierr = err_logtau_order; return
      end if
    end do
    if (any(.not. (t > 0.0_dp)) .or. any(t > huge(1.0_dp))) then
      ierr = err_nonpositive_t; return
    end if
    if (.not. (abs(mu) > 0.0_dp .and. abs(mu) <= 1.0_dp)) then
      ierr = err_bad_input; return
    end if
    geff = abs(mu) * g_sun
    tau = 10.0_dp**logtau
    pm = 0.0_dp
    if (present(pmag) .and. boundary /= he_boundary_pe) then
      if (any(.not. (pmag >= 0.0_dp)) .or. any(pmag > huge(1.0_dp))) then
        ierr = err_bad_input; return
      end if
      pm = pmag
    end if

    ! top boundary
    select case (boundary)
    case (he_boundary_pe)
      if (.not. (pe_top > 0.0_dp) .or. pe_top > huge(1.0_dp)) then
        ierr = err_nonpositive_pe; return
      end if
      pe(n) = pe_top
    case (he_boundary_pg)
      if (.not. (bvalue > 0.0_dp) .or. bvalue > huge(1.0_dp)) then
        ierr = err_bad_input; return
      end if
      call pe_from_pg(t(n), gas_pressure(bvalue, pm(n)), eps, pe(n), ierr, pe_guess=pe_top, sir_compat=sir_compat)
      if (ierr /= err_ok) return
    case (he_boundary_rho)
      call density_boundary_pg(t(n), bvalue, eps, ptop, ierr, sir_compat)
      if (ierr /= err_ok) return
      call pe_from_pg(t(n), ptop, eps, pe(n), ierr, pe_guess=pe_top, sir_compat=sir_compat)
      if (ierr /= err_ok) return
    case default
      ierr = err_bad_input; return
    end select
    call eos_solve(t(n), pe(n), eps, st, ierr, sir_compat)
    if (ierr /= err_ok) return
    call kappa_continuum(lambda5, st, eps, kap, ierr, sir_compat)
    if (ierr /= err_ok) return
    pg(n) = st%pg
    if (boundary == he_boundary_pg) pg(n) = gas_pressure(bvalue, pm(n))
    if (boundary == he_boundary_rho) pg(n) = ptop
    pt(n) = pg(n) + pm(n)
    if (boundary == he_boundary_pg) pt(n) = bvalue
    rho(n) = st%rho
    mu_top = st%mu_m
    kappa5_gram(n) = kap * st%per_gram

    ! downward trapezoid integration with fixed-point iteration at each depth
    do i = n - 1, 1, -1
      ! temperature factors: P_e(P_g) at max(T, 500 K) as pe_from_pg, EOS and kappa_5 at T
      call eos_tfactors(max(t(i), 500.0_dp), eps, tfp, ierr, sir_compat)
      if (ierr /= err_ok) return
      if (t(i) < 500.0_dp) then
        call eos_tfactors(t(i), eps, tf, ierr, sir_compat)
        if (ierr /= err_ok) return
      else
        tf = tfp
      end if
      call kappa_coefficients(lambda5, t(i), coef, ierr, sir_compat)
      if (ierr /= err_ok) return
      delta = geff * ln10 * (logtau(i) - logtau(i + 1))
      y1 = tau(i + 1) / kappa5_gram(i + 1)
      pstar = pt(i + 1) + delta * y1
      pe_i = pe(i + 1)
      if (present(pe_guess)) then
        if (pe_guess(i) > 0.0_dp .and. pe_guess(i) <= huge(1.0_dp)) then
          ! trapezoid predictor with kappa_5 at the guessed P_e
          pe_i = pe_guess(i)
          call eos_solve_tf(tf, pe_i, st, ierr)
          if (ierr /= err_ok) return
          pstar = pt(i + 1) + 0.5_dp * delta * (y1 + tau(i) / (kappa_from_coef(coef, st) * st%per_gram))
        end if
      end if
      conv = .false.
      have_prev = .false.
      do it = 1, 200
        peg = pe_i   ! (pe_guess must not alias pe)
        call pe_from_pg_tf(tfp, gas_pressure(pstar, pm(i)), pe_i, ierr, pe_guess=peg)
        if (ierr /= err_ok) return
        call eos_solve_tf(tf, pe_i, st, ierr)
        if (ierr /= err_ok) return
        kap = kappa_from_coef(coef, st) * st%per_gram
        pnew = pt(i + 1) + 0.5_dp * delta * (y1 + tau(i) / kap)
        if (2.0_dp * abs(pnew - pstar) / (pnew + pstar) <= 1.0e-11_dp) then
          pstar = pnew; conv = .true.; exit
        end if
        ! secant step on the residual r(p) = F(p) - p (pyinv, issue 9: a few iterations instead of
        ! the fixed point's linear convergence); the plain fixed-point step when the secant is not
        ! defined or leaves [p/2, 2p]
        res = pnew - pstar
        pnext = pnew
        if (have_prev) then
          if (res /= res_prev) then
            psec = pstar - res * (pstar - p_prev) / (res - res_prev)
            if (psec > 0.5_dp * pnew .and. psec < 2.0_dp * pnew) pnext = psec
          end if
        end if
        p_prev = pstar
        res_prev = res
        have_prev = .true.
        pstar = pnext
      end do
      if (.not. conv) then
        if (2.0_dp * abs(pnew - pstar) / (pnew + pstar) > 1.0e-6_dp) then
          ierr = err_no_convergence; return
        end if
      end if
      pt(i) = pstar
      pg(i) = gas_pressure(pstar, pm(i))
      call pe_from_pg_tf(tfp, pg(i), pe(i), ierr, pe_guess=pe_i)
      if (ierr /= err_ok) return
      call eos_solve_tf(tf, pe(i), st, ierr)
      if (ierr /= err_ok) return
      kappa5_gram(i) = kappa_from_coef(coef, st) * st%per_gram
      if (compat .and. boundary /= he_boundary_pe) then
        rho(i) = mu_top * pg(i) / (r_gas * t(i))
      else
        rho(i) = st%rho
      end if
    end do
    call geometric_height(n, logtau, kappa5_gram, rho, z)
  end subroutine hydrostatic_eq

  !> Gas pressure from a total pressure and the magnetic pressure, P_mag capped at 0.95 P_tot (§4.6).
  pure elemental real(dp) function gas_pressure(ptot, pmag) result(pg)
    real(dp), intent(in) :: ptot, pmag
    pg = ptot - min(pmag, 0.95_dp * ptot)
  end function gas_pressure

  !> Top gas pressure from a density: iterate P_g = rho R T / mu_m(T, P_g) (§5.2), start mu_m = 1.302.
  pure subroutine density_boundary_pg(t, rho, eps, pg, ierr, sir_compat)
    real(dp), intent(in) :: t, rho, eps(92)
    real(dp), intent(out) :: pg
    integer, intent(out) :: ierr
    integer, intent(in), optional :: sir_compat
    type(eos_state) :: st
    real(dp) :: mu_m, pe, pnew, peg
    integer :: it
    ierr = err_ok
    pg = 0.0_dp
    if (.not. (rho > 0.0_dp) .or. rho > huge(1.0_dp)) then
      ierr = err_bad_input; return
    end if
    mu_m = 1.302_dp
    pg = rho * r_gas * t / mu_m
    pe = -1.0_dp
    do it = 1, 100
      if (pe > 0.0_dp) then
        peg = pe   ! (pe_guess must not alias pe)
        call pe_from_pg(t, pg, eps, pe, ierr, pe_guess=peg, sir_compat=sir_compat)
      else
        call pe_from_pg(t, pg, eps, pe, ierr, sir_compat=sir_compat)
      end if
      if (ierr /= err_ok) return
      call eos_solve(t, pe, eps, st, ierr, sir_compat)
      if (ierr /= err_ok) return
      pnew = rho * r_gas * t / st%mu_m
      if (abs(pnew - pg) <= 1.0e-12_dp * pg) then
        pg = pnew; return
      end if
      pg = pnew
    end do
    ierr = err_no_convergence
  end subroutine density_boundary_pg

  !> Geometrical height (§5.5): z in km, increasing upward, zero at SIR's zero-point index.
  pure subroutine geometric_height(n, logtau, kappa_gram, rho, z)
    integer, intent(in) :: n
    real(dp), intent(in) :: logtau(n), kappa_gram(n), rho(n)
    real(dp), intent(out) :: z(n)
    real(dp) :: y(n), thr
    integer :: i, i0
    y = 10.0_dp**logtau / (kappa_gram * rho)
    z(1) = 0.0_dp
    do i = 2, n
      z(i) = z(i - 1) + ln10 * (logtau(i - 1) - logtau(i)) * 0.5_dp * (y(i - 1) + y(i))
    end do
    i0 = 1
    thr = 1.0_dp
    do i = 2, n
      if (abs(logtau(i)) < thr) then
        i0 = i
        thr = logtau(i)
      end if
    end do
    z = (z - z(i0)) * 1.0e-5_dp
  end subroutine geometric_height

  !> hydrostatic_eq for the inversion: P_e of the temperature column t with the given boundary (pe_top
  !> kept for boundary 0), eps and EOS compat flag; optionally pg, rho, z, a starting P_e column and the
  !> magnetic pressure per depth (hydrostatic_eq).
  pure subroutine he_solve(eps, compat, n, logtau, t, pe_top, boundary, bvalue, mu, pe_out, ierr, pg, rho, z, pe_guess, &
                           pmag)
    real(dp), intent(in) :: eps(92)
    integer, intent(in) :: compat
    integer, intent(in) :: n, boundary
    real(dp), intent(in) :: logtau(n), t(n), pe_top, bvalue, mu
    real(dp), intent(out) :: pe_out(n)
    integer, intent(out) :: ierr
    real(dp), intent(out), optional :: pg(n), rho(n), z(n)
    real(dp), intent(in), optional :: pe_guess(n), pmag(n)
    real(dp) :: pg_(n), rho_(n), z_(n), k5(n)
    ! (absent optional arguments pass on as absent)
    call hydrostatic_eq(n, logtau, t, pe_top, boundary, bvalue, mu, eps, pe_out, pg_, rho_, z_, k5, ierr, &
                        compat, pe_guess, pmag)
    if (present(pg)) pg = pg_
    if (present(rho)) rho = rho_
    if (present(z)) z = z_
  end subroutine he_solve

  !> The local derivatives the HE tangent-linear needs, per depth (columns het_*): kappa5 per gram and
  !> its derivatives w.r.t. T (fixed Pe) and Pe (fixed T), d Pg / d T, d Pg / d Pe, d rho / d T,
  !> d rho / d Pe, by central differences in ln T and ln Pe (step 1e-4: relative accuracy ~1e-8, far
  !> below what an LM step needs). pyinv_response::synth_rf provides the same from its own EOS
  !> derivatives, so that the inversion's Jacobian solves the EOS once for both.
  pure subroutine he_tangent_terms(eps, compat, n, t, pe, terms, ierr)
    real(dp), intent(in) :: eps(92)
    integer, intent(in) :: compat, n
    real(dp), intent(in) :: t(n), pe(n)
    real(dp), intent(out) :: terms(n, n_he_terms)
    integer, intent(out) :: ierr
    real(dp), parameter :: hd = 1.0e-4_dp
    type(eos_state) :: st
    real(dp) :: v(3, 0:4), tt, pp
    integer :: i, q
    terms = 0.0_dp
    ierr = err_ok
    do i = 1, n
      do q = 0, 4
        tt = t(i)
        pp = pe(i)
        if (q == 1) tt = t(i) * exp(hd)
        if (q == 2) tt = t(i) * exp(-hd)
        if (q == 3) pp = pe(i) * exp(hd)
        if (q == 4) pp = pe(i) * exp(-hd)
        call eos_solve(tt, pp, eps, st, ierr, compat)
        if (ierr /= err_ok) return
        call kappa_continuum(5.0e-5_dp, st, eps, v(3, q), ierr, compat)
        if (ierr /= err_ok) return
        v(1, q) = st%pg
        v(2, q) = st%rho
        v(3, q) = v(3, q) * st%per_gram
      end do
      terms(i, het_kg) = v(3, 0)
      terms(i, het_kg_t) = (v(3, 1) - v(3, 2)) / (2.0_dp * hd * t(i))
      terms(i, het_kg_p) = (v(3, 3) - v(3, 4)) / (2.0_dp * hd * pe(i))
      terms(i, het_pg_t) = (v(1, 1) - v(1, 2)) / (2.0_dp * hd * t(i))
      terms(i, het_pg_p) = (v(1, 3) - v(1, 4)) / (2.0_dp * hd * pe(i))
      terms(i, het_rho_t) = (v(2, 1) - v(2, 2)) / (2.0_dp * hd * t(i))
      terms(i, het_rho_p) = (v(2, 3) - v(2, 4)) / (2.0_dp * hd * pe(i))
    end do
  end subroutine he_tangent_terms

  !> Tangent-linear of pyinv_hydrostatic::hydrostatic_eq (trapezoid rule, converged fixed point) at the
  !> model (t, pe): for nd temperature perturbations dt(n, nd) the changes dpe(n, nd) of the HE
  !> electron pressure. Top: boundary 0 Pe fixed, 1 Pg fixed, 2 rho fixed. Exact for a model in HE
  !> (up to the ~1e-8 accuracy of the local EOS/opacity derivatives).
  pure subroutine he_tangent(eps, compat, n, logtau, t, pe, boundary, mu, nd, dt, dpe, ierr, terms)
    real(dp), intent(in) :: eps(92)
    integer, intent(in) :: compat
    integer, intent(in) :: n, boundary, nd
    real(dp), intent(in) :: logtau(n), t(n), pe(n), mu, dt(n, nd)
    real(dp), intent(out) :: dpe(n, nd)
    integer, intent(out) :: ierr
    real(dp), intent(in), optional :: terms(n, n_he_terms)
    real(dp) :: tm(n, n_he_terms), kg(n), kg_t(n), kg_p(n), pg_t(n), pg_p(n), rho_t, rho_p, tau(n), geff
    real(dp) :: delta, c, rhs, dpg, dk
    integer :: i, j
    dpe = 0.0_dp
    ierr = err_ok
    if (present(terms)) then
      tm = terms
    else
      call he_tangent_terms(eps, compat, n, t, pe, tm, ierr)
      if (ierr /= err_ok) return
    end if
    kg = tm(:, het_kg)
    kg_t = tm(:, het_kg_t)
    kg_p = tm(:, het_kg_p)
    pg_t = tm(:, het_pg_t)
    pg_p = tm(:, het_pg_p)
    rho_t = tm(n, het_rho_t)
    rho_p = tm(n, het_rho_p)
    geff = abs(mu) * g_sun
    tau = 10.0_dp**logtau
    do j = 1, nd
      select case (boundary)
      case (1)
        dpe(n, j) = -pg_t(n) / pg_p(n) * dt(n, j)
      case (2)
        dpe(n, j) = -rho_t / rho_p * dt(n, j)
      case default
        dpe(n, j) = 0.0_dp
      end select
      dpg = pg_t(n) * dt(n, j) + pg_p(n) * dpe(n, j)
      dk = kg_t(n) * dt(n, j) + kg_p(n) * dpe(n, j)
      do i = n - 1, 1, -1
        delta = geff * ln10 * (logtau(i) - logtau(i + 1))
        c = 0.5_dp * delta * tau(i) / kg(i)**2
        rhs = dpg - 0.5_dp * delta * tau(i + 1) / kg(i + 1)**2 * dk
        dpe(i, j) = (rhs - (pg_t(i) + c * kg_t(i)) * dt(i, j)) / (pg_p(i) + c * kg_p(i))
        dpg = pg_t(i) * dt(i, j) + pg_p(i) * dpe(i, j)
        dk = kg_t(i) * dt(i, j) + kg_p(i) * dpe(i, j)
      end do
    end do
    if (.not. all(abs(dpe) < huge(1.0_dp))) ierr = err_not_finite
  end subroutine he_tangent

  !> dpe(i, j) = d Pe_i / d T_j with Pe from hydrostatic equilibrium (boundary as given; top Pe fixed
  !> for boundary 0). method 0: tangent-linear (he_tangent at the HE solution); 1: central differences
  !> of hydrostatic_eq with relative steps 1e-4.
  pure subroutine he_pe_jacobian(eps, compat, n, logtau, t, pe_top, boundary, bvalue, mu, method, dpe, ierr)
    real(dp), intent(in) :: eps(92)
    integer, intent(in) :: compat
    integer, intent(in) :: n, boundary, method
    real(dp), intent(in) :: logtau(n), t(n), pe_top, bvalue, mu
    real(dp), intent(out) :: dpe(n, n)
    integer, intent(out) :: ierr
    real(dp) :: tp(n), pp(n), pm(n), h, eye(n, n)
    integer :: j
    dpe = 0.0_dp
    ierr = err_ok
    if (method == 0) then
      call he_solve(eps, compat, n, logtau, t, pe_top, boundary, bvalue, mu, pp, ierr)
      if (ierr /= err_ok) return
      eye = 0.0_dp
      do j = 1, n
        eye(j, j) = 1.0_dp
      end do
      call he_tangent(eps, compat, n, logtau, t, pp, boundary, mu, n, eye, dpe, ierr)
      return
    end if
    do j = 1, n
      h = 1.0e-4_dp * t(j)
      tp = t
      tp(j) = t(j) + h
      call he_solve(eps, compat, n, logtau, tp, pe_top, boundary, bvalue, mu, pp, ierr)
      if (ierr /= err_ok) return
      tp(j) = t(j) - h
      call he_solve(eps, compat, n, logtau, tp, pe_top, boundary, bvalue, mu, pm, ierr)
      if (ierr /= err_ok) return
      dpe(:, j) = (pp - pm) / (2.0_dp * h)
    end do
  end subroutine he_pe_jacobian

end module pyinv_hydrostatic
