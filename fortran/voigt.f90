!> Voigt H(a,v) and Faraday-Voigt F(a,v) functions and their derivatives.
!>
!> Definitions (spec-forward.md §7.6): with the Faddeeva function w(z) = exp(-z^2) erfc(-iz) and
!> z = v + i a (a >= 0),
!>     H(a,v) = Re w(z)            (even in v, normalised so that  int H dv = sqrt(pi)),
!>     F(a,v) = Im w(z) / 2        (odd in v; the dispersion profile in the propagation matrix is 2F).
!> Algorithm: Weideman (1994, SIAM J. Numer. Anal. 31, 1497) rational series with N = 32 terms for
!> |v| + a < 12, and the asymptotic (Laplace continued-fraction) series
!>     w(z) = (i/sqrt(pi)) sum_n (2n-1)!! / (2^n z^(2n+1))
!> with 8 terms outside. Against scipy.special.wofz on 1e-4 <= a <= 10, |v| <= 50 the relative error of
!> H is below 3e-8 and |dF| < 3e-10 max(|F|, H) (tests/test_voigt.py).
!> Derivatives follow from w'(z) = -2 z w(z) + 2 i / sqrt(pi):  dw/dv = w', dw/da = i w'.
module pyinv_voigt
  use pyinv_kinds, only: dp, sqrtpi
  implicit none
  private
  public :: faddeeva, voigt_faraday, voigt_faraday_deriv

  integer, parameter :: nw = 32
  real(dp), parameter :: lw = 4.756828460010884_dp  ! sqrt(N / sqrt(2))
  real(dp), parameter :: r_asym = 12.0_dp
  real(dp), parameter :: inv_sqrtpi = 1.0_dp / sqrtpi
  !> Weideman coefficients a_n for n = N..1 (Horner order, highest power first)
  real(dp), parameter :: wcoef(nw) = [ &
       -1.30317978630500875e-12_dp, 3.74088129316536249e-12_dp,&
       8.03036789996388945e-12_dp, -2.15436320778387687e-11_dp,&
       -5.54423594816646238e-11_dp, 1.16582510935237737e-10_dp,&
       4.15374309183345315e-10_dp, -5.23102048119632885e-10_dp,&
       -3.20801509172336887e-09_dp, 8.12488945684665156e-10_dp,&
       2.37975567798974168e-08_dp, 2.29304390650999664e-08_dp,&
       -1.48130789151209774e-07_dp, -4.18407637021697758e-07_dp,&
       4.25583313757500854e-07_dp, 4.40153173157854990e-06_dp,&
       6.82103194400198485e-06_dp, -2.14096192017107501e-05_dp,&
       -1.30754492546153456e-04_dp, -2.45329802700214317e-04_dp,&
       3.92591360700703107e-04_dp, 4.51954110534921738e-03_dp,&
       1.90061557848454077e-02_dp, 5.73044035298372195e-02_dp,&
       1.40607162268937685e-01_dp, 2.95444510715087316e-01_dp,&
       5.46013972063934094e-01_dp, 9.01925489364799882e-01_dp,&
       1.34554416923454490e+00_dp, 1.82566962963248147e+00_dp,&
       2.26353729990026764e+00_dp, 2.57225340812456960e+00_dp ]

contains

  !> Faddeeva function w(z) for Im z >= 0.
  elemental function faddeeva(z) result(w)
    complex(dp), intent(in) :: z
    complex(dp) :: w
    complex(dp) :: zz, lmz, zeta, p, term, s, iz
    integer :: k
    if (abs(real(z, dp)) + aimag(z) >= r_asym) then
      iz = 1.0_dp / z
      zz = iz * iz
      term = iz
      s = term
      do k = 1, 8
        term = term * zz * real(2 * k - 1, dp) * 0.5_dp
        s = s + term
      end do
      w = cmplx(0.0_dp, inv_sqrtpi, dp) * s
    else
      lmz = cmplx(lw + aimag(z), -real(z, dp), dp)        ! L - i z
      zeta = cmplx(lw - aimag(z), real(z, dp), dp) / lmz  ! (L + i z) / (L - i z)
      p = wcoef(1)
      do k = 2, nw
        p = p * zeta + wcoef(k)
      end do
      w = (2.0_dp * p / lmz + inv_sqrtpi) / lmz
    end if
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

end module pyinv_voigt
