!> Polarised radiative transfer by the Hermitian method (Bellot Rubio, Ruiz Cobo & Collados 1998;
!> spec-forward.md §8).
!>
!> Independent variable x = log10 tau5 on the model grid, i = 1 deepest ... n top. With
!> K' = ln10 tau5 K the RTE reads dI/dx = K' (I - S e1). Derivatives along the grid use the
!> three-point parabola (one-sided differences at the ends). The lower boundary i_b is the largest
!> i < n whose layer (i, i+1) is optically thick (max(|eta_I..V|)_i (tau_i - tau_i+1) > 5), where the
!> diffusion approximation I = S e1 + K'^-1 e1 dS/dx holds; the two-point Hermite (Obreschkoff) step
!>     I_i = I_i-1 + h/2 (I'_i-1 + I'_i) + h^2/12 (I''_i-1 - I''_i),
!>     I' = K'(I - S e1),  I'' = M (I - S e1) - K' e1 S',  M = dK'/dx + K'^2,
!> carries the solution to the top grid point, where the emergent Stokes vector is taken.
!>
!> Source vector (NLTE line source functions, pyinv_departures): when the emission vector j is not K e1 S,
!> the RTE keeps SIR's form with the source vector K^-1 j in place of S e1, written S e1 + sv with the
!> excess sv(4, n) given per depth:
!>     dI/dx = K' (I - S e1 - sv),   I'' = M (I - S e1 - sv) - K' (e1 S' + sv'),
!> sv' by the same grid derivative; the Hermite step gains, like the S terms,
!>     - h/2 (K'_i-1 sv_i-1 + K'_i sv_i) - h^2/12 (M_i-1 sv_i-1 - M_i sv_i + K'_i-1 sv'_i-1 - K'_i sv'_i)
!> and the diffusion start becomes I = S e1 + sv + K'^-1 (e1 S' + sv'). Without sv (or sv = 0) every
!> operation is SIR's.
!>
!> Polarisation modes thick at different depths (pyinv, issue 19; boundary_index_modes): where a strong
!> field splits a line, the boundary rule above may start the least absorbed mode from a diffusion value
!> extrapolated through a chromospheric rise; then the integration starts where every mode is thick and
!> the steps above it are sub-divided where the most absorbed mode is thick (refine_plan; k7, S, sv linear
!> in x within a step), in hermite_polarised, the blocked solver (which hands such wavelengths to it) and
!> hermite_polarised_adjoint alike. Otherwise every operation is SIR's.
!>
!> Propagation-matrix elements are passed per depth as k7(7, n) in units of kappa_c(5000):
!> (eta_I, eta_Q, eta_U, eta_V, rho_Q, rho_U, rho_V), with
!>     K = | eta_I  eta_Q  eta_U  eta_V |
!>         | eta_Q  eta_I  rho_V -rho_U |
!>         | eta_U -rho_V  eta_I  rho_Q |
!>         | eta_V  rho_U -rho_Q  eta_I |
!> Per-depth K', dK'/dx, S and S' are formed here from the inputs (stokes_depth returns I at every
!> depth). hermite_polarised_adjoint / hermite_scalar_adjoint repeat the forward sweep with the same
!> operations and add the reverse sweep: the exact gradients of the emergent vector with respect to
!> k7 and S at every depth (response functions, pyinv_response).
module pyinv_formal_solver
  use pyinv_kinds, only: dp, ln10
  use pyinv_errors, only: err_ok, err_singular, err_bad_size
  implicit none
  private
  public :: grid_derivative, hermite_polarised, hermite_polarised_block, hermite_scalar, solve4, build_k4, &
            boundary_index
  public :: hermite_polarised_adjoint, hermite_scalar_adjoint, grid_derivative_adjoint, lu4, lu4_solve_rows, &
            add_outer7

  real(dp), parameter :: tau_thick = 5.0_dp
  !> Optical thickness of the most absorbed mode per sub-step, and log2 of the most sub-steps per grid
  !> step, where the polarisation modes are thick at different depths (hermite_polarised). The number of
  !> sub-steps is a power of 2 so that it rarely changes under a small change of the model (a change
  !> alters the discretisation; response functions hold it fixed, as they hold the boundary index).
  real(dp), parameter :: sub_thick = 8.0_dp
  integer, parameter :: max_sub_log2 = 8
  !> At boundary_index's ib every mode must have at least this optical thickness over the layer, or the
  !> start may move down to where every mode is thick (boundary_index_modes).
  real(dp), parameter :: tau_mode = 1.0_dp

contains

  !> df/dx on a (possibly non-uniform) grid: three-point parabola inside, one-sided at the ends.
  pure subroutine grid_derivative(n, x, f, df)
    integer, intent(in) :: n
    real(dp), intent(in) :: x(n), f(n)
    real(dp), intent(out) :: df(n)
    integer :: i
    real(dp) :: dm, dp_, dt
    if (n < 2) then
      df = 0.0_dp
      return
    end if
    df(1) = (f(2) - f(1)) / (x(2) - x(1))
    df(n) = (f(n) - f(n - 1)) / (x(n) - x(n - 1))
    do i = 2, n - 1
      dm = x(i) - x(i - 1)
      dp_ = x(i + 1) - x(i)
      dt = x(i + 1) - x(i - 1)
      df(i) = -f(i - 1) * dp_ / (dm * dt) + f(i) * (dp_ - dm) / (dm * dp_) + f(i + 1) * dm / (dp_ * dt)
    end do
  end subroutine grid_derivative

  !> grid_derivative applied to the seven rows of f(7, n) at once.
  pure subroutine grid_derivative7(n, x, f, df)
    integer, intent(in) :: n
    real(dp), intent(in) :: x(n), f(7, n)
    real(dp), intent(out) :: df(7, n)
    integer :: i
    real(dp) :: cm, c0, cp
    df(:, 1) = (f(:, 2) - f(:, 1)) / (x(2) - x(1))
    df(:, n) = (f(:, n) - f(:, n - 1)) / (x(n) - x(n - 1))
    do i = 2, n - 1
      call parabola_weights(n, x, i, cm, c0, cp)
      df(:, i) = cm * f(:, i - 1) + c0 * f(:, i) + cp * f(:, i + 1)
    end do
  end subroutine grid_derivative7

  !> grid_derivative applied to each of the m rows of f(m, n).
  pure subroutine grid_derivative_rows(m, n, x, f, df)
    integer, intent(in) :: m, n
    real(dp), intent(in) :: x(n), f(m, n)
    real(dp), intent(out) :: df(m, n)
    integer :: c
    do c = 1, m
      call grid_derivative(n, x, f(c, :), df(c, :))
    end do
  end subroutine grid_derivative_rows

  !> Weights of the three-point parabola derivative at interior point i (1 < i < n):
  !> df_i = cm f_i-1 + c0 f_i + cp f_i+1 (grid_derivative7, hermite_polarised_block).
  pure subroutine parabola_weights(n, x, i, cm, c0, cp)
    integer, intent(in) :: n, i
    real(dp), intent(in) :: x(n)
    real(dp), intent(out) :: cm, c0, cp
    real(dp) :: dm, dp_, dt
    dm = x(i) - x(i - 1)
    dp_ = x(i + 1) - x(i)
    dt = x(i + 1) - x(i - 1)
    cm = -dp_ / (dm * dt)
    c0 = (dp_ - dm) / (dm * dp_)
    cp = dm / (dp_ * dt)
  end subroutine parabola_weights

  !> Full 4x4 matrix from the seven independent elements (same layout as K).
  pure subroutine build_k4(e, m)
    real(dp), intent(in) :: e(7)
    real(dp), intent(out) :: m(4, 4)
    m(1, 1) = e(1); m(1, 2) = e(2); m(1, 3) = e(3); m(1, 4) = e(4)
    m(2, 1) = e(2); m(2, 2) = e(1); m(2, 3) = e(7); m(2, 4) = -e(6)
    m(3, 1) = e(3); m(3, 2) = -e(7); m(3, 3) = e(1); m(3, 4) = e(5)
    m(4, 1) = e(4); m(4, 2) = e(6); m(4, 3) = -e(5); m(4, 4) = e(1)
  end subroutine build_k4

  !> Lower-boundary index (§8.4): largest i in [1, n-1] with max(|eta_I..V|)_i (tau_i - tau_i+1) > 5.
  pure function boundary_index(n, tau, k7) result(ib)
    integer, intent(in) :: n
    real(dp), intent(in) :: tau(n), k7(:, :)
    integer :: ib, i
    real(dp) :: a(n)
    do i = 1, n
      a(i) = max(abs(k7(1, i)), abs(k7(2, i)), abs(k7(3, i)), abs(k7(4, i)))
    end do
    ib = last_thick_layer(n, tau, a, n - 1)
  end function boundary_index

  !> Largest i in [1, i0] with a_i (tau_i - tau_i+1) > 5 (a: an absorption per unit tau5); 1 if none.
  pure function last_thick_layer(n, tau, a, i0) result(ib)
    integer, intent(in) :: n, i0
    real(dp), intent(in) :: tau(n), a(n)
    integer :: ib, i
    ib = 1
    do i = min(i0, n - 1), 1, -1
      if (a(i) * (tau(i) - tau(i + 1)) > tau_thick) then
        ib = i
        return
      end if
    end do
  end function last_thick_layer

  !> Absorption of the least and of the most absorbed polarisation mode, eta_I -+ sqrt(eta_Q^2 + eta_U^2
  !> + eta_V^2): the extreme eigenvalues of K's symmetric part, which bound the real parts of K's
  !> eigenvalues (the magneto-optical terms are K's antisymmetric part).
  pure subroutine mode_absorption(e, least, most)
    real(dp), intent(in) :: e(7)
    real(dp), intent(out) :: least, most
    real(dp) :: p
    p = sqrt(e(2) * e(2) + e(3) * e(3) + e(4) * e(4))
    least = abs(e(1)) - p
    most = abs(e(1)) + p
  end subroutine mode_absorption

  !> The boundary index for modes thick at different depths. boundary_index's ib (SIR's rule) asks only
  !> the most absorbed mode to be thick; in a line split by a strong field one circular polarisation is
  !> absorbed by a sigma component, the other nearly by the continuum alone, and for that mode the
  !> diffusion start K'^-1 e1 S' extrapolates S linearly over its unit optical depth. Where S falls
  !> outwards (a photosphere) that start is fair (SIR's results, kept); where S rises outwards (a
  !> chromospheric rise) the extrapolation runs through the temperature minimum towards ever smaller and
  !> then negative values (Stokes I of Ca II 8542 came out at -30 I_c in hot magnetic chromospheres).
  !> So ib is kept unless the least absorbed mode is thin over the layer ((eta_I - |eta_pol|)_ib
  !> (tau_ib - tau_ib+1) < tau_mode) AND S rises outwards at ib (dS/dx < 0, x = log tau5); then the
  !> start moves down to the largest i with (eta_I - |eta_pol|)_i (tau_i - tau_i+1) > 5, where every
  !> mode is thick, and the steps above it are sub-divided (refine_plan).
  pure function boundary_index_modes(n, x, tau, k7, s, ib) result(ibm)
    integer, intent(in) :: n, ib
    real(dp), intent(in) :: x(n), tau(n), k7(:, :), s(n)
    integer :: ibm, i
    real(dp) :: least(n), most, cm, c0, cp, dsb
    ibm = ib
    if (ib <= 1 .or. ib >= n) return
    call mode_absorption(k7(:, ib), least(ib), most)
    if (least(ib) * (tau(ib) - tau(ib + 1)) >= tau_mode) return
    call parabola_weights(n, x, ib, cm, c0, cp)
    dsb = cm * s(ib - 1) + c0 * s(ib) + cp * s(ib + 1)
    if (.not. (dsb < 0.0_dp)) return
    do i = 1, ib - 1
      call mode_absorption(k7(:, i), least(i), most)
    end do
    ibm = last_thick_layer(n, tau, least, ib - 1)
  end function boundary_index_modes

  !> Sub-steps where the polarisation modes are thick at different depths (module header): the grid
  !> points 1..ib are kept; every step (i-1, i) above ib is divided into m_i equal steps in x, m_i the
  !> power of 2 (1 ... 2**max_sub_log2) at or above most absorption x (tau_i-1 - tau_i) / sub_thick; k7, S
  !> and the source-vector excess linear in x within the step, ltau exact. Refined point p lies at
  !> the fraction t(p) of the step from original point j0(p) to j0(p) + 1 (t = 0: the point j0 itself);
  !> pos(i) is the refined index of original point i.
  pure subroutine refine_plan(n, tau, k7, ib, nr, j0, t, pos)
    integer, intent(in) :: n, ib
    real(dp), intent(in) :: tau(n), k7(7, n)
    integer, intent(out) :: nr
    integer, allocatable, intent(out) :: j0(:), pos(:)
    real(dp), allocatable, intent(out) :: t(:)
    integer :: m(n), i, k, p
    real(dp) :: l0, m0_, l1, m1_, th
    m = 1
    do i = ib + 1, n
      call mode_absorption(k7(:, i - 1), l0, m0_)
      call mode_absorption(k7(:, i), l1, m1_)
      th = max(m0_, m1_) * (tau(i - 1) - tau(i)) / sub_thick
      if (.not. (th <= 2.0_dp**max_sub_log2)) th = 2.0_dp**max_sub_log2   ! also NaN
      if (th > 1.0_dp) m(i) = 2**min(max_sub_log2, ceiling(log(th) / log(2.0_dp)))
    end do
    nr = ib + sum(m(ib + 1:n))
    allocate(j0(nr), t(nr), pos(n))
    do p = 1, ib
      j0(p) = p
      t(p) = 0.0_dp
      pos(p) = p
    end do
    p = ib
    do i = ib + 1, n
      do k = 1, m(i)
        p = p + 1
        if (k < m(i)) then
          j0(p) = i - 1
          t(p) = real(k, dp) / real(m(i), dp)
        else
          j0(p) = i
          t(p) = 0.0_dp
        end if
      end do
      pos(i) = p
    end do
  end subroutine refine_plan

  !> Rows f(m, n) at the refined points of refine_plan (linear in x within each step).
  pure subroutine refine_rows(m, n, f, nr, j0, t, fr)
    integer, intent(in) :: m, n, nr, j0(nr)
    real(dp), intent(in) :: f(m, n), t(nr)
    real(dp), allocatable, intent(out) :: fr(:, :)
    integer :: p
    allocate(fr(m, nr))
    do p = 1, nr
      if (t(p) > 0.0_dp) then
        fr(:, p) = (1.0_dp - t(p)) * f(:, j0(p)) + t(p) * f(:, j0(p) + 1)
      else
        fr(:, p) = f(:, j0(p))
      end if
    end do
  end subroutine refine_rows

  !> x, ltau (exact: ltau = ln10 10**x), k7 and s at the refined points of refine_plan.
  pure subroutine refine_columns(n, x, ltau, k7, s, nr, j0, t, xr, lr, kr, sr)
    integer, intent(in) :: n, nr, j0(nr)
    real(dp), intent(in) :: x(n), ltau(n), k7(7, n), s(n), t(nr)
    real(dp), allocatable, intent(out) :: xr(:), lr(:), kr(:, :), sr(:)
    real(dp), allocatable :: s2(:, :)
    integer :: p
    real(dp) :: dx
    allocate(xr(nr), lr(nr))
    do p = 1, nr
      if (t(p) > 0.0_dp) then
        dx = t(p) * (x(j0(p) + 1) - x(j0(p)))
        xr(p) = x(j0(p)) + dx
        lr(p) = ltau(j0(p)) * 10.0_dp**dx
      else
        xr(p) = x(j0(p))
        lr(p) = ltau(j0(p))
      end if
    end do
    call refine_rows(7, n, k7, nr, j0, t, kr)
    call refine_rows(1, n, reshape(s, [1, n]), nr, j0, t, s2)
    sr = s2(1, :)
  end subroutine refine_columns

  !> The transpose of refine_rows: gradients g(a, m, nr) at the refined points added onto gbar(a, m, n).
  pure subroutine fold_rows(a, m, n, nr, j0, t, g, gbar)
    integer, intent(in) :: a, m, n, nr, j0(nr)
    real(dp), intent(in) :: t(nr), g(a, m, nr)
    real(dp), intent(inout) :: gbar(a, m, n)
    integer :: p
    do p = 1, nr
      if (t(p) > 0.0_dp) then
        gbar(:, :, j0(p)) = gbar(:, :, j0(p)) + (1.0_dp - t(p)) * g(:, :, p)
        gbar(:, :, j0(p) + 1) = gbar(:, :, j0(p) + 1) + t(p) * g(:, :, p)
      else
        gbar(:, :, j0(p)) = gbar(:, :, j0(p)) + g(:, :, p)
      end if
    end do
  end subroutine fold_rows

  !> Solve the 4x4 system a y = b by Gaussian elimination with partial pivoting (a, b destroyed).
  pure subroutine solve4(a, b, ierr)
    real(dp), intent(inout) :: a(4, 4), b(4)
    integer, intent(out) :: ierr
    integer :: k, p, i
    real(dp) :: piv, f, t(4), tb
    ierr = err_ok
    do k = 1, 3
      p = k
      piv = abs(a(k, k))
      do i = k + 1, 4
        if (abs(a(i, k)) > piv) then
          piv = abs(a(i, k))
          p = i
        end if
      end do
      if (.not. (piv > 0.0_dp) .or. piv > huge(piv)) then
        ierr = err_singular
        return
      end if
      if (p /= k) then
        t = a(k, :); a(k, :) = a(p, :); a(p, :) = t
        tb = b(k); b(k) = b(p); b(p) = tb
      end if
      do i = k + 1, 4
        f = a(i, k) / a(k, k)
        a(i, k + 1:4) = a(i, k + 1:4) - f * a(k, k + 1:4)
        b(i) = b(i) - f * b(k)
      end do
    end do
    if (.not. (abs(a(4, 4)) > 0.0_dp)) then
      ierr = err_singular
      return
    end if
    b(4) = b(4) / a(4, 4)
    b(3) = (b(3) - a(3, 4) * b(4)) / a(3, 3)
    b(2) = (b(2) - a(2, 3) * b(3) - a(2, 4) * b(4)) / a(2, 2)
    b(1) = (b(1) - a(1, 2) * b(2) - a(1, 3) * b(3) - a(1, 4) * b(4)) / a(1, 1)
    if (.not. all(abs(b) <= huge(1.0_dp))) ierr = err_singular
  end subroutine solve4

  !> Emergent Stokes vector of the polarised RTE (§8.3-§8.6).
  !>
  !> n depths, x = log10 tau5 (deepest first, strictly decreasing), ltau = ln10 * 10**x (the factor
  !> turning K into K'), k7(7, n) the propagation-matrix elements in units of kappa5, s(n) the source
  !> function. Returns stokes(4) at the top grid point; optionally ib (the boundary index) and
  !> stokes_depth(4, n) (I at every depth; rows below ib hold the diffusion value of ib). sv(4, n),
  !> optional: the source-vector excess (module header).
  pure subroutine hermite_polarised(n, x, ltau, k7, s, stokes, ierr, ib_out, stokes_depth, sv)
    integer, intent(in) :: n
    real(dp), intent(in) :: x(n), ltau(n), k7(7, n), s(n)
    real(dp), intent(out) :: stokes(4)
    integer, intent(out) :: ierr
    integer, intent(out), optional :: ib_out
    real(dp), intent(out), optional :: stokes_depth(4, n)
    real(dp), intent(in), optional :: sv(4, n)
    real(dp), allocatable :: xr(:), lr(:), kr(:, :), sr(:), svr(:, :), sdr(:, :), t(:)
    integer, allocatable :: j0(:), pos(:)
    integer :: ib, ibm, nr

    ! (n < 2 is polarised_on_grid's error: both boundary indices are then 1)
    ib = boundary_index(n, ltau / ln10, k7)
    ibm = boundary_index_modes(n, x, ltau / ln10, k7, s, ib)
    if (present(ib_out)) ib_out = ibm
    if (ibm == ib) then
      call polarised_on_grid(n, x, ltau, k7, s, ib, stokes, ierr, stokes_depth, sv)
      return
    end if
    call refine_plan(n, ltau / ln10, k7, ibm, nr, j0, t, pos)
    call refine_columns(n, x, ltau, k7, s, nr, j0, t, xr, lr, kr, sr)
    allocate(sdr(4, nr))
    if (present(sv)) then
      call refine_rows(4, n, sv, nr, j0, t, svr)
      call polarised_on_grid(nr, xr, lr, kr, sr, ibm, stokes, ierr, sdr, svr)
    else
      call polarised_on_grid(nr, xr, lr, kr, sr, ibm, stokes, ierr, sdr)
    end if
    if (present(stokes_depth)) stokes_depth = sdr(:, pos)
  end subroutine hermite_polarised

  !> hermite_polarised on the given grid from the given boundary index ib.
  pure subroutine polarised_on_grid(n, x, ltau, k7, s, ib, stokes, ierr, stokes_depth, sv)
    integer, intent(in) :: n, ib
    real(dp), intent(in) :: x(n), ltau(n), k7(7, n), s(n)
    real(dp), intent(out) :: stokes(4)
    integer, intent(out) :: ierr
    real(dp), intent(out), optional :: stokes_depth(4, n)
    real(dp), intent(in), optional :: sv(4, n)
    real(dp) :: kp7(7, n), dk7(7, n), ds(n), dsv(4, n)
    real(dp) :: kp0(4, 4), kp1(4, 4), m0(4, 4), m1(4, 4), d4(4, 4), a(4, 4)
    real(dp) :: y(4), r(4), v(4), h, h2, h12
    integer :: i
    logical :: has_sv

    ierr = err_ok
    stokes = 0.0_dp
    if (n < 2) then
      ierr = err_bad_size
      return
    end if
    do i = 1, n
      kp7(:, i) = ltau(i) * k7(:, i)
    end do
    call grid_derivative7(n, x, kp7, dk7)
    call grid_derivative(n, x, s, ds)
    has_sv = present(sv)
    if (has_sv) call grid_derivative_rows(4, n, x, sv, dsv)

    ! diffusion approximation at the boundary: I = S e1 + sv + K'^-1 (e1 S' + sv')
    call build_k4(kp7(:, ib), kp1)
    call build_k4(dk7(:, ib), d4)
    m1 = d4 + matmul(kp1, kp1)
    a = kp1
    y = [ds(ib), 0.0_dp, 0.0_dp, 0.0_dp]
    if (has_sv) y = y + dsv(:, ib)
    call solve4(a, y, ierr)
    if (ierr /= err_ok) return
    y(1) = y(1) + s(ib)
    if (has_sv) y = y + sv(:, ib)
    if (present(stokes_depth)) then
      do i = 1, ib
        stokes_depth(:, i) = y
      end do
    end if

    do i = ib + 1, n
      kp0 = kp1
      m0 = m1
      call build_k4(kp7(:, i), kp1)
      call build_k4(dk7(:, i), d4)
      m1 = d4 + matmul(kp1, kp1)
      h = x(i) - x(i - 1)
      h2 = 0.5_dp * h
      h12 = h * h / 12.0_dp
      ! right-hand side: I + h/2 I' + h^2/12 I'' at i-1, plus the source terms at i
      v = y
      v(1) = v(1) - s(i - 1)
      r = y + h2 * matmul(kp0, v) + h12 * (matmul(m0, v) - kp0(:, 1) * ds(i - 1)) &
          - h2 * kp1(:, 1) * s(i) + h12 * (m1(:, 1) * s(i) + kp1(:, 1) * ds(i))
      if (has_sv) r = r - h2 * (matmul(kp0, sv(:, i - 1)) + matmul(kp1, sv(:, i))) &
                    - h12 * (matmul(m0, sv(:, i - 1)) - matmul(m1, sv(:, i)) + matmul(kp0, dsv(:, i - 1)) &
                             - matmul(kp1, dsv(:, i)))
      a = h12 * m1 - h2 * kp1
      a(1, 1) = a(1, 1) + 1.0_dp
      a(2, 2) = a(2, 2) + 1.0_dp
      a(3, 3) = a(3, 3) + 1.0_dp
      a(4, 4) = a(4, 4) + 1.0_dp
      call solve4(a, r, ierr)
      if (ierr /= err_ok) return
      y = r
      if (present(stokes_depth)) stokes_depth(:, i) = y
    end do
    stokes = y
  end subroutine polarised_on_grid

  !> Scalar (non-magnetic) analogue of hermite_polarised (§8.7): K = eta_I only, same boundary rule;
  !> sv(n), optional: the source-function excess (the scalar source-vector excess, module header).
  pure subroutine hermite_scalar(n, x, ltau, eta, s, intensity, ierr, ib_out, i_depth, sv)
    integer, intent(in) :: n
    real(dp), intent(in) :: x(n), ltau(n), eta(n), s(n)
    real(dp), intent(out) :: intensity
    integer, intent(out) :: ierr
    integer, intent(out), optional :: ib_out
    real(dp), intent(out), optional :: i_depth(n)
    real(dp), intent(in), optional :: sv(n)
    real(dp) :: kp(n), dk(n), ds(n), m(n), tau(n), dsv(n)
    real(dp) :: y, h, h2, h12, e
    integer :: i, ib
    logical :: has_sv

    ierr = err_ok
    intensity = 0.0_dp
    if (n < 2) then
      ierr = err_bad_size
      return
    end if
    kp = ltau * eta
    call grid_derivative(n, x, kp, dk)
    call grid_derivative(n, x, s, ds)
    m = dk + kp * kp
    tau = ltau / ln10
    ib = 1
    do i = n - 1, 1, -1
      if (abs(eta(i)) * (tau(i) - tau(i + 1)) > tau_thick) then
        ib = i
        exit
      end if
    end do
    if (present(ib_out)) ib_out = ib
    if (.not. (abs(kp(ib)) > 0.0_dp)) then
      ierr = err_singular
      return
    end if
    has_sv = present(sv)
    if (has_sv) then
      call grid_derivative(n, x, sv, dsv)
      y = s(ib) + sv(ib) + (ds(ib) + dsv(ib)) / kp(ib)
    else
      y = s(ib) + ds(ib) / kp(ib)
    end if
    if (present(i_depth)) i_depth(1:ib) = y
    do i = ib + 1, n
      h = x(i) - x(i - 1)
      h2 = 0.5_dp * h
      h12 = h * h / 12.0_dp
      e = 0.0_dp
      if (has_sv) e = -h2 * (kp(i - 1) * sv(i - 1) + kp(i) * sv(i)) &
                    - h12 * (m(i - 1) * sv(i - 1) - m(i) * sv(i) + kp(i - 1) * dsv(i - 1) - kp(i) * dsv(i))
      y = (y + h2 * kp(i - 1) * (y - s(i - 1)) + h12 * (m(i - 1) * (y - s(i - 1)) - kp(i - 1) * ds(i - 1)) &
           - h2 * kp(i) * s(i) + h12 * (m(i) * s(i) + kp(i) * ds(i)) + e) &
          / (1.0_dp - h2 * kp(i) + h12 * m(i))
      if (present(i_depth)) i_depth(i) = y
    end do
    intensity = y
  end subroutine hermite_scalar

  ! ------------------------------------------------------------------------------------------------
  ! Wavelength-blocked forward solution (pyinv, issue 9): the same Hermitian scheme as
  ! hermite_polarised for nb wavelengths at once, arrays laid out wavelength-first so that every
  ! depth step is a loop over wavelengths the compiler vectorises; the 4x4 systems are solved by
  ! unpivoted elimination, and any wavelength whose pivot is tiny relative to its row is solved
  ! again by hermite_polarised (partial pivoting). Results agree with hermite_polarised to rounding.
  ! ------------------------------------------------------------------------------------------------

  !> Emergent Stokes vectors stokes(nb, 4) of nb wavelengths sharing the depth grid x, ltau and the
  !> source function s(n); k7(nb, 7, n) the propagation-matrix elements (as hermite_polarised's k7).
  !> Meant for blocks of a few tens of wavelengths (the work arrays are nb x 16 per depth).
  pure subroutine hermite_polarised_block(n, x, ltau, nb, k7, s, stokes, ierr)
    integer, intent(in) :: n, nb
    real(dp), intent(in) :: x(n), ltau(n), k7(nb, 7, n), s(n)
    real(dp), intent(out) :: stokes(nb, 4)
    integer, intent(out) :: ierr
    real(dp) :: kpm(nb, 7), kpc(nb, 7), kpn(nb, 7), dk(nb, 7), ds(n), tau(n)
    real(dp) :: k0(nb, 4, 4), k1(nb, 4, 4), m0(nb, 4, 4), m1(nb, 4, 4), a(nb, 4, 4), y(nb, 4), r(nb, 4), &
                y0(nb, 4), v1
    real(dp) :: h, h2, h12, cm, c0, cp, em
    integer :: ib(nb), i, w, i0, c, q
    logical :: bad(nb), act(nb)

    ierr = err_ok
    stokes = 0.0_dp
    if (n < 2) then
      ierr = err_bad_size
      return
    end if
    call grid_derivative(n, x, s, ds)
    tau = ltau / ln10
    ! lower boundary per wavelength (boundary_index)
    ib = 1
    do i = 1, n - 1
      do w = 1, nb
        em = max(abs(k7(w, 1, i)), abs(k7(w, 2, i)), abs(k7(w, 3, i)), abs(k7(w, 4, i)))
        if (em * (tau(i) - tau(i + 1)) > tau_thick) ib(w) = i
      end do
    end do
    bad = .false.
    ! wavelengths whose polarisation modes are thick at different depths: hermite_polarised (sub-steps)
    do w = 1, nb
      if (boundary_index_modes(n, x, tau, k7(w, :, :), s, ib(w)) /= ib(w)) then
        bad(w) = .true.
        ib(w) = n
      end if
    end do
    i0 = minval(ib)
    y = 0.0_dp
    y0 = 0.0_dp
    kpc = ltau(i0) * k7(:, :, i0)
    if (i0 > 1) kpm = ltau(i0 - 1) * k7(:, :, i0 - 1)
    do i = i0, n
      ! K' at i - 1, i, i + 1 (rolling) and dK'/dx at i (grid_derivative7's coefficients)
      if (i < n) kpn = ltau(i + 1) * k7(:, :, i + 1)
      if (i == 1) then
        dk = (kpn - kpc) / (x(2) - x(1))
      else if (i == n) then
        dk = (kpc - kpm) / (x(n) - x(n - 1))
      else
        call parabola_weights(n, x, i, cm, c0, cp)
        dk = cm * kpm + c0 * kpc + cp * kpn
      end if
      call k_and_m(nb, kpc, dk, k1, m1)
      act = ib == i
      if (any(act)) then
        ! diffusion approximation at the boundary: K'_b y = e1 S'_b, y(1) += S_b
        a = k1
        r = 0.0_dp
        r(:, 1) = ds(i)
        call solve4_block(nb, a, r, bad, act)
        r(:, 1) = r(:, 1) + s(i)
        do c = 1, 4
          y0(:, c) = merge(r(:, c), y0(:, c), act)
        end do
      end if
      if (i > i0) then
        h = x(i) - x(i - 1)
        h2 = 0.5_dp * h
        h12 = h * h / 12.0_dp
        ! r = y + h/2 K0 v + h^2/12 (M0 v - K0 e1 S'_{i-1}) - h/2 K1 e1 S_i + h^2/12 (M1 e1 S_i + K1 e1 S'_i),
        ! v = y - S_{i-1} e1
        do q = 1, 4
          do w = 1, nb
            v1 = y(w, 1) - s(i - 1)
            r(w, q) = y(w, q) + h2 * (k0(w, q, 1) * v1 + k0(w, q, 2) * y(w, 2) + k0(w, q, 3) * y(w, 3) &
                      + k0(w, q, 4) * y(w, 4)) + h12 * (m0(w, q, 1) * v1 + m0(w, q, 2) * y(w, 2) &
                      + m0(w, q, 3) * y(w, 3) + m0(w, q, 4) * y(w, 4) - k0(w, q, 1) * ds(i - 1)) &
                      - h2 * k1(w, q, 1) * s(i) + h12 * (m1(w, q, 1) * s(i) + k1(w, q, 1) * ds(i))
          end do
        end do
        a = h12 * m1 - h2 * k1
        do c = 1, 4
          a(:, c, c) = a(:, c, c) + 1.0_dp
        end do
        act = ib < i
        call solve4_block(nb, a, r, bad, act)
        do c = 1, 4
          y(:, c) = merge(r(:, c), y(:, c), act)
        end do
      end if
      act = ib == i
      do c = 1, 4
        y(:, c) = merge(y0(:, c), y(:, c), act)
      end do
      k0 = k1
      m0 = m1
      kpm = kpc
      kpc = kpn
    end do
    stokes = y
    ! wavelengths whose elimination met a tiny pivot: the pivoting solver
    do w = 1, nb
      if (.not. bad(w)) cycle
      call hermite_polarised(n, x, ltau, k7(w, :, :), s, r(w, :), ierr)
      if (ierr /= err_ok) return
      stokes(w, :) = r(w, :)
    end do
    if (.not. all(abs(stokes) <= huge(1.0_dp))) ierr = err_singular
  end subroutine hermite_polarised_block

  !> K'(nb, 4, 4) from its seven elements kp(nb, 7) (build_k4's layout) and M = dK'/dx + K'^2.
  pure subroutine k_and_m(nb, kp, dk, k, m)
    integer, intent(in) :: nb
    real(dp), intent(in) :: kp(nb, 7), dk(nb, 7)
    real(dp), intent(out) :: k(nb, 4, 4), m(nb, 4, 4)
    integer :: r, c, q
    call build_k4_block(nb, kp, k)
    call build_k4_block(nb, dk, m)
    do c = 1, 4
      do r = 1, 4
        do q = 1, 4
          m(:, r, c) = m(:, r, c) + k(:, r, q) * k(:, q, c)
        end do
      end do
    end do
  end subroutine k_and_m

  !> build_k4 for nb matrices at once.
  pure subroutine build_k4_block(nb, e, k)
    integer, intent(in) :: nb
    real(dp), intent(in) :: e(nb, 7)
    real(dp), intent(out) :: k(nb, 4, 4)
    k(:, 1, 1) = e(:, 1); k(:, 1, 2) = e(:, 2); k(:, 1, 3) = e(:, 3); k(:, 1, 4) = e(:, 4)
    k(:, 2, 1) = e(:, 2); k(:, 2, 2) = e(:, 1); k(:, 2, 3) = e(:, 7); k(:, 2, 4) = -e(:, 6)
    k(:, 3, 1) = e(:, 3); k(:, 3, 2) = -e(:, 7); k(:, 3, 3) = e(:, 1); k(:, 3, 4) = e(:, 5)
    k(:, 4, 1) = e(:, 4); k(:, 4, 2) = e(:, 6); k(:, 4, 3) = -e(:, 5); k(:, 4, 4) = e(:, 1)
  end subroutine build_k4_block

  !> Solve a(w) y(w) = b(w) for nb 4x4 systems by unpivoted elimination (b overwritten by y; loops
  !> over w innermost). An active system whose pivot is below 1e-8 of its row's largest element, or
  !> whose solution is not finite, is flagged in bad (its b is then meaningless).
  pure subroutine solve4_block(nb, a, b, bad, active)
    integer, intent(in) :: nb
    real(dp), intent(inout) :: a(nb, 4, 4), b(nb, 4)
    logical, intent(inout) :: bad(nb)
    logical, intent(in) :: active(nb)
    real(dp) :: f, piv, rowmax, ip(nb)
    integer :: w, k, i, j
    do k = 1, 3
      do w = 1, nb
        piv = a(w, k, k)
        rowmax = max(abs(a(w, k, 1)), abs(a(w, k, 2)), abs(a(w, k, 3)), abs(a(w, k, 4)))
        bad(w) = bad(w) .or. (active(w) .and. .not. (abs(piv) > 1.0e-8_dp * rowmax))
        ip(w) = 1.0_dp / merge(piv, 1.0_dp, piv /= 0.0_dp)
      end do
      do i = k + 1, 4
        do w = 1, nb
          f = a(w, i, k) * ip(w)
          do j = k + 1, 4
            a(w, i, j) = a(w, i, j) - f * a(w, k, j)
          end do
          b(w, i) = b(w, i) - f * b(w, k)
        end do
      end do
    end do
    do w = 1, nb
      bad(w) = bad(w) .or. (active(w) .and. a(w, 4, 4) == 0.0_dp)
      b(w, 4) = b(w, 4) / merge(a(w, 4, 4), 1.0_dp, a(w, 4, 4) /= 0.0_dp)
      b(w, 3) = (b(w, 3) - a(w, 3, 4) * b(w, 4)) / merge(a(w, 3, 3), 1.0_dp, a(w, 3, 3) /= 0.0_dp)
      b(w, 2) = (b(w, 2) - a(w, 2, 3) * b(w, 3) - a(w, 2, 4) * b(w, 4)) / merge(a(w, 2, 2), 1.0_dp, a(w, 2, 2) /= 0.0_dp)
      b(w, 1) = (b(w, 1) - a(w, 1, 2) * b(w, 2) - a(w, 1, 3) * b(w, 3) - a(w, 1, 4) * b(w, 4)) &
                / merge(a(w, 1, 1), 1.0_dp, a(w, 1, 1) /= 0.0_dp)
      bad(w) = bad(w) .or. (active(w) .and. .not. (abs(b(w, 1)) + abs(b(w, 2)) + abs(b(w, 3)) + abs(b(w, 4)) &
                                                    <= huge(1.0_dp)))
    end do
  end subroutine solve4_block

  ! ------------------------------------------------------------------------------------------------
  ! Adjoint (reverse-mode derivative) of the Hermitian formal solution, for response functions.
  !
  ! With the step matrices A_i = 1 + h^2/12 M_i - h/2 K'_i and B_i-1 = 1 + h/2 K'_i-1 + h^2/12 M_i-1
  ! (M = dK'/dx + K'^2), the row vectors Z_i = W_i A_i^-1, W_i-1 = Z_i B_i-1 (W_n = 1) are the
  ! sensitivities of the emergent vector to the right-hand side of step i. Every matrix input enters
  ! through outer products, so the gradients with respect to K'_j, dK'/dx_j, S_j and dS/dx_j follow
  ! from P_j = h'^2/12 Z_j+1 - h^2/12 Z_j and Q_j = h'/2 Z_j+1 + h/2 Z_j + P_j K'_j (primes: step
  ! j+1; u_j = I_j - S_j e1):
  !   dK'_j: Q_j (x) u_j + P_j (x) (K'_j u_j - S'_j e1)      d(dK'/dx)_j: P_j (x) u_j
  !   S_j:  -(h'/2 Z_j+1 + h/2 Z_j) K'_j e1 - P_j M_j e1       S'_j: -P_j K'_j e1
  ! plus the diffusion start I_b = S_b e1 + K'_b^-1 e1 S'_b. The grid derivatives are linear, so their
  ! transposes carry the gradients back to K' and S; the boundary index is held fixed (piecewise
  ! constant). The result is the exact derivative of hermite_polarised's discrete output.
  ! ------------------------------------------------------------------------------------------------

  !> LU factorisation with partial pivoting of a 4x4 matrix, the same elimination as solve4
  !> (multipliers stored below the diagonal, piv(k) = row exchanged with k at step k).
  pure subroutine lu4(a, piv, ierr)
    real(dp), intent(inout) :: a(4, 4)
    integer, intent(out) :: piv(3)
    integer, intent(out) :: ierr
    integer :: k, p, i
    real(dp) :: pv, f, t(4)
    ierr = err_ok
    do k = 1, 3
      p = k
      pv = abs(a(k, k))
      do i = k + 1, 4
        if (abs(a(i, k)) > pv) then
          pv = abs(a(i, k))
          p = i
        end if
      end do
      piv(k) = p
      if (.not. (pv > 0.0_dp) .or. pv > huge(pv)) then
        ierr = err_singular
        return
      end if
      if (p /= k) then
        t = a(k, :); a(k, :) = a(p, :); a(p, :) = t
      end if
      do i = k + 1, 4
        f = a(i, k) / a(k, k)
        a(i, k + 1:4) = a(i, k + 1:4) - f * a(k, k + 1:4)
        a(i, k) = f
      end do
    end do
    if (.not. (abs(a(4, 4)) > 0.0_dp)) ierr = err_singular
  end subroutine lu4

  !> Solve a y = b with the factors of lu4 (b overwritten by y).
  pure subroutine lu4_solve(lu, piv, b)
    real(dp), intent(in) :: lu(4, 4)
    integer, intent(in) :: piv(3)
    real(dp), intent(inout) :: b(4)
    real(dp) :: tb
    integer :: k, i
    do k = 1, 3
      if (piv(k) /= k) then
        tb = b(k); b(k) = b(piv(k)); b(piv(k)) = tb
      end if
    end do
    do k = 1, 3
      do i = k + 1, 4
        b(i) = b(i) - lu(i, k) * b(k)
      end do
    end do
    b(4) = b(4) / lu(4, 4)
    b(3) = (b(3) - lu(3, 4) * b(4)) / lu(3, 3)
    b(2) = (b(2) - lu(2, 3) * b(3) - lu(2, 4) * b(4)) / lu(2, 2)
    b(1) = (b(1) - lu(1, 2) * b(2) - lu(1, 3) * b(3) - lu(1, 4) * b(4)) / lu(1, 1)
  end subroutine lu4_solve

  !> Row-vector solve for four right-hand sides at once: z(s, :) a = w(s, :), i.e. z = w a^-1,
  !> with the factors of lu4 (P a = L U, so a^T = U^T L^T P).
  pure subroutine lu4_solve_rows(lu, piv, w, z)
    real(dp), intent(in) :: lu(4, 4), w(4, 4)
    integer, intent(in) :: piv(3)
    real(dp), intent(out) :: z(4, 4)
    real(dp) :: t(4)
    integer :: k
    ! U^T t = w (forward), column index of z = row index of the system
    z(:, 1) = w(:, 1) / lu(1, 1)
    z(:, 2) = (w(:, 2) - lu(1, 2) * z(:, 1)) / lu(2, 2)
    z(:, 3) = (w(:, 3) - lu(1, 3) * z(:, 1) - lu(2, 3) * z(:, 2)) / lu(3, 3)
    z(:, 4) = (w(:, 4) - lu(1, 4) * z(:, 1) - lu(2, 4) * z(:, 2) - lu(3, 4) * z(:, 3)) / lu(4, 4)
    ! L^T r = t (backward, unit diagonal)
    z(:, 3) = z(:, 3) - lu(4, 3) * z(:, 4)
    z(:, 2) = z(:, 2) - lu(3, 2) * z(:, 3) - lu(4, 2) * z(:, 4)
    z(:, 1) = z(:, 1) - lu(2, 1) * z(:, 2) - lu(3, 1) * z(:, 3) - lu(4, 1) * z(:, 4)
    ! undo the row exchanges in reverse order
    do k = 3, 1, -1
      if (piv(k) /= k) then
        t = z(:, k); z(:, k) = z(:, piv(k)); z(:, piv(k)) = t
      end if
    end do
  end subroutine lu4_solve_rows

  !> g(:, e) += gradient of <z, m(e)> over the seven independent elements for the outer products
  !> z(s, :) (x) u (one row vector per output s), m built as in build_k4.
  pure subroutine add_outer7(z, u, g)
    real(dp), intent(in) :: z(4, 4), u(4)
    real(dp), intent(inout) :: g(4, 7)
    g(:, 1) = g(:, 1) + z(:, 1) * u(1) + z(:, 2) * u(2) + z(:, 3) * u(3) + z(:, 4) * u(4)
    g(:, 2) = g(:, 2) + z(:, 1) * u(2) + z(:, 2) * u(1)
    g(:, 3) = g(:, 3) + z(:, 1) * u(3) + z(:, 3) * u(1)
    g(:, 4) = g(:, 4) + z(:, 1) * u(4) + z(:, 4) * u(1)
    g(:, 5) = g(:, 5) + z(:, 3) * u(4) - z(:, 4) * u(3)
    g(:, 6) = g(:, 6) + z(:, 4) * u(2) - z(:, 2) * u(4)
    g(:, 7) = g(:, 7) + z(:, 2) * u(3) - z(:, 3) * u(2)
  end subroutine add_outer7

  !> fbar(:, j) += sum_i G(i, j) g(:, i): transpose of grid_derivative (rows i >= i0 of g nonzero).
  pure subroutine grid_derivative_adjoint(m, n, x, i0, g, fbar)
    integer, intent(in) :: m, n, i0
    real(dp), intent(in) :: x(n), g(m, n)
    real(dp), intent(inout) :: fbar(m, n)
    integer :: i
    real(dp) :: dm, dp_, dt, c
    if (i0 <= 1) then
      c = 1.0_dp / (x(2) - x(1))
      fbar(:, 1) = fbar(:, 1) - c * g(:, 1)
      fbar(:, 2) = fbar(:, 2) + c * g(:, 1)
    end if
    c = 1.0_dp / (x(n) - x(n - 1))
    fbar(:, n) = fbar(:, n) + c * g(:, n)
    fbar(:, n - 1) = fbar(:, n - 1) - c * g(:, n)
    do i = max(i0, 2), n - 1
      dm = x(i) - x(i - 1)
      dp_ = x(i + 1) - x(i)
      dt = x(i + 1) - x(i - 1)
      fbar(:, i - 1) = fbar(:, i - 1) - dp_ / (dm * dt) * g(:, i)
      fbar(:, i) = fbar(:, i) + (dp_ - dm) / (dm * dp_) * g(:, i)
      fbar(:, i + 1) = fbar(:, i + 1) + dm / (dp_ * dt) * g(:, i)
    end do
  end subroutine grid_derivative_adjoint

  !> hermite_polarised and the derivatives of its emergent vector: k7bar(s, e, j) = d stokes(s) /
  !> d k7(e, j), sbar(s, j) = d stokes(s) / d s(j) (boundary index held fixed). stokes equals
  !> hermite_polarised's result (same operations). kmin: lowest depth with nonzero derivatives.
  !> Optional, together: sv(4, n) the source-vector excess (as hermite_polarised) and its gradient
  !> svbar(s, c, j) = d stokes(s) / d sv(c, j).
  pure subroutine hermite_polarised_adjoint(n, x, ltau, k7, s, stokes, k7bar, sbar, kmin, ierr, sv, svbar)
    integer, intent(in) :: n
    real(dp), intent(in) :: x(n), ltau(n), k7(7, n), s(n)
    real(dp), intent(out) :: stokes(4), k7bar(4, 7, n), sbar(4, n)
    integer, intent(out) :: kmin, ierr
    real(dp), intent(in), optional :: sv(4, n)
    real(dp), intent(out), optional :: svbar(4, 4, n)
    real(dp), allocatable :: xr(:), lr(:), kr(:, :), sr(:), svr(:, :), t(:), kbr(:, :, :), sbr(:, :), svbr(:, :, :)
    integer, allocatable :: j0(:), pos(:)
    integer :: ib, ibm, nr, kminr

    ib = boundary_index(n, ltau / ln10, k7)
    ibm = boundary_index_modes(n, x, ltau / ln10, k7, s, ib)
    if (ibm == ib .or. n < 2) then
      call adjoint_on_grid(n, x, ltau, k7, s, ib, stokes, k7bar, sbar, kmin, ierr, sv, svbar)
      return
    end if
    ! sub-steps (hermite_polarised): the refined problem's gradients folded back through the
    ! interpolation (linear in k7, s and sv)
    call refine_plan(n, ltau / ln10, k7, ibm, nr, j0, t, pos)
    call refine_columns(n, x, ltau, k7, s, nr, j0, t, xr, lr, kr, sr)
    allocate(kbr(4, 7, nr), sbr(4, nr))
    k7bar = 0.0_dp
    sbar = 0.0_dp
    if (present(sv) .and. present(svbar)) then
      call refine_rows(4, n, sv, nr, j0, t, svr)
      allocate(svbr(4, 4, nr))
      call adjoint_on_grid(nr, xr, lr, kr, sr, ibm, stokes, kbr, sbr, kminr, ierr, svr, svbr)
      svbar = 0.0_dp
      call fold_rows(4, 4, n, nr, j0, t, svbr, svbar)
    else
      call adjoint_on_grid(nr, xr, lr, kr, sr, ibm, stokes, kbr, sbr, kminr, ierr)
    end if
    call fold_rows(4, 7, n, nr, j0, t, kbr, k7bar)
    call fold_rows(4, 1, n, nr, j0, t, reshape(sbr, [4, 1, nr]), sbar)
    kmin = max(1, ibm - 1)
  end subroutine hermite_polarised_adjoint

  !> hermite_polarised_adjoint on the given grid from the given boundary index ib.
  pure subroutine adjoint_on_grid(n, x, ltau, k7, s, ib, stokes, k7bar, sbar, kmin, ierr, sv, svbar)
    integer, intent(in) :: n, ib
    real(dp), intent(in) :: x(n), ltau(n), k7(7, n), s(n)
    real(dp), intent(out) :: stokes(4), k7bar(4, 7, n), sbar(4, n)
    integer, intent(out) :: kmin, ierr
    real(dp), intent(in), optional :: sv(4, n)
    real(dp), intent(out), optional :: svbar(4, 4, n)
    real(dp) :: kp7(7, n), dk7(7, n), ds(n), y(4, n), u(4), ku(4), dsv(4, n), dsvbar(4, 4, n)
    real(dp) :: kk(4, 4, n), mm(4, 4, n), lu(4, 4, n), d4(4, 4), a(4, 4)
    real(dp) :: dbar(4, 7, n), dsbar(4, n), w(4, 4), z(4, 4), zn(4, 4), p(4, 4), q(4, 4), bm(4, 4)
    real(dp) :: r(4), v(4), h(n), h2, h12, h2n, h12n
    integer :: piv(3, n), i, j, c
    logical :: has_sv

    ierr = err_ok
    stokes = 0.0_dp
    k7bar = 0.0_dp
    sbar = 0.0_dp
    kmin = 1
    if (n < 2) then
      ierr = err_bad_size
      return
    end if
    do i = 1, n
      kp7(:, i) = ltau(i) * k7(:, i)
    end do
    call grid_derivative7(n, x, kp7, dk7)
    call grid_derivative(n, x, s, ds)
    has_sv = present(sv) .and. present(svbar)
    if (has_sv) then
      call grid_derivative_rows(4, n, x, sv, dsv)
      svbar = 0.0_dp
      dsvbar = 0.0_dp
    end if
    kmin = max(1, ib - 1)

    ! ---- forward sweep (as hermite_polarised), keeping K', M, the LU factors and I
    call build_k4(kp7(:, ib), kk(:, :, ib))
    call build_k4(dk7(:, ib), d4)
    mm(:, :, ib) = d4 + matmul(kk(:, :, ib), kk(:, :, ib))
    lu(:, :, ib) = kk(:, :, ib)
    call lu4(lu(:, :, ib), piv(:, ib), ierr)
    if (ierr /= err_ok) return
    r = [ds(ib), 0.0_dp, 0.0_dp, 0.0_dp]
    if (has_sv) r = r + dsv(:, ib)
    call lu4_solve(lu(:, :, ib), piv(:, ib), r)
    if (.not. all(abs(r) <= huge(1.0_dp))) then
      ierr = err_singular
      return
    end if
    r(1) = r(1) + s(ib)
    if (has_sv) r = r + sv(:, ib)
    y(:, ib) = r
    h = 0.0_dp
    do i = ib + 1, n
      call build_k4(kp7(:, i), kk(:, :, i))
      call build_k4(dk7(:, i), d4)
      mm(:, :, i) = d4 + matmul(kk(:, :, i), kk(:, :, i))
      h(i) = x(i) - x(i - 1)
      h2 = 0.5_dp * h(i)
      h12 = h(i) * h(i) / 12.0_dp
      v = y(:, i - 1)
      v(1) = v(1) - s(i - 1)
      r = y(:, i - 1) + h2 * matmul(kk(:, :, i - 1), v) + h12 * (matmul(mm(:, :, i - 1), v) &
          - kk(:, 1, i - 1) * ds(i - 1)) - h2 * kk(:, 1, i) * s(i) &
          + h12 * (mm(:, 1, i) * s(i) + kk(:, 1, i) * ds(i))
      if (has_sv) r = r - h2 * (matmul(kk(:, :, i - 1), sv(:, i - 1)) + matmul(kk(:, :, i), sv(:, i))) &
                    - h12 * (matmul(mm(:, :, i - 1), sv(:, i - 1)) - matmul(mm(:, :, i), sv(:, i)) &
                             + matmul(kk(:, :, i - 1), dsv(:, i - 1)) - matmul(kk(:, :, i), dsv(:, i)))
      a = h12 * mm(:, :, i) - h2 * kk(:, :, i)
      a(1, 1) = a(1, 1) + 1.0_dp
      a(2, 2) = a(2, 2) + 1.0_dp
      a(3, 3) = a(3, 3) + 1.0_dp
      a(4, 4) = a(4, 4) + 1.0_dp
      lu(:, :, i) = a
      call lu4(lu(:, :, i), piv(:, i), ierr)
      if (ierr /= err_ok) return
      call lu4_solve(lu(:, :, i), piv(:, i), r)
      if (.not. all(abs(r) <= huge(1.0_dp))) then
        ierr = err_singular
        return
      end if
      y(:, i) = r
    end do
    stokes = y(:, n)

    ! ---- reverse sweep
    dbar = 0.0_dp
    dsbar = 0.0_dp
    w = 0.0_dp
    do c = 1, 4
      w(c, c) = 1.0_dp
    end do
    zn = 0.0_dp
    h2n = 0.0_dp
    h12n = 0.0_dp
    do j = n, ib, -1
      if (j > ib) then
        call lu4_solve_rows(lu(:, :, j), piv(:, j), w, z)
        h2 = 0.5_dp * h(j)
        h12 = h(j) * h(j) / 12.0_dp
      else
        z = 0.0_dp
        h2 = 0.0_dp
        h12 = 0.0_dp
      end if
      u = y(:, j)
      u(1) = u(1) - s(j)
      if (has_sv) u = u - sv(:, j)
      p = h12n * zn - h12 * z
      bm = h2n * zn + h2 * z
      q = bm + matmul(p, kk(:, :, j))
      ku = matmul(kk(:, :, j), u)
      ku(1) = ku(1) - ds(j)
      if (has_sv) then
        ! u = I - S e1 - sv; I' = K'u, I'' = D u + K'(K'u - e1 S' - sv'): sv as S e1, sv' as S' e1
        ku = ku - dsv(:, j)
        svbar(:, :, j) = -matmul(bm, kk(:, :, j)) - matmul(p, mm(:, :, j))
        dsvbar(:, :, j) = -matmul(p, kk(:, :, j))
      end if
      call add_outer7(q, u, k7bar(:, :, j))
      call add_outer7(p, ku, k7bar(:, :, j))
      call add_outer7(p, u, dbar(:, :, j))
      sbar(:, j) = -matmul(bm, kk(:, 1, j)) - matmul(p, mm(:, 1, j))
      dsbar(:, j) = -matmul(p, kk(:, 1, j))
      if (j > ib) then
        ! W_j-1 = Z_j B_j-1
        bm = h2 * kk(:, :, j - 1) + h12 * mm(:, :, j - 1)
        bm(1, 1) = bm(1, 1) + 1.0_dp
        bm(2, 2) = bm(2, 2) + 1.0_dp
        bm(3, 3) = bm(3, 3) + 1.0_dp
        bm(4, 4) = bm(4, 4) + 1.0_dp
        w = matmul(z, bm)
        zn = z
        h2n = h2
        h12n = h12
      end if
    end do
    ! diffusion start at ib: I_b = S_b e1 + sv_b + K'_b^-1 (e1 S'_b + sv'_b) (u_b = K'_b^-1 (e1 S'_b + sv'_b))
    call lu4_solve_rows(lu(:, :, ib), piv(:, ib), w, z)
    u = y(:, ib)
    u(1) = u(1) - s(ib)
    if (has_sv) u = u - sv(:, ib)
    call add_outer7(-z, u, k7bar(:, :, ib))
    dsbar(:, ib) = dsbar(:, ib) + z(:, 1)
    sbar(:, ib) = sbar(:, ib) + w(:, 1)
    if (has_sv) then
      dsvbar(:, :, ib) = dsvbar(:, :, ib) + z
      svbar(:, :, ib) = svbar(:, :, ib) + w
      call grid_derivative_adjoint(16, n, x, ib, dsvbar, svbar)
    end if

    ! grid derivatives (transposed) and K' = ltau K
    call grid_derivative_adjoint(28, n, x, ib, dbar, k7bar)
    call grid_derivative_adjoint(4, n, x, ib, dsbar, sbar)
    do j = kmin, n
      k7bar(:, :, j) = ltau(j) * k7bar(:, :, j)
    end do
  end subroutine adjoint_on_grid

  !> Scalar analogue of hermite_polarised_adjoint (eta_I only; hermite_scalar's discretisation):
  !> etabar(j) = d I / d eta(j), sbar(j) = d I / d s(j); optional, together: sv(n) the source-function
  !> excess (as hermite_scalar) and svbar(j) = d I / d sv(j) (= sbar: I depends on s + sv alone).
  pure subroutine hermite_scalar_adjoint(n, x, ltau, eta, s, intensity, etabar, sbar, kmin, ierr, sv, svbar)
    integer, intent(in) :: n
    real(dp), intent(in) :: x(n), ltau(n), eta(n), s(n)
    real(dp), intent(out) :: intensity, etabar(n), sbar(n)
    integer, intent(out) :: kmin, ierr
    real(dp), intent(in), optional :: sv(n)
    real(dp), intent(out), optional :: svbar(n)
    real(dp) :: kp(n), dk(n), ds(n), m(n), tau(n), y(n), den(n), h(n), dbar(n), dsbar(n), sv0(n), dsv(n)
    real(dp) :: h2, h12, h2n, h12n, w, z, zn, p, q, bm, u, e, ku
    integer :: i, j, ib
    logical :: has_sv

    ierr = err_ok
    intensity = 0.0_dp
    etabar = 0.0_dp
    sbar = 0.0_dp
    kmin = 1
    if (n < 2) then
      ierr = err_bad_size
      return
    end if
    kp = ltau * eta
    call grid_derivative(n, x, kp, dk)
    call grid_derivative(n, x, s, ds)
    m = dk + kp * kp
    tau = ltau / ln10
    ib = 1
    do i = n - 1, 1, -1
      if (abs(eta(i)) * (tau(i) - tau(i + 1)) > tau_thick) then
        ib = i
        exit
      end if
    end do
    kmin = max(1, ib - 1)
    if (.not. (abs(kp(ib)) > 0.0_dp)) then
      ierr = err_singular
      return
    end if
    has_sv = present(sv) .and. present(svbar)
    sv0 = 0.0_dp
    dsv = 0.0_dp
    if (has_sv) then
      sv0 = sv
      call grid_derivative(n, x, sv, dsv)
      y(ib) = s(ib) + sv(ib) + (ds(ib) + dsv(ib)) / kp(ib)
    else
      y(ib) = s(ib) + ds(ib) / kp(ib)
    end if
    h = 0.0_dp
    do i = ib + 1, n
      h(i) = x(i) - x(i - 1)
      h2 = 0.5_dp * h(i)
      h12 = h(i) * h(i) / 12.0_dp
      den(i) = 1.0_dp - h2 * kp(i) + h12 * m(i)
      e = 0.0_dp
      if (has_sv) e = -h2 * (kp(i - 1) * sv(i - 1) + kp(i) * sv(i)) &
                    - h12 * (m(i - 1) * sv(i - 1) - m(i) * sv(i) + kp(i - 1) * dsv(i - 1) - kp(i) * dsv(i))
      y(i) = (y(i - 1) + h2 * kp(i - 1) * (y(i - 1) - s(i - 1)) + h12 * (m(i - 1) * (y(i - 1) - s(i - 1)) &
              - kp(i - 1) * ds(i - 1)) - h2 * kp(i) * s(i) + h12 * (m(i) * s(i) + kp(i) * ds(i)) + e) / den(i)
    end do
    intensity = y(n)

    dbar = 0.0_dp
    dsbar = 0.0_dp
    w = 1.0_dp
    zn = 0.0_dp
    h2n = 0.0_dp
    h12n = 0.0_dp
    do j = n, ib, -1
      if (j > ib) then
        z = w / den(j)
        h2 = 0.5_dp * h(j)
        h12 = h(j) * h(j) / 12.0_dp
      else
        z = 0.0_dp
        h2 = 0.0_dp
        h12 = 0.0_dp
      end if
      u = y(j) - s(j)
      if (has_sv) u = u - sv0(j)
      p = h12n * zn - h12 * z
      bm = h2n * zn + h2 * z
      q = bm + p * kp(j)
      ku = kp(j) * u - ds(j)
      if (has_sv) ku = ku - dsv(j)
      etabar(j) = q * u + p * ku
      dbar(j) = p * u
      sbar(j) = -bm * kp(j) - p * m(j)
      dsbar(j) = -p * kp(j)
      if (j > ib) then
        w = z * (1.0_dp + h2 * kp(j - 1) + h12 * m(j - 1))
        zn = z
        h2n = h2
        h12n = h12
      end if
    end do
    z = w / kp(ib)
    etabar(ib) = etabar(ib) - z * (y(ib) - s(ib) - sv0(ib))
    dsbar(ib) = dsbar(ib) + z
    sbar(ib) = sbar(ib) + w
    call grid_derivative_adjoint(1, n, x, ib, dbar, etabar)
    call grid_derivative_adjoint(1, n, x, ib, dsbar, sbar)
    etabar = ltau * etabar
    if (has_sv) svbar = sbar
  end subroutine hermite_scalar_adjoint

end module pyinv_formal_solver
