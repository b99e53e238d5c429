!> Integer error codes returned by every engine procedure, and their messages.
!> 0 = success. Codes are grouped by physical concern; pyinv.engine maps them to exceptions
!> using error_message(). Add new codes here (and only here), never STOP or print.
module pyinv_errors
  implicit none
  private
  integer, parameter, public :: err_ok = 0
  integer, parameter, public :: err_bad_input = 1        ! generic invalid argument
  integer, parameter, public :: err_nonpositive_t = 2    ! temperature <= 0 or not finite
  integer, parameter, public :: err_nonpositive_pe = 3   ! electron pressure <= 0 or not finite
  integer, parameter, public :: err_logtau_order = 4     ! log tau not strictly decreasing
  integer, parameter, public :: err_not_finite = 5       ! NaN / Inf in an input column
  integer, parameter, public :: err_no_convergence = 6   ! iterative solver did not converge
  integer, parameter, public :: err_singular = 7         ! singular matrix in a linear solve
  integer, parameter, public :: err_bad_zeeman = 8       ! unknown term / too many Zeeman components
  integer, parameter, public :: err_bad_size = 9         ! inconsistent array sizes
  integer, parameter, public :: err_domain = 10          ! argument outside the domain of a fit
  integer, parameter, public :: err_no_data = 11         ! no data to fit (all weights zero / all masked)
  integer, parameter, public :: err_zero_parameter = 12  ! relative inversion parameter starts at zero
  integer, parameter, public :: n_errors = 12

  public :: error_message

contains

  !> Human-readable text for an error code (blank-padded to 80 characters).
  pure function error_message(code) result(msg)
    integer, intent(in) :: code
    character(len=80) :: msg
    select case (code)
    case (err_ok);              msg = 'success'
    case (err_bad_input);       msg = 'invalid input argument'
    case (err_nonpositive_t);   msg = 'temperature must be positive and finite'
    case (err_nonpositive_pe);  msg = 'electron pressure must be positive and finite'
    case (err_logtau_order);    msg = 'log tau must be strictly decreasing (deepest point first)'
    case (err_not_finite);      msg = 'input contains NaN or infinite values'
    case (err_no_convergence);  msg = 'iterative solver did not converge'
    case (err_singular);        msg = 'singular matrix in linear solve'
    case (err_bad_zeeman);      msg = 'invalid Zeeman pattern (unknown term or too many components)'
    case (err_bad_size);        msg = 'inconsistent array sizes'
    case (err_domain);          msg = 'argument outside the valid domain'
    case (err_no_data);         msg = 'no data to fit (all Stokes weights zero or all points masked)'
    case (err_zero_parameter);  msg = 'a relatively perturbed parameter is zero (e.g. vmic, vmac or B = 0)'
    case default;               msg = 'unknown error code'
    end select
  end function error_message
end module pyinv_errors
