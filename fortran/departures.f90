!> NLTE departure coefficients in the synthesis, DeSIRe's form (spec-nlte-rh.md §4; spec-forward.md §7.10
!> gives SIR 2017's simpler form, which pyinv_synthesis applies directly).
!>
!> Physics. For a line between levels l (lower) and u (upper) with departure coefficients
!> b_l = n_l / n_l*, b_u = n_u / n_u* held fixed, and x = h c / (lambda k T) (lambda the line's vacuum
!> wavelength):
!>  * absorption minus stimulated emission: the LTE line opacity eta0 (which carries the LTE factor
!>    1 - e^-x) becomes eta0 (b_l - b_u e^-x) / (1 - e^-x)  (nlte_opacity_factor);
!>  * the line source function is the two-level form S_L = 2hc^2/lambda^5 / ((b_l/b_u) e^x - 1);
!>  * the continuum keeps its own source function, the Planck function B (separate emissivities).
!> With the propagation matrix K = kappa_c 1 + sum_L K_L (K_L the line's Zeeman absorption matrix, its
!> eta_I..V and rho_Q..V, all proportional to the NLTE line opacity), the emission vector is
!>     j = kappa_c B e1 + sum_L (K_L e1) S_L,
!> where K_L e1 = (eta_I, eta_Q, eta_U, eta_V)_L is the first column of the line's absorption matrix
!> (the magneto-optical rho terms do not emit; line_first_column). It is K e1 S for one scalar S only
!> when every S_L equals B, so the polarised RTE dI/ds = -K I + j cannot be written with one source
!> function. The RTE keeps SIR's form with the source vector K^-1 j in place of S e1:
!>     dI/dx = K' (I - K^-1 j),   K^-1 j = B e1 + sv,   sv = K^-1 sum_L (K_L e1) (S_L - B)
!> (x = log10 tau5, K' = ln10 tau5 K / kappa5), and pyinv_formal_solver's Hermitian method integrates it
!> with the excess sv (emission_add, source_vector) treated exactly like S e1: I'' = M (I - B e1 - sv)
!> - K' (e1 B' + sv'), sv' by the grid derivative. The source vector is a weighted mean of B and the S_L
!> (field-free: (kappa_c B + sum eta_L S_L) / (kappa_c + sum eta_L)), smooth in depth like B, which is
!> what the Hermite scheme assumes of S; the excess emission itself, proportional to the line opacity,
!> varies by orders of magnitude between grid points and gave Ca II 8542's core on FAL C 0.06 of the
!> continuum off on a 0.1-dex grid when integrated as an extra term with its own derivative, against
!> 0.0014 this way. With b_l = b_u every S_L - B is exactly zero and the synthesis is SIR's LTE one bit
!> for bit. B and S_L are evaluated at the group's main line (SIR's one Planck function per group,
!> spec-forward §8.2), so b = 1 is LTE for blends too; the opacity factor uses each line's own
!> wavelength. Field-free models use the scalar analogue (eta_L = eta0 H in place of K_L e1, Stokes I).
!>
!> Response functions: b is held fixed (DeSIRe neglects d b / d parameters); dS_L and the opacity factor
!> depend on T only (their derivatives here); K_L e1 on everything the line opacity depends on, which the
!> line's adjoint in pyinv_response handles once emission_adjoint has added the emission's gradient to
!> that of the line's absorption-matrix elements; sv also depends on the whole K (source_vector_adjoint).
module pyinv_departures
  use pyinv_kinds, only: dp, c2_planck
  use pyinv_planck, only: planck, planck_dt, planck_nlte, planck_nlte_dt
  use pyinv_propagation, only: air_to_vacuum
  use pyinv_formal_solver, only: build_k4, solve4, lu4, lu4_solve_rows, add_outer7
  use pyinv_errors, only: err_ok
  implicit none
  private
  public :: nlte_opacity_factor, line_source_excess, line_first_column, emission_add, emission_adjoint, &
            source_vector, source_vector_adjoint

contains

  !> Factor f = (b_l - b_u e^-x) / (1 - e^-x) turning the LTE line opacity (with its LTE stimulated
  !> emission) into the NLTE one, and df/dT at fixed b. lam: the line's air wavelength [cm] (x uses the
  !> vacuum wavelength, as the line opacity's own factor does).
  elemental subroutine nlte_opacity_factor(lam, t, bl, bu, f, dfdt)
    real(dp), intent(in) :: lam, t, bl, bu
    real(dp), intent(out) :: f, dfdt
    real(dp) :: x, e, d
    x = c2_planck / (air_to_vacuum(lam) * t)
    e = exp(-x)
    d = 1.0_dp - e
    f = (bl - bu * e) / d
    ! df/de = (bl - bu) / (1 - e)^2, de/dT = e x / T
    dfdt = (bl - bu) / (d * d) * e * x / t
  end subroutine nlte_opacity_factor

  !> Excess of the line source function over the Planck function, ds = S_L - B at wavelength lam [cm]
  !> (the group's main line), and d ds / dT at fixed b. Zero when b_l = b_u.
  elemental subroutine line_source_excess(lam, t, bl, bu, ds, ddsdt)
    real(dp), intent(in) :: lam, t, bl, bu
    real(dp), intent(out) :: ds, ddsdt
    if (bl == bu) then
      ds = 0.0_dp
      ddsdt = 0.0_dp
      return
    end if
    ds = planck_nlte(lam, t, bl / bu) - planck(lam, t)
    ddsdt = planck_nlte_dt(lam, t, bl / bu) - planck_dt(lam, t)
  end subroutine line_source_excess

  !> First column K_L e1 = (eta_I, eta_Q, eta_U, eta_V) of one line's absorption matrix at one depth,
  !> from c5 = eta0 * geometry factors and the component-group sums h(1:3) of the Voigt profile (pi,
  !> sigma_r, sigma_b), with the same expressions as pyinv_propagation::k7_add_profiles.
  pure function line_first_column(c5, h) result(k)
    real(dp), intent(in) :: c5(5), h(3)
    real(dp) :: k(4), ps, ds
    ps = h(2) + h(3)
    ds = h(1) - 0.5_dp * ps
    k(1) = c5(1) * h(1) + c5(2) * ps
    k(2) = c5(3) * ds
    k(3) = c5(4) * ds
    k(4) = c5(5) * (h(2) - h(3))
  end function line_first_column

  !> w(1:m, i) += kl(1:m, i) dsl(i): one line's emission excess (units of kappa5 times the source
  !> function), kl(m, n) its emitting opacity (K_L e1, m = 4; or eta0 H, m = 1, Stokes I alone).
  pure subroutine emission_add(m, n, kl, dsl, w)
    integer, intent(in) :: m, n
    real(dp), intent(in) :: kl(m, n), dsl(n)
    real(dp), intent(inout) :: w(m, n)
    integer :: i
    do i = 1, n
      if (dsl(i) /= 0.0_dp) w(:, i) = w(:, i) + kl(:, i) * dsl(i)
    end do
  end subroutine emission_add

  !> Adjoint of emission_add for ns outputs: from wbar(ns, m, n) = d out / d w, klbar(ns, m, n) = d out /
  !> d kl (to be added to the gradient of the line's eta_I..V) and dslbar(ns, n) = d out / d dsl.
  pure subroutine emission_adjoint(ns, m, n, kl, dsl, wbar, klbar, dslbar)
    integer, intent(in) :: ns, m, n
    real(dp), intent(in) :: kl(m, n), dsl(n), wbar(ns, m, n)
    real(dp), intent(out) :: klbar(ns, m, n), dslbar(ns, n)
    integer :: i
    do i = 1, n
      klbar(:, :, i) = wbar(:, :, i) * dsl(i)
      dslbar(:, i) = matmul(wbar(:, :, i), kl(:, i))
    end do
  end subroutine emission_adjoint

  !> The source-vector excess sv(:, i) = K_i^-1 w(:, i) at every depth (K from its seven elements
  !> k7(7, n), units of kappa5, as pyinv_formal_solver; w from emission_add). err_singular if a K is.
  pure subroutine source_vector(n, k7, w, sv, ierr)
    integer, intent(in) :: n
    real(dp), intent(in) :: k7(7, n), w(4, n)
    real(dp), intent(out) :: sv(4, n)
    integer, intent(out) :: ierr
    real(dp) :: a(4, 4)
    integer :: i
    ierr = err_ok
    sv = 0.0_dp
    do i = 1, n
      if (all(w(:, i) == 0.0_dp)) cycle
      call build_k4(k7(:, i), a)
      sv(:, i) = w(:, i)
      call solve4(a, sv(:, i), ierr)
      if (ierr /= err_ok) return
    end do
  end subroutine source_vector

  !> Adjoint of source_vector for 4 outputs at depths kmin..n: from svbar(4, 4, n) = d out / d sv,
  !> wbar = svbar K^-1 (row by row) and k7bar(4, 7, n) += the path through K, -wbar (x) sv.
  pure subroutine source_vector_adjoint(n, kmin, k7, sv, svbar, wbar, k7bar, ierr)
    integer, intent(in) :: n, kmin
    real(dp), intent(in) :: k7(7, n), sv(4, n), svbar(4, 4, n)
    real(dp), intent(out) :: wbar(4, 4, n)
    real(dp), intent(inout) :: k7bar(4, 7, n)
    integer, intent(out) :: ierr
    real(dp) :: a(4, 4)
    integer :: i, piv(3)
    ierr = err_ok
    wbar = 0.0_dp
    do i = kmin, n
      call build_k4(k7(:, i), a)
      call lu4(a, piv, ierr)
      if (ierr /= err_ok) return
      call lu4_solve_rows(a, piv, svbar(:, :, i), wbar(:, :, i))
      call add_outer7(-wbar(:, :, i), sv(:, i), k7bar(:, :, i))
    end do
  end subroutine source_vector_adjoint

end module pyinv_departures
