!> Response functions of the LTE Stokes synthesis (spec-inversion.md §1): the exact derivative of pyinv_synthesis::synth_model's output with
!> respect to every input column at every grid point, plus the macroturbulence.
!>
!> Method (reverse mode per wavelength, forward chain per depth):
!>  * per depth, once: the EOS state, kappa5 and the continuum of every group with their
!>    derivatives w.r.t. T (fixed Pe) and Pe (fixed T) from one set of perturbed EOS states
!>    (central differences in ln T, ln Pe, as pyinv_eos::eos_solve_deriv: the EOS and continuum
!>    have no analytic derivatives; relative accuracy ~1e-8), the Planck derivative, the geometric
!>    factors and their angle derivatives;
!>  * per line and depth, once: the tangent-linear of the line-centre opacity, damping and Doppler
!>    width (pyinv_propagation::line_depth_quantities_tl);
!>  * per wavelength: the propagation matrix with the Voigt/Faraday derivatives of every Zeeman
!>    component (derivatives of the accurate Faddeeva function, or exact derivatives of SIR's rational
!>    approximation with s%sir_voigt /= 0), the Hermitian formal solution and its adjoint
!>    (pyinv_formal_solver::hermite_polarised_adjoint: d I_top / d K(j), d I_top / d S(j) for all j
!>    at once; the boundary index is held fixed), then the chain rule through the per-line
!>    quantities. Because K and S at depth j depend only on the model at depth j, every variable
!>    costs a few multiply-adds per depth and wavelength;
!>  * per group: the HSRA normalisation, and the macroturbulence/PSF convolution applied to the
!>    response functions as the same linear map (pyinv_convolution::convolution_matrix), and its
!>    sigma-derivative applied to the unconvolved profiles for d/d vmac. The kernel matrix is dense
!>    (SIR's Gaussian transfer function is not band-limited on the grid), so this product is the
!>    largest single cost (4 x nλ^2 multiply-adds per depth and variable).
!> SIR's damping cap (s%damping_cap) couples the depths through max(a): its derivative is included (the
!> location of the maximum is held fixed, like the boundary index: piecewise constant).
!> Measured (Hinode case, 53 depths x 112 wavelengths, two lines, vmac > 0): tests/test_response.py
!> agreement with central differences <= 1e-5 relative; cost ~3.7 syntheses (~2.4 without convolution;
!> the dense convolution of the 4 x 53 x 7 RF rows is ~1/3 of the total). The Voigt derivatives of
!> all Zeeman components of a line are evaluated in one call per wavelength, and the adjoint needs
!> only their strength(-and-shift)-weighted sums per component group (line_k7_store).
module pyinv_response
  use pyinv_kinds, only: dp, ln10, pi
  use pyinv_errors, only: err_ok, err_not_finite
  use pyinv_eos, only: eos_state, eos_solve, eos_state_to_array, eos_state_from_array, n_eos_fields, eos_tfac, &
                       eos_tfactors, eos_solve_tf
  use pyinv_continuum, only: kappa_continuum, kappa_coefficients, kappa_from_coef, n_kappa_coef
  use pyinv_planck, only: planck, planck_dt, planck_nlte, planck_nlte_dt
  use pyinv_zeeman, only: max_components
  use pyinv_voigt, only: voigt_deriv_n, voigt_deriv_nw
  use pyinv_propagation, only: line_depth_quantities_tl, voigt_hui_deriv_n, blend_offset_mA, &
                               air_to_vacuum, geometry_factors, k7_add_profiles
  use pyinv_formal_solver, only: hermite_polarised_adjoint, hermite_scalar_adjoint
  use pyinv_departures, only: nlte_opacity_factor, line_source_excess, emission_add, emission_adjoint, &
                              line_first_column, source_vector, source_vector_adjoint
  use pyinv_hydrostatic, only: het_kg, het_kg_t, het_kg_p, het_pg_t, het_pg_p, het_rho_t, het_rho_p, n_he_terms
  use pyinv_synthesis, only: synth_setup, col_t, col_pe, col_vmic, col_b, col_vlos, col_gam, col_phi, n_cols, &
                             synth_check_inputs, hsra_continuum, macro_sigma, &
                             model_is_magnetic, line_components, group_wavelengths
  use pyinv_convolution, only: convolve_group, convolution_matrix
  implicit none
  private
  public :: synth_rf

  !> RF variables: the model columns of pyinv_synthesis (col_*)
  integer, parameter :: rf_t = col_t, rf_pe = col_pe, rf_vmic = col_vmic, rf_b = col_b, rf_vlos = col_vlos, &
                        rf_gam = col_gam, rf_phi = col_phi, n_rf_vars = n_cols

  real(dp), parameter :: larmor = 4.6686e-5_dp       ! as pyinv_synthesis
  real(dp), parameter :: deg = pi / 180.0_dp
  !> ln-step of the central differences of the EOS / continuum in ln T and ln Pe (truncation
  !> ~h^2 (d ln f / d ln T)^2 / 6 <~ 1e-8, round-off ~1e-11 relative)
  real(dp), parameter :: h_fd = 1.0e-5_dp

contains

  !> Response functions: stokes as synth_model; rf(s, w, k, v) = d stokes(s, w) / d x_v(k) (v = rf_t
  !> ... rf_phi; per K, dyn cm^-2, cm/s, G, cm/s, degree, degree); rf_vmac per km/s. want(v) = 0
  !> skips variable v (rf = 0 there). s, logtau, x, vmac as synth_model.
  pure subroutine synth_rf(s, n, logtau, x, vmac, want, stokes, rf, rf_vmac, amax, ierr, he_terms)
    type(synth_setup), intent(in) :: s
    integer, intent(in) :: n
    real(dp), intent(in) :: logtau(n), x(n, n_cols), vmac
    integer, intent(in) :: want(n_cols)
    real(dp), intent(out) :: stokes(4, s%nw), rf(4, s%nw, n, n_cols), rf_vmac(4, s%nw), amax(s%nl)
    integer, intent(out) :: ierr
    !> optional: the local derivatives of pyinv_hydrostatic::he_tangent_terms at this model, from the
    !> EOS derivatives computed here anyway (the inversion's Jacobian needs both)
    real(dp), intent(out), optional :: he_terms(n, n_he_terms)

    type(eos_state) :: st(n), dst_t(n), dst_p(n)
    real(dp) :: kappa5(n), dk5(2, n), geo(5, n), dgeo(5, 2, n), ltau(n), lamk(s%ng + 1)
    real(dp) :: kapk(s%ng + 1), dkapk(2, s%ng + 1), kcg(n, s%ng), dkcg(2, n, s%ng)
    real(dp) :: kc(n), dkc(2, n), src(n), dsrc(n), k7(7, n), eta(n), y4(4)
    real(dp) :: k7bar(4, 7, n), sbar(4, n), etabar(n), sbar1(n), r(4, n, n_rf_vars)
    real(dp) :: lam1, ic, dlam, vm, sig, amu, lv
    real(dp), allocatable :: eta0(:, :), adamp(:, :), inv_dld(:, :), vshift(:, :), vb(:, :), vdop(:, :)
    real(dp), allocatable :: dvb_db(:, :), deta0(:, :, :), dadamp(:, :, :), dlnv(:, :, :), c5(:, :, :)
    real(dp), allocatable :: dld(:), dacap(:, :), amaxu(:), boff(:), shift(:, :), strength(:, :)
    real(dp), allocatable :: hs(:, :, :), fs(:, :, :), dhu(:, :, :), dfu(:, :, :), dha(:, :, :), dfa(:, :, :)
    real(dp), allocatable :: vv(:, :), wx(:), wy(:, :), wyraw(:, :), cm(:, :), dcm(:, :)
    real(dp), allocatable :: xt(:, :, :), yt(:, :, :), gs(:, :, :, :), wv(:, :)
    integer, allocatable :: iwk(:)
    integer, allocatable :: ncomp(:), grp(:, :), widx(:), imaxl(:)
    logical, allocatable :: capped(:)
    real(dp), allocatable :: dsl(:, :), ddsl(:, :), kl(:, :, :)
    real(dp) :: fse(n), dfse(n), w(4, n), sv(4, n), svbar(4, 4, n), wbar(4, 4, n), klbar(4, 4, n), dslbar(4, n)
    real(dp) :: etabl(n), k7bl(4, 7, n)
    integer :: i, g, k, l, j, m, nlg, jw, nmw, kmin, kming, v, maxc, nk
    logical :: magnetic, docv, anycap, desire
    real(dp) :: dsig, inv_ic

    ierr = err_ok
    stokes = 0.0_dp
    rf = 0.0_dp
    rf_vmac = 0.0_dp
    amax = 0.0_dp
    call synth_check_inputs(s, n, logtau, x, vmac, ierr)
    if (ierr /= err_ok) return
    desire = s%ndb > 0 .and. s%desire_departures /= 0

    associate (t => x(:, col_t), pe => x(:, col_pe), vmic => x(:, col_vmic), bfield => x(:, col_b), &
               vlos => x(:, col_vlos), gam => x(:, col_gam), phi => x(:, col_phi), eps => s%eps, &
               iz => s%iz, stage => s%stage, lam => s%lam, chi_e => s%chi_e, loggf => s%loggf, &
               enh => s%enh, alpha => s%alpha, sigma => s%sigma, mult_l => s%mult_l, l_l => s%l_l, &
               j_l => s%j_l, mult_u => s%mult_u, l_u => s%l_u, j_u => s%j_u, use_geff => s%use_geff, &
               geff => s%geff, ng => s%ng, gstart => s%gstart, gcount => s%gcount, glines => s%glines, &
               nw => s%nw, woff => s%woff, wgrp => s%wgrp, npsf => s%npsf, psf_x => s%psf_x, psf_y => s%psf_y)
    ! ---------------- depth quantities (with derivatives) shared by all groups
    lamk(1) = 5.0e-5_dp
    do g = 1, ng
      lamk(g + 1) = lam(glines(gstart(g))) * 1.0e-8_dp
    end do
    do i = 1, n
      call thermo_tl(t(i), pe(i), eps, s%eos_compat, ng + 1, lamk, st(i), dst_t(i), dst_p(i), kapk, dkapk, ierr)
      if (ierr /= err_ok) return
      kappa5(i) = kapk(1)
      dk5(:, i) = dkapk(:, 1)
      if (present(he_terms)) then
        he_terms(i, het_kg) = kappa5(i) * st(i)%per_gram
        he_terms(i, het_kg_t) = dk5(1, i) * st(i)%per_gram + kappa5(i) * dst_t(i)%per_gram
        he_terms(i, het_kg_p) = dk5(2, i) * st(i)%per_gram + kappa5(i) * dst_p(i)%per_gram
        he_terms(i, het_pg_t) = dst_t(i)%pg
        he_terms(i, het_pg_p) = dst_p(i)%pg
        he_terms(i, het_rho_t) = dst_t(i)%rho
        he_terms(i, het_rho_p) = dst_p(i)%rho
      end if
      do g = 1, ng
        kcg(i, g) = kapk(g + 1) / kappa5(i)
        dkcg(:, i, g) = (dkapk(:, g + 1) - kcg(i, g) * dkapk(:, 1)) / kappa5(i)
      end do
      call geometry_factors(gam(i) * deg, phi(i) * deg, geo(:, i))
      call geometry_derivatives(gam(i) * deg, phi(i) * deg, dgeo(:, :, i))
    end do
    dgeo = dgeo * deg
    ltau = ln10 * 10.0_dp**logtau
    magnetic = model_is_magnetic(n, bfield, s%sir_threshold)

    do g = 1, ng
      nlg = gcount(g)
      l = glines(gstart(g))
      lam1 = lam(l)
      kc = kcg(:, g)
      dkc = dkcg(:, :, g)
      src = planck(lam1 * 1.0e-8_dp, t)
      dsrc = planck_dt(lam1 * 1.0e-8_dp, t)
      if (s%ndb > 0 .and. .not. desire) then
        ! NLTE departures, held fixed (SIR 2017, §7.10; the derivatives at fixed b)
        src = planck_nlte(lam1 * 1.0e-8_dp, t, s%bdep(:, 1, glines(gstart(g))) / s%bdep(:, 2, glines(gstart(g))))
        dsrc = planck_nlte_dt(lam1 * 1.0e-8_dp, t, s%bdep(:, 1, glines(gstart(g))) / s%bdep(:, 2, glines(gstart(g))))
      end if
      allocate(eta0(n, nlg), adamp(n, nlg), inv_dld(n, nlg), vshift(n, nlg), vb(n, nlg), vdop(n, nlg), &
               dvb_db(n, nlg), deta0(3, n, nlg), dadamp(3, n, nlg), dlnv(2, n, nlg), c5(5, n, nlg), dld(n), &
               dacap(3, nlg), amaxu(nlg), boff(nlg), ncomp(nlg), imaxl(nlg), capped(nlg), &
               grp(3 * max_components, nlg), shift(3 * max_components, nlg), strength(3 * max_components, nlg), &
               dsl(n, nlg), ddsl(n, nlg), kl(4, n, nlg))
      ! ---- per-line depth quantities and their tangent-linear
      do k = 1, nlg
        l = glines(gstart(g) + k - 1)
        call line_depth_quantities_tl(n, iz(l), stage(l), lam(l) * 1.0e-8_dp, chi_e(l), loggf(l), enh(l), &
                                      alpha(l), sigma(l), eps(iz(l)), s%unsold_physical, t, vmic, st, dst_t, dst_p, &
                                      kappa5, dk5, eta0(:, k), adamp(:, k), dld, vdop(:, k), deta0(:, :, k), &
                                      dadamp(:, :, k), dlnv(:, :, k), ierr)
        if (ierr /= err_ok) return
        dsl(:, k) = 0.0_dp
        ddsl(:, k) = 0.0_dp
        if (desire) then
          ! DeSIRe's form (pyinv_departures), b fixed: eta0 f(T) and the source-function excess S_L - B
          call nlte_opacity_factor(lam(l) * 1.0e-8_dp, t, s%bdep(:, 1, l), s%bdep(:, 2, l), fse, dfse)
          deta0(1, :, k) = deta0(1, :, k) * fse + eta0(:, k) * dfse
          deta0(2, :, k) = deta0(2, :, k) * fse
          deta0(3, :, k) = deta0(3, :, k) * fse
          eta0(:, k) = eta0(:, k) * fse
          call line_source_excess(lam1 * 1.0e-8_dp, t, s%bdep(:, 1, l), s%bdep(:, 2, l), dsl(:, k), ddsl(:, k))
        else if (s%ndb > 0) then
          eta0(:, k) = eta0(:, k) * s%bdep(:, 1, l)
          do i = 1, 3
            deta0(i, :, k) = deta0(i, :, k) * s%bdep(:, 1, l)
          end do
        end if
        amu = maxval(adamp(:, k))
        amax(l) = max(amax(l), amu)
        capped(k) = (s%damping_cap /= 0 .and. amu > 3.0_dp)
        if (capped(k)) then
          imaxl(k) = maxloc(adamp(:, k), 1)
          amaxu(k) = amu
          dacap(:, k) = dadamp(:, imaxl(k), k)
          adamp(:, k) = adamp(:, k) * (3.0_dp / amu)
          dadamp(:, :, k) = dadamp(:, :, k) * (3.0_dp / amu)
        end if
        inv_dld(:, k) = 1.0_dp / dld
        vshift(:, k) = vlos / vdop(:, k)
        lv = air_to_vacuum(lam(l) * 1.0e-8_dp)
        vb(:, k) = larmor * lv**2 * bfield / dld
        dvb_db(:, k) = larmor * lv**2 / dld
        do i = 1, n
          c5(:, i, k) = eta0(i, k) * geo(:, i)
        end do
        boff(k) = blend_offset_mA(lam1, lam(l), s%exact_blend)
        ncomp(k) = 0
        if (magnetic) then
          call line_components(mult_l(l), l_l(l), j_l(l), mult_u(l), l_u(l), j_u(l), use_geff(l), geff(l), &
                               ncomp(k), grp(:, k), shift(:, k), strength(:, k), ierr)
          if (ierr /= err_ok) return
        else
          ncomp(k) = 1
        end if
      end do
      anycap = any(capped)
      maxc = max(1, maxval(ncomp))
      allocate(hs(n, 3, nlg), fs(n, 3, nlg), dhu(n, maxc, nlg), dfu(n, maxc, nlg), dha(n, maxc, nlg), &
               dfa(n, maxc, nlg), vv(n, nlg), gs(n, 3, 6, nlg), wv(n * maxc, 12), iwk(n * maxc))

      ! ---- wavelengths of this group
      call group_wavelengths(nw, wgrp, g, widx)
      nmw = size(widx)
      allocate(wx(nmw), wy(4, nmw))
      ic = hsra_continuum(lam1)
      inv_ic = 1.0_dp / ic
      kming = n
      do m = 1, nmw
        jw = widx(m)
        r = 0.0_dp
        if (magnetic) then
          k7 = 0.0_dp
          k7(1, :) = kc
          if (desire) w = 0.0_dp
          do k = 1, nlg
            dlam = (woff(jw) + boff(k)) * 1.0e-11_dp
            call line_k7_store(n, dlam, inv_dld(:, k), vshift(:, k), vb(:, k), adamp(:, k), c5(:, :, k), &
                               ncomp(k), grp(:, k), shift(:, k), strength(:, k), s%sir_voigt, maxc, k7, &
                               vv(:, k), hs(:, :, k), fs(:, :, k), gs(:, :, :, k), wv, iwk)
            if (desire) then
              do i = 1, n
                kl(:, i, k) = line_first_column(c5(:, i, k), hs(i, :, k))
              end do
              call emission_add(4, n, kl(:, :, k), dsl(:, k), w)
            end if
          end do
          if (desire) then
            call source_vector(n, k7, w, sv, ierr)
            if (ierr /= err_ok) return
            call hermite_polarised_adjoint(n, logtau, ltau, k7, src, y4, k7bar, sbar, kmin, ierr, sv, svbar)
            if (ierr /= err_ok) return
            if (anycap) kmin = 1
            ! sv = K^-1 w: the path through K (all its elements) and the emission excess w
            call source_vector_adjoint(n, kmin, k7, sv, svbar, wbar, k7bar, ierr)
          else
            call hermite_polarised_adjoint(n, logtau, ltau, k7, src, y4, k7bar, sbar, kmin, ierr)
          end if
          if (ierr /= err_ok) return
          if (anycap) kmin = 1
          do i = kmin, n
            r(:, i, rf_t) = sbar(:, i) * dsrc(i) + k7bar(:, 1, i) * dkc(1, i)
            r(:, i, rf_pe) = k7bar(:, 1, i) * dkc(2, i)
          end do
          do k = 1, nlg
            k7bl = k7bar
            if (desire) then
              ! the line's emission excess: the gradient of its eta_I..V gains the emission's, T gains the
              ! path through S_L - B
              call emission_adjoint(4, 4, n, kl(:, :, k), dsl(:, k), wbar, klbar, dslbar)
              k7bl(:, 1:4, :) = k7bl(:, 1:4, :) + klbar
              do i = kmin, n
                r(:, i, rf_t) = r(:, i, rf_t) + dslbar(:, i) * ddsl(i, k)
              end do
            end if
            call line_adjoint_polarised(n, kmin, k7bl, c5(:, :, k), geo, dgeo, eta0(:, k), adamp(:, k), &
                                        vv(:, k), vb(:, k), vdop(:, k), dvb_db(:, k), deta0(:, :, k), &
                                        dadamp(:, :, k), dlnv(:, :, k), ncomp(k), grp(:, k), shift(:, k), &
                                        strength(:, k), hs(:, :, k), fs(:, :, k), gs(:, :, :, k), &
                                        capped(k), imaxl(k), amaxu(k), dacap(:, k), r)
          end do
        else
          eta = kc
          do k = 1, nlg
            dlam = (woff(jw) + boff(k)) * 1.0e-11_dp
            call line_eta_store(n, dlam, inv_dld(:, k), vshift(:, k), adamp(:, k), eta0(:, k), s%sir_voigt, &
                                eta, vv(:, k), hs(:, 1, k), dhu(:, 1, k), dha(:, 1, k))
          end do
          y4 = 0.0_dp
          if (desire) then
            w(1, :) = 0.0_dp
            do k = 1, nlg
              kl(1, :, k) = eta0(:, k) * hs(:, 1, k)
              call emission_add(1, n, kl(1:1, :, k), dsl(:, k), w(1:1, :))
            end do
            sv(1, :) = w(1, :) / eta
            call hermite_scalar_adjoint(n, logtau, ltau, eta, src, y4(1), etabar, sbar1, kmin, ierr, sv(1, :), &
                                        svbar(1, 1, :))
            ! sv = w / eta: the path through eta and the emission excess w
            wbar(1, 1, :) = svbar(1, 1, :) / eta
            etabar = etabar - wbar(1, 1, :) * sv(1, :)
          else
            call hermite_scalar_adjoint(n, logtau, ltau, eta, src, y4(1), etabar, sbar1, kmin, ierr)
          end if
          if (ierr /= err_ok) return
          if (anycap) kmin = 1
          do i = kmin, n
            r(1, i, rf_t) = sbar1(i) * dsrc(i) + etabar(i) * dkc(1, i)
            r(1, i, rf_pe) = etabar(i) * dkc(2, i)
          end do
          do k = 1, nlg
            etabl = etabar
            if (desire) then
              ! the line's emission excess eta0 H (S_L - B): its eta gradient gains the emission's
              call emission_adjoint(1, 1, n, kl(1:1, :, k), dsl(:, k), wbar(1, 1, :), klbar(1, 1, :), dslbar(1, :))
              etabl = etabl + klbar(1, 1, :)
              r(1, kmin:n, rf_t) = r(1, kmin:n, rf_t) + dslbar(1, kmin:n) * ddsl(kmin:n, k)
            end if
            call line_adjoint_scalar(n, kmin, etabl, eta0(:, k), adamp(:, k), vv(:, k), vdop(:, k), &
                                     deta0(:, :, k), dadamp(:, :, k), dlnv(:, :, k), hs(:, 1, k), &
                                     dhu(:, 1, k), dha(:, 1, k), capped(k), imaxl(k), amaxu(k), &
                                     dacap(:, k), r)
          end do
        end if
        kming = min(kming, kmin)
        wx(m) = woff(jw)
        wy(:, m) = y4 / ic
        do v = 1, n_rf_vars
          if (want(v) /= 0) rf(:, jw, kmin:n, v) = r(:, kmin:n, v) * inv_ic
        end do
      end do

      ! ---- macroturbulence and PSF (the same linear map on the profiles and on the RFs)
      docv = s%no_convolution == 0 .and. nmw > 1 .and. (vmac > 0.0_dp .or. npsf >= 2)
      if (docv) then
        vm = vmac
        if (vm <= 0.0_dp) vm = 1.0e-7_dp
        sig = macro_sigma(s, g, vm)
        dsig = macro_sigma(s, g, 1.0_dp)
        allocate(wyraw(4, nmw), cm(nmw, nmw), dcm(nmw, nmw))
        wyraw = wy
        call convolve_group(4, nmw, wx, wy, sig, npsf, psf_x, psf_y, ierr)
        if (ierr /= err_ok) return
        call convolution_matrix(nmw, wx, sig, npsf, psf_x, psf_y, cm, dcm, ierr)
        if (ierr /= err_ok) return
        ! the kernel is dense (SIR's transfer function is not band-limited on the grid): one
        ! (m x m) x (m x 4 nk) product per variable on the wavelength-major copy of the RFs
        nk = n - kming + 1
        allocate(xt(nmw, 4, nk), yt(nmw, 4, nk))
        do v = 1, n_rf_vars
          if (want(v) == 0) cycle
          do k = 1, nk
            do i = 1, nmw
              xt(i, :, k) = rf(:, widx(i), kming + k - 1, v)
            end do
          end do
          yt = reshape(matmul(cm, reshape(xt, [nmw, 4 * nk])), [nmw, 4, nk])
          do k = 1, nk
            do i = 1, nmw
              rf(:, widx(i), kming + k - 1, v) = yt(i, :, k)
            end do
          end do
        end do
        deallocate(xt, yt)
        if (vmac > 0.0_dp) then
          do i = 1, nmw
            jw = widx(i)
            do j = 1, nmw
              rf_vmac(:, jw) = rf_vmac(:, jw) + dcm(i, j) * wyraw(:, j)
            end do
            rf_vmac(:, jw) = rf_vmac(:, jw) * dsig
          end do
        end if
        deallocate(wyraw, cm, dcm)
      end if
      do m = 1, nmw
        stokes(:, widx(m)) = wy(:, m)
      end do
      deallocate(eta0, adamp, inv_dld, vshift, vb, vdop, dvb_db, deta0, dadamp, dlnv, c5, dld, dacap, amaxu, &
                 boff, ncomp, imaxl, capped, grp, shift, strength, hs, fs, dhu, dfu, dha, dfa, vv, gs, wv, iwk, &
                 widx, wx, wy, dsl, ddsl, kl)
    end do
    end associate
    if (.not. magnetic) then
      ! field-free: no B, gamma, phi dependence (vlos keeps its RF)
      rf(:, :, :, rf_b) = 0.0_dp
      rf(:, :, :, rf_gam:rf_phi) = 0.0_dp
    end if
    if (.not. (all(abs(stokes) <= huge(1.0_dp)) .and. all(abs(rf) <= huge(1.0_dp)) .and. &
               all(abs(rf_vmac) <= huge(1.0_dp)))) ierr = err_not_finite
  end subroutine synth_rf

  !> EOS state at (t, pe) with the derivatives of all its components w.r.t. T (fixed Pe) and Pe
  !> (fixed T), and the continuum cross-sections kap(l) at the nk air wavelengths lamk [cm] with
  !> dkap(1:2, l) = d/dT, d/dPe, all from one set of four perturbed EOS states (central differences
  !> in ln T and ln Pe, step h_fd; pyinv_eos::eos_solve_deriv uses the same scheme with Richardson
  !> extrapolation, which costs twice as many EOS solutions).
  !> kappa_continuum is called without sir_compat, as in synth_model.
  pure subroutine thermo_tl(t, pe, eps, compat, nk, lamk, st, dst_t, dst_p, kap, dkap, ierr)
    integer, intent(in) :: compat, nk
    real(dp), intent(in) :: t, pe, eps(92), lamk(nk)
    type(eos_state), intent(out) :: st, dst_t, dst_p
    real(dp), intent(out) :: kap(nk), dkap(2, nk)
    integer, intent(out) :: ierr
    type(eos_state) :: sp, sm
    type(eos_tfac) :: tf
    real(dp) :: ds(n_eos_fields), kp, km, xv, coef(n_kappa_coef, nk)
    integer :: v, l

    dkap = 0.0_dp
    kap = 0.0_dp
    ! eos_solve's steps (eos_tfactors checks T), with the temperature factors kept for the two P_e-perturbed
    ! states
    call eos_tfactors(t, eps, tf, ierr, compat)
    if (ierr /= err_ok) return
    call eos_solve_tf(tf, pe, st, ierr)
    if (ierr /= err_ok) return
    ! kappa_continuum's steps, with the (lambda, T) coefficients kept for the two P_e-perturbed states
    do l = 1, nk
      call kappa_coefficients(lamk(l), st%t, coef(:, l), ierr)
      if (ierr /= err_ok) return
      kap(l) = kappa_from_coef(coef(:, l), st)
    end do
    do v = 1, 2
      if (v == 1) then
        xv = t
        call eos_solve(t * exp(h_fd), pe, eps, sp, ierr, compat)
        if (ierr /= err_ok) return
        call eos_solve(t * exp(-h_fd), pe, eps, sm, ierr, compat)
      else
        xv = pe
        call eos_solve_tf(tf, pe * exp(h_fd), sp, ierr)
        if (ierr /= err_ok) return
        call eos_solve_tf(tf, pe * exp(-h_fd), sm, ierr)
      end if
      if (ierr /= err_ok) return
      ds = (eos_state_to_array(sp) - eos_state_to_array(sm)) / (2.0_dp * h_fd * xv)
      if (v == 1) then
        dst_t = eos_state_from_array(ds)
      else
        dst_p = eos_state_from_array(ds)
      end if
      do l = 1, nk
        if (v == 1) then
          call kappa_continuum(lamk(l), sp, eps, kp, ierr)
          if (ierr /= err_ok) return
          call kappa_continuum(lamk(l), sm, eps, km, ierr)
          if (ierr /= err_ok) return
        else
          kp = kappa_from_coef(coef(:, l), sp)
          km = kappa_from_coef(coef(:, l), sm)
        end if
        dkap(v, l) = (kp - km) / (2.0_dp * h_fd * xv)
      end do
    end do
  end subroutine thermo_tl

  !> d g(1:5) / d gamma and d g / d phi (per radian) of pyinv_propagation::geometry_factors.
  pure subroutine geometry_derivatives(gam, phi, dg)
    real(dp), intent(in) :: gam, phi
    real(dp), intent(out) :: dg(5, 2)
    real(dp) :: s2g, s2
    s2g = sin(2.0_dp * gam)
    s2 = sin(gam)**2
    dg(1, 1) = 0.5_dp * s2g
    dg(2, 1) = -0.25_dp * s2g
    dg(3, 1) = 0.5_dp * s2g * cos(2.0_dp * phi)
    dg(4, 1) = 0.5_dp * s2g * sin(2.0_dp * phi)
    dg(5, 1) = -0.5_dp * sin(gam)
    dg(1, 2) = 0.0_dp
    dg(2, 2) = 0.0_dp
    dg(3, 2) = -s2 * sin(2.0_dp * phi)
    dg(4, 2) = s2 * cos(2.0_dp * phi)
    dg(5, 2) = 0.0_dp
  end subroutine geometry_derivatives

  !> The k7 of one line as pyinv_synthesis::group_k7 forms it (same operations), keeping what the adjoint needs:
  !> v (reduced frequency without Zeeman shift), the group sums hs, fs of H and F, and per
  !> component dH/du, dF/du, dH/da, dF/da.
  pure subroutine line_k7_store(n, dlam, inv_dld, vshift, vb, adamp, c5, ncomp, grp, shift, strength, &
                                sirvoigt, maxc, k7, v, hs, fs, gs, wv, iwk)
    integer, intent(in) :: n, ncomp, sirvoigt, maxc
    real(dp), intent(in) :: dlam, inv_dld(n), vshift(n), vb(n), adamp(n), c5(5, n)
    integer, intent(in) :: grp(*)
    real(dp), intent(in) :: shift(*), strength(*)
    real(dp), intent(inout) :: k7(7, n)
    real(dp), intent(out) :: v(n), hs(n, 3), fs(n, 3), gs(n, 3, 6), wv(n * maxc, 12)
    integer, intent(out) :: iwk(n * maxc)
    real(dp) :: sk, wk
    integer :: i, k, g, o, nt
    ! all components of the line in one Voigt call: wv(:, 1) u, 2 a, 3 H, 4 F, 5-8 dH/du, dF/du,
    ! dH/da, dF/da, 9-12 workspace
    nt = n * ncomp
    do i = 1, n
      v(i) = dlam * inv_dld(i) - vshift(i)
    end do
    do k = 1, ncomp
      o = (k - 1) * n
      sk = shift(k)
      do i = 1, n
        wv(o + i, 1) = v(i) + sk * vb(i)
        wv(o + i, 2) = adamp(i)
      end do
    end do
    if (sirvoigt /= 0) then
      call voigt_hui_deriv_n(nt, wv(1:nt, 2), wv(1:nt, 1), wv(1:nt, 3), wv(1:nt, 4), wv(1:nt, 5), &
                             wv(1:nt, 6), wv(1:nt, 7), wv(1:nt, 8))
    else
      call voigt_deriv_nw(nt, wv(1:nt, 2), wv(1:nt, 1), wv(1:nt, 3), wv(1:nt, 4), wv(1:nt, 5), &
                          wv(1:nt, 6), wv(1:nt, 7), wv(1:nt, 8), iwk(1:nt), wv(1:nt, 9:12))
    end if
    hs = 0.0_dp
    fs = 0.0_dp
    ! gs(:, g, 1:6): sums over the components of group g of w dH/du, w dF/du, w dH/da, w dF/da,
    ! w s dH/du, w s dF/du (w strength, s shift): all the adjoint needs per component group
    gs = 0.0_dp
    do k = 1, ncomp
      o = (k - 1) * n
      g = grp(k)
      sk = shift(k)
      wk = strength(k)
      do i = 1, n
        hs(i, g) = hs(i, g) + wk * wv(o + i, 3)
        fs(i, g) = fs(i, g) + wk * wv(o + i, 4)
        gs(i, g, 1) = gs(i, g, 1) + wk * wv(o + i, 5)
        gs(i, g, 2) = gs(i, g, 2) + wk * wv(o + i, 6)
        gs(i, g, 3) = gs(i, g, 3) + wk * wv(o + i, 7)
        gs(i, g, 4) = gs(i, g, 4) + wk * wv(o + i, 8)
        gs(i, g, 5) = gs(i, g, 5) + (wk * sk) * wv(o + i, 5)
        gs(i, g, 6) = gs(i, g, 6) + (wk * sk) * wv(o + i, 6)
      end do
    end do
    call k7_add_profiles(n, c5, hs, fs, k7)
  end subroutine line_k7_store

  !> The eta of one line as pyinv_synthesis::group_eta forms it, keeping v, H, dH/du, dH/da.
  pure subroutine line_eta_store(n, dlam, inv_dld, vshift, adamp, eta0, sirvoigt, eta, v, hh, dhu, dha)
    integer, intent(in) :: n, sirvoigt
    real(dp), intent(in) :: dlam, inv_dld(n), vshift(n), adamp(n), eta0(n)
    real(dp), intent(inout) :: eta(n)
    real(dp), intent(out) :: v(n), hh(n), dhu(n), dha(n)
    real(dp) :: ff(n), dfu(n), dfa(n)
    integer :: i
    do i = 1, n
      v(i) = dlam * inv_dld(i) - vshift(i)
    end do
    if (sirvoigt /= 0) then
      call voigt_hui_deriv_n(n, adamp, v, hh, ff, dhu, dfu, dha, dfa)
    else
      call voigt_deriv_n(n, adamp, v, hh, ff, dhu, dfu, dha, dfa)
    end if
    do i = 1, n
      eta(i) = eta(i) + eta0(i) * hh(i)
    end do
  end subroutine line_eta_store

  !> Chain rule of one line (polarised case) from the formal-solution gradients k7bar(4, 7, n) to the
  !> model variables at each depth, accumulated into r(4, n, n_rf_vars).
  pure subroutine line_adjoint_polarised(n, kmin, k7bar, c5, geo, dgeo, eta0, adamp, v, vb, vdop, dvb_db, &
                                         deta0, dadamp, dlnv, ncomp, grp, shift, strength, hs, fs, &
                                         gs, capped, imax, amaxu, dacap, r)
    integer, intent(in) :: n, kmin, ncomp, imax
    real(dp), intent(in) :: k7bar(4, 7, n), c5(5, n), geo(5, n), dgeo(5, 2, n), eta0(n), adamp(n), v(n)
    real(dp), intent(in) :: vb(n), vdop(n), dvb_db(n), deta0(3, n), dadamp(3, n), dlnv(2, n)
    integer, intent(in) :: grp(*)
    real(dp), intent(in) :: shift(*), strength(*), hs(n, 3), fs(n, 3)
    real(dp), intent(in) :: gs(n, 3, 6), amaxu, dacap(3)
    logical, intent(in) :: capped
    real(dp), intent(inout) :: r(4, n, n_rf_vars)
    real(dp) :: hb(4, 3), fb(4, 3), cb(4, 5), dsb(4), ddb(4), psb(4), pdb(4), ab(4), vbar(4)
    real(dp) :: vbb(4), etab(4), dv(4), acc(4), ps, pd, ds, dd
    integer :: i, g, e
    acc = 0.0_dp
    do i = kmin, n
      dsb = c5(3, i) * k7bar(:, 2, i) + c5(4, i) * k7bar(:, 3, i)
      ddb = c5(3, i) * k7bar(:, 5, i) + c5(4, i) * k7bar(:, 6, i)
      hb(:, 1) = c5(1, i) * k7bar(:, 1, i) + dsb
      psb = c5(2, i) * k7bar(:, 1, i) - 0.5_dp * dsb
      hb(:, 2) = psb + c5(5, i) * k7bar(:, 4, i)
      hb(:, 3) = psb - c5(5, i) * k7bar(:, 4, i)
      fb(:, 1) = 2.0_dp * ddb
      pdb = -0.5_dp * ddb
      fb(:, 2) = 2.0_dp * pdb + 2.0_dp * c5(5, i) * k7bar(:, 7, i)
      fb(:, 3) = 2.0_dp * pdb - 2.0_dp * c5(5, i) * k7bar(:, 7, i)
      ps = hs(i, 2) + hs(i, 3)
      pd = 2.0_dp * (fs(i, 2) + fs(i, 3))
      ds = hs(i, 1) - 0.5_dp * ps
      dd = 2.0_dp * fs(i, 1) - 0.5_dp * pd
      cb(:, 1) = k7bar(:, 1, i) * hs(i, 1)
      cb(:, 2) = k7bar(:, 1, i) * ps
      cb(:, 3) = k7bar(:, 2, i) * ds + k7bar(:, 5, i) * dd
      cb(:, 4) = k7bar(:, 3, i) * ds + k7bar(:, 6, i) * dd
      cb(:, 5) = k7bar(:, 4, i) * (hs(i, 2) - hs(i, 3)) + 2.0_dp * k7bar(:, 7, i) * (fs(i, 2) - fs(i, 3))
      etab = 0.0_dp
      do e = 1, 5
        etab = etab + cb(:, e) * geo(e, i)
      end do
      ab = 0.0_dp
      vbar = 0.0_dp
      vbb = 0.0_dp
      ! component sums per group (line_k7_store): sum_c w_c (hb dH/du + fb dF/du) etc.
      do g = 1, 3
        vbar = vbar + hb(:, g) * gs(i, g, 1) + fb(:, g) * gs(i, g, 2)
        ab = ab + hb(:, g) * gs(i, g, 3) + fb(:, g) * gs(i, g, 4)
        vbb = vbb + hb(:, g) * gs(i, g, 5) + fb(:, g) * gs(i, g, 6)
      end do
      dv = v(i) * vbar + vb(i) * vbb
      r(:, i, rf_t) = r(:, i, rf_t) + etab * deta0(1, i) + ab * dadamp(1, i) - dlnv(1, i) * dv
      r(:, i, rf_pe) = r(:, i, rf_pe) + etab * deta0(2, i) + ab * dadamp(2, i)
      r(:, i, rf_vmic) = r(:, i, rf_vmic) + etab * deta0(3, i) + ab * dadamp(3, i) - dlnv(2, i) * dv
      r(:, i, rf_b) = r(:, i, rf_b) + vbb * dvb_db(i)
      r(:, i, rf_vlos) = r(:, i, rf_vlos) - vbar * (1.0_dp / vdop(i))
      r(:, i, rf_gam) = r(:, i, rf_gam) + eta0(i) * (cb(:, 1) * dgeo(1, 1, i) + cb(:, 2) * dgeo(2, 1, i) &
                        + cb(:, 3) * dgeo(3, 1, i) + cb(:, 4) * dgeo(4, 1, i) + cb(:, 5) * dgeo(5, 1, i))
      r(:, i, rf_phi) = r(:, i, rf_phi) + eta0(i) * (cb(:, 3) * dgeo(3, 2, i) + cb(:, 4) * dgeo(4, 2, i))
      if (capped) acc = acc + ab * adamp(i)
    end do
    if (capped) then
      ! a_i = 3 a^_i / max a^: the depth of the maximum moves every a_i
      r(:, imax, rf_t) = r(:, imax, rf_t) - acc / amaxu * dacap(1)
      r(:, imax, rf_pe) = r(:, imax, rf_pe) - acc / amaxu * dacap(2)
      r(:, imax, rf_vmic) = r(:, imax, rf_vmic) - acc / amaxu * dacap(3)
    end if
  end subroutine line_adjoint_polarised

  !> Chain rule of one line, non-magnetic case (Stokes I only).
  pure subroutine line_adjoint_scalar(n, kmin, etabar, eta0, adamp, v, vdop, deta0, dadamp, dlnv, hh, &
                                      dhu, dha, capped, imax, amaxu, dacap, r)
    integer, intent(in) :: n, kmin, imax
    real(dp), intent(in) :: etabar(n), eta0(n), adamp(n), v(n), vdop(n), deta0(3, n), dadamp(3, n)
    real(dp), intent(in) :: dlnv(2, n), hh(n), dhu(n), dha(n), amaxu, dacap(3)
    logical, intent(in) :: capped
    real(dp), intent(inout) :: r(4, n, n_rf_vars)
    real(dp) :: etab, ab, vbar, acc
    integer :: i
    acc = 0.0_dp
    do i = kmin, n
      etab = etabar(i) * hh(i)
      ab = etabar(i) * eta0(i) * dha(i)
      vbar = etabar(i) * eta0(i) * dhu(i)
      r(1, i, rf_t) = r(1, i, rf_t) + etab * deta0(1, i) + ab * dadamp(1, i) - dlnv(1, i) * v(i) * vbar
      r(1, i, rf_pe) = r(1, i, rf_pe) + etab * deta0(2, i) + ab * dadamp(2, i)
      r(1, i, rf_vmic) = r(1, i, rf_vmic) + etab * deta0(3, i) + ab * dadamp(3, i) - dlnv(2, i) * v(i) * vbar
      r(1, i, rf_vlos) = r(1, i, rf_vlos) - vbar / vdop(i)
      if (capped) acc = acc + ab * adamp(i)
    end do
    if (capped) then
      r(1, imax, rf_t) = r(1, imax, rf_t) - acc / amaxu * dacap(1)
      r(1, imax, rf_pe) = r(1, imax, rf_pe) - acc / amaxu * dacap(2)
      r(1, imax, rf_vmic) = r(1, imax, rf_vmic) - acc / amaxu * dacap(3)
    end if
  end subroutine line_adjoint_scalar

end module pyinv_response
