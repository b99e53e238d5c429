!> Levenberg-Marquardt inversion of one pixel, SIR's method (spec-inversion.md §2-§3), double precision.
!>
!> One call of lm_cycle runs one cycle: σ and weights exactly as SIR (§3.1), the normal equations with
!> Marquardt damping (§3.2-3.3), SIR's modified SVD (per-variable relative truncation, solved with our
!> own one-sided Jacobi SVD), trial models with SIR's clipping, interpolation of the perturbations and
!> hydrostatic re-equilibration after every trial (§3.5), SIR's λ schedule with anti-cycling (§3.6) and
!> stopping rules (§3.7), and the uncertainties of the .err formula (§3.10) plus a full-covariance
!> estimate. Cycles with growing node counts (§3.9) are driven by the caller (pyinv.inversion): the best
!> model of a cycle is handed over in memory at full precision.
!>
!> pyinv departures (spec §6.3): the Jacobian (node RFs) is computed only at accepted models, never at
!> rejected trials; the HE coupling of the temperature RF is the exact derivative of our own HE solver
!> with the actual top boundary; the P_e quirk "below -0.25 becomes -0.05" is not copied (clipped to
!> -0.25 instead).
!>
!> Jacobian providers (RF_INTERFACE.md): jac_mode 1 (pyinv's default) = the analytic depth-resolved
!> RFs of pyinv_response::synth_rf for the unconvolved profiles, compressed with the chain rule of
!> pyinv_nodes (T columns plus the tangent-linear HE coupling, he_tangent), then convolved like the
!> profiles; jac_mode 0 = directional finite differences in node space (one synthesis per free node
!> parameter; mathematically the same compressed RF; kept as a cross-check). rf_finite_difference is
!> a central-difference stand-in with synth_rf's signature (tests).
module pyinv_inversion
  use pyinv_kinds, only: dp, pi, ln10, g_sun
  use pyinv_eos, only: eos_state, eos_solve
  use pyinv_continuum, only: kappa_continuum
  use pyinv_errors, only: err_ok, err_bad_input, err_bad_size, err_not_finite, err_singular, &
                          err_no_convergence, err_no_data, err_zero_parameter
  use pyinv_synthesis, only: synth_model, n_options, convolve_group
  use pyinv_response, only: synth_rf
  use pyinv_hydrostatic, only: hydrostatic_eq
  use pyinv_nodes, only: sir_node_basis, node_basis, node_values, node_tangent, apply_perturbation, &
                         node_count_allowed, node_indices, slot_relative, slot_offset, slot_log, slot_angle
  implicit none
  private
  public :: synth_setup, make_setup, run_synth, stokes_sigma, lm_cycle, jacobi_svd, modified_svd_solve, &
            rf_finite_difference, rf_provider, he_pe_jacobian, lambda_update, &
            inv_node_jacobian_core, he_tangent

  integer, parameter, public :: n_slots = 8, n_cols = 7
  integer, parameter, public :: n_rf_vars = 7
  !> slot kinds in slot order T, Pe, vmic, B, vlos, gamma, phi, vmac
  integer, parameter :: slot_kind(n_slots) = [slot_relative, slot_log, slot_relative, slot_relative, &
                                              slot_offset, slot_angle, slot_angle, slot_relative]
  real(dp), parameter :: fd_step = 1.0e-4_dp          ! directional FD step (relative / radians)
  real(dp), parameter :: sigma_mask = 1.0e15_dp
  real(dp), parameter :: max_angle_step = 0.395_dp
  real(dp), parameter :: t_min = 2500.0_dp
  integer, parameter :: max_fail = 7

  !> Line, group, grid, abundance, PSF and option data of a synthesis (arguments of synth_model).
  type :: synth_setup
    integer :: nl = 0, ng = 0, nglines = 0, nw = 0, npsf = 0
    integer, allocatable :: iz(:), stage(:), use_geff(:), gstart(:), gcount(:), glines(:), wgrp(:)
    real(dp), allocatable :: lam(:), chi_e(:), loggf(:), enh(:), alpha(:), sigma(:), mult_l(:), l_l(:), &
                             j_l(:), mult_u(:), l_u(:), j_u(:), geff(:), woff(:), eps(:), psf_x(:), psf_y(:)
    integer :: opts(n_options) = 0
  end type synth_setup

  !> Node layout of one cycle.
  type :: slot_layout
    integer :: n = 0, first = 0, kind = slot_relative
    real(dp), allocatable :: f(:, :), xn(:), a(:), d(:, :)
  end type slot_layout

  type :: layout
    integer :: m = 0, nvar = 0
    type(slot_layout) :: s(n_slots)
    real(dp) :: voff = 0.0_dp
  end type layout

contains

  ! ================================================================================================
  ! synthesis plumbing
  ! ================================================================================================

  pure subroutine make_setup(nl, iz, stage, lam, chi_e, loggf, enh, alpha, sigma, mult_l, l_l, j_l, &
                             mult_u, l_u, j_u, use_geff, geff, ng, gstart, gcount, nglines, glines, nw, &
                             woff, wgrp, eps, npsf, psf_x, psf_y, opts, s)
    integer, intent(in) :: nl, ng, nglines, nw, npsf
    integer, intent(in) :: iz(nl), stage(nl), use_geff(nl), gstart(ng), gcount(ng), glines(nglines), wgrp(nw)
    real(dp), intent(in) :: lam(nl), chi_e(nl), loggf(nl), enh(nl), alpha(nl), sigma(nl), mult_l(nl), &
                            l_l(nl), j_l(nl), mult_u(nl), l_u(nl), j_u(nl), geff(nl), woff(nw), eps(92), &
                            psf_x(npsf), psf_y(npsf)
    integer, intent(in) :: opts(n_options)
    type(synth_setup), intent(out) :: s
    s%nl = nl; s%ng = ng; s%nglines = nglines; s%nw = nw; s%npsf = npsf
    s%iz = iz; s%stage = stage; s%use_geff = use_geff; s%gstart = gstart; s%gcount = gcount
    s%glines = glines; s%wgrp = wgrp
    s%lam = lam; s%chi_e = chi_e; s%loggf = loggf; s%enh = enh; s%alpha = alpha; s%sigma = sigma
    s%mult_l = mult_l; s%l_l = l_l; s%j_l = j_l; s%mult_u = mult_u; s%l_u = l_u; s%j_u = j_u
    s%geff = geff; s%woff = woff; s%eps = eps; s%psf_x = psf_x; s%psf_y = psf_y
    s%opts = opts
  end subroutine make_setup

  !> Synthesis of the model x(n, 7) (columns T, Pe, vmic, B, vlos, gamma, phi) with vmac [km/s].
  !> NaN in the result is reported as err_not_finite.
  pure subroutine run_synth(s, n, logtau, x, vmac, stokes, ierr)
    type(synth_setup), intent(in) :: s
    integer, intent(in) :: n
    real(dp), intent(in) :: logtau(n), x(n, n_cols), vmac
    real(dp), intent(out) :: stokes(4, s%nw)
    integer, intent(out) :: ierr
    real(dp) :: amax(s%nl)
    call synth_model(n, logtau, x(:, 1), x(:, 2), x(:, 3), x(:, 5), x(:, 4), x(:, 6), x(:, 7), vmac, &
                     s%nl, s%iz, s%stage, s%lam, s%chi_e, s%loggf, s%enh, s%alpha, s%sigma, &
                     s%mult_l, s%l_l, s%j_l, s%mult_u, s%l_u, s%j_u, s%use_geff, s%geff, &
                     s%ng, s%gstart, s%gcount, s%nglines, s%glines, s%nw, s%woff, s%wgrp, s%eps, &
                     s%npsf, s%psf_x, s%psf_y, s%opts, stokes, amax, ierr)
    if (ierr == err_ok) then
      if (.not. all(abs(stokes) < huge(1.0_dp))) ierr = err_not_finite
    end if
  end subroutine run_synth

  !> Hydrostatic equilibrium of the temperature column with the cycle's boundary (top Pe of the given
  !> model kept for boundary 0). pe_out, and optionally pg, rho, z.
  pure subroutine he_solve(s, n, logtau, t, pe_top, boundary, bvalue, mu, pe_out, ierr, pg, rho, z, pe_guess)
    type(synth_setup), intent(in) :: s
    integer, intent(in) :: n, boundary
    real(dp), intent(in) :: logtau(n), t(n), pe_top, bvalue, mu
    real(dp), intent(out) :: pe_out(n)
    integer, intent(out) :: ierr
    real(dp), intent(out), optional :: pg(n), rho(n), z(n)
    real(dp), intent(in), optional :: pe_guess(n)
    real(dp) :: pg_(n), rho_(n), z_(n), k5(n)
    if (present(pe_guess)) then
      call hydrostatic_eq(n, logtau, t, pe_top, boundary, bvalue, mu, s%eps, pe_out, pg_, rho_, z_, k5, ierr, &
                          s%opts(5), pe_guess)
    else
      call hydrostatic_eq(n, logtau, t, pe_top, boundary, bvalue, mu, s%eps, pe_out, pg_, rho_, z_, k5, ierr, &
                          s%opts(5))
    end if
    if (present(pg)) pg = pg_
    if (present(rho)) rho = rho_
    if (present(z)) z = z_
  end subroutine he_solve

  ! ================================================================================================
  ! σ, weights and χ² (§3.1)
  ! ================================================================================================

  !> SIR's per-line, per-Stokes σ. obs(4, nw), wgrp(nw) line group of each point, weights(4) (0 =
  !> Stokes not fitted), snr. Out: sig(4, nw) (masked points 1e15; unfitted Stokes 0), wgt(4, nw) =
  !> 1/σ² (0 where masked or unfitted), nobs (fitted points incl. masked), nmask.
  pure subroutine stokes_sigma(nw, ng, wgrp, obs, weights, snr, sig, wgt, nobs, nmask, ierr)
    integer, intent(in) :: nw, ng, wgrp(nw)
    real(dp), intent(in) :: obs(4, nw), weights(4), snr
    real(dp), intent(out) :: sig(4, nw), wgt(4, nw)
    integer, intent(out) :: nobs, nmask, ierr
    real(dp) :: ic(ng), amp(4, ng), amax_i
    integer :: g, s, j
    logical :: fit_s(4)

    ierr = err_ok
    sig = 0.0_dp
    wgt = 0.0_dp
    nobs = 0
    nmask = 0
    if (.not. all(abs(obs) < huge(1.0_dp))) then
      ierr = err_not_finite
      return
    end if
    if (any(weights < 0.0_dp) .or. .not. (snr > 0.0_dp) .or. any(wgrp < 1) .or. any(wgrp > ng)) then
      ierr = err_bad_input
      return
    end if
    fit_s = weights > 0.0_dp
    if (.not. any(fit_s)) then
      ierr = err_no_data
      return
    end if
    ic = 1.0_dp
    amp = 0.0_dp
    do g = 1, ng
      if (fit_s(1)) then
        ic(g) = -huge(1.0_dp)
        do j = 1, nw
          if (wgrp(j) == g .and. obs(1, j) >= -0.99_dp) ic(g) = max(ic(g), obs(1, j))
        end do
        if (.not. (ic(g) > 0.0_dp)) ic(g) = 1.0_dp
      end if
      do j = 1, nw
        if (wgrp(j) /= g) cycle
        if (obs(1, j) >= -0.99_dp) amp(1, g) = max(amp(1, g), abs(ic(g) - obs(1, j)))
        do s = 2, 4
          if (obs(s, j) >= -0.99_dp) amp(s, g) = max(amp(s, g), abs(obs(s, j)))
        end do
      end do
    end do
    amax_i = maxval(amp(1, :))
    do g = 1, ng
      if (amp(1, g) < 0.01_dp) amp(1, g) = amax_i
    end do
    amp = max(amp, 1.0_dp / snr)
    do j = 1, nw
      g = wgrp(j)
      do s = 1, 4
        if (.not. fit_s(s)) cycle
        nobs = nobs + 1
        if (obs(s, j) < -0.99_dp) then
          sig(s, j) = sigma_mask
          nmask = nmask + 1
          wgt(s, j) = 0.0_dp
        else
          sig(s, j) = sqrt(amp(s, g) / ic(g)) / (snr * sqrt(weights(s)))
          wgt(s, j) = 1.0_dp / sig(s, j)**2
        end if
      end do
    end do
    if (nobs - nmask <= 0) ierr = err_no_data
  end subroutine stokes_sigma

  pure real(dp) function chi2_raw(nw, obs, syn, wgt) result(c)
    integer, intent(in) :: nw
    real(dp), intent(in) :: obs(4, nw), syn(4, nw), wgt(4, nw)
    c = sum(wgt * (obs - syn)**2)
  end function chi2_raw

  ! ================================================================================================
  ! node layout
  ! ================================================================================================

  !> Build the layout of a cycle: node counts nodes(8) (0 = fixed; slot 8 vmac: 0/1), explicit positions
  !> xnodes(:, v) where usex(v) = 1, interpolation mode, and the node values / tangents at model x.
  pure subroutine make_layout(n, logtau, nodes, maxnp, xnodes, usex, interp, x, vmac, voff, lay, ierr)
    integer, intent(in) :: n, nodes(n_slots), maxnp, usex(n_slots), interp
    real(dp), intent(in) :: logtau(n), xnodes(maxnp, n_slots), x(n, n_cols), vmac, voff
    type(layout), intent(out) :: lay
    integer, intent(out) :: ierr
    integer :: v, nv, idx(n)
    ierr = err_ok
    lay%m = 0
    lay%nvar = 0
    lay%voff = voff
    do v = 1, n_slots
      nv = nodes(v)
      if (v == 8) nv = min(nv, 1)
      lay%s(v)%n = max(nv, 0)
      lay%s(v)%kind = slot_kind(v)
      if (nv <= 0) cycle
      lay%s(v)%first = lay%m + 1
      lay%m = lay%m + nv
      lay%nvar = lay%nvar + 1
      if (v == 8) then
        allocate(lay%s(v)%f(1, 1), lay%s(v)%xn(1))
        lay%s(v)%f = 1.0_dp
        lay%s(v)%xn = 0.0_dp
        cycle
      end if
      allocate(lay%s(v)%f(n, nv), lay%s(v)%xn(nv))
      if (usex(v) /= 0 .and. nv >= 2) then
        if (nv > maxnp) then
          ierr = err_bad_size; return
        end if
        lay%s(v)%xn = xnodes(1:nv, v)
        call node_basis(n, logtau, nv, lay%s(v)%xn, interp, lay%s(v)%f, ierr)
      else
        if (.not. node_count_allowed(n, nv)) then
          ierr = err_bad_input; return
        end if
        call node_indices(n, nv, idx(1:nv), ierr)
        if (ierr /= err_ok) return
        lay%s(v)%xn = logtau(idx(1:nv))
        call sir_node_basis(n, logtau, nv, interp, lay%s(v)%f, ierr)
      end if
      if (ierr /= err_ok) return
    end do
    if (lay%m == 0) then
      ierr = err_no_data
      return
    end if
    call update_layout(n, logtau, x, vmac, lay, ierr)
  end subroutine make_layout

  !> Node values a and tangent matrices d of every free slot at model (x, vmac).
  pure subroutine update_layout(n, logtau, x, vmac, lay, ierr)
    integer, intent(in) :: n
    real(dp), intent(in) :: logtau(n), x(n, n_cols), vmac
    type(layout), intent(inout) :: lay
    integer, intent(out) :: ierr
    integer :: v, nv
    ierr = err_ok
    do v = 1, n_slots
      nv = lay%s(v)%n
      if (nv <= 0) cycle
      if (allocated(lay%s(v)%a)) deallocate(lay%s(v)%a)
      if (allocated(lay%s(v)%d)) deallocate(lay%s(v)%d)
      if (v == 8) then
        allocate(lay%s(v)%a(1), lay%s(v)%d(1, 1))
        lay%s(v)%a = vmac
        lay%s(v)%d = vmac
        if (.not. (vmac > 0.0_dp)) ierr = err_zero_parameter
        cycle
      end if
      allocate(lay%s(v)%a(nv), lay%s(v)%d(n, nv))
      call node_values(n, logtau, x(:, v), nv, lay%s(v)%xn, lay%s(v)%kind, lay%voff, lay%s(v)%a)
      call node_tangent(n, x(:, v), nv, lay%s(v)%f, lay%s(v)%a, lay%s(v)%kind, lay%s(v)%d)
      if (lay%s(v)%kind == slot_relative .or. lay%s(v)%kind == slot_offset) then
        if (any(lay%s(v)%a == 0.0_dp)) ierr = err_zero_parameter
      end if
    end do
  end subroutine update_layout

  ! ================================================================================================
  ! Jacobian (node RFs)
  ! ================================================================================================

  !> Node Jacobian jac(4, nw, m) = d stokes / d delta at the model (x, vmac) whose synthesis is syn.
  !> he: 1 when Pe follows hydrostatic equilibrium (T columns include the HE coupling).
  pure subroutine node_jacobian(s, n, logtau, x, vmac, syn, lay, he, boundary, mu, jac_mode, jac, nsynth, &
                                ierr)
    type(synth_setup), intent(in) :: s
    integer, intent(in) :: n, he, boundary, jac_mode
    real(dp), intent(in) :: logtau(n), x(n, n_cols), vmac, syn(4, s%nw), mu
    type(layout), intent(in) :: lay
    real(dp), intent(out) :: jac(4, s%nw, lay%m)
    integer, intent(inout) :: nsynth
    integer, intent(out) :: ierr
    real(dp) :: xp(n, n_cols), sp(4, s%nw), e(n), col(n)
    real(dp) :: rf(4, s%nw, n, n_rf_vars), rfv(4, s%nw), st(4, s%nw)
    real(dp), allocatable :: dlt(:, :), dlp(:, :)
    logical :: need_fd(lay%m)
    type(synth_setup) :: s1
    integer :: v, j, nv, want(n_rf_vars), jj

    ierr = err_ok
    jac = 0.0_dp
    if (jac_mode == 1) then
      ! depth-resolved analytic RFs of the UNCONVOLVED profiles, compressed with the chain rule, then
      ! the node columns convolved (linearity: identical to compressing convolved RFs, far cheaper)
      want = 0
      do v = 1, n_cols
        if (lay%s(v)%n > 0) want(v) = 1
      end do
      if (he /= 0 .and. lay%s(1)%n > 0) want(2) = 1
      s1 = s
      s1%opts(6) = 1
      call rf_provider(s1, n, logtau, x, vmac, want, st, rf, rfv, ierr)
      nsynth = nsynth + 1
      if (ierr /= err_ok) return
      if (he /= 0 .and. lay%s(1)%n > 0) then
        allocate(dlt(n, lay%s(1)%n), dlp(n, lay%s(1)%n))
        dlt = lay%s(1)%d
        call he_tangent(s, n, logtau, x(:, 1), x(:, 2), boundary, mu, lay%s(1)%n, dlt, dlp, ierr)
        if (ierr /= err_ok) return
      end if
      do v = 1, n_slots
        nv = lay%s(v)%n
        if (nv <= 0) cycle
        if (v == 8) then
          ! relative vmac: vmac dS/dvmac by central differences of the convolution alone
          sp = st
          call convolve_like_synth(s, vmac * (1.0_dp + fd_step), sp, ierr)
          if (ierr /= err_ok) return
          rfv = st
          call convolve_like_synth(s, vmac * (1.0_dp - fd_step), rfv, ierr)
          if (ierr /= err_ok) return
          jac(:, :, lay%s(v)%first) = (sp - rfv) / (2.0_dp * fd_step)
          cycle
        end if
        do j = 1, nv
          jj = lay%s(v)%first + j - 1
          col = lay%s(v)%d(:, j)
          jac(:, :, jj) = reshape(matmul(reshape(rf(:, :, :, v), [4 * s%nw, n]), col), [4, s%nw])
          if (v == 1 .and. he /= 0) then
            jac(:, :, jj) = jac(:, :, jj) + reshape(matmul(reshape(rf(:, :, :, 2), [4 * s%nw, n]), &
                                                           dlp(:, j)), [4, s%nw])
          end if
          call convolve_like_synth(s, vmac, jac(:, :, jj), ierr)
          if (ierr /= err_ok) return
        end do
      end do
      ! safety net: a free parameter whose analytic column is identically zero (e.g. an RF path that
      ! does not provide it) is differenced directly below
      do jj = 1, lay%m
        need_fd(jj) = all(jac(:, :, jj) == 0.0_dp)
      end do
      if (.not. any(need_fd)) return
    else
      need_fd = .true.
    end if

    ! directional finite differences in node space
    if (he /= 0 .and. lay%s(1)%n > 0) then
      ! relative Pe changes along the temperature directions (tangent-linear HE at the current model)
      if (allocated(dlt)) deallocate(dlt, dlp)
      allocate(dlt(n, lay%s(1)%n), dlp(n, lay%s(1)%n))
      dlt = lay%s(1)%d * fd_step
      call he_tangent(s, n, logtau, x(:, 1), x(:, 2), boundary, mu, lay%s(1)%n, dlt, dlp, ierr)
      if (ierr /= err_ok) return
    end if
    do v = 1, n_slots
      nv = lay%s(v)%n
      if (nv <= 0) cycle
      do j = 1, nv
        jj = lay%s(v)%first + j - 1
        if (.not. need_fd(jj)) cycle
        xp = x
        if (v == 8) then
          call run_synth(s, n, logtau, x, vmac * (1.0_dp + fd_step), sp, ierr)
        else
          e = 0.0_dp
          e(j) = fd_step
          call apply_perturbation(n, x(:, v), nv, lay%s(v)%f, lay%s(v)%a, lay%s(v)%kind, e(1:nv), xp(:, v))
          if (v == 1 .and. he /= 0) xp(:, 2) = x(:, 2) + dlp(:, j)
          call run_synth(s, n, logtau, xp, vmac, sp, ierr)
        end if
        nsynth = nsynth + 1
        if (ierr /= err_ok) return
        jac(:, :, jj) = (sp - syn) / fd_step
      end do
    end do
  end subroutine node_jacobian

  !> Depth-resolved RFs (RF_INTERFACE.md signature, on a synth_setup): the analytic
  !> pyinv_response::synth_rf (rf_finite_difference below is the finite-difference stand-in with the
  !> same signature, kept for tests).
  pure subroutine rf_provider(s, n, logtau, x, vmac, want, stokes, rf, rf_vmac, ierr)
    type(synth_setup), intent(in) :: s
    integer, intent(in) :: n, want(n_rf_vars)
    real(dp), intent(in) :: logtau(n), x(n, n_cols), vmac
    real(dp), intent(out) :: stokes(4, s%nw), rf(4, s%nw, n, n_rf_vars), rf_vmac(4, s%nw)
    integer, intent(out) :: ierr
    real(dp) :: amax(s%nl)
    call synth_rf(n, logtau, x(:, 1), x(:, 2), x(:, 3), x(:, 5), x(:, 4), x(:, 6), x(:, 7), vmac, &
                  s%nl, s%iz, s%stage, s%lam, s%chi_e, s%loggf, s%enh, s%alpha, s%sigma, &
                  s%mult_l, s%l_l, s%j_l, s%mult_u, s%l_u, s%j_u, s%use_geff, s%geff, &
                  s%ng, s%gstart, s%gcount, s%nglines, s%glines, s%nw, s%woff, s%wgrp, s%eps, &
                  s%npsf, s%psf_x, s%psf_y, s%opts, want, stokes, rf, rf_vmac, amax, ierr)
    if (ierr == err_ok) then
      if (.not. all(abs(rf) < huge(1.0_dp)) .or. .not. all(abs(stokes) < huge(1.0_dp))) ierr = err_not_finite
    end if
  end subroutine rf_provider

  !> Macroturbulence and PSF convolution of y(4, nw) exactly as synth_model applies them (per line
  !> group, Gaussian sigma from the group's last line), unless opts(6) /= 0.
  pure subroutine convolve_like_synth(s, vmac, y, ierr)
    type(synth_setup), intent(in) :: s
    real(dp), intent(in) :: vmac
    real(dp), intent(inout) :: y(4, s%nw)
    integer, intent(out) :: ierr
    real(dp), allocatable :: wy(:, :)
    integer, allocatable :: widx(:)
    real(dp) :: vm
    integer :: g, j, nmw, l
    ierr = err_ok
    if (s%opts(6) /= 0) return
    do g = 1, s%ng
      nmw = count(s%wgrp == g)
      if (nmw <= 1 .or. .not. (vmac > 0.0_dp .or. s%npsf >= 2)) cycle
      allocate(widx(nmw), wy(4, nmw))
      nmw = 0
      do j = 1, s%nw
        if (s%wgrp(j) == g) then
          nmw = nmw + 1
          widx(nmw) = j
        end if
      end do
      vm = vmac
      if (vm <= 0.0_dp) vm = 1.0e-7_dp
      l = s%glines(s%gstart(g) + s%gcount(g) - 1)
      wy = y(:, widx)
      call convolve_group(nmw, s%woff(widx), wy, 1000.0_dp * s%lam(l) * vm / 3.0e5_dp, s%npsf, s%psf_x, &
                          s%psf_y, ierr)
      if (ierr /= err_ok) return
      y(:, widx) = wy
      deallocate(widx, wy)
    end do
  end subroutine convolve_like_synth

  !> Central finite-difference RFs per grid point: rf(:, :, k, v) = d stokes / d x_v(k) (all other
  !> inputs fixed; T at fixed Pe), per K, dyn cm-2, cm/s, G, cm/s, degree, degree; rf_vmac per km/s.
  !> Steps: relative 1e-4 for T, Pe, vmic, B, vmac (absolute 1e-4 of the column scale where zero);
  !> 1 cm/s for vlos, 1e-3 degree for the angles.
  pure subroutine rf_finite_difference(s, n, logtau, x, vmac, want, stokes, rf, rf_vmac, ierr)
    type(synth_setup), intent(in) :: s
    integer, intent(in) :: n, want(n_rf_vars)
    real(dp), intent(in) :: logtau(n), x(n, n_cols), vmac
    real(dp), intent(out) :: stokes(4, s%nw), rf(4, s%nw, n, n_rf_vars), rf_vmac(4, s%nw)
    integer, intent(out) :: ierr
    real(dp) :: xp(n, n_cols), sp(4, s%nw), sm(4, s%nw), h, vh
    integer :: v, k
    rf = 0.0_dp
    rf_vmac = 0.0_dp
    call run_synth(s, n, logtau, x, vmac, stokes, ierr)
    if (ierr /= err_ok) return
    do v = 1, n_rf_vars
      if (want(v) == 0) cycle
      do k = 1, n
        select case (v)
        case (5)
          h = 1.0_dp
        case (6, 7)
          h = 1.0e-3_dp
        case default
          h = 1.0e-4_dp * abs(x(k, v))
          if (h == 0.0_dp) h = 1.0e-4_dp * max(maxval(abs(x(:, v))), 1.0_dp)
        end select
        xp = x
        xp(k, v) = x(k, v) + h
        call run_synth(s, n, logtau, xp, vmac, sp, ierr)
        if (ierr /= err_ok) return
        xp(k, v) = x(k, v) - h
        call run_synth(s, n, logtau, xp, vmac, sm, ierr)
        if (ierr /= err_ok) return
        rf(:, :, k, v) = (sp - sm) / (2.0_dp * h)
      end do
    end do
    vh = 1.0e-4_dp * max(vmac, 1.0e-2_dp)
    call run_synth(s, n, logtau, x, vmac + vh, sp, ierr)
    if (ierr /= err_ok) return
    if (vmac - vh > 0.0_dp) then
      call run_synth(s, n, logtau, x, vmac - vh, sm, ierr)
      if (ierr /= err_ok) return
      rf_vmac = (sp - sm) / (2.0_dp * vh)
    else
      rf_vmac = (sp - stokes) / vh
    end if
  end subroutine rf_finite_difference

  !> Tangent-linear of pyinv_hydrostatic::hydrostatic_eq (trapezoid rule, converged fixed point) at the
  !> model (t, pe): for nd temperature perturbations dt(n, nd) the changes dpe(n, nd) of the HE
  !> electron pressure. Top: boundary 0 Pe fixed, 1 Pg fixed, 2 rho fixed. Exact for a model in HE
  !> (up to the ~1e-8 accuracy of the local EOS/opacity derivatives).
  pure subroutine he_tangent(s, n, logtau, t, pe, boundary, mu, nd, dt, dpe, ierr)
    type(synth_setup), intent(in) :: s
    integer, intent(in) :: n, boundary, nd
    real(dp), intent(in) :: logtau(n), t(n), pe(n), mu, dt(n, nd)
    real(dp), intent(out) :: dpe(n, nd)
    integer, intent(out) :: ierr
    real(dp) :: kg(n), kg_t(n), kg_p(n), pg_t(n), pg_p(n), rho_t, rho_p, tau(n), geff
    real(dp) :: delta, c, rhs, dpg, dk, v(3, 0:4), tt, pp
    real(dp), parameter :: hd = 1.0e-4_dp
    type(eos_state) :: st
    integer :: i, j, q
    dpe = 0.0_dp
    ierr = err_ok
    ! P_g, rho and kappa5 per gram at (T, Pe) and at T e^(+-hd), Pe e^(+-hd) (central differences in
    ! ln T and ln Pe: relative accuracy ~1e-8, far below what an LM step needs)
    do i = 1, n
      do q = 0, 4
        tt = t(i)
        pp = pe(i)
        if (q == 1) tt = t(i) * exp(hd)
        if (q == 2) tt = t(i) * exp(-hd)
        if (q == 3) pp = pe(i) * exp(hd)
        if (q == 4) pp = pe(i) * exp(-hd)
        call eos_solve(tt, pp, s%eps, st, ierr, s%opts(5))
        if (ierr /= err_ok) return
        call kappa_continuum(5.0e-5_dp, st, s%eps, v(3, q), ierr, s%opts(5))
        if (ierr /= err_ok) return
        v(1, q) = st%pg
        v(2, q) = st%rho
        v(3, q) = v(3, q) * st%per_gram
      end do
      kg(i) = v(3, 0)
      kg_t(i) = (v(3, 1) - v(3, 2)) / (2.0_dp * hd * t(i))
      kg_p(i) = (v(3, 3) - v(3, 4)) / (2.0_dp * hd * pe(i))
      pg_t(i) = (v(1, 1) - v(1, 2)) / (2.0_dp * hd * t(i))
      pg_p(i) = (v(1, 3) - v(1, 4)) / (2.0_dp * hd * pe(i))
      if (i == n) then
        rho_t = (v(2, 1) - v(2, 2)) / (2.0_dp * hd * t(i))
        rho_p = (v(2, 3) - v(2, 4)) / (2.0_dp * hd * pe(i))
      end if
    end do
    geff = abs(mu) * g_sun
    tau = 10.0_dp**logtau
    do j = 1, nd
      select case (boundary)
      case (1)
        dpe(n, j) = -pg_t(n) / pg_p(n) * dt(n, j)
      case (2)
        dpe(n, j) = -rho_t / rho_p * dt(n, j)
      case default
        dpe(n, j) = 0.0_dp
      end select
      dpg = pg_t(n) * dt(n, j) + pg_p(n) * dpe(n, j)
      dk = kg_t(n) * dt(n, j) + kg_p(n) * dpe(n, j)
      do i = n - 1, 1, -1
        delta = geff * ln10 * (logtau(i) - logtau(i + 1))
        c = 0.5_dp * delta * tau(i) / kg(i)**2
        rhs = dpg - 0.5_dp * delta * tau(i + 1) / kg(i + 1)**2 * dk
        dpe(i, j) = (rhs - (pg_t(i) + c * kg_t(i)) * dt(i, j)) / (pg_p(i) + c * kg_p(i))
        dpg = pg_t(i) * dt(i, j) + pg_p(i) * dpe(i, j)
        dk = kg_t(i) * dt(i, j) + kg_p(i) * dpe(i, j)
      end do
    end do
    if (.not. all(abs(dpe) < huge(1.0_dp))) ierr = err_not_finite
  end subroutine he_tangent

  !> dpe(i, j) = d Pe_i / d T_j with Pe from hydrostatic equilibrium (boundary as given; top Pe fixed
  !> for boundary 0). method 0: tangent-linear (he_tangent at the HE solution); 1: central differences
  !> of hydrostatic_eq with relative steps 1e-4.
  pure subroutine he_pe_jacobian(s, n, logtau, t, pe_top, boundary, bvalue, mu, method, dpe, ierr)
    type(synth_setup), intent(in) :: s
    integer, intent(in) :: n, boundary, method
    real(dp), intent(in) :: logtau(n), t(n), pe_top, bvalue, mu
    real(dp), intent(out) :: dpe(n, n)
    integer, intent(out) :: ierr
    real(dp) :: tp(n), pp(n), pm(n), h, eye(n, n)
    integer :: j
    dpe = 0.0_dp
    ierr = err_ok
    if (method == 0) then
      call he_solve(s, n, logtau, t, pe_top, boundary, bvalue, mu, pp, ierr)
      if (ierr /= err_ok) return
      eye = 0.0_dp
      do j = 1, n
        eye(j, j) = 1.0_dp
      end do
      call he_tangent(s, n, logtau, t, pp, boundary, mu, n, eye, dpe, ierr)
      return
    end if
    do j = 1, n
      h = 1.0e-4_dp * t(j)
      tp = t
      tp(j) = t(j) + h
      call he_solve(s, n, logtau, tp, pe_top, boundary, bvalue, mu, pp, ierr)
      if (ierr /= err_ok) return
      tp(j) = t(j) - h
      call he_solve(s, n, logtau, tp, pe_top, boundary, bvalue, mu, pm, ierr)
      if (ierr /= err_ok) return
      dpe(:, j) = (pp - pm) / (2.0_dp * h)
    end do
  end subroutine he_pe_jacobian

  ! ================================================================================================
  ! SVD and the damped solve (§3.3)
  ! ================================================================================================

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

  ! ================================================================================================
  ! λ schedule (§3.6)
  ! ================================================================================================

  !> Update λ after a trial (success or failure) with SIR's anti-cycling; hist(nh) holds the λ history.
  pure subroutine lambda_update(lam, success, hist, nh, frozen)
    real(dp), intent(inout) :: lam
    logical, intent(in) :: success
    real(dp), intent(inout) :: hist(:)
    integer, intent(inout) :: nh
    logical, intent(inout) :: frozen
    integer :: k
    logical :: flat
    if (success) then
      if (.not. frozen) then
        if (lam > 1.0e-4_dp) then
          lam = lam / 10.0_dp
        else
          lam = lam / 2.0_dp
        end if
      end if
    else
      if (lam <= 1.0e-3_dp) then
        lam = 100.0_dp * lam
      else if (lam < 1.0e3_dp) then
        lam = 10.0_dp * lam
      else
        lam = 2.0_dp * lam
      end if
    end if
    if (nh >= size(hist)) then
      hist(1:nh - 1) = hist(2:nh)
      nh = nh - 1
    end if
    nh = nh + 1
    hist(nh) = lam
    if (nh >= 5) then
      if (hist(nh) == hist(nh - 2) .or. hist(nh - 1) == hist(nh - 3)) frozen = .true.
    end if
    if (frozen .and. nh >= 6) then
      flat = .true.
      do k = nh - 4, nh
        if (hist(k) /= hist(k - 1)) flat = .false.
      end do
      if (flat) frozen = .false.
    end if
  end subroutine lambda_update

  pure real(dp) function stop_threshold(k) result(th)
    integer, intent(in) :: k
    if (k < 25) then
      th = min(exp(real(k - 42, dp) / 3.0_dp) - 1.0e-4_dp, 0.0033_dp)
    else if (k < 50) then
      th = 0.003_dp * real(k - 24, dp)
    else
      th = 0.08_dp * real(k - 49, dp)
    end if
  end function stop_threshold

  ! ================================================================================================
  ! trial model (§3.5)
  ! ================================================================================================

  !> Trial model from the current model (x, vmac) and the LM step delta(m), with SIR's clipping;
  !> clip = .false. for the uncertainty model (§3.10). HE afterwards when he /= 0.
  pure subroutine build_trial(s, n, logtau, x, vmac, lay, delta, clip, he, boundary, bvalue, mu, &
                              xt, vmact, ierr)
    type(synth_setup), intent(in) :: s
    integer, intent(in) :: n, he, boundary
    real(dp), intent(in) :: logtau(n), x(n, n_cols), vmac, delta(:), bvalue, mu
    type(layout), intent(in) :: lay
    logical, intent(in) :: clip
    real(dp), intent(out) :: xt(n, n_cols), vmact
    integer, intent(out) :: ierr
    real(dp) :: r(n), g, pe_new(n), sh(n)
    integer :: v, nv, i0, j

    ierr = err_ok
    xt = x
    vmact = vmac
    do v = 1, n_slots
      nv = lay%s(v)%n
      if (nv <= 0) cycle
      i0 = lay%s(v)%first
      r(1:nv) = delta(i0:i0 + nv - 1)
      select case (lay%s(v)%kind)
      case (slot_relative, slot_offset)
        if (clip) then
          if (nv >= 2) then
            r(1:nv) = min(max(r(1:nv), -0.5_dp), 1.5_dp)
          else
            r(1:nv) = min(max(r(1:nv), -0.5_dp), 0.5_dp)
          end if
        end if
        if (v == 8) then
          vmact = vmac * (1.0_dp + r(1))
          cycle
        end if
        call apply_perturbation(n, x(:, v), nv, lay%s(v)%f, lay%s(v)%a, lay%s(v)%kind, r(1:nv), xt(:, v))
      case (slot_log)
        if (clip) then
          r(1:nv) = min(max(r(1:nv), -0.25_dp), 0.25_dp)
          sh = matmul(lay%s(v)%f, r(1:nv))
          sh = min(max(sh, -0.25_dp), 0.25_dp)
          xt(:, v) = x(:, v) * exp(sh)
        else
          call apply_perturbation(n, x(:, v), nv, lay%s(v)%f, lay%s(v)%a, slot_log, r(1:nv), xt(:, v))
        end if
      case (slot_angle)
        if (clip) then
          do j = 1, nv
            g = lay%s(v)%a(j)
            if (v == 6) then
              if (g + r(j) < 0.0_dp .and. r(j) < 0.0_dp) r(j) = -g / 2.0_dp
              if (g + r(j) > pi) r(j) = (pi - g) / 2.0_dp
            end if
            r(j) = min(max(r(j), -max_angle_step), max_angle_step)
          end do
        end if
        call apply_perturbation(n, x(:, v), nv, lay%s(v)%f, lay%s(v)%a, slot_angle, r(1:nv), xt(:, v))
      end select
    end do
    if (clip) then
      xt(:, 1) = max(xt(:, 1), t_min)
      if (lay%s(4)%n > 0) then
        where (xt(:, 4) <= 0.0_dp) xt(:, 4) = 1.0_dp
      end if
    end if
    if (.not. all(abs(xt) < huge(1.0_dp)) .or. .not. (abs(vmact) < huge(1.0_dp))) then
      ierr = err_not_finite
      return
    end if
    if (any(xt(:, 1) <= 0.0_dp)) then
      ierr = err_bad_input
      return
    end if
    if (he /= 0) then
      call he_solve(s, n, logtau, xt(:, 1), x(n, 2), boundary, bvalue, mu, pe_new, ierr, pe_guess=x(:, 2))
      if (ierr /= err_ok) return
      xt(:, 2) = pe_new
    end if
  end subroutine build_trial

  ! ================================================================================================
  ! one cycle (§3.4, §3.7, §3.10)
  ! ================================================================================================

  !> Run one LM cycle on model x(n, 7) (T, Pe, vmic, B, vlos, gamma, phi; API units) and vmac [km/s].
  !> Inputs: obs(4, nw), weights(4), snr, nodes(8) (slot order T, Pe, vmic, B, vlos, gamma, phi, vmac),
  !> xnodes/usex explicit node positions, interp (0 splines, 1 linear), svdtol, lambda0, HE boundary
  !> (0 top Pe kept, 1 top Pg = bvalue, 2 top rho = bvalue), mu, maxit (successful iterations), jac_mode.
  !> On return x/vmac hold the best model; fit its profiles; pg/rho/z from HE of its temperatures;
  !> err(n, 10) the .err-formula uncertainties of T, Pe, vmic, B, vlos, gamma, phi, z, Pg, rho
  !> (err(:, 11) not used) and err_vmac; cerr(n, 7)/cerr_vmac the full-covariance (SVD-truncated,
  !> scaled by chi2/dof) 1-sigma of the free columns; cov(m, m) the node covariance (first m x m of
  !> the maxm x maxm output). info: 1 successful iterations, 2 trials, 3 syntheses, 4 m, 5 nobs,
  !> 6 nmask. rinfo: 1 chi2_raw, 2 chi2 as SIR prints it, 3 s/n as SIR prints it, 4 final lambda,
  !> 5 chi2 (printed normalisation) of the starting model. trace(maxtr, 3): per trial lambda, chi2
  !> (printed normalisation; huge when the trial failed) and 1/0 accepted. rtol > 0: also stop after
  !> two consecutive successes with (chi2_old - chi2_new)/(chi2_old + chi2_new) < rtol (0: SIR's rules
  !> only).
  !> ierr: engine failure (the returned model is then the best one reached).
  pure subroutine lm_cycle(s, n, logtau, x, vmac, obs, weights, snr, nodes, maxnp, xnodes, usex, interp, &
                           svdtol, lambda0, boundary, bvalue, mu, maxit, jac_mode, rtol, fit, pg, rho, z, &
                           err, err_vmac, cerr, cerr_vmac, maxm, cov, maxtr, trace, info, rinfo, ierr)
    type(synth_setup), intent(in) :: s
    integer, intent(in) :: n, nodes(n_slots), maxnp, usex(n_slots), interp, boundary, maxit, jac_mode, maxm, &
                           maxtr
    real(dp), intent(in) :: logtau(n), obs(4, s%nw), weights(4), snr, xnodes(maxnp, n_slots), svdtol, &
                            lambda0, bvalue, mu, rtol
    real(dp), intent(out) :: trace(maxtr, 3)
    real(dp), intent(inout) :: x(n, n_cols), vmac
    real(dp), intent(out) :: fit(4, s%nw), pg(n), rho(n), z(n), err(n, 10), err_vmac, cerr(n, n_cols), &
                             cerr_vmac, cov(maxm, maxm), rinfo(5)
    integer, intent(out) :: info(6), ierr
    real(dp) :: sig(4, s%nw), wgt(4, s%nw), syn(4, s%nw), st(4, s%nw), xt(n, n_cols), vt, lam, c2, c2t
    real(dp) :: hist(64), pe_he(n), xe(n, n_cols), ve, pg2(n), rho2(n), z2(n), dof
    real(dp), allocatable :: jac(:, :, :), alpha(:, :), beta(:), adamp(:, :), delta(:), sj(:), ainv(:, :)
    integer, allocatable :: blk(:)
    type(layout) :: lay
    integer :: nobs, nmask, m, nh, nfail, nsucc, ntrial, nsynth, i, j, v, ie, he, nsmall
    logical :: frozen, have_jac, done
    real(dp) :: vmin, rho_c

    ierr = err_ok
    info = 0
    rinfo = 0.0_dp
    fit = 0.0_dp
    pg = 0.0_dp; rho = 0.0_dp; z = 0.0_dp
    err = 0.0_dp; err_vmac = 0.0_dp; cerr = 0.0_dp; cerr_vmac = 0.0_dp; cov = 0.0_dp
    nsynth = 0
    trace = 0.0_dp
    nsmall = 0

    call stokes_sigma(s%nw, s%ng, s%wgrp, obs, weights, snr, sig, wgt, nobs, nmask, ierr)
    if (ierr /= err_ok) return
    info(5) = nobs
    info(6) = nmask
    he = 1
    if (nodes(2) > 0) he = 0
    ! velocity offset (§2.2)
    vmin = 0.0_dp
    if (nodes(5) > 0) vmin = minval(x(:, 5)) - 7.0e5_dp
    call make_layout(n, logtau, nodes, maxnp, xnodes, usex, interp, x, vmac, vmin, lay, ierr)
    if (ierr /= err_ok) return
    m = lay%m
    info(4) = m
    allocate(jac(4, s%nw, m), alpha(m, m), beta(m), adamp(m, m), delta(m), sj(m), ainv(m, m), blk(m))
    do v = 1, n_slots
      if (lay%s(v)%n > 0) blk(lay%s(v)%first:lay%s(v)%first + lay%s(v)%n - 1) = v
    end do
    dof = real(max(nobs - m - nmask, 1), dp)

    ! starting model (not re-equilibrated, §3.9)
    call run_synth(s, n, logtau, x, vmac, syn, ierr)
    nsynth = nsynth + 1
    if (ierr /= err_ok) return
    c2 = chi2_raw(s%nw, obs, syn, wgt)
    rinfo(5) = c2 / dof
    call node_jacobian(s, n, logtau, x, vmac, syn, lay, he, boundary, mu, jac_mode, jac, nsynth, ierr)
    if (ierr /= err_ok) return
    have_jac = .true.

    lam = lambda0
    nh = 1
    hist(1) = lam
    frozen = .false.
    nfail = 0
    nsucc = 0
    ntrial = 0
    done = .false.
    do while (.not. done)
      ! normal equations (§3.2)
      do j = 1, m
        beta(j) = sum(wgt * (obs - syn) * jac(:, :, j))
        do i = 1, j
          alpha(i, j) = sum(wgt * jac(:, :, i) * jac(:, :, j))
          alpha(j, i) = alpha(i, j)
        end do
      end do
      adamp = alpha
      do j = 1, m
        adamp(j, j) = alpha(j, j) * (1.0_dp + lam)
      end do
      call modified_svd_solve(m, adamp, beta, blk, lay%nvar, svdtol, delta, ie)
      ntrial = ntrial + 1
      if (ie == err_ok) then
        call build_trial(s, n, logtau, x, vmac, lay, delta, .true., he, boundary, bvalue, mu, xt, vt, ie)
      end if
      if (ie == err_ok) then
        call run_synth(s, n, logtau, xt, vt, st, ie)
        nsynth = nsynth + 1
      end if
      c2t = huge(1.0_dp)
      if (ie == err_ok) c2t = chi2_raw(s%nw, obs, st, wgt)
      if (ntrial <= maxtr) then
        trace(ntrial, 1) = lam
        trace(ntrial, 2) = min(c2t, huge(1.0_dp)) / dof
        trace(ntrial, 3) = merge(1.0_dp, 0.0_dp, ie == err_ok .and. c2t < c2)
      end if
      if (ie == err_ok .and. c2t < c2) then
        rho_c = (c2 - c2t) / (c2 + c2t)
        x = xt
        vmac = vt
        syn = st
        c2 = c2t
        nsucc = nsucc + 1
        nfail = 0
        call lambda_update(lam, .true., hist, nh, frozen)
        have_jac = .false.
        if (rho_c <= stop_threshold(nsucc) .or. nsucc >= maxit .or. lam == 0.0_dp) done = .true.
        ! pyinv option (spec §6.3): stop after two consecutive successes with a relative gain below rtol
        if (rho_c < rtol) then
          nsmall = nsmall + 1
        else
          nsmall = 0
        end if
        if (nsmall >= 2) done = .true.
        if (.not. done) then
          call update_layout(n, logtau, x, vmac, lay, ierr)
          if (ierr /= err_ok) exit
          call node_jacobian(s, n, logtau, x, vmac, syn, lay, he, boundary, mu, jac_mode, jac, &
                             nsynth, ierr)
          if (ierr /= err_ok) exit
          have_jac = .true.
        end if
      else
        nfail = nfail + 1
        call lambda_update(lam, .false., hist, nh, frozen)
        if (nfail >= max_fail) done = .true.
      end if
    end do

    fit = syn
    info(1) = nsucc
    info(2) = ntrial
    rinfo(1) = c2
    rinfo(2) = c2 / dof
    if (nobs - nmask > 0) rinfo(3) = 1.0_dp / sqrt(max(sum(merge((obs - syn)**2, 0.0_dp, wgt > 0.0_dp)) / &
                                                  real(nobs - nmask, dp), tiny(1.0_dp)))
    rinfo(4) = lam
    if (ierr /= err_ok) then
      info(3) = nsynth
      return
    end if

    ! HE stratification of the final model (pg, rho, z)
    call he_solve(s, n, logtau, x(:, 1), x(n, 2), boundary, bvalue, mu, pe_he, ie, pg, rho, z)

    ! uncertainties (§3.10) at the final model
    call update_layout(n, logtau, x, vmac, lay, ierr)
    if (ierr /= err_ok) return
    if (.not. have_jac) then
      call node_jacobian(s, n, logtau, x, vmac, syn, lay, he, boundary, mu, jac_mode, jac, nsynth, ierr)
      if (ierr /= err_ok) then
        info(3) = nsynth
        return
      end if
    end if
    info(3) = nsynth
    do j = 1, m
      sj(j) = sqrt(c2 / (real(m, dp) * max(sum(wgt * jac(:, :, j)**2), 1.0e-10_dp)))
    end do
    call build_trial(s, n, logtau, x, vmac, lay, sj, .false., he, boundary, bvalue, mu, xe, ve, ie)
    if (ie == err_ok) then
      err(:, 1:n_cols) = abs(xe - x)
      err_vmac = abs(ve - vmac)
      if (he /= 0) then
        call he_solve(s, n, logtau, xe(:, 1), x(n, 2), boundary, bvalue, mu, pe_he, ie, pg2, rho2, z2)
        if (ie == err_ok) then
          err(:, 8) = abs(z2 - z)
          err(:, 9) = abs(pg2 - pg)
          err(:, 10) = abs(rho2 - rho)
        end if
      end if
    end if
    ! full covariance: (J^T W J)^+ (modified-SVD truncated) * chi2 / dof, propagated to depth
    do j = 1, m
      do i = 1, j
        alpha(i, j) = sum(wgt * jac(:, :, i) * jac(:, :, j))
        alpha(j, i) = alpha(i, j)
      end do
    end do
    call modified_svd_solve(m, alpha, beta, blk, lay%nvar, svdtol, delta, ie, ainv)
    if (ie == err_ok) then
      ainv = ainv * (c2 / dof)
      if (maxm >= m) cov(1:m, 1:m) = ainv
      do v = 1, n_slots
        if (lay%s(v)%n <= 0) cycle
        i = lay%s(v)%first
        j = i + lay%s(v)%n - 1
        if (v == 8) then
          cerr_vmac = sqrt(max(ainv(i, i), 0.0_dp)) * vmac
        else
          cerr(:, v) = sqrt(max(sum(matmul(lay%s(v)%d, ainv(i:j, i:j)) * lay%s(v)%d, dim=2), 0.0_dp))
        end if
      end do
    end if
  end subroutine lm_cycle

  !> Node Jacobian at model x for node counts nodes(8) (layout as in lm_cycle, v_off from x).
  pure subroutine inv_node_jacobian_core(s, n, logtau, x, vmac, nodes, maxnp, xnodes, usex, interp, he, &
                                         boundary, bvalue, mu, jac_mode, maxm, jac, m, ierr)
    type(synth_setup), intent(in) :: s
    integer, intent(in) :: n, nodes(n_slots), maxnp, usex(n_slots), interp, he, boundary, jac_mode, maxm
    real(dp), intent(in) :: logtau(n), x(n, n_cols), vmac, xnodes(maxnp, n_slots), bvalue, mu
    real(dp), intent(out) :: jac(4, s%nw, maxm)
    integer, intent(out) :: m, ierr
    type(layout) :: lay
    real(dp) :: syn(4, s%nw), voff
    real(dp), allocatable :: jj(:, :, :)
    integer :: ns
    jac = 0.0_dp
    m = 0
    voff = 0.0_dp
    if (nodes(5) > 0) voff = minval(x(:, 5)) - 7.0e5_dp
    call make_layout(n, logtau, nodes, maxnp, xnodes, usex, interp, x, vmac, voff, lay, ierr)
    if (ierr /= err_ok) return
    m = lay%m
    if (m > maxm) then
      ierr = err_bad_size
      return
    end if
    call run_synth(s, n, logtau, x, vmac, syn, ierr)
    if (ierr /= err_ok) return
    allocate(jj(4, s%nw, m))
    ns = 0
    call node_jacobian(s, n, logtau, x, vmac, syn, lay, he, boundary, mu, jac_mode, jj, ns, ierr)
    jac(:, :, 1:m) = jj
  end subroutine inv_node_jacobian_core

end module pyinv_inversion
