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
  use pyinv_eos, only: eos_state, eos_solve, pe_from_pg
  use pyinv_continuum, only: kappa_continuum
  implicit none
  private
  public :: hydrostatic_eq, geometric_height, density_boundary_pg

  integer, parameter, public :: he_boundary_pe = 0, he_boundary_pg = 1, he_boundary_rho = 2
  real(dp), parameter :: lambda5 = 5.0e-5_dp

contains

  !> Integrate HE downward from the top point (index n).
  !> boundary: 0 = keep pe_top; 1 = top P_g = bvalue; 2 = top density = bvalue [g cm-3].
  !> Outputs pe, pg [dyn cm-2], rho [g cm-3], z [km, SIR zero point], kappa5_gram [cm2 g-1].
  pure subroutine hydrostatic_eq(n, logtau, t, pe_top, boundary, bvalue, mu, eps, pe, pg, rho, z, &
                                 kappa5_gram, ierr, sir_compat)
    integer, intent(in) :: n, boundary
    real(dp), intent(in) :: logtau(n), t(n), pe_top, bvalue, mu, eps(92)
    real(dp), intent(out) :: pe(n), pg(n), rho(n), z(n), kappa5_gram(n)
    integer, intent(out) :: ierr
    integer, intent(in), optional :: sir_compat
    type(eos_state) :: st
    real(dp) :: geff, delta, ptop, pstar, pnew, tau(n), kap, pe_i, mu_top
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
      delta = geff * ln10 * (logtau(i) - logtau(i + 1))
      pstar = pg(i + 1) + delta * tau(i + 1) / kappa5_gram(i + 1)
      pe_i = pe(i + 1)
      conv = .false.
      do it = 1, 200
        call pe_from_pg(t(i), pstar, eps, pe_i, ierr, pe_guess=pe_i, sir_compat=sir_compat)
        if (ierr /= err_ok) return
        call eos_solve(t(i), pe_i, eps, st, ierr, sir_compat)
        if (ierr /= err_ok) return
        call kappa_continuum(lambda5, st, eps, kap, ierr, sir_compat)
        if (ierr /= err_ok) return
        kap = kap * st%per_gram
        pnew = pg(i + 1) + 0.5_dp * delta * (tau(i + 1) / kappa5_gram(i + 1) + tau(i) / kap)
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
      call pe_from_pg(t(i), pg(i), eps, pe(i), ierr, pe_guess=pe_i, sir_compat=sir_compat)
      if (ierr /= err_ok) return
      call eos_solve(t(i), pe(i), eps, st, ierr, sir_compat)
      if (ierr /= err_ok) return
      call kappa_continuum(lambda5, st, eps, kap, ierr, sir_compat)
      if (ierr /= err_ok) return
      kappa5_gram(i) = kap * st%per_gram
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
    real(dp) :: mu_m, pe, pnew
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
        call pe_from_pg(t, pg, eps, pe, ierr, pe_guess=pe, sir_compat=sir_compat)
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
