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
!> Two components, filling factor and stray light (§1.5, §4.5, §4.10): the model holds nc = 1 or 2
!> components (each with its own nodes, macroturbulence, HE boundary), mixed as
!> I = (1 - p)[(1 - f) I_1 + f I_2] + p I_stray (f = filling factor of component 2, p = stray-light
!> fraction); f and p are inverted through SIR's relative parameters u = (1 - f)/f and w = p/(1 - p).
!> A node count of -1 ties a slot to the other component's (copied after every update, before HE).
!>
!> The node layout and the node Jacobian live in pyinv_nodes, the hydrostatic tangent-linear in
!> pyinv_hydrostatic, the SVD in pyinv_linalg; this module holds the σ model and the LM loop.
module pyinv_inversion
  use pyinv_kinds, only: dp, pi
  use pyinv_errors, only: err_ok, err_bad_input, err_not_finite, err_no_data, err_zero_parameter, err_bad_size
  use pyinv_synthesis, only: synth_setup, synth_model, n_cols, col_t, col_pe, col_b, col_vlos, col_gam
  use pyinv_hydrostatic, only: he_solve, n_he_terms
  use pyinv_linalg, only: modified_svd_solve
  use pyinv_nodes, only: layout, make_layout, update_layout, node_jacobian, apply_perturbation, node_values_vector, &
                         secant_step, secant_update, layout_penalty, &
                         slot_relative, slot_offset, slot_log, slot_angle, slot_vmac, n_slots
  implicit none
  private
  public :: stokes_sigma, lm_cycle, lambda_update

  !> result slots of lm_cycle: info (integers) and rinfo (reals); pyinv.engine names them the same
  integer, parameter, public :: info_iterations = 1, info_trials = 2, info_syntheses = 3, info_m = 4, &
                                info_nobs = 5, info_nmask = 6, n_info = 6
  integer, parameter, public :: rinfo_chi2_raw = 1, rinfo_chi2 = 2, rinfo_snr = 3, rinfo_lambda = 4, &
                                rinfo_chi2_start = 5, n_rinfo = 5
  !> trace columns: lambda, chi2 of the trial, accepted (1/0)
  integer, parameter, public :: n_trace = 3

  real(dp), parameter :: sigma_mask = 1.0e15_dp
  real(dp), parameter :: max_angle_step = 0.395_dp
  real(dp), parameter :: t_min = 2500.0_dp
  integer, parameter :: max_fail = 7
  !> pyinv's rules (issue 17, pole): the smallest Marquardt damping of an inclination node whose step would be
  !> clipped, relative to the largest diagonal term of JᵀWJ
  real(dp), parameter :: angle_damp_floor = 1.0e-8_dp
  !> pyinv's rules (issue 17, pole): an inclination node within pyinv_nodes' pole_zone of a pole gets the chord of
  !> a step of this size [rad] away from it in the Jacobian instead of the derivative (node_jacobian, pole_chord)
  real(dp), parameter :: pole_chord_step = 0.05_dp

contains

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

  !> Merit reduction that the quadratic model of the normal equations (alpha = JᵀWJ, beta = JᵀW(O - S))
  !> predicts for the step delta: 2 deltaᵀbeta - deltaᵀ alpha delta.
  pure real(dp) function model_reduction(m, delta, beta, alpha) result(r)
    integer, intent(in) :: m
    real(dp), intent(in) :: delta(m), beta(m), alpha(m, m)
    r = 2.0_dp * dot_product(delta, beta) - dot_product(delta, matmul(alpha, delta))
  end function model_reduction

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

  !> Trial model of one component from its current model (x, vmac) and its part of the LM step
  !> delta, with SIR's clipping; clip = .false. for the uncertainty model (§3.10). No hydrostatics here
  !> (equilibrate, after the ties).
  pure subroutine build_trial(n, x, vmac, lay, delta, clip, xt, vmact, ierr)
    integer, intent(in) :: n
    real(dp), intent(in) :: x(n, n_cols), vmac, delta(:)
    type(layout), intent(in) :: lay
    logical, intent(in) :: clip
    real(dp), intent(out) :: xt(n, n_cols), vmact
    integer, intent(out) :: ierr
    real(dp) :: r(n), g, sh(n)
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
        if (v == slot_vmac) then
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
            if (v == col_gam) then
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
      xt(:, col_t) = max(xt(:, col_t), t_min)
      if (lay%s(col_b)%n > 0) then
        where (xt(:, col_b) <= 0.0_dp) xt(:, col_b) = 1.0_dp
      end if
    end if
    if (.not. all(abs(xt) < huge(1.0_dp)) .or. .not. (abs(vmact) < huge(1.0_dp))) then
      ierr = err_not_finite
      return
    end if
    if (any(xt(:, col_t) <= 0.0_dp)) ierr = err_bad_input
  end subroutine build_trial

  !> Hydrostatic P_e of a component's model xt (top P_e of pe_old kept for boundary 0; pe_old also
  !> starts the iterations when guess); optionally its P_g, rho, z. mpress = 1: with the magnetic
  !> pressure B^2/8pi (§4.6).
  pure subroutine equilibrate(s, n, logtau, xt, pe_old, boundary, bvalue, mu, mpress, guess, ierr, pg, rho, z)
    type(synth_setup), intent(in) :: s
    integer, intent(in) :: n, boundary, mpress
    real(dp), intent(in) :: logtau(n), pe_old(n), bvalue, mu
    real(dp), intent(inout) :: xt(n, n_cols)
    logical, intent(in) :: guess
    integer, intent(out) :: ierr
    real(dp), intent(out), optional :: pg(n), rho(n), z(n)
    real(dp) :: pe_new(n), pm(n)
    pm = 0.0_dp
    if (mpress /= 0) pm = xt(:, col_b)**2 / (8.0_dp * pi)
    if (guess) then
      call he_solve(s%eps, s%eos_compat, n, logtau, xt(:, col_t), pe_old(n), boundary, bvalue, mu, pe_new, ierr, &
                    pg, rho, z, pe_guess=pe_old, pmag=pm)
    else
      call he_solve(s%eps, s%eos_compat, n, logtau, xt(:, col_t), pe_old(n), boundary, bvalue, mu, pe_new, ierr, &
                    pg, rho, z, pmag=pm)
    end if
    if (ierr == err_ok) xt(:, col_pe) = pe_new
  end subroutine equilibrate

  !> Ties (§4.10): slots with node count -1 copy the other component's column (vmac: its value).
  pure subroutine apply_ties(n, nc, nodes, x, vmac)
    integer, intent(in) :: n, nc, nodes(n_slots, nc)
    real(dp), intent(inout) :: x(n, n_cols, nc), vmac(nc)
    integer :: c, v
    if (nc < 2) return
    do c = 1, nc
      do v = 1, n_cols
        if (nodes(v, c) == -1) x(:, v, c) = x(:, v, 3 - c)
      end do
      if (nodes(slot_vmac, c) == -1) vmac(c) = vmac(3 - c)
    end do
  end subroutine apply_ties

  !> The mixed profile (1 - p)[(1 - f) S_1 + f S_2] + p S_stray (one component: (1 - p) S_1 + p S_stray)
  !> and the weight of each component's profile in it. icon > 0: wavelength point icon is the continuum
  !> contrast pseudo-observation (§4.3), there I = (S_1 - S_2)/2 and Q = U = V = 0.
  pure subroutine mix_profiles(nw, nc, syn, mix, stray, icon, out, wc)
    integer, intent(in) :: nw, nc, icon
    real(dp), intent(in) :: syn(4, nw, nc), mix(2), stray(4, nw)
    real(dp), intent(out) :: out(4, nw), wc(nc)
    if (nc == 2) then
      wc = [(1.0_dp - mix(2)) * (1.0_dp - mix(1)), (1.0_dp - mix(2)) * mix(1)]
      out = wc(1) * syn(:, :, 1) + wc(2) * syn(:, :, 2)
    else
      wc(1) = 1.0_dp - mix(2)
      out = wc(1) * syn(:, :, 1)
    end if
    if (mix(2) > 0.0_dp) out = out + mix(2) * stray
    if (icon > 0 .and. nc == 2) then
      out(:, icon) = 0.0_dp
      out(1, icon) = 0.5_dp * (syn(1, icon, 1) - syn(1, icon, 2))
    end if
  end subroutine mix_profiles

  !> SIR's relative parameter of the filling factor (k = 1: u = (1 - f)/f) or the stray-light fraction
  !> (k = 2: w = p/(1 - p)), and back.
  pure real(dp) function mix_param(k, v) result(a)
    integer, intent(in) :: k
    real(dp), intent(in) :: v
    if (k == 1) then
      a = (1.0_dp - v) / v
    else
      a = v / (1.0_dp - v)
    end if
  end function mix_param

  pure real(dp) function mix_value(k, a) result(v)
    integer, intent(in) :: k
    real(dp), intent(in) :: a
    if (k == 1) then
      v = 1.0_dp / (1.0_dp + a)
    else
      v = a / (1.0_dp + a)
    end if
  end function mix_value

  ! ================================================================================================
  ! one cycle (§3.4, §3.7, §3.10)
  ! ================================================================================================

  !> The Jacobian jac(4, nw, m) of the mixed profile: the node Jacobians of the free components
  !> (weighted by their share of the mix) and the columns of u and w (§1.5).
  pure subroutine mixed_jacobian(s, n, logtau, nc, x, vmac, sync, lay, off, he, boundary, mu, jac_mode, mix, &
                                 imix, stray, icon, m, jac, nsynth, ierr, memo_ok, memo_want, memo_x, memo_st, &
                                 memo_rf, memo_het, chord)
    type(synth_setup), intent(in) :: s
    integer, intent(in) :: n, nc, off(2), he(2), boundary(nc), jac_mode, imix(2), m, icon
    real(dp), intent(in) :: logtau(n), x(n, n_cols, nc), vmac(nc), sync(4, s%nw, nc), mu, mix(2), stray(4, s%nw)
    type(layout), intent(in) :: lay(2)
    real(dp), intent(out) :: jac(4, s%nw, m)
    integer, intent(inout) :: nsynth
    integer, intent(out) :: ierr
    !> the RF memo of pyinv_nodes::node_jacobian (one component only)
    integer, intent(inout) :: memo_ok, memo_want(n_cols)
    real(dp), intent(inout) :: memo_x(n, n_cols), memo_st(4, s%nw), memo_rf(4, s%nw, n, n_cols), &
                               memo_het(n, n_he_terms)
    !> pyinv_nodes::node_jacobian's pole_chord (0: the derivative everywhere)
    real(dp), intent(in) :: chord
    real(dp) :: wc(nc), mixed(4, s%nw), ci(m)
    integer :: c
    ierr = err_ok
    jac = 0.0_dp
    call mix_profiles(s%nw, nc, sync, mix, stray, icon, mixed, wc)
    do c = 1, nc
      if (lay(c)%m == 0) cycle
      if (nc == 1) then
        call node_jacobian(s, n, logtau, x(:, :, c), vmac(c), sync(:, :, c), lay(c), he(c), boundary(c), mu, &
                           jac_mode, jac(:, :, off(c) + 1:off(c) + lay(c)%m), nsynth, ierr, memo_ok, memo_want, &
                           memo_x, memo_st, memo_rf, memo_het, pole_chord=chord)
      else
        call node_jacobian(s, n, logtau, x(:, :, c), vmac(c), sync(:, :, c), lay(c), he(c), boundary(c), mu, &
                           jac_mode, jac(:, :, off(c) + 1:off(c) + lay(c)%m), nsynth, ierr, pole_chord=chord)
      end if
      if (ierr /= err_ok) return
      if (icon > 0) ci(1:lay(c)%m) = jac(1, icon, off(c) + 1:off(c) + lay(c)%m)
      if (wc(c) /= 1.0_dp) jac(:, :, off(c) + 1:off(c) + lay(c)%m) = wc(c) * jac(:, :, off(c) + 1:off(c) + lay(c)%m)
      if (icon > 0) then
        ! the contrast point (S_1 - S_2)/2: +-1/2 of the component's own derivative
        jac(:, icon, off(c) + 1:off(c) + lay(c)%m) = 0.0_dp
        jac(1, icon, off(c) + 1:off(c) + lay(c)%m) = merge(0.5_dp, -0.5_dp, c == 1) * ci(1:lay(c)%m)
      end if
    end do
    if (imix(1) > 0) jac(:, :, imix(1)) = mix(1) * (mix(1) - 1.0_dp) * (1.0_dp - mix(2)) * &
                                          (sync(:, :, nc) - sync(:, :, 1))
    if (imix(2) > 0) jac(:, :, imix(2)) = mix(2) * (stray - (mixed - mix(2) * stray) / (1.0_dp - mix(2))) * &
                                          (1.0_dp - mix(2))
    if (icon > 0) then
      do c = 1, 2
        if (imix(c) > 0) jac(:, icon, imix(c)) = 0.0_dp
      end do
    end if
  end subroutine mixed_jacobian

  !> Run one LM cycle on a model of nc = 1 or 2 components x(n, 7, nc) (T, Pe, vmic, B, vlos, gamma, phi;
  !> API units) with macroturbulences vmac(nc) [km/s], mixed with the filling factor f = mix(1) of
  !> component 2 and the stray-light fraction p = mix(2) (0 <= p < 1) of the profile stray(4, nw).
  !> Inputs: obs(4, nw), weights(4), snr, nodes(8, nc) (slot order T, Pe, vmic, B, vlos, gamma, phi, vmac;
  !> -1 = tied to the other component), xnodes/usex explicit node positions (both components), interp
  !> (SIR's switch: 0 splines, 1 linear; 2/3 and 4/5 the same with the regularised merit chi2 (1 + P) of
  !> pyinv_nodes::layout_penalty, total variation / extrema), svdtol, lambda0, HE boundary per component (0 top Pe kept, 1 top Pg =
  !> bvalue, 2 top rho = bvalue), mu, mpress (1 = magnetic pressure in HE), invmix(2) (1 = invert f / p),
  !> icon (> 0: index of the continuum-contrast pseudo-observation in obs, two components only, §4.3),
  !> maxit (successful iterations), jac_mode.
  !> On return x/vmac/mix hold the best model; fit its mixed profiles; pg/rho/z from HE of its
  !> temperatures; err(n, 10, nc) the .err-formula uncertainties of T, Pe, vmic, B, vlos, gamma, phi, z,
  !> Pg, rho and err_vmac(nc), err_mix(2) (of f and p); cerr(n, 7, nc)/cerr_vmac/cerr_mix the
  !> full-covariance (SVD-truncated, scaled by chi2/dof) 1-sigma of the free parameters; cov(m, m) the
  !> parameter covariance (first m x m of the maxm x maxm output; order: component 1 nodes, component 2
  !> nodes, u, w). info: 1 successful iterations, 2 trials, 3 syntheses, 4 m, 5 nobs, 6 nmask. rinfo:
  !> 1 chi2_raw, 2 chi2 as SIR prints it, 3 s/n as SIR prints it, 4 final lambda, 5 chi2 (printed
  !> normalisation) of the starting model. trace(maxtr, 3): per trial lambda, chi2 (printed
  !> normalisation; huge when the trial failed) and 1/0 accepted. rtol > 0: also stop after two
  !> consecutive successes with (chi2_old - chi2_new)/(chi2_old + chi2_new) < rtol (0: SIR's rules
  !> only). jac_reuse > 0 (pyinv): after an accepted step the Jacobian is updated by Broyden's secant
  !> formula instead of recomputed, at most jac_reuse times in a row; a step that fails with an updated
  !> Jacobian is retried with the exact one at the same lambda (0: a new Jacobian after every accepted
  !> step, as SIR). want_errors = 0: no uncertainties (err, cerr, cov stay 0; no final Jacobian).
  !> rules: 0 = SIR's λ schedule (with its anti-cycling) and stopping rules (plus the rtol rule above);
  !> 1 = pyinv's rules (issue 17): λ from the gain ratio ρ = actual / predicted merit reduction (Nielsen's
  !> update: λ max(1/3, 1 - (2ρ - 1)^3) after a success, λ ν with ν doubling after each failure); the
  !> cycle ends when the last accepted step reduced the merit by less than rtol × merit and the undamped
  !> Gauss-Newton step of the current normal equations predicts less than that too, or when the last three
  !> accepted steps together reduced it by less than rtol × merit (stagnation), judged only with an
  !> exact Jacobian (a Broyden-updated one is refreshed
  !> first, so a cycle never ends on a secant model), or after maxit successes or max_fail failures in
  !> a row; a Broyden update is taken only after a step with ρ > 0.5.
  !> ierr: engine failure (the returned model is then the best one reached).
  pure subroutine lm_cycle(s, n, logtau, nc, x, vmac, obs, weights, snr, nodes, maxnp, xnodes, usex, interp, &
                           svdtol, lambda0, boundary, bvalue, mu, mpress, mix, invmix, stray, icon, maxit, jac_mode, &
                           jac_reuse, rtol, rules, want_errors, fit, pg, rho, z, err, err_vmac, cerr, cerr_vmac, &
                           err_mix, cerr_mix, maxm, cov, maxtr, trace, info, rinfo, ierr, memo_ok, memo_want, memo_x, &
                           memo_st, memo_rf, memo_het)
    type(synth_setup), intent(in) :: s
    integer, intent(in) :: n, nc, nodes(n_slots, nc), maxnp, usex(n_slots), interp, boundary(nc), mpress, &
                           invmix(2), icon, maxit, jac_mode, maxm, maxtr, jac_reuse, want_errors, rules
    real(dp), intent(in) :: logtau(n), obs(4, s%nw), weights(4), snr, xnodes(maxnp, n_slots), svdtol, &
                            lambda0, bvalue(nc), mu, rtol, stray(4, s%nw)
    real(dp), intent(inout) :: x(n, n_cols, nc), vmac(nc), mix(2)
    real(dp), intent(out) :: fit(4, s%nw), pg(n, nc), rho(n, nc), z(n, nc), err(n, 10, nc), err_vmac(nc), &
                             cerr(n, n_cols, nc), cerr_vmac(nc), err_mix(2), cerr_mix(2), cov(maxm, maxm), &
                             trace(maxtr, 3), rinfo(n_rinfo)
    integer, intent(out) :: info(n_info), ierr
    !> the RF memo (pyinv_nodes::node_jacobian; used with one component): kept by the caller between the
    !> cycles of one descent, so that a cycle's first Jacobian reuses the RFs of the previous cycle's last
    integer, intent(inout) :: memo_ok, memo_want(n_cols)
    real(dp), intent(inout) :: memo_x(n, n_cols), memo_st(4, s%nw), memo_rf(4, s%nw, n, n_cols), &
                               memo_het(n, n_he_terms)
    real(dp) :: sig(4, s%nw), wgt(4, s%nw), syn(4, s%nw), st(4, s%nw), lam, c2, c2t, amax(s%nl), dsyn(4, s%nw)
    real(dp) :: sync(4, s%nw, nc), stc(4, s%nw, nc), xt(n, n_cols, nc), vt(nc), mixt(2), wc(nc)
    real(dp) :: hist(64), xe(n, n_cols, nc), ve(nc), pg2(n), rho2(n), z2(n), dof, a, r
    real(dp), allocatable :: jac(:, :, :), alpha(:, :), beta(:), adamp(:, :), delta(:), sj(:), ainv(:, :), aold(:)
    integer, allocatable :: blk(:)
    type(layout) :: lay(2)
    integer :: nobs, nmask, m, nh, nfail, nsucc, ntrial, nsynth, i, j, v, c, k, ie, nsmall, nreuse, he(2), off(2), &
               imix(2)
    logical :: frozen, have_jac, done, moves(2), redo
    real(dp) :: vmin, rho_c, pen, pent, merit, meritt, nu, pred, pred0, gain, lastgain, mhist(3), dfloor, chord
    real(dp), allocatable :: gpen(:)
    integer :: regmode

    ierr = err_ok
    info = 0
    rinfo = 0.0_dp
    fit = 0.0_dp
    pg = 0.0_dp; rho = 0.0_dp; z = 0.0_dp
    err = 0.0_dp; err_vmac = 0.0_dp; cerr = 0.0_dp; cerr_vmac = 0.0_dp; cov = 0.0_dp
    err_mix = 0.0_dp; cerr_mix = 0.0_dp
    nsynth = 0
    trace = 0.0_dp
    nsmall = 0
    chord = 0.0_dp
    if (rules == 1) chord = pole_chord_step

    ! the mixture (§4.5, §4.10)
    if (nc < 1 .or. nc > 2) then
      ierr = err_bad_size; return
    end if
    if (.not. (mix(1) >= 0.0_dp .and. mix(1) <= 1.0_dp .and. mix(2) >= 0.0_dp .and. mix(2) < 1.0_dp)) then
      ierr = err_bad_input; return
    end if
    if (rules /= 0 .and. rules /= 1) then
      ierr = err_bad_input; return
    end if
    if ((nc == 1 .and. (invmix(1) /= 0 .or. any(nodes(:, 1) < 0))) .or. any(nodes < -1)) then
      ierr = err_bad_input; return
    end if
    if (invmix(1) /= 0 .and. .not. (mix(1) > 0.0_dp .and. mix(1) < 1.0_dp)) then
      ierr = err_zero_parameter; return
    end if
    if (invmix(2) /= 0 .and. .not. (mix(2) > 0.0_dp)) then
      ierr = err_zero_parameter; return
    end if

    call stokes_sigma(s%nw, s%ng, s%wgrp, obs, weights, snr, sig, wgt, nobs, nmask, ierr)
    if (ierr /= err_ok) return
    if (icon > 0) then
      ! continuum contrast (§4.3): one pseudo-observation of I, sigma = 4 sigma_last / sqrt(N_lambda w_I)
      if (nc /= 2 .or. .not. (weights(1) > 0.0_dp) .or. icon > s%nw) then
        ierr = err_bad_input; return
      end if
      do j = s%nw, 1, -1
        if (j /= icon .and. wgt(1, j) > 0.0_dp) exit
      end do
      if (j < 1) then
        ierr = err_no_data; return
      end if
      sig(:, icon) = 0.0_dp
      wgt(:, icon) = 0.0_dp
      sig(1, icon) = 4.0_dp * sig(1, j) / sqrt(real(s%nw - 1, dp) * weights(1))
      wgt(1, icon) = 1.0_dp / sig(1, icon)**2
      nobs = nobs - count(weights(2:4) > 0.0_dp)
    end if
    info(info_nobs) = nobs
    info(info_nmask) = nmask
    call apply_ties(n, nc, nodes, x, vmac)
    ! HE per component (§3.5 item 7): component 1 unless its Pe is free; component 2 when its T, B or
    ! gamma is free (and its Pe is not)
    he = 0
    do c = 1, nc
      if (nodes(col_pe, c) /= 0) cycle
      if (c == 1 .or. nodes(col_t, c) /= 0 .or. nodes(col_b, c) /= 0 .or. nodes(col_gam, c) /= 0) he(c) = 1
    end do
    ! velocity offset (§2.2): over the components whose velocity is free
    vmin = huge(1.0_dp)
    do c = 1, nc
      if (nodes(col_vlos, c) > 0) vmin = min(vmin, minval(x(:, col_vlos, c)) - 7.0e5_dp)
    end do
    if (vmin == huge(1.0_dp)) vmin = 0.0_dp
    off = 0
    m = 0
    moves = .false.
    do c = 1, nc
      off(c) = m
      if (any(nodes(:, c) > 0)) then
        call make_layout(n, logtau, max(nodes(:, c), 0), maxnp, xnodes, usex, mod(interp, 2), x(:, :, c), vmac(c), &
                         vmin, lay(c), ierr)
        if (ierr /= err_ok) return
      end if
      m = m + lay(c)%m
      moves(c) = lay(c)%m > 0 .or. any(nodes(:, c) == -1)
    end do
    imix = 0
    do k = 1, 2
      if (invmix(k) /= 0) then
        m = m + 1
        imix(k) = m
      end if
    end do
    info(info_m) = m
    if (m == 0) then
      ierr = err_no_data; return
    end if
    allocate(jac(4, s%nw, m), alpha(m, m), beta(m), adamp(m, m), delta(m), sj(m), ainv(m, m), blk(m), aold(m), gpen(m))
    ! interpolation modes 2-5: regularised merit chi2 (1 + P) (§4.8; layout_penalty)
    regmode = 0
    if (interp >= 2) regmode = interp / 2
    do c = 1, nc
      do v = 1, n_slots
        if (lay(c)%s(v)%n > 0) blk(off(c) + lay(c)%s(v)%first:off(c) + lay(c)%s(v)%first + lay(c)%s(v)%n - 1) = &
            v + (c - 1) * n_slots
      end do
    end do
    do k = 1, 2
      if (imix(k) > 0) blk(imix(k)) = 2 * n_slots + k
    end do
    dof = real(max(nobs - m - nmask, 1), dp)

    ! starting model (not re-equilibrated, §3.9)
    do c = 1, nc
      call synth_model(s, n, logtau, x(:, :, c), vmac(c), sync(:, :, c), amax, ierr)
      nsynth = nsynth + 1
      if (ierr /= err_ok) return
    end do
    call mix_profiles(s%nw, nc, sync, mix, stray, icon, syn, wc)
    c2 = chi2_raw(s%nw, obs, syn, wgt)
    rinfo(rinfo_chi2_start) = c2 / dof
    call penalty(x, pen, gpen)
    merit = c2 * (1.0_dp + pen)
    call mixed_jacobian(s, n, logtau, nc, x, vmac, sync, lay, off, he, boundary, mu, jac_mode, mix, imix, stray, &
                        icon, m, jac, nsynth, ierr, memo_ok, memo_want, memo_x, memo_st, memo_rf, &
                        memo_het, chord)
    if (ierr /= err_ok) return
    have_jac = .true.

    lam = lambda0
    nh = 1
    hist(1) = lam
    frozen = .false.
    nfail = 0
    nsucc = 0
    ntrial = 0
    nreuse = 0
    done = .false.
    nu = 2.0_dp
    gain = 1.0_dp
    lastgain = huge(1.0_dp)
    mhist = huge(1.0_dp)
    do while (.not. done)
      ! normal equations (§3.2)
      do j = 1, m
        beta(j) = sum(wgt * (obs - syn) * jac(:, :, j))
        do i = 1, j
          alpha(i, j) = sum(wgt * jac(:, :, i) * jac(:, :, j))
          alpha(j, i) = alpha(i, j)
        end do
      end do
      if (regmode > 0) then
        ! product rule: -1/2 d(chi2 (1 + P)) = (1 + P) beta - chi2 dP / 2; curvature (1 + P) alpha
        call penalty(x, pen, gpen)
        beta = (1.0_dp + pen) * beta - 0.5_dp * c2 * gpen
        alpha = (1.0_dp + pen) * alpha
      end if
      if (rules == 1) then
        ! pyinv's stop (issue 17): the undamped Gauss-Newton step's predicted reduction
        call modified_svd_solve(m, alpha, beta, blk, lay(1)%nvar + lay(2)%nvar + count(imix > 0), svdtol, delta, ie)
        pred0 = huge(1.0_dp)
        if (ie == err_ok) pred0 = model_reduction(m, delta, beta, alpha)
        ! converged (the last step and the quadratic model both gain less than rtol), or stagnating (the last
        ! three accepted steps together gained less than rtol although the model promises more)
        if ((pred0 <= rtol * merit .and. lastgain <= rtol) .or. (mhist(1) - merit) <= rtol * merit) then
          if (have_jac) exit
          ! never end a cycle on a secant (Broyden) Jacobian: refresh it and judge again
          call mixed_jacobian(s, n, logtau, nc, x, vmac, sync, lay, off, he, boundary, mu, jac_mode, mix, imix, &
                              stray, icon, m, jac, nsynth, ierr, memo_ok, memo_want, memo_x, memo_st, memo_rf, &
                              memo_het, chord)
          if (ierr /= err_ok) exit
          nreuse = 0
          have_jac = .true.
          cycle
        end if
      end if
      adamp = alpha
      do j = 1, m
        adamp(j, j) = alpha(j, j) * (1.0_dp + lam)
      end do
      call modified_svd_solve(m, adamp, beta, blk, lay(1)%nvar + lay(2)%nvar + count(imix > 0), svdtol, delta, ie)
      if (rules == 1 .and. ie == err_ok) then
        ! pyinv (issue 17, pole): Marquardt's scaling diag(alpha) leaves gamma undamped where its column (nearly)
        ! vanishes (gamma near 0 or 180 deg): its step beta_j / (lam alpha_jj) grows without bound as the column
        ! goes to 0, SIR's 22.6 deg clip then turns every trial into the same jump, which the quadratic model
        ! does not describe, and no lambda gives a small trial (every trial of the cycle fails). Where the step
        ! of such a gamma node (alpha_jj below angle_damp_floor times the largest diagonal term; the step
        ! variables are O(1): relative changes and radians) would be clipped, the damping of those nodes is
        ! raised to lam times that floor and the step solved again, so that lambda controls it; other trials
        ! are untouched (phi keeps SIR's clip: at a pole its jumps do not change the profiles).
        dfloor = angle_damp_floor * maxval([(alpha(j, j), j = 1, m)])
        redo = .false.
        do j = 1, m
          if (weak_angle(j)) redo = redo .or. abs(delta(j)) > max_angle_step
        end do
        if (redo) then
          do j = 1, m
            if (weak_angle(j)) adamp(j, j) = alpha(j, j) + lam * dfloor
          end do
          call modified_svd_solve(m, adamp, beta, blk, lay(1)%nvar + lay(2)%nvar + count(imix > 0), svdtol, delta, ie)
        end if
      end if
      pred = 0.0_dp
      if (ie == err_ok) pred = model_reduction(m, delta, beta, alpha)
      ntrial = ntrial + 1
      ! the trial model: components, ties, hydrostatics, mixture
      xt = x
      vt = vmac
      do c = 1, nc
        if (ie /= err_ok) exit
        if (lay(c)%m > 0) call build_trial(n, x(:, :, c), vmac(c), lay(c), delta(off(c) + 1:off(c) + lay(c)%m), &
                                           .true., xt(:, :, c), vt(c), ie)
      end do
      if (ie == err_ok) call apply_ties(n, nc, nodes, xt, vt)
      do c = 1, nc
        if (ie /= err_ok) exit
        if (moves(c) .and. he(c) /= 0) call equilibrate(s, n, logtau, xt(:, :, c), x(:, col_pe, c), boundary(c), &
                                                        bvalue(c), mu, mpress, .true., ie)
      end do
      mixt = mix
      do k = 1, 2
        if (imix(k) == 0) cycle
        r = min(max(delta(imix(k)), -0.5_dp), 0.5_dp)
        mixt(k) = mix_value(k, mix_param(k, mix(k)) * (1.0_dp + r))
      end do
      stc = sync
      do c = 1, nc
        if (ie /= err_ok) exit
        if (.not. moves(c)) cycle
        call synth_model(s, n, logtau, xt(:, :, c), vt(c), stc(:, :, c), amax, ie)
        nsynth = nsynth + 1
      end do
      c2t = huge(1.0_dp)
      meritt = huge(1.0_dp)
      if (ie == err_ok) then
        call mix_profiles(s%nw, nc, stc, mixt, stray, icon, st, wc)
        c2t = chi2_raw(s%nw, obs, st, wgt)
        call penalty(xt, pent, gpen)
        meritt = c2t * (1.0_dp + pent)
      end if
      if (ntrial <= maxtr) then
        trace(ntrial, 1) = lam
        trace(ntrial, 2) = min(c2t, huge(1.0_dp)) / dof
        trace(ntrial, 3) = merge(1.0_dp, 0.0_dp, ie == err_ok .and. meritt < merit)
      end if
      if (ie == err_ok .and. meritt < merit) then
        rho_c = (merit - meritt) / (merit + meritt)
        gain = 1.0_dp
        if (pred > 0.0_dp) gain = (merit - meritt) / pred
        lastgain = (merit - meritt) / merit
        mhist(1:2) = mhist(2:3)
        mhist(3) = merit
        merit = meritt
        call parameter_vector(aold)
        x = xt
        vmac = vt
        mix = mixt
        dsyn = st - syn    ! the change of the profiles (for the Broyden update)
        syn = st
        sync = stc
        c2 = c2t
        nsucc = nsucc + 1
        nfail = 0
        have_jac = .false.
        if (rules == 1) then
          lam = max(lam * max(1.0_dp / 3.0_dp, 1.0_dp - (2.0_dp * min(gain, 1.0_dp) - 1.0_dp)**3), 1.0e-9_dp)
          nu = 2.0_dp
          if (nsucc >= maxit) done = .true.
        else
          call lambda_update(lam, .true., hist, nh, frozen)
          if (rho_c <= stop_threshold(nsucc) .or. nsucc >= maxit .or. lam == 0.0_dp) done = .true.
          ! pyinv option (spec §6.3): stop after two consecutive successes with a relative gain below rtol
          if (rho_c < rtol) then
            nsmall = nsmall + 1
          else
            nsmall = 0
          end if
          if (nsmall >= 2) done = .true.
        end if
        if (.not. done) then
          do c = 1, nc
            if (lay(c)%m == 0) cycle
            call update_layout(n, logtau, x(:, :, c), vmac(c), lay(c), ierr)
            if (ierr /= err_ok) exit
          end do
          if (ierr /= err_ok) exit
          if (nreuse < jac_reuse .and. (rules == 0 .or. gain > 0.5_dp)) then
            ! pyinv (issue 9): a secant update of the Jacobian instead of new response functions
            do c = 1, nc
              if (lay(c)%m == 0) cycle
              call secant_step(s%nw, lay(c), aold(off(c) + 1:off(c) + lay(c)%m), &
                               jac(:, :, off(c) + 1:off(c) + lay(c)%m), delta(off(c) + 1:off(c) + lay(c)%m))
            end do
            do k = 1, 2
              if (imix(k) == 0) cycle
              a = mix_param(k, mix(k))
              jac(:, :, imix(k)) = jac(:, :, imix(k)) * (a / aold(imix(k)))
              delta(imix(k)) = (a - aold(imix(k))) / a
            end do
            call secant_update(s%nw, m, delta, dsyn, jac)
            nreuse = nreuse + 1
          else
            call mixed_jacobian(s, n, logtau, nc, x, vmac, sync, lay, off, he, boundary, mu, jac_mode, mix, imix, &
                                stray, icon, m, jac, nsynth, ierr, memo_ok, memo_want, memo_x, memo_st, memo_rf, &
                                memo_het, chord)
            if (ierr /= err_ok) exit
            nreuse = 0
            have_jac = .true.
          end if
        end if
      else if (nreuse > 0) then
        ! a failed step with an updated (approximate) Jacobian: take the exact one and retry at the
        ! same lambda before counting a failure
        call mixed_jacobian(s, n, logtau, nc, x, vmac, sync, lay, off, he, boundary, mu, jac_mode, mix, imix, &
                            stray, icon, m, jac, nsynth, ierr, memo_ok, memo_want, memo_x, memo_st, memo_rf, &
                            memo_het, chord)
        if (ierr /= err_ok) exit
        nreuse = 0
        have_jac = .true.
      else
        nfail = nfail + 1
        if (rules == 1) then
          lam = min(lam * nu, 1.0e12_dp)
          nu = 2.0_dp * nu
        else
          call lambda_update(lam, .false., hist, nh, frozen)
        end if
        if (nfail >= max_fail) done = .true.
      end if
    end do

    fit = syn
    info(info_iterations) = nsucc
    info(info_trials) = ntrial
    rinfo(rinfo_chi2_raw) = c2
    rinfo(rinfo_chi2) = c2 / dof
    if (nobs - nmask > 0) rinfo(rinfo_snr) = 1.0_dp / sqrt(max(sum(merge((obs - syn)**2, 0.0_dp, wgt > 0.0_dp)) / &
                                                  real(nobs - nmask, dp), tiny(1.0_dp)))
    rinfo(rinfo_lambda) = lam
    if (ierr /= err_ok) then
      info(info_syntheses) = nsynth
      return
    end if

    ! HE stratification of the final model (pg, rho, z)
    do c = 1, nc
      xe(:, :, c) = x(:, :, c)
      call equilibrate(s, n, logtau, xe(:, :, c), x(:, col_pe, c), boundary(c), bvalue(c), mu, mpress, .false., &
                       ie, pg(:, c), rho(:, c), z(:, c))
    end do

    ! uncertainties (§3.10) at the final model (only when asked: a cycle followed by another needs none)
    if (want_errors == 0) then
      info(info_syntheses) = nsynth
      return
    end if
    do c = 1, nc
      if (lay(c)%m == 0) cycle
      call update_layout(n, logtau, x(:, :, c), vmac(c), lay(c), ierr)
      if (ierr /= err_ok) return
    end do
    if (.not. have_jac) then
      call mixed_jacobian(s, n, logtau, nc, x, vmac, sync, lay, off, he, boundary, mu, jac_mode, mix, imix, stray, &
                          icon, m, jac, nsynth, ierr, memo_ok, memo_want, memo_x, memo_st, memo_rf, &
                          memo_het, chord)
      if (ierr /= err_ok) then
        info(info_syntheses) = nsynth
        return
      end if
    end if
    info(info_syntheses) = nsynth
    do j = 1, m
      sj(j) = sqrt(c2 / (real(m, dp) * max(sum(wgt * jac(:, :, j)**2), 1.0e-10_dp)))
    end do
    do c = 1, nc
      if (lay(c)%m == 0) cycle
      call build_trial(n, x(:, :, c), vmac(c), lay(c), sj(off(c) + 1:off(c) + lay(c)%m), .false., xe(:, :, c), &
                       ve(c), ie)
      if (ie /= err_ok) cycle
      if (he(c) /= 0) then
        call equilibrate(s, n, logtau, xe(:, :, c), x(:, col_pe, c), boundary(c), bvalue(c), mu, mpress, .true., ie)
        if (ie /= err_ok) cycle
      end if
      err(:, 1:n_cols, c) = abs(xe(:, :, c) - x(:, :, c))
      err_vmac(c) = abs(ve(c) - vmac(c))
      if (he(c) /= 0) then
        call equilibrate(s, n, logtau, xe(:, :, c), x(:, col_pe, c), boundary(c), bvalue(c), mu, mpress, .false., &
                         ie, pg2, rho2, z2)
        if (ie == err_ok) then
          err(:, 8, c) = abs(z2 - z(:, c))
          err(:, 9, c) = abs(pg2 - pg(:, c))
          err(:, 10, c) = abs(rho2 - rho(:, c))
        end if
      end if
    end do
    do k = 1, 2
      if (imix(k) > 0) err_mix(k) = abs(mix_value(k, mix_param(k, mix(k)) * (1.0_dp + sj(imix(k)))) - mix(k))
    end do
    ! full covariance: (J^T W J)^+ (modified-SVD truncated) * chi2 / dof, propagated to depth
    do j = 1, m
      do i = 1, j
        alpha(i, j) = sum(wgt * jac(:, :, i) * jac(:, :, j))
        alpha(j, i) = alpha(i, j)
      end do
    end do
    call modified_svd_solve(m, alpha, beta, blk, lay(1)%nvar + lay(2)%nvar + count(imix > 0), svdtol, delta, ie, ainv)
    if (ie == err_ok) then
      ainv = ainv * (c2 / dof)
      if (maxm >= m) cov(1:m, 1:m) = ainv
      do c = 1, nc
        do v = 1, n_slots
          if (lay(c)%s(v)%n <= 0) cycle
          i = off(c) + lay(c)%s(v)%first
          j = i + lay(c)%s(v)%n - 1
          if (v == slot_vmac) then
            cerr_vmac(c) = sqrt(max(ainv(i, i), 0.0_dp)) * vmac(c)
          else
            cerr(:, v, c) = sqrt(max(sum(matmul(lay(c)%s(v)%d, ainv(i:j, i:j)) * lay(c)%s(v)%d, dim=2), 0.0_dp))
          end if
        end do
      end do
      ! d f / d ln u = -f (1 - f), d p / d ln w = p (1 - p)
      do k = 1, 2
        if (imix(k) > 0) cerr_mix(k) = sqrt(max(ainv(imix(k), imix(k)), 0.0_dp)) * mix(k) * (1.0_dp - mix(k))
      end do
    end if

  contains

    !> Regularisation term P of model xx and dP/d delta (zero without regularisation).
    pure subroutine penalty(xx, pp, gg)
      real(dp), intent(in) :: xx(n, n_cols, nc)
      real(dp), intent(out) :: pp, gg(m)
      real(dp) :: pc
      integer :: cc
      pp = 0.0_dp
      gg = 0.0_dp
      if (regmode == 0) return
      do cc = 1, nc
        if (lay(cc)%m == 0) cycle
        call layout_penalty(n, logtau, xx(:, :, cc), lay(cc), regmode, pc, gg(off(cc) + 1:off(cc) + lay(cc)%m))
        pp = pp + pc
      end do
    end subroutine penalty

    !> Whether parameter jj is an inclination node (either component) whose diagonal term of the normal equations
    !> is below the damping floor dfloor.
    pure logical function weak_angle(jj)
      integer, intent(in) :: jj
      integer :: vv
      weak_angle = .false.
      if (blk(jj) > 2 * n_slots) return
      vv = mod(blk(jj) - 1, n_slots) + 1
      weak_angle = vv == col_gam .and. alpha(jj, jj) < dfloor
    end function weak_angle

    !> The free parameters' values (node values of both components, u, w) in parameter order.
    pure subroutine parameter_vector(a)
      real(dp), intent(out) :: a(m)
      integer :: cc, kk
      do cc = 1, nc
        if (lay(cc)%m > 0) call node_values_vector(lay(cc), a(off(cc) + 1:off(cc) + lay(cc)%m))
      end do
      do kk = 1, 2
        if (imix(kk) > 0) a(imix(kk)) = mix_param(kk, mix(kk))
      end do
    end subroutine parameter_vector
  end subroutine lm_cycle

end module pyinv_inversion
