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
!> Propagation-matrix elements are passed per depth as k7(7, n) in units of kappa_c(5000):
!> (eta_I, eta_Q, eta_U, eta_V, rho_Q, rho_U, rho_V), with
!>     K = | eta_I  eta_Q  eta_U  eta_V |
!>         | eta_Q  eta_I  rho_V -rho_U |
!>         | eta_U -rho_V  eta_I  rho_Q |
!>         | eta_V  rho_U -rho_Q  eta_I |
!> Per-depth K', dK'/dx, S and S' are formed here from the inputs, so a tangent-linear (response
!> function) extension can reuse the same step matrices (stokes_depth returns I at every depth).
module pyinv_formal_solver
  use pyinv_kinds, only: dp, ln10
  use pyinv_errors, only: err_ok, err_singular, err_bad_size
  implicit none
  private
  public :: grid_derivative, hermite_polarised, hermite_scalar, solve4, build_k4, boundary_index

  real(dp), parameter :: tau_thick = 5.0_dp

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
    real(dp) :: dm, dp_, dt, cm, c0, cp
    df(:, 1) = (f(:, 2) - f(:, 1)) / (x(2) - x(1))
    df(:, n) = (f(:, n) - f(:, n - 1)) / (x(n) - x(n - 1))
    do i = 2, n - 1
      dm = x(i) - x(i - 1)
      dp_ = x(i + 1) - x(i)
      dt = x(i + 1) - x(i - 1)
      cm = -dp_ / (dm * dt)
      c0 = (dp_ - dm) / (dm * dp_)
      cp = dm / (dp_ * dt)
      df(:, i) = cm * f(:, i - 1) + c0 * f(:, i) + cp * f(:, i + 1)
    end do
  end subroutine grid_derivative7

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
    real(dp) :: em
    ib = 1
    do i = n - 1, 1, -1
      em = max(abs(k7(1, i)), abs(k7(2, i)), abs(k7(3, i)), abs(k7(4, i)))
      if (em * (tau(i) - tau(i + 1)) > tau_thick) then
        ib = i
        return
      end if
    end do
  end function boundary_index

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
  !> stokes_depth(4, n) (I at every depth; rows below ib hold the diffusion value of ib).
  pure subroutine hermite_polarised(n, x, ltau, k7, s, stokes, ierr, ib_out, stokes_depth)
    integer, intent(in) :: n
    real(dp), intent(in) :: x(n), ltau(n), k7(7, n), s(n)
    real(dp), intent(out) :: stokes(4)
    integer, intent(out) :: ierr
    integer, intent(out), optional :: ib_out
    real(dp), intent(out), optional :: stokes_depth(4, n)
    real(dp) :: kp7(7, n), dk7(7, n), ds(n), tau(n)
    real(dp) :: kp0(4, 4), kp1(4, 4), m0(4, 4), m1(4, 4), d4(4, 4), a(4, 4)
    real(dp) :: y(4), r(4), v(4), h, h2, h12
    integer :: i, ib

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
    tau = ltau / ln10
    ib = boundary_index(n, tau, k7)
    if (present(ib_out)) ib_out = ib

    ! diffusion approximation at the boundary: I = S e1 + K'^-1 e1 S'
    call build_k4(kp7(:, ib), kp1)
    call build_k4(dk7(:, ib), d4)
    m1 = d4 + matmul(kp1, kp1)
    a = kp1
    y = [ds(ib), 0.0_dp, 0.0_dp, 0.0_dp]
    call solve4(a, y, ierr)
    if (ierr /= err_ok) return
    y(1) = y(1) + s(ib)
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
  end subroutine hermite_polarised

  !> Scalar (non-magnetic) analogue of hermite_polarised (§8.7): K = eta_I only, same boundary rule.
  pure subroutine hermite_scalar(n, x, ltau, eta, s, intensity, ierr, ib_out, i_depth)
    integer, intent(in) :: n
    real(dp), intent(in) :: x(n), ltau(n), eta(n), s(n)
    real(dp), intent(out) :: intensity
    integer, intent(out) :: ierr
    integer, intent(out), optional :: ib_out
    real(dp), intent(out), optional :: i_depth(n)
    real(dp) :: kp(n), dk(n), ds(n), m(n), tau(n)
    real(dp) :: y, h, h2, h12
    integer :: i, ib

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
    y = s(ib) + ds(ib) / kp(ib)
    if (present(i_depth)) i_depth(1:ib) = y
    do i = ib + 1, n
      h = x(i) - x(i - 1)
      h2 = 0.5_dp * h
      h12 = h * h / 12.0_dp
      y = (y + h2 * kp(i - 1) * (y - s(i - 1)) + h12 * (m(i - 1) * (y - s(i - 1)) - kp(i - 1) * ds(i - 1)) &
           - h2 * kp(i) * s(i) + h12 * (m(i) * s(i) + kp(i) * ds(i))) &
          / (1.0_dp - h2 * kp(i) + h12 * m(i))
      if (present(i_depth)) i_depth(i) = y
    end do
    intensity = y
  end subroutine hermite_scalar

end module pyinv_formal_solver
