!> Node parameterisation of the inversion (spec-inversion.md §2).
!>
!> * Node counts and equidistant placement on the log tau grid as SIR (§2.1): allowed counts are 0, 1, 2
!>   and every n >= 3 with (N-1) divisible by (n-1); node j sits at grid index 1 + (j-1)(N-1)/(n-1)
!>   (node 1 = deepest point, node n = top point). Explicit node positions in log tau (any strictly
!>   monotonic set inside or outside the grid) are a pyinv extension (§6.3).
!> * Interpolation bases F (N x n) acting on node PERTURBATIONS (§2.3): mode 0 = SIR's splines (n = 1
!>   constant, 2 linear, 3 parabola, n >= 4 not-a-knot cubic spline); mode 1 = linear (hat functions;
!>   on SIR layouts smoothed in place along depth with (1,2,3,2,1)/9, or (1,2,1)/4 when the nodes are
!>   adjacent grid points, deep to top). Outside the span of explicit nodes the basis is constant
!>   (the perturbation of the outermost node is carried on).
!> * Per-slot parameterisation (§2.2): relative (T, vmic, B, vmac), offset-relative (vlos: v - v_off),
!>   log-relative (Pe) and absolute (angles). The tangent matrix D(k, j) = d x_k / d delta_j maps the
!>   LM step variables delta (relative changes; absolute changes in RADIANS for angles, the model
!>   columns being in degrees) to depth perturbations; node RFs are R D (§2.4, chain rule).
module pyinv_nodes
  use pyinv_kinds, only: dp, pi
  use pyinv_errors, only: err_ok, err_bad_input, err_bad_size, err_singular
  implicit none
  private
  public :: node_count_allowed, allowed_node_count, node_indices, node_basis, sir_node_basis, &
            node_values, node_tangent, compress_rf, apply_perturbation, solve_dense

  integer, parameter, public :: slot_relative = 1, slot_offset = 2, slot_log = 3, slot_angle = 4
  integer, parameter, public :: interp_spline = 0, interp_linear = 1
  real(dp), parameter :: rad2deg = 180.0_dp / pi

contains

  !> True when n nodes are a legal SIR count on a grid of ndep points (0, 1, 2, or (ndep-1) mod (n-1) = 0).
  pure logical function node_count_allowed(ndep, n) result(ok)
    integer, intent(in) :: ndep, n
    ok = .false.
    if (n < 0 .or. ndep < 1) return
    if (n <= 2) then
      ok = n <= ndep .or. n <= 1
      return
    end if
    if (n > ndep) return
    ok = mod(ndep - 1, n - 1) == 0
  end function node_count_allowed

  !> The largest allowed count <= n (SIR rounds requested counts down, §2.1). n <= 0 gives 0.
  pure integer function allowed_node_count(ndep, n) result(m)
    integer, intent(in) :: ndep, n
    m = min(n, ndep)
    if (m <= 0) then
      m = 0
      return
    end if
    do while (m > 2)
      if (node_count_allowed(ndep, m)) return
      m = m - 1
    end do
    if (ndep < 2) m = min(m, 1)
  end function allowed_node_count

  !> Grid indices of the n equidistant nodes (n must be allowed; n = 1: the deepest point is returned,
  !> though one-node slots act on the depth average).
  pure subroutine node_indices(ndep, n, idx, ierr)
    integer, intent(in) :: ndep, n
    integer, intent(out) :: idx(n), ierr
    integer :: j
    ierr = err_ok
    if (n < 1 .or. .not. node_count_allowed(ndep, n)) then
      ierr = err_bad_input
      idx = 1
      return
    end if
    if (n == 1) then
      idx(1) = 1
      return
    end if
    do j = 1, n
      idx(j) = 1 + (j - 1) * ((ndep - 1) / (n - 1))
    end do
  end subroutine node_indices

  !> Interpolation basis for nodes at arbitrary, strictly monotonic positions xn(n) (log tau) evaluated
  !> on the grid x(ndep): f(k, j) = value at x(k) of the interpolant of the unit vector e_j.
  !> mode 0: n = 1 ones, 2 linear, 3 parabola, >= 4 not-a-knot cubic spline; mode 1: hat functions.
  !> Constant beyond the outermost nodes.
  pure subroutine node_basis(ndep, x, n, xn, mode, f, ierr)
    integer, intent(in) :: ndep, n, mode
    real(dp), intent(in) :: x(ndep), xn(n)
    real(dp), intent(out) :: f(ndep, n)
    integer, intent(out) :: ierr
    real(dp) :: xs(n), y(n), m2(n), a(n, n), rhs(n), h(n), xx, t
    integer :: j, k, i, lo, jj, ord(n)
    logical :: rev

    ierr = err_ok
    f = 0.0_dp
    if (n < 1 .or. ndep < 1) then
      ierr = err_bad_size
      return
    end if
    if (n == 1) then
      f = 1.0_dp
      return
    end if
    if (all(xn(2:n) > xn(1:n-1))) then
      rev = .false.
    else if (all(xn(2:n) < xn(1:n-1))) then
      rev = .true.
    else
      ierr = err_bad_input
      return
    end if
    ! ascending copy; ord(i) = original column of ascending node i
    do i = 1, n
      if (rev) then
        ord(i) = n + 1 - i
      else
        ord(i) = i
      end if
      xs(i) = xn(ord(i))
    end do
    h(1:n-1) = xs(2:n) - xs(1:n-1)

    do jj = 1, n
      y = 0.0_dp
      y(jj) = 1.0_dp
      if (mode == 1 .or. n == 2) then
        do k = 1, ndep
          xx = min(max(x(k), xs(1)), xs(n))
          lo = interval(n, xs, xx)
          t = (xx - xs(lo)) / h(lo)
          f(k, ord(jj)) = y(lo) * (1.0_dp - t) + y(lo + 1) * t
        end do
      else if (n == 3) then
        do k = 1, ndep
          xx = min(max(x(k), xs(1)), xs(n))
          f(k, ord(jj)) = y(1) * (xx - xs(2)) * (xx - xs(3)) / ((xs(1) - xs(2)) * (xs(1) - xs(3))) &
                        + y(2) * (xx - xs(1)) * (xx - xs(3)) / ((xs(2) - xs(1)) * (xs(2) - xs(3))) &
                        + y(3) * (xx - xs(1)) * (xx - xs(2)) / ((xs(3) - xs(1)) * (xs(3) - xs(2)))
        end do
      else
        ! second derivatives m2 of the not-a-knot spline: interior continuity rows plus
        ! third-derivative continuity at nodes 2 and n-1
        a = 0.0_dp
        rhs = 0.0_dp
        a(1, 1) = -1.0_dp / h(1)
        a(1, 2) = 1.0_dp / h(1) + 1.0_dp / h(2)
        a(1, 3) = -1.0_dp / h(2)
        do i = 2, n - 1
          a(i, i - 1) = h(i - 1)
          a(i, i) = 2.0_dp * (h(i - 1) + h(i))
          a(i, i + 1) = h(i)
          rhs(i) = 6.0_dp * ((y(i + 1) - y(i)) / h(i) - (y(i) - y(i - 1)) / h(i - 1))
        end do
        a(n, n - 2) = -1.0_dp / h(n - 2)
        a(n, n - 1) = 1.0_dp / h(n - 2) + 1.0_dp / h(n - 1)
        a(n, n) = -1.0_dp / h(n - 1)
        call solve_dense(n, a, rhs, m2, ierr)
        if (ierr /= err_ok) return
        do k = 1, ndep
          xx = min(max(x(k), xs(1)), xs(n))
          lo = interval(n, xs, xx)
          f(k, ord(jj)) = m2(lo) * (xs(lo + 1) - xx)**3 / (6.0_dp * h(lo)) &
                        + m2(lo + 1) * (xx - xs(lo))**3 / (6.0_dp * h(lo)) &
                        + (y(lo) / h(lo) - m2(lo) * h(lo) / 6.0_dp) * (xs(lo + 1) - xx) &
                        + (y(lo + 1) / h(lo) - m2(lo + 1) * h(lo) / 6.0_dp) * (xx - xs(lo))
        end do
      end if
    end do
    ! exact nodal values where a node falls on a grid point (removes round-off)
    do j = 1, n
      do k = 1, ndep
        if (x(k) == xn(j)) then
          f(k, :) = 0.0_dp
          f(k, j) = 1.0_dp
        end if
      end do
    end do
  end subroutine node_basis

  !> Index lo (1..n-1) of the interval [xs(lo), xs(lo+1)] holding xx (xs ascending, xx clamped).
  pure integer function interval(n, xs, xx) result(lo)
    integer, intent(in) :: n
    real(dp), intent(in) :: xs(n), xx
    lo = 1
    do while (lo < n - 1)
      if (xx <= xs(lo + 1)) exit
      lo = lo + 1
    end do
  end function interval

  !> SIR's basis for n equidistant nodes on the grid x(ndep) (§2.3): nodes at node_indices; mode 0
  !> splines, mode 1 linear with SIR's in-place corner smoothing.
  pure subroutine sir_node_basis(ndep, x, n, mode, f, ierr)
    integer, intent(in) :: ndep, n, mode
    real(dp), intent(in) :: x(ndep)
    real(dp), intent(out) :: f(ndep, n)
    integer, intent(out) :: ierr
    integer :: idx(n), j, k, step
    real(dp) :: xn(n)

    f = 0.0_dp
    call node_indices(ndep, n, idx, ierr)
    if (ierr /= err_ok) return
    if (n == 1) then
      f = 1.0_dp
      return
    end if
    xn = x(idx)
    call node_basis(ndep, x, n, xn, mode, f, ierr)
    if (ierr /= err_ok) return
    if (mode == 1 .and. n >= 3) then
      step = (ndep - 1) / (n - 1)
      do j = 1, n
        if (step == 1) then
          do k = 2, ndep - 1
            f(k, j) = (f(k - 1, j) + 2.0_dp * f(k, j) + f(k + 1, j)) / 4.0_dp
          end do
        else
          do k = 3, ndep - 2
            f(k, j) = (f(k - 2, j) + 2.0_dp * f(k - 1, j) + 3.0_dp * f(k, j) + 2.0_dp * f(k + 1, j) &
                       + f(k + 2, j)) / 9.0_dp
          end do
        end if
      end do
    end if
  end subroutine sir_node_basis

  !> Node values a(n) of one model column col(ndep) (§2.2): n = 1 the depth average; otherwise the
  !> column at the node positions xn (linear interpolation in log tau; exact on grid nodes), minus voff
  !> for kind slot_offset. For slot_angle the values are returned in RADIANS (column in degrees).
  pure subroutine node_values(ndep, x, col, n, xn, kind, voff, a)
    integer, intent(in) :: ndep, n, kind
    real(dp), intent(in) :: x(ndep), col(ndep), xn(n), voff
    real(dp), intent(out) :: a(n)
    integer :: j, k
    real(dp) :: t
    if (n == 1) then
      a(1) = sum(col) / ndep
    else
      do j = 1, n
        if (xn(j) >= x(1)) then
          a(j) = col(1)
        else if (xn(j) <= x(ndep)) then
          a(j) = col(ndep)
        else
          k = 1
          do while (k < ndep - 1)
            if (x(k + 1) <= xn(j)) exit
            k = k + 1
          end do
          t = (xn(j) - x(k)) / (x(k + 1) - x(k))
          a(j) = col(k) * (1.0_dp - t) + col(k + 1) * t
        end if
      end do
    end if
    if (kind == slot_offset) a = a - voff
    if (kind == slot_angle) a = a / rad2deg
  end subroutine node_values

  !> Tangent matrix d(ndep, n) = d col_k / d delta_j (§2.4): relative/offset slots F_kj a_j (a_j the
  !> node value, v - v_off for vlos; n = 1: the depth average), log slot F_kj col_k, angles
  !> F_kj * 180/pi (degrees per radian).
  pure subroutine node_tangent(ndep, col, n, f, a, kind, d)
    integer, intent(in) :: ndep, n, kind
    real(dp), intent(in) :: col(ndep), f(ndep, n), a(n)
    real(dp), intent(out) :: d(ndep, n)
    integer :: j
    select case (kind)
    case (slot_log)
      do j = 1, n
        d(:, j) = f(:, j) * col
      end do
    case (slot_angle)
      d = f * rad2deg
    case default
      do j = 1, n
        d(:, j) = f(:, j) * a(j)
      end do
    end select
  end subroutine node_tangent

  !> Node RFs g(m, n) = r(m, ndep) d(ndep, n) (chain rule, §2.4); m = 4 nλ rows of a depth-resolved RF.
  pure subroutine compress_rf(m, ndep, r, n, d, g)
    integer, intent(in) :: m, ndep, n
    real(dp), intent(in) :: r(m, ndep), d(ndep, n)
    real(dp), intent(out) :: g(m, n)
    g = matmul(r, d)
  end subroutine compress_rf

  !> Add the interpolated perturbation of the node changes delta(n) to a column (§2.3):
  !> relative/offset slots col + F (a delta); log slot col * exp(F delta); angles col + F delta (delta in
  !> radians, col in degrees). No clipping here (see pyinv_inversion).
  pure subroutine apply_perturbation(ndep, col, n, f, a, kind, delta, out)
    integer, intent(in) :: ndep, n, kind
    real(dp), intent(in) :: col(ndep), f(ndep, n), a(n), delta(n)
    real(dp), intent(out) :: out(ndep)
    select case (kind)
    case (slot_log)
      out = col * exp(matmul(f, delta))
    case (slot_angle)
      out = col + rad2deg * matmul(f, delta)
    case default
      out = col + matmul(f, a * delta)
    end select
  end subroutine apply_perturbation

  !> Solve a(n,n) x = b by Gaussian elimination with partial pivoting (small dense systems).
  pure subroutine solve_dense(n, a, b, x, ierr)
    integer, intent(in) :: n
    real(dp), intent(in) :: a(n, n), b(n)
    real(dp), intent(out) :: x(n)
    integer, intent(out) :: ierr
    real(dp) :: m(n, n), v(n), tmp(n), t, piv
    integer :: i, k, p
    ierr = err_ok
    m = a
    v = b
    do k = 1, n
      p = k - 1 + maxloc(abs(m(k:n, k)), 1)
      piv = m(p, k)
      if (.not. (abs(piv) > tiny(1.0_dp))) then
        ierr = err_singular
        x = 0.0_dp
        return
      end if
      if (p /= k) then
        tmp = m(k, :); m(k, :) = m(p, :); m(p, :) = tmp
        t = v(k); v(k) = v(p); v(p) = t
      end if
      do i = k + 1, n
        t = m(i, k) / m(k, k)
        m(i, k:n) = m(i, k:n) - t * m(k, k:n)
        v(i) = v(i) - t * v(k)
      end do
    end do
    do i = n, 1, -1
      x(i) = (v(i) - sum(m(i, i+1:n) * x(i+1:n))) / m(i, i)
    end do
  end subroutine solve_dense

end module pyinv_nodes
