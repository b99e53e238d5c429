!> Hydrostatic equilibrium on the log tau_5 grid and the geometrical height (spec-forward.md §5,
!> spec-inversion.md §4.6).
!>
!> pyinv decisions: g_eff = |mu| g_sun in every call (§5.6, no reset); rho_i from mu_m at depth i
!> (§5.3; sir_compat = 1 uses the top-point mu_m with P_g/rho boundaries, as SIR); the trapezoid
!> fixed point at each depth is iterated to 1e-10 relative (SIR: 1e-5); z zero point as SIR (§5.5).
module pyinv_hydrostatic
  use pyinv_kinds, only: dp, ln10, g_sun, r_gas
  use pyinv_errors, only: err_ok, err_bad_input, err_bad_size, err_logtau_order, err_no_convergence, &
                          err_nonpositive_t, err_nonpositive_pe, err_not_finite
  use pyinv_eos, only: eos_state, eos_solve, pe_from_pg, eos_tfac, eos_tfactors, eos_solve_tf, pe_from_pg_tf
  use pyinv_continuum, only: kappa_continuum, kappa_coefficients, kappa_from_coef, n_kappa_coef
  implicit none
  private
  public :: hydrostatic_eq, geometric_height, density_boundary_pg

  integer, parameter, public :: he_boundary_pe = 0, he_boundary_pg = 1, he_boundary_rho = 2
  real(dp), parameter :: lambda5 = 5.0e-5_dp

contains

  !> Integrate HE downward from the top point (index n).
  !> boundary: 0 = keep pe_top; 1 = top P_g = bvalue; 2 = top density = bvalue [g cm-3].
  !> Outputs pe, pg [dyn cm-2], rho [g cm-3], z [km, SIR zero point], kappa5_gram [cm2 g-1].
  !> pe_guess (optional): an approximate P_e column (e.g. the previous model's during an inversion)
  !> used only to start the iterations; entries <= 0 are ignored. The result does not depend on it
  !> beyond the 1e-11 convergence tolerance.
  !> The temperature-only factors of the EOS (eos_tfactors) and of kappa_5 (kappa_coefficients) are
  !> computed once per depth and reused over the P_e and trapezoid iterations.
  pure subroutine hydrostatic_eq(n, logtau, t, pe_top, boundary, bvalue, mu, eps, pe, pg, rho, z, &
                                 kappa5_gram, ierr, sir_compat, pe_guess)
    integer, intent(in) :: n, boundary
    real(dp), intent(in) :: logtau(n), t(n), pe_top, bvalue, mu, eps(92)
    real(dp), intent(out) :: pe(n), pg(n), rho(n), z(n), kappa5_gram(n)
    integer, intent(out) :: ierr
    integer, intent(in), optional :: sir_compat
    real(dp), intent(in), optional :: pe_guess(n)
    type(eos_state) :: st
    type(eos_tfac) :: tf, tfp
    real(dp) :: geff, delta, ptop, pstar, pnew, tau(n), kap, pe_i, peg, mu_top, coef(n_kappa_coef), y1
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
      call pe_from_pg(t(n), bvalue, eps, pe(n), ierr, pe_guess=pe_top, sir_compat=sir_compat)
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
    if (boundary == he_boundary_pg) pg(n) = bvalue
    if (boundary == he_boundary_rho) pg(n) = ptop
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
      pstar = pg(i + 1) + delta * y1
      pe_i = pe(i + 1)
      if (present(pe_guess)) then
        if (pe_guess(i) > 0.0_dp .and. pe_guess(i) <= huge(1.0_dp)) then
          ! trapezoid predictor with kappa_5 at the guessed P_e
          pe_i = pe_guess(i)
          call eos_solve_tf(tf, pe_i, st, ierr)
          if (ierr /= err_ok) return
          pstar = pg(i + 1) + 0.5_dp * delta * (y1 + tau(i) / (kappa_from_coef(coef, st) * st%per_gram))
        end if
      end if
      conv = .false.
      do it = 1, 200
        peg = pe_i   ! (pe_guess must not alias pe)
        call pe_from_pg_tf(tfp, pstar, pe_i, ierr, pe_guess=peg)
        if (ierr /= err_ok) return
        call eos_solve_tf(tf, pe_i, st, ierr)
        if (ierr /= err_ok) return
        kap = kappa_from_coef(coef, st) * st%per_gram
        pnew = pg(i + 1) + 0.5_dp * delta * (y1 + tau(i) / kap)
        if (2.0_dp * abs(pnew - pstar) / (pnew + pstar) <= 1.0e-11_dp) then
          pstar = pnew; conv = .true.; exit
        end if
        pstar = pnew
      end do
      if (.not. conv) then
        if (2.0_dp * abs(pnew - pstar) / (pnew + pstar) > 1.0e-6_dp) then
          ierr = err_no_convergence; return
        end if
      end if
      pg(i) = pstar
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

end module pyinv_hydrostatic
