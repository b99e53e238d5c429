!> Voigt H(a,v) and Faraday-Voigt F(a,v) functions and their derivatives.
!>
!> Definitions (spec-forward.md §7.6): with the Faddeeva function w(z) = exp(-z^2) erfc(-iz) and
!> z = v + i a (a >= 0),
!>     H(a,v) = Re w(z)            (even in v, normalised so that  int H dv = sqrt(pi)),
!>     F(a,v) = Im w(z) / 2        (odd in v; the dispersion profile in the propagation matrix is 2F).
!> Algorithm (two regions, both written in real arithmetic so that array loops vectorise):
!>   |v| + a <  6 : Weideman (1994, SIAM J. Numer. Anal. 31, 1497) rational series with N = 28 terms;
!>   |v| + a >= 6 : the asymptotic series w(z) = (i/sqrt(pi)) sum_k (2k-1)!!/2^k z^-(2k+1), 10 terms
!>                  (the polynomial in 1/z^2 evaluated by Knuth's real-coefficient scheme).
!> voigt_nw / voigt_deriv_nw take caller-supplied workspace (no allocation in the profile loop).
!> Against scipy.special.wofz on 1e-4 <= a <= 10, |v| <= 50 the relative error of H is below 1e-6 and
!> |dF| < 1e-6 max(|F|, H) (tests/test_voigt.py; the issue's bound is 1e-5; the classic Humlicek 1982
!> W4 approximation reaches only ~1e-4).
!> Derivatives follow from w'(z) = -2 z w(z) + 2 i / sqrt(pi):  dw/dv = w', dw/da = i w'.
module pyinv_voigt
  use pyinv_kinds, only: dp, sqrtpi
  implicit none
  private
  public :: faddeeva, voigt_faraday, voigt_faraday_deriv, voigt_n, voigt_deriv_n, voigt_nw, voigt_deriv_nw

  integer, parameter :: nw = 28
  real(dp), parameter :: lw = 4.4496055862540596_dp   ! sqrt(N / sqrt(2))
  real(dp), parameter :: r_asym = 6.0_dp
  real(dp), parameter :: inv_sqrtpi = 1.0_dp / sqrtpi
  !> Weideman coefficients a_n for n = N..1 (Horner order, highest power first)
  real(dp), parameter :: wcoef(nw) = [ &
       2.42916797787984251e-11_dp, -1.44384440911185923e-10_dp,&
       -1.56286888192929458e-10_dp, 8.57650125521810728e-10_dp,&
       1.23625532826616379e-09_dp, -4.99256541862193501e-09_dp,&
       -1.09641564071830512e-08_dp, 2.60333260590259677e-08_dp,&
       9.93535649302419145e-08_dp, -8.18859859635588542e-08_dp,&
       -8.41398937109114426e-07_dp, -6.20862104815862900e-07_dp,&
       5.63638511152930732e-06_dp, 1.65445446124020842e-05_dp,&
       -1.01428800514748370e-05_dp, -1.77849864288402509e-04_dp,&
       -4.60268192401969145e-04_dp, 1.29473744096917991e-04_dp,&
       5.50424148367802298e-03_dp, 2.55948192498871192e-02_dp,&
       7.92799892774498083e-02_dp, 1.94330668135693024e-01_dp,&
       4.01153699445945811e-01_dp, 7.19342472119202547e-01_dp,&
       1.14083773968444313e+00_dp, 1.61831710343667368e+00_dp,&
       2.06822676368056912e+00_dp, 2.39219491791312810e+00_dp ]
  !> asymptotic-series coefficients (2k-1)!!/2^k, k = 0..9
  integer, parameter :: na = 10
  real(dp), parameter :: acoef(na) = [1.0_dp, 0.5_dp, 0.75_dp, 1.875_dp, 6.5625_dp, 29.53125_dp, &
       162.421875_dp, 1055.7421875_dp, 7918.06640625_dp, 67303.564453125_dp]

contains

  !> Faddeeva function w(z) for Im z >= 0.
  elemental function faddeeva(z) result(w)
    complex(dp), intent(in) :: z
    complex(dp) :: w
    real(dp) :: x(1), y(1), h(1), f(1)
    x(1) = real(z, dp)
    y(1) = aimag(z)
    if (abs(x(1)) + y(1) >= r_asym) then
      call asymptotic_loop(1, x, y, h, f)
    else
      call weideman_loop(1, x, y, h, f)
    end if
    w = cmplx(h(1), 2.0_dp * f(1), dp)
  end function faddeeva

  !> Voigt H and Faraday-Voigt F (= Im w / 2) at damping a >= 0 and reduced frequency v.
  elemental subroutine voigt_faraday(a, v, h, f)
    real(dp), intent(in) :: a, v
    real(dp), intent(out) :: h, f
    complex(dp) :: w
    w = faddeeva(cmplx(v, a, dp))
    h = real(w, dp)
    f = 0.5_dp * aimag(w)
  end subroutine voigt_faraday

  !> H, F and their partial derivatives with respect to v and a.
  elemental subroutine voigt_faraday_deriv(a, v, h, f, dhdv, dfdv, dhda, dfda)
    real(dp), intent(in) :: a, v
    real(dp), intent(out) :: h, f, dhdv, dfdv, dhda, dfda
    complex(dp) :: z, w, dw
    z = cmplx(v, a, dp)
    w = faddeeva(z)
    dw = -2.0_dp * z * w + cmplx(0.0_dp, 2.0_dp * inv_sqrtpi, dp)
    h = real(w, dp)
    f = 0.5_dp * aimag(w)
    dhdv = real(dw, dp)
    dfdv = 0.5_dp * aimag(dw)
    ! dw/da = i dw/dz
    dhda = -aimag(dw)
    dfda = 0.5_dp * real(dw, dp)
  end subroutine voigt_faraday_deriv

  !> H and F (= Im w / 2) on n points: the profile loop of the synthesis. Points are split by region
  !> and each region is evaluated in a branch-free loop the compiler vectorises.
  pure subroutine voigt_n(n, a, v, h, f)
    integer, intent(in) :: n
    real(dp), intent(in) :: a(n), v(n)
    real(dp), intent(out) :: h(n), f(n)
    integer, allocatable :: iw(:)
    real(dp), allocatable :: xw(:, :)
    allocate(iw(n), xw(n, 4))
    call voigt_nw(n, a, v, h, f, iw, xw)
  end subroutine voigt_n

  !> voigt_n with caller-supplied workspace (iw(n), xw(n, 4)): no allocation in the profile loop.
  !> Results identical to voigt_n.
  pure subroutine voigt_nw(n, a, v, h, f, iw, xw)
    integer, intent(in) :: n
    real(dp), intent(in) :: a(n), v(n)
    real(dp), intent(out) :: h(n), f(n)
    integer, intent(out) :: iw(n)
    real(dp), intent(out) :: xw(n, 4)
    integer :: i, nin
    ! The asymptotic region holds most points of a synthesis (line wings): evaluate the asymptotic
    ! series on all points in place, then overwrite the points of the Weideman region (gathered,
    ! evaluated, scattered back). Per point the operations are those of the region's kernel.
    nin = 0
    do i = 1, n
      if (abs(v(i)) + a(i) < r_asym) then
        nin = nin + 1
        iw(nin) = i
      end if
    end do
    if (nin == n) then
      call weideman_loop(n, v, a, h, f)
      return
    end if
    call asymptotic_loop(n, v, a, h, f)
    if (nin == 0) return
    do i = 1, nin
      xw(i, 1) = v(iw(i))
      xw(i, 2) = a(iw(i))
    end do
    call weideman_loop(nin, xw(1:nin, 1), xw(1:nin, 2), xw(1:nin, 3), xw(1:nin, 4))
    do i = 1, nin
      h(iw(i)) = xw(i, 3)
      f(iw(i)) = xw(i, 4)
    end do
  end subroutine voigt_nw

  !> Weideman kernel over m points: h = Re w, f = Im w / 2 (vectorised loop).
  pure subroutine weideman_loop(m, x, y, h, f)
    integer, intent(in) :: m
    real(dp), intent(in) :: x(m), y(m)
    real(dp), intent(out) :: h(m), f(m)
    real(dp) :: mr, mi, pr, pim, d, ir, ii, zr, zi, qr, qi, t
    integer :: i, k
    do i = 1, m
      mr = lw + y(i)
      mi = -x(i)
      d = 1.0_dp / (mr * mr + mi * mi)
      ir = mr * d
      ii = -mi * d
      pr = lw - y(i)
      pim = x(i)
      zr = pr * ir - pim * ii
      zi = pr * ii + pim * ir
      qr = wcoef(1) * zr + wcoef(2)
      qi = wcoef(1) * zi
      do k = 3, nw
        t = qr * zr - qi * zi + wcoef(k)
        qi = qr * zi + qi * zr
        qr = t
      end do
      t = 2.0_dp * (qr * ir - qi * ii) + inv_sqrtpi
      qi = 2.0_dp * (qr * ii + qi * ir)
      h(i) = t * ir - qi * ii
      f(i) = 0.5_dp * (t * ii + qi * ir)
    end do
  end subroutine weideman_loop

  !> Asymptotic kernel over m points: h = Re w, f = Im w / 2 (vectorised loop).
  pure subroutine asymptotic_loop(m, x, y, h, f)
    integer, intent(in) :: m
    real(dp), intent(in) :: x(m), y(m)
    real(dp), intent(out) :: h(m), f(m)
    real(dp) :: d, ir, ii, qr, qi, r, s, b0, b1, b2, sr, si, t
    integer :: i, k
    do i = 1, m
      ! tiny: finite values also at z = 0 (voigt_nw evaluates this kernel on every point first and
      ! overwrites the Weideman region); it is absorbed exactly for |z| >= 6
      d = 1.0_dp / ((x(i) * x(i) + y(i) * y(i)) + tiny(1.0_dp))
      ir = x(i) * d
      ii = -y(i) * d
      qr = ir * ir - ii * ii
      qi = 2.0_dp * ir * ii
      ! S(q) = sum_k acoef(k+1) q^k at the complex q = 1/z^2 with real coefficients: the remainder of
      ! the division by q^2 - r q + s (r = 2 Re q, s = |q|^2) (Knuth's second-order Horner scheme,
      ! two real multiply-adds per term); |q| <= 1/36 here, so the recurrence is well conditioned
      r = qr + qr
      s = qr * qr + qi * qi
      b2 = acoef(na)
      b1 = acoef(na - 1) + r * b2
      do k = na - 2, 2, -1
        b0 = acoef(k) + r * b1 - s * b2
        b2 = b1
        b1 = b0
      end do
      sr = qr * b1 + (acoef(1) - s * b2)
      si = qi * b1
      t = sr * ir - si * ii
      si = sr * ii + si * ir
      h(i) = -si * inv_sqrtpi
      f(i) = 0.5_dp * t * inv_sqrtpi
    end do
  end subroutine asymptotic_loop

  !> voigt_n plus the partial derivatives of H and F with respect to v and a.
  pure subroutine voigt_deriv_n(n, a, v, h, f, dhdv, dfdv, dhda, dfda)
    integer, intent(in) :: n
    real(dp), intent(in) :: a(n), v(n)
    real(dp), intent(out) :: h(n), f(n), dhdv(n), dfdv(n), dhda(n), dfda(n)
    integer, allocatable :: iw(:)
    real(dp), allocatable :: xw(:, :)
    allocate(iw(n), xw(n, 4))
    call voigt_deriv_nw(n, a, v, h, f, dhdv, dfdv, dhda, dfda, iw, xw)
  end subroutine voigt_deriv_n

  !> voigt_deriv_n with caller-supplied workspace (as voigt_nw).
  pure subroutine voigt_deriv_nw(n, a, v, h, f, dhdv, dfdv, dhda, dfda, iw, xw)
    integer, intent(in) :: n
    real(dp), intent(in) :: a(n), v(n)
    real(dp), intent(out) :: h(n), f(n), dhdv(n), dfdv(n), dhda(n), dfda(n)
    integer, intent(out) :: iw(n)
    real(dp), intent(out) :: xw(n, 4)
    real(dp) :: dr, di
    integer :: i
    call voigt_nw(n, a, v, h, f, iw, xw)
    do i = 1, n
      ! w' = -2 z w + 2i/sqrt(pi), with w = h + 2 i f and z = v + i a
      dr = -2.0_dp * (v(i) * h(i) - a(i) * 2.0_dp * f(i))
      di = -2.0_dp * (v(i) * 2.0_dp * f(i) + a(i) * h(i)) + 2.0_dp * inv_sqrtpi
      dhdv(i) = dr
      dfdv(i) = 0.5_dp * di
      dhda(i) = -di
      dfda(i) = 0.5_dp * dr
    end do
  end subroutine voigt_deriv_nw

end module pyinv_voigt
