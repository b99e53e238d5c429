!> Small dense linear algebra of the inversion (spec-inversion.md §3.3): one-sided Jacobi SVD, SIR's
!> modified (per-variable truncated) SVD solve of the damped normal equations, and Gaussian elimination
!> for the spline systems of the node bases.
module pyinv_linalg
  use pyinv_kinds, only: dp
  use pyinv_errors, only: err_ok, err_singular, err_no_convergence, err_not_finite
  implicit none
  private
  public :: jacobi_svd, modified_svd_solve, solve_dense

contains

  !> One-sided Jacobi SVD of a(m, m): a = u diag(w) v^T, w >= 0 (unsorted).
  pure subroutine jacobi_svd(m, a, u, w, v, ierr)
    integer, intent(in) :: m
    real(dp), intent(in) :: a(m, m)
    real(dp), intent(out) :: u(m, m), w(m), v(m, m)
    integer, intent(out) :: ierr
    real(dp) :: alpha, beta, gamma, zeta, t, c, sn, tmp(m)
    integer :: i, j, sweep
    logical :: rotated
    ierr = err_ok
    u = a
    v = 0.0_dp
    do i = 1, m
      v(i, i) = 1.0_dp
    end do
    do sweep = 1, 60
      rotated = .false.
      do i = 1, m - 1
        do j = i + 1, m
          alpha = sum(u(:, i)**2)
          beta = sum(u(:, j)**2)
          gamma = sum(u(:, i) * u(:, j))
          if (abs(gamma) <= 1.0e-15_dp * sqrt(alpha * beta) .or. gamma == 0.0_dp) cycle
          rotated = .true.
          zeta = (beta - alpha) / (2.0_dp * gamma)
          t = sign(1.0_dp, zeta) / (abs(zeta) + sqrt(1.0_dp + zeta * zeta))
          c = 1.0_dp / sqrt(1.0_dp + t * t)
          sn = c * t
          tmp = u(:, i)
          u(:, i) = c * tmp - sn * u(:, j)
          u(:, j) = sn * tmp + c * u(:, j)
          tmp = v(:, i)
          v(:, i) = c * tmp - sn * v(:, j)
          v(:, j) = sn * tmp + c * v(:, j)
        end do
      end do
      if (.not. rotated) exit
    end do
    if (rotated) ierr = err_no_convergence
    do j = 1, m
      w(j) = sqrt(sum(u(:, j)**2))
      if (w(j) > 0.0_dp) then
        u(:, j) = u(:, j) / w(j)
      else
        u(:, j) = 0.0_dp
      end if
    end do
    if (.not. all(abs(w) < huge(1.0_dp))) ierr = err_not_finite
  end subroutine jacobi_svd

  !> SIR's modified SVD solve of a delta = b (§3.3). blk(m): block (slot) of every parameter; nvar
  !> blocks; eps the tolerance. Returns delta and (optionally) the pseudo-inverse ainv.
  pure subroutine modified_svd_solve(m, a, b, blk, nvar, eps, delta, ierr, ainv)
    integer, intent(in) :: m, blk(m), nvar
    real(dp), intent(in) :: a(m, m), b(m), eps
    real(dp), intent(out) :: delta(m)
    integer, intent(out) :: ierr
    real(dp), intent(out), optional :: ainv(m, m)
    real(dp) :: u(m, m), w(m), v(m, m), wt(m), w1(m), w2(m), e(m), winv(m)
    integer :: j, kb, pass
    logical :: inblk(m)

    delta = 0.0_dp
    if (.not. all(abs(a) < huge(1.0_dp)) .or. .not. all(abs(b) < huge(1.0_dp))) then
      ierr = err_not_finite
      if (present(ainv)) ainv = 0.0_dp
      return
    end if
    call jacobi_svd(m, a, u, w, v, ierr)
    if (ierr /= err_ok) then
      if (present(ainv)) ainv = 0.0_dp
      return
    end if
    if (nvar >= m) then
      wt = w
    else if (nvar <= 1) then
      wt = w
      where (w < eps * maxval(w)) wt = 0.0_dp
    else
      wt = w
      do pass = 1, 2
        w2 = 0.0_dp
        do kb = 1, maxval(blk)
          inblk = blk == kb
          if (.not. any(inblk)) cycle
          do j = 1, m
            e(j) = wt(j) * sum(v(:, j)**2, mask=inblk)
          end do
          where (e >= eps * maxval(e)) w2 = w2 + e
        end do
        if (pass == 1) then
          w1 = w2
          wt = w1
        end if
      end do
      where (w2 > 1.0e-10_dp)
        wt = w1**2 / w2
      elsewhere
        wt = 0.0_dp
      end where
    end if
    where (wt > 0.0_dp)
      winv = 1.0_dp / wt
    elsewhere
      winv = 0.0_dp
    end where
    if (all(winv == 0.0_dp)) then
      ierr = err_singular
      if (present(ainv)) ainv = 0.0_dp
      return
    end if
    delta = matmul(v, winv * matmul(transpose(u), b))
    if (present(ainv)) then
      do j = 1, m
        ainv(:, j) = matmul(v, winv * u(j, :))
      end do
    end if
  end subroutine modified_svd_solve

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

end module pyinv_linalg
