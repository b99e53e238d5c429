!> Planck function B_lambda(T) and its temperature derivative (spec-forward.md §8.2, §11).
!> B_lambda = c1 lambda^-5 / (exp(c2/(lambda T)) - 1)  [erg s^-1 cm^-2 sr^-1 cm^-1], lambda in cm,
!> with c1 = 2hc^2 = 1.1910627e-5 and c2 = hc/k = 1.43880 cm K; the Rayleigh-Jeans limit is used
!> when c2/(lambda T) < 1e-8 (as SIR does).
module pyinv_planck
  use pyinv_kinds, only: dp, c1_planck, c2_planck
  implicit none
  private
  public :: planck, planck_dt, planck_nlte, planck_nlte_dt

contains

  !> Planck function at wavelength lambda [cm] and temperature t [K].
  elemental function planck(lambda, t) result(b)
    real(dp), intent(in) :: lambda, t
    real(dp) :: b, x
    x = c2_planck / (lambda * t)
    if (x < 1.0e-8_dp) then
      b = c1_planck / lambda**5 / x
    else
      b = c1_planck / lambda**5 / expm1_(x)
    end if
  end function planck

  !> dB/dT at wavelength lambda [cm] and temperature t [K]  [B units per K].
  elemental function planck_dt(lambda, t) result(db)
    real(dp), intent(in) :: lambda, t
    real(dp) :: db, x, em1
    x = c2_planck / (lambda * t)
    if (x < 1.0e-8_dp) then
      db = c1_planck / lambda**5 / x / t
    else
      em1 = expm1_(x)
      ! d/dT [1/(e^x - 1)] = e^x / (e^x - 1)^2 * x / T
      db = c1_planck / lambda**5 * (em1 + 1.0_dp) / (em1 * em1) * x / t
    end if
  end function planck_dt

  !> Two-level NLTE line source function (spec-forward §7.10, SIR 2017): c1 lambda^-5 / (r e^x - 1) with
  !> x = c2/(lambda T) and r = b_lower / b_upper (r = 1: the Planck function, computed as planck).
  elemental function planck_nlte(lambda, t, r) result(b)
    real(dp), intent(in) :: lambda, t, r
    real(dp) :: b, x
    if (r == 1.0_dp) then
      b = planck(lambda, t)
      return
    end if
    x = c2_planck / (lambda * t)
    b = c1_planck / lambda**5 / (r * exp(x) - 1.0_dp)
  end function planck_nlte

  !> d planck_nlte / dT at fixed departure coefficients [B units per K].
  elemental function planck_nlte_dt(lambda, t, r) result(db)
    real(dp), intent(in) :: lambda, t, r
    real(dp) :: db, x, d
    if (r == 1.0_dp) then
      db = planck_dt(lambda, t)
      return
    end if
    x = c2_planck / (lambda * t)
    d = r * exp(x) - 1.0_dp
    db = c1_planck / lambda**5 * r * exp(x) / (d * d) * x / t
  end function planck_nlte_dt

  !> exp(x) - 1 without cancellation for small x.
  elemental function expm1_(x) result(y)
    real(dp), intent(in) :: x
    real(dp) :: y
    if (abs(x) < 1.0e-5_dp) then
      y = x * (1.0_dp + 0.5_dp * x * (1.0_dp + x / 3.0_dp))
    else
      y = exp(x) - 1.0_dp
    end if
  end function expm1_

end module pyinv_planck
