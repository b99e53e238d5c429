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
  public :: engine_version  ! section: general
  public :: engine_error_message, voigt_hf, voigt_hf_n, voigt_hf_deriv, planck_bt
  public :: synth_stokes, zeeman_components, formal_solution, hsra_intensity, convolve_stokes
  public :: synth_rf  ! section: synthesis (response functions)
  public :: thermo_eos, thermo_eos_deriv, thermo_pe_from_pg, thermo_kappa, thermo_kappa_deriv, &
            thermo_hydrostatic_guess, &
            thermo_hydrostatic, thermo_atomic  ! section: thermodynamics
  public :: inv_allowed_nodes, inv_node_basis, inv_svd_solve, inv_sigma, inv_he_pe_jacobian, &
            inv_node_jacobian, inv_cycle  ! section: inversion

contains

! ---------------------------------------------------------------------------------------------------
! section: general
! ---------------------------------------------------------------------------------------------------

!> Version of the compiled engine: the pyinv version it was built from and the API version.
subroutine engine_version(version, api_version)
  use, intrinsic :: iso_c_binding, only: c_int
  use pyinv_version, only: engine_version_string, engine_api_version
  implicit none
  character(len=32), intent(out) :: version
  integer(c_int), intent(out) :: api_version
  version = engine_version_string
  api_version = int(engine_api_version, c_int)
end subroutine engine_version

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

!> Voigt H and F at n points through the vectorised profile loop of the synthesis (pyinv_voigt::voigt_n).
subroutine voigt_hf_n(n, a, v, h, f, ierr)
  use, intrinsic :: iso_c_binding, only: c_double, c_int
  use pyinv_voigt, only: voigt_n
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
  call voigt_n(int(n), a, v, h, f)
end subroutine voigt_hf_n

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

!> EOS at n depths: out(:, k) = component k of eos_state (order of pyinv_eos eos_state_to_array).
subroutine thermo_eos(n, t, pe, eps, sir_compat, out, ierr)
  use, intrinsic :: iso_c_binding, only: c_double, c_int
  use pyinv_eos, only: eos_state, eos_solve, eos_state_to_array, n_eos_fields
  implicit none
  integer(c_int), intent(in) :: n, sir_compat
  real(c_double), intent(in) :: t(n), pe(n), eps(92)
  real(c_double), intent(out) :: out(n, 25)
  integer(c_int), intent(out) :: ierr
  type(eos_state) :: st
  integer :: i, ie
  ierr = 0
  out = 0.0_c_double
  do i = 1, n
    call eos_solve(t(i), pe(i), eps, st, ie, int(sir_compat))
    if (ie /= 0) then
      ierr = ie; return
    end if
    out(i, :) = eos_state_to_array(st)
  end do
end subroutine thermo_eos

!> EOS and partial derivatives of every component w.r.t. T (fixed Pe) and Pe (fixed T).
subroutine thermo_eos_deriv(n, t, pe, eps, sir_compat, out, dout_dt, dout_dpe, ierr)
  use, intrinsic :: iso_c_binding, only: c_double, c_int
  use pyinv_eos, only: eos_state, eos_solve_deriv, eos_state_to_array
  implicit none
  integer(c_int), intent(in) :: n, sir_compat
  real(c_double), intent(in) :: t(n), pe(n), eps(92)
  real(c_double), intent(out) :: out(n, 25), dout_dt(n, 25), dout_dpe(n, 25)
  integer(c_int), intent(out) :: ierr
  type(eos_state) :: st, sdt, sdp
  integer :: i, ie
  ierr = 0
  out = 0; dout_dt = 0; dout_dpe = 0
  do i = 1, n
    call eos_solve_deriv(t(i), pe(i), eps, st, sdt, sdp, ie, int(sir_compat))
    if (ie /= 0) then
      ierr = ie; return
    end if
    out(i, :) = eos_state_to_array(st)
    dout_dt(i, :) = eos_state_to_array(sdt)
    dout_dpe(i, :) = eos_state_to_array(sdp)
  end do
end subroutine thermo_eos_deriv

!> Electron pressure from (T, P_g) at n points (spec §4.5).
subroutine thermo_pe_from_pg(n, t, pg, eps, sir_compat, pe, ierr)
  use, intrinsic :: iso_c_binding, only: c_double, c_int
  use pyinv_eos, only: pe_from_pg
  implicit none
  integer(c_int), intent(in) :: n, sir_compat
  real(c_double), intent(in) :: t(n), pg(n), eps(92)
  real(c_double), intent(out) :: pe(n)
  integer(c_int), intent(out) :: ierr
  integer :: i, ie
  ierr = 0
  pe = 0
  do i = 1, n
    call pe_from_pg(t(i), pg(i), eps, pe(i), ie, sir_compat=int(sir_compat))
    if (ie /= 0) then
      ierr = ie; return
    end if
  end do
end subroutine thermo_pe_from_pg

!> Continuum cross-section per H nucleus at one air wavelength [cm] and n (T, Pe) points, with
!> the 13 individual contributions (pyinv_continuum kc_* order).
subroutine thermo_kappa(n, lambda_cm, t, pe, eps, sir_compat, kappa, comp, ierr)
  use, intrinsic :: iso_c_binding, only: c_double, c_int
  use pyinv_eos, only: eos_state, eos_solve
  use pyinv_continuum, only: kappa_components
  implicit none
  integer(c_int), intent(in) :: n, sir_compat
  real(c_double), intent(in) :: lambda_cm, t(n), pe(n), eps(92)
  real(c_double), intent(out) :: kappa(n), comp(n, 13)
  integer(c_int), intent(out) :: ierr
  type(eos_state) :: st
  integer :: i, ie
  ierr = 0
  kappa = 0; comp = 0
  do i = 1, n
    call eos_solve(t(i), pe(i), eps, st, ie, int(sir_compat))
    if (ie == 0) call kappa_components(lambda_cm, st, eps, comp(i, :), ie, int(sir_compat))
    if (ie /= 0) then
      ierr = ie; return
    end if
    kappa(i) = sum(comp(i, :))
  end do
end subroutine thermo_kappa

!> Continuum cross-section per H nucleus and its total derivatives w.r.t. T and Pe.
subroutine thermo_kappa_deriv(n, lambda_cm, t, pe, eps, sir_compat, kappa, dk_dt, dk_dpe, ierr)
  use, intrinsic :: iso_c_binding, only: c_double, c_int
  use pyinv_continuum, only: kappa_continuum_deriv
  implicit none
  integer(c_int), intent(in) :: n, sir_compat
  real(c_double), intent(in) :: lambda_cm, t(n), pe(n), eps(92)
  real(c_double), intent(out) :: kappa(n), dk_dt(n), dk_dpe(n)
  integer(c_int), intent(out) :: ierr
  integer :: i, ie
  ierr = 0
  kappa = 0; dk_dt = 0; dk_dpe = 0
  do i = 1, n
    call kappa_continuum_deriv(lambda_cm, t(i), pe(i), eps, kappa(i), dk_dt(i), dk_dpe(i), ie, &
                               int(sir_compat))
    if (ie /= 0) then
      ierr = ie; return
    end if
  end do
end subroutine thermo_kappa_deriv

!> Hydrostatic equilibrium (spec §5): boundary 0 = keep pe_top, 1 = top Pg = bvalue, 2 = top rho.
subroutine thermo_hydrostatic(n, logtau, t, pe_top, boundary, bvalue, mu, eps, sir_compat, &
                              pe, pg, rho, z, kappa5_gram, ierr)
  use, intrinsic :: iso_c_binding, only: c_double, c_int
  use pyinv_hydrostatic, only: hydrostatic_eq
  implicit none
  integer(c_int), intent(in) :: n, boundary, sir_compat
  real(c_double), intent(in) :: logtau(n), t(n), pe_top, bvalue, mu, eps(92)
  real(c_double), intent(out) :: pe(n), pg(n), rho(n), z(n), kappa5_gram(n)
  integer(c_int), intent(out) :: ierr
  integer :: ie
  call hydrostatic_eq(int(n), logtau, t, pe_top, int(boundary), bvalue, mu, eps, pe, pg, rho, z, &
                      kappa5_gram, ie, int(sir_compat))
  ierr = ie
end subroutine thermo_hydrostatic

!> thermo_hydrostatic with a starting guess of the P_e column (entries <= 0 ignored).
subroutine thermo_hydrostatic_guess(n, logtau, t, pe_top, boundary, bvalue, mu, eps, sir_compat, &
                                    pe_guess, pe, pg, rho, z, kappa5_gram, ierr)
  use, intrinsic :: iso_c_binding, only: c_double, c_int
  use pyinv_hydrostatic, only: hydrostatic_eq
  implicit none
  integer(c_int), intent(in) :: n, boundary, sir_compat
  real(c_double), intent(in) :: logtau(n), t(n), pe_top, bvalue, mu, eps(92), pe_guess(n)
  real(c_double), intent(out) :: pe(n), pg(n), rho(n), z(n), kappa5_gram(n)
  integer(c_int), intent(out) :: ierr
  integer :: ie
  call hydrostatic_eq(int(n), logtau, t, pe_top, int(boundary), bvalue, mu, eps, pe, pg, rho, z, &
                      kappa5_gram, ie, int(sir_compat), pe_guess)
  ierr = ie
end subroutine thermo_hydrostatic_guess

!> Partition functions U_I, U_II, U_III and dU/dT of element iz at n temperatures; weight and
!> ionisation energies [eV].
subroutine thermo_atomic(iz, n, t, u, du, weight, chi1, chi2, ierr)
  use, intrinsic :: iso_c_binding, only: c_double, c_int
  use pyinv_atomic, only: partition_functions_dt, atomic_weight, ionisation_energies
  implicit none
  integer(c_int), intent(in) :: iz, n
  real(c_double), intent(in) :: t(n)
  real(c_double), intent(out) :: u(n, 3), du(n, 3), weight, chi1, chi2
  integer(c_int), intent(out) :: ierr
  integer :: i
  ierr = 0
  u = 0; du = 0; weight = 0; chi1 = 0; chi2 = 0
  if (iz < 1 .or. iz > 92) then
    ierr = 1; return
  end if
  do i = 1, n
    call partition_functions_dt(int(iz), t(i), u(i, 1), u(i, 2), u(i, 3), du(i, 1), du(i, 2), du(i, 3))
  end do
  weight = atomic_weight(int(iz))
  call ionisation_energies(int(iz), chi1, chi2)
end subroutine thermo_atomic

! ---------------------------------------------------------------------------------------------------
! section: synthesis (line opacity, Zeeman, formal solution, post-processing)
! ---------------------------------------------------------------------------------------------------

!> LTE Stokes synthesis of one model atmosphere (spec-forward.md §1, §7-§9; see pyinv_synthesis).
!> Set-up buffers ibuf(ni), rbuf(nr) as packed by pyinv.engine.Setup (layout: pyinv_synthesis
!> setup_from_buffers). Model x(n, 7) on the log tau grid logtau(n) (deepest first), columns T [K],
!> Pe [dyn cm-2], vmic [cm/s], B [G], vlos [cm/s], gamma, phi [deg]; vmac [km/s]. nw, nl: the set-up's
!> wavelength and line counts. Out: stokes(4, nw) / I_c(HSRA), amax(nl) largest damping per line, ierr.
subroutine synth_stokes(ni, ibuf, nr, rbuf, n, logtau, x, vmac, nw, nl, stokes, amax, ierr)
  use, intrinsic :: iso_c_binding, only: c_double, c_int
  use pyinv_synthesis, only: synth_setup, setup_from_buffers, synth_model
  use pyinv_errors, only: err_bad_size
  implicit none
  integer(c_int), intent(in) :: ni, nr, n, nw, nl
  integer(c_int), intent(in) :: ibuf(ni)
  real(c_double), intent(in) :: rbuf(nr), logtau(n), x(n, 7), vmac
  real(c_double), intent(out) :: stokes(4, nw), amax(nl)
  integer(c_int), intent(out) :: ierr
  type(synth_setup) :: s
  integer :: ie
  stokes = 0.0_c_double
  amax = 0.0_c_double
  call setup_from_buffers(int(ni), int(ibuf), int(nr), rbuf, s, ie)
  if (ie == 0 .and. (s%nw /= nw .or. s%nl /= nl)) ie = err_bad_size
  if (ie == 0) call synth_model(s, int(n), logtau, x, vmac, stokes, amax, ie)
  ierr = ie
end subroutine synth_stokes

!> Zeeman pattern of an LS transition (spec §7.7): per group g (1 pi, 2 sigma_r, 3 sigma_b)
!> ncomp(g) components with shift(k, g) = g_l M_l - g_u M_u and normalised strength(k, g).
subroutine zeeman_components(mult_l, l_l, j_l, mult_u, l_u, j_u, use_geff, geff, ncomp, shift, &
                             strength, ierr)
  use, intrinsic :: iso_c_binding, only: c_double, c_int
  use pyinv_zeeman, only: zeeman_pattern
  implicit none
  real(c_double), intent(in) :: mult_l, l_l, j_l, mult_u, l_u, j_u, geff
  integer(c_int), intent(in) :: use_geff
  integer(c_int), intent(out) :: ncomp(3)
  real(c_double), intent(out) :: shift(20, 3), strength(20, 3)
  integer(c_int), intent(out) :: ierr
  integer :: nc(3), ie
  call zeeman_pattern(mult_l, l_l, j_l, mult_u, l_u, j_u, int(use_geff), geff, nc, shift, strength, ie)
  ncomp = nc
  ierr = ie
end subroutine zeeman_components

!> Hermitian formal solution (spec §8) for given propagation-matrix elements k7(7, n) =
!> (eta_I, eta_Q, eta_U, eta_V, rho_Q, rho_U, rho_V) per unit tau5 and source function s(n), on the
!> log tau5 grid logtau (deepest first). scalar /= 0 uses the non-magnetic path (eta_I only).
!> Out: stokes(4) at the top grid point, stokes_depth(4, n), ib (lower-boundary index), ierr.
subroutine formal_solution(n, logtau, k7, s, scalar, stokes, stokes_depth, ib, ierr)
  use, intrinsic :: iso_c_binding, only: c_double, c_int
  use pyinv_formal_solver, only: hermite_polarised, hermite_scalar
  use pyinv_errors, only: err_logtau_order, err_not_finite
  implicit none
  integer(c_int), intent(in) :: n, scalar
  real(c_double), intent(in) :: logtau(n), k7(7, n), s(n)
  real(c_double), intent(out) :: stokes(4), stokes_depth(4, n)
  integer(c_int), intent(out) :: ib, ierr
  real(c_double) :: ltau(n), idep(n)
  integer :: ibo, ie
  stokes = 0; stokes_depth = 0; ib = 0
  if (.not. (all(abs(k7) < huge(1.0_c_double)) .and. all(abs(s) < huge(1.0_c_double)) .and. &
             all(abs(logtau) < huge(1.0_c_double)))) then
    ierr = err_not_finite
    return
  end if
  if (n >= 2) then
    if (any(logtau(2:n) >= logtau(1:n-1))) then
      ierr = err_logtau_order
      return
    end if
  end if
  ltau = log(10.0_c_double) * 10.0_c_double**logtau
  if (scalar /= 0) then
    call hermite_scalar(n, logtau, ltau, k7(1, :), s, stokes(1), ie, ibo, idep)
    stokes_depth(1, :) = idep
  else
    call hermite_polarised(n, logtau, ltau, k7, s, stokes, ie, ibo, stokes_depth)
  end if
  ib = ibo
  ierr = ie
end subroutine formal_solution

!> HSRA disk-centre continuum (spec §9.1, Appendix C) at n air wavelengths [Å].
subroutine hsra_intensity(n, lam, ic, ierr)
  use, intrinsic :: iso_c_binding, only: c_double, c_int
  use pyinv_synthesis, only: hsra_continuum
  use pyinv_errors, only: err_domain
  implicit none
  integer(c_int), intent(in) :: n
  real(c_double), intent(in) :: lam(n)
  real(c_double), intent(out) :: ic(n)
  integer(c_int), intent(out) :: ierr
  ierr = 0
  ic = 0
  if (.not. all(lam > 0.0_c_double .and. lam < huge(1.0_c_double))) then
    ierr = err_domain
    return
  end if
  ic = hsra_continuum(lam)
end subroutine hsra_intensity

!> Macroturbulence / PSF convolution of one line group (spec §9.2-§9.3): y(4, m) sampled at x [mÅ],
!> Gaussian standard deviation sigma [mÅ]; PSF applied when npsf >= 2.
subroutine convolve_stokes(m, x, y, sigma, npsf, psf_x, psf_y, ierr)
  use, intrinsic :: iso_c_binding, only: c_double, c_int
  use pyinv_convolution, only: convolve_group
  implicit none
  integer(c_int), intent(in) :: m, npsf
  real(c_double), intent(in) :: x(m), sigma, psf_x(npsf), psf_y(npsf)
  real(c_double), intent(inout) :: y(4, m)
  integer(c_int), intent(out) :: ierr
  integer :: ie
  call convolve_group(4, m, x, y, sigma, npsf, psf_x, psf_y, ie)
  ierr = ie
end subroutine convolve_stokes

!> Response functions of synth_stokes (pyinv_response::synth_rf): arguments as synth_stokes plus
!> want(7) (1 = compute that model column). Out: stokes(4, nw) as synth_stokes; rf(4, nw, n, 7) =
!> d stokes / d x(k, v) per K, dyn cm-2, cm/s, G, cm/s, degree, degree (T at fixed Pe, Pe at fixed T);
!> rf_vmac(4, nw) per km/s; amax(nl); ierr.
subroutine synth_rf(ni, ibuf, nr, rbuf, n, logtau, x, vmac, want, nw, nl, stokes, rf, rf_vmac, amax, ierr)
  use, intrinsic :: iso_c_binding, only: c_double, c_int
  use pyinv_synthesis, only: synth_setup, setup_from_buffers
  use pyinv_response, only: response_model => synth_rf
  use pyinv_errors, only: err_bad_size
  implicit none
  integer(c_int), intent(in) :: ni, nr, n, nw, nl
  integer(c_int), intent(in) :: ibuf(ni), want(7)
  real(c_double), intent(in) :: rbuf(nr), logtau(n), x(n, 7), vmac
  real(c_double), intent(out) :: stokes(4, nw), rf(4, nw, n, 7), rf_vmac(4, nw), amax(nl)
  integer(c_int), intent(out) :: ierr
  type(synth_setup) :: s
  integer :: ie
  stokes = 0; rf = 0; rf_vmac = 0; amax = 0
  call setup_from_buffers(int(ni), int(ibuf), int(nr), rbuf, s, ie)
  if (ie == 0 .and. (s%nw /= nw .or. s%nl /= nl)) ie = err_bad_size
  if (ie == 0) call response_model(s, int(n), logtau, x, vmac, int(want), stokes, rf, rf_vmac, amax, ie)
  ierr = ie
end subroutine synth_rf

! ---------------------------------------------------------------------------------------------------
! section: inversion (nodes, Levenberg-Marquardt)
! Set-up buffers and model arrays x(n, 7) as synth_stokes (section: synthesis).
! ---------------------------------------------------------------------------------------------------

!> Largest SIR-allowed node count <= nreq on a grid of ndep points (spec-inversion §2.1).
subroutine inv_allowed_nodes(ndep, nreq, nout)
  use, intrinsic :: iso_c_binding, only: c_int
  use pyinv_nodes, only: allowed_node_count
  implicit none
  integer(c_int), intent(in) :: ndep, nreq
  integer(c_int), intent(out) :: nout
  nout = allowed_node_count(int(ndep), int(nreq))
end subroutine inv_allowed_nodes

!> Interpolation basis f(ndep, n) (§2.3). usex = 0: SIR's equidistant layout (xn ignored);
!> usex = 1: nodes at log tau positions xn(n). mode 0 splines, 1 linear.
subroutine inv_node_basis(ndep, logtau, n, usex, xn, mode, f, idx, ierr)
  use, intrinsic :: iso_c_binding, only: c_double, c_int
  use pyinv_nodes, only: sir_node_basis, node_basis, node_indices
  implicit none
  integer(c_int), intent(in) :: ndep, n, usex, mode
  real(c_double), intent(in) :: logtau(ndep), xn(n)
  real(c_double), intent(out) :: f(ndep, n)
  integer(c_int), intent(out) :: idx(n), ierr
  integer :: ie, id(n)
  idx = 0
  if (usex /= 0) then
    call node_basis(int(ndep), logtau, int(n), xn, int(mode), f, ie)
  else
    call sir_node_basis(int(ndep), logtau, int(n), int(mode), f, ie)
    if (ie == 0) then
      call node_indices(int(ndep), int(n), id, ie)
      idx = id
    end if
  end if
  ierr = ie
end subroutine inv_node_basis

!> SVD a = u diag(w) v^T (one-sided Jacobi) and SIR's modified-SVD solution of a delta = b with
!> parameter blocks blk(m) (nvar blocks) and tolerance eps (§3.3).
subroutine inv_svd_solve(m, a, b, blk, nvar, eps, u, w, v, delta, ierr)
  use, intrinsic :: iso_c_binding, only: c_double, c_int
  use pyinv_linalg, only: jacobi_svd, modified_svd_solve
  implicit none
  integer(c_int), intent(in) :: m, nvar
  integer(c_int), intent(in) :: blk(m)
  real(c_double), intent(in) :: a(m, m), b(m), eps
  real(c_double), intent(out) :: u(m, m), w(m), v(m, m), delta(m)
  integer(c_int), intent(out) :: ierr
  integer :: ie
  call jacobi_svd(int(m), a, u, w, v, ie)
  if (ie == 0) call modified_svd_solve(int(m), a, b, int(blk), int(nvar), eps, delta, ie)
  ierr = ie
end subroutine inv_svd_solve

!> SIR's per-line, per-Stokes sigma (§3.1): sig(4, nw), 1/sigma^2 weights wgt, counts.
subroutine inv_sigma(nw, ng, wgrp, obs, weights, snr, sig, wgt, nobs, nmask, ierr)
  use, intrinsic :: iso_c_binding, only: c_double, c_int
  use pyinv_inversion, only: stokes_sigma
  implicit none
  integer(c_int), intent(in) :: nw, ng
  integer(c_int), intent(in) :: wgrp(nw)
  real(c_double), intent(in) :: obs(4, nw), weights(4), snr
  real(c_double), intent(out) :: sig(4, nw), wgt(4, nw)
  integer(c_int), intent(out) :: nobs, nmask, ierr
  integer :: ie, no, nm
  call stokes_sigma(int(nw), int(ng), int(wgrp), obs, weights, snr, sig, wgt, no, nm, ie)
  nobs = no; nmask = nm; ierr = ie
end subroutine inv_sigma

!> d Pe_i / d T_j with Pe in hydrostatic equilibrium (boundary 0: top Pe fixed; 1: top Pg = bvalue;
!> 2: top rho = bvalue), for the HE-coupled temperature RF. method 0: tangent-linear of the HE solver;
!> 1: central finite differences of hydrostatic_eq.
subroutine inv_he_pe_jacobian(n, logtau, t, pe_top, boundary, bvalue, mu, eps, sir_compat, method, dpe, ierr)
  use, intrinsic :: iso_c_binding, only: c_double, c_int
  use pyinv_hydrostatic, only: he_pe_jacobian
  implicit none
  integer(c_int), intent(in) :: n, boundary, sir_compat, method
  real(c_double), intent(in) :: logtau(n), t(n), pe_top, bvalue, mu, eps(92)
  real(c_double), intent(out) :: dpe(n, n)
  integer(c_int), intent(out) :: ierr
  integer :: ie
  call he_pe_jacobian(eps, int(sir_compat), int(n), logtau, t, pe_top, int(boundary), bvalue, mu, int(method), &
                      dpe, ie)
  ierr = ie
end subroutine inv_he_pe_jacobian

!> Node Jacobian jac(4, nw, m) (m = free node parameters in slot order T, Pe, vmic, B, vlos, gamma,
!> phi, vmac; relative units of §2.2, radians for angles) at model x(n, 7) (columns as synth_stokes):
!> jac_mode 0 directional finite differences, 1 depth-resolved RFs compressed by the chain rule.
!> he = 1: Pe follows HE (boundary, bvalue, mu). Node counts nodes(8); explicit positions
!> xnodes(:, v) where usex(v) = 1; maxm >= m.
subroutine inv_node_jacobian(ni, ibuf, nr, rbuf, n, logtau, x, vmac, nodes, maxnp, xnodes, usex, interp, &
                             he, boundary, bvalue, mu, jac_mode, nw, maxm, jac, m, ierr)
  use, intrinsic :: iso_c_binding, only: c_double, c_int
  use pyinv_synthesis, only: synth_setup, setup_from_buffers
  use pyinv_nodes, only: node_jacobian_at
  use pyinv_errors, only: err_bad_size
  implicit none
  integer(c_int), intent(in) :: ni, nr, n, maxnp, interp, he, boundary, jac_mode, nw, maxm
  integer(c_int), intent(in) :: ibuf(ni), nodes(8), usex(8)
  real(c_double), intent(in) :: rbuf(nr), logtau(n), x(n, 7), vmac, bvalue, mu, xnodes(maxnp, 8)
  real(c_double), intent(out) :: jac(4, nw, maxm)
  integer(c_int), intent(out) :: m, ierr
  type(synth_setup) :: s
  integer :: ie, mm
  jac = 0
  m = 0
  call setup_from_buffers(int(ni), int(ibuf), int(nr), rbuf, s, ie)
  if (ie == 0 .and. s%nw /= nw) ie = err_bad_size
  if (ie == 0) then
    call node_jacobian_at(s, int(n), logtau, x, vmac, int(nodes), int(maxnp), xnodes, int(usex), int(interp), &
                          int(he), int(boundary), bvalue, mu, int(jac_mode), int(maxm), jac, mm, ie)
    m = mm
  end if
  ierr = ie
end subroutine inv_node_jacobian

!> One Levenberg-Marquardt cycle (see pyinv_inversion::lm_cycle) of nc = 1 or 2 components with
!> filling factor and stray light. Set-up buffers as synth_stokes. x(n, 7, nc), vmac(nc): in: starting
!> model; out: best model. obs(4, nw); weights(4); snr; nodes(8, nc) (slot order T, Pe, vmic, B, vlos,
!> gamma, phi, vmac; -1 = tied to the other component); xnodes(maxnp, 8)/usex(8) explicit node positions;
!> interp; svdtol; lambda0; boundary(nc)/bvalue(nc) (0 top Pe kept, 1 top Pg, 2 top rho); mu; mpress (1 =
!> magnetic pressure in HE); mix(2) (in/out: filling factor of component 2, stray-light fraction 0..1);
!> invmix(2) (1 = invert them); stray(4, nw) the stray-light profile; icon (> 0: obs(:, icon) is the
!> continuum-contrast pseudo-observation, two components); maxit; jac_mode (0 directional FD,
!> 1 depth RFs + chain rule); jac_reuse (Broyden updates in a row between exact Jacobians, 0 = SIR:
!> always exact); rtol (0 = SIR's stopping rules only); rules (0 SIR's λ schedule and stop, 1 pyinv's gain-ratio
!> λ and Gauss-Newton-predicted stop with tolerance rtol); want_errors (0: skip the uncertainties and their
!> final Jacobian). Out: fit(4, nw) (mixed), pg, rho, z (n, nc) (HE of the final T), err(n, 10, nc) (.err
!> formula: T, Pe, vmic, B, vlos, gamma, phi, z, Pg, rho), err_vmac(nc), err_mix(2), cerr(n, 7, nc)/
!> cerr_vmac(nc)/cerr_mix(2) (full covariance), cov(maxm, maxm), trace(maxtr, 3), info(6) and rinfo(5)
!> (slots info_* / rinfo_* of pyinv_inversion), ierr.
subroutine inv_cycle(ni, ibuf, nr, rbuf, n, nc, logtau, x, vmac, nw, obs, weights, snr, nodes, maxnp, xnodes, &
                     usex, interp, svdtol, lambda0, boundary, bvalue, mu, mpress, mix, invmix, stray, icon, maxit, &
                     jac_mode, jac_reuse, rtol, rules, want_errors, fit, pg, rho, z, err, err_vmac, cerr, cerr_vmac, &
                     err_mix, cerr_mix, maxm, cov, maxtr, trace, info, rinfo, ierr, nhe, memo_ok, memo_want, memo_x, &
                     memo_st, memo_rf, memo_het)
  use, intrinsic :: iso_c_binding, only: c_double, c_int
  use pyinv_synthesis, only: synth_setup, setup_from_buffers
  use pyinv_hydrostatic, only: n_he_terms
  use pyinv_inversion, only: lm_cycle
  use pyinv_errors, only: err_bad_size
  implicit none
  integer(c_int), intent(in) :: ni, nr, n, nc, nw, maxnp, interp, maxit, jac_mode, jac_reuse, want_errors, &
                                maxm, maxtr, mpress, icon, rules
  integer(c_int), intent(in) :: ibuf(ni), nodes(8, nc), usex(8), boundary(nc), invmix(2)
  real(c_double), intent(in) :: rbuf(nr), logtau(n), bvalue(nc), mu, snr, svdtol, lambda0, rtol, xnodes(maxnp, 8)
  real(c_double), intent(in) :: obs(4, nw), weights(4), stray(4, nw)
  real(c_double), intent(inout) :: x(n, 7, nc), vmac(nc), mix(2)
  real(c_double), intent(out) :: fit(4, nw), pg(n, nc), rho(n, nc), z(n, nc), err(n, 10, nc), err_vmac(nc), &
                                 cerr(n, 7, nc), cerr_vmac(nc), err_mix(2), cerr_mix(2), cov(maxm, maxm), &
                                 trace(maxtr, 3), rinfo(5)
  integer(c_int), intent(out) :: info(6), ierr
  !> the RF memo kept by the caller between the cycles of one descent (memo_ok(1) = 0: empty); nhe =
  !> the number of HE terms (pyinv_hydrostatic::n_he_terms = 7; err_bad_size otherwise)
  integer(c_int), intent(in) :: nhe
  integer(c_int), intent(inout) :: memo_ok(1), memo_want(7)
  real(c_double), intent(inout) :: memo_x(n, 7), memo_st(4, nw), memo_rf(4, nw, n, 7), memo_het(n, nhe)
  type(synth_setup) :: s
  integer :: ie, inf(6)
  fit = 0; pg = 0; rho = 0; z = 0; err = 0; err_vmac = 0; cerr = 0; cerr_vmac = 0; cov = 0; trace = 0
  err_mix = 0; cerr_mix = 0; rinfo = 0; info = 0
  call setup_from_buffers(int(ni), int(ibuf), int(nr), rbuf, s, ie)
  if (ie == 0 .and. s%nw /= nw) ie = err_bad_size
  if (ie == 0 .and. nhe /= n_he_terms) ie = err_bad_size
  if (ie == 0) then
    call lm_cycle(s, int(n), logtau, int(nc), x, vmac, obs, weights, snr, int(nodes), int(maxnp), xnodes, &
                  int(usex), int(interp), svdtol, lambda0, int(boundary), bvalue, mu, int(mpress), mix, &
                  int(invmix), stray, int(icon), int(maxit), int(jac_mode), int(jac_reuse), rtol, int(rules), &
                  int(want_errors), fit, pg, &
                  rho, z, err, err_vmac, cerr, cerr_vmac, err_mix, cerr_mix, int(maxm), cov, int(maxtr), trace, &
                  inf, rinfo, ie, memo_ok(1), memo_want, memo_x, memo_st, memo_rf, memo_het)
    info = inf
  end if
  ierr = ie
end subroutine inv_cycle

end module pyinv_api
