!> The flat, f2py-visible interface of the pyinv engine (the only file f2py reads).
!>
!> Rules: procedures of module pyinv_api only (flat: no derived types), explicit-shape arrays, every real argument declared literally as
!> real(c_double) and every integer as integer(c_int) (f2py would silently wrap an unresolved kind
!> as float32), an integer error code `ierr` as the last argument (0 = success; messages in
!> errors.f90 via engine_error_message). No I/O, no STOP, no global state.
!> Developers add their procedures in their own section below.

module pyinv_api
  implicit none
  private
  public :: engine_error_message, voigt_hf, voigt_hf_deriv, planck_bt

contains

! ---------------------------------------------------------------------------------------------------
! section: general
! ---------------------------------------------------------------------------------------------------

!> Text of an engine error code.
subroutine engine_error_message(code, msg)
  use, intrinsic :: iso_c_binding, only: c_int
  use pyinv_errors, only: error_message
  implicit none
  integer(c_int), intent(in) :: code
  character(len=80), intent(out) :: msg
  msg = error_message(int(code))
end subroutine engine_error_message

! ---------------------------------------------------------------------------------------------------
! section: voigt and planck
! ---------------------------------------------------------------------------------------------------

!> Voigt H(a,v) and Faraday-Voigt F(a,v) = Im w / 2 at n points.
subroutine voigt_hf(n, a, v, h, f, ierr)
  use, intrinsic :: iso_c_binding, only: c_double, c_int
  use pyinv_voigt, only: voigt_faraday
  use pyinv_errors, only: err_ok, err_domain
  implicit none
  integer(c_int), intent(in) :: n
  real(c_double), intent(in) :: a(n), v(n)
  real(c_double), intent(out) :: h(n), f(n)
  integer(c_int), intent(out) :: ierr
  ierr = err_ok
  h = 0.0_c_double
  f = 0.0_c_double
  if (any(.not. (a >= 0.0_c_double)) .or. any(.not. (abs(v) < huge(1.0_c_double)))) then
    ierr = err_domain
    return
  end if
  call voigt_faraday(a, v, h, f)
end subroutine voigt_hf

!> Voigt H, F and their derivatives with respect to v and a at n points.
subroutine voigt_hf_deriv(n, a, v, h, f, dhdv, dfdv, dhda, dfda, ierr)
  use, intrinsic :: iso_c_binding, only: c_double, c_int
  use pyinv_voigt, only: voigt_faraday_deriv
  use pyinv_errors, only: err_ok, err_domain
  implicit none
  integer(c_int), intent(in) :: n
  real(c_double), intent(in) :: a(n), v(n)
  real(c_double), intent(out) :: h(n), f(n), dhdv(n), dfdv(n), dhda(n), dfda(n)
  integer(c_int), intent(out) :: ierr
  ierr = err_ok
  h = 0; f = 0; dhdv = 0; dfdv = 0; dhda = 0; dfda = 0
  if (any(.not. (a >= 0.0_c_double)) .or. any(.not. (abs(v) < huge(1.0_c_double)))) then
    ierr = err_domain
    return
  end if
  call voigt_faraday_deriv(a, v, h, f, dhdv, dfdv, dhda, dfda)
end subroutine voigt_hf_deriv

!> Planck function B_lambda(T) and dB/dT at n temperatures for one wavelength [cm].
subroutine planck_bt(n, lambda_cm, t, b, dbdt, ierr)
  use, intrinsic :: iso_c_binding, only: c_double, c_int
  use pyinv_planck, only: planck, planck_dt
  use pyinv_errors, only: err_ok, err_nonpositive_t, err_domain
  implicit none
  integer(c_int), intent(in) :: n
  real(c_double), intent(in) :: lambda_cm
  real(c_double), intent(in) :: t(n)
  real(c_double), intent(out) :: b(n), dbdt(n)
  integer(c_int), intent(out) :: ierr
  ierr = err_ok
  b = 0; dbdt = 0
  if (.not. (lambda_cm > 0.0_c_double) .or. lambda_cm > huge(1.0_c_double)) then
    ierr = err_domain
    return
  end if
  if (any(.not. (t > 0.0_c_double)) .or. any(t > huge(1.0_c_double))) then
    ierr = err_nonpositive_t
    return
  end if
  b = planck(lambda_cm, t)
  dbdt = planck_dt(lambda_cm, t)
end subroutine planck_bt

! ---------------------------------------------------------------------------------------------------
! section: thermodynamics (equation of state, hydrostatic equilibrium, continuum opacity)
! ---------------------------------------------------------------------------------------------------

! ---------------------------------------------------------------------------------------------------
! section: synthesis (line opacity, Zeeman, formal solution, post-processing)
! ---------------------------------------------------------------------------------------------------

end module pyinv_api
