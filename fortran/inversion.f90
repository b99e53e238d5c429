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
!> The node layout and the node Jacobian live in pyinv_nodes, the hydrostatic tangent-linear in
!> pyinv_hydrostatic, the SVD in pyinv_linalg; this module holds the σ model and the LM loop.
module pyinv_inversion
  use pyinv_kinds, only: dp, pi
  use pyinv_errors, only: err_ok, err_bad_input, err_not_finite, err_no_data
  use pyinv_synthesis, only: synth_setup, synth_model, n_cols, col_t, col_pe, col_b, col_vlos, col_gam
  use pyinv_hydrostatic, only: he_solve
  use pyinv_linalg, only: modified_svd_solve
  use pyinv_nodes, only: layout, make_layout, update_layout, node_jacobian, apply_perturbation, node_values_vector, &
                         broyden_update, &
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
    if (any(xt(:, col_t) <= 0.0_dp)) then
      ierr = err_bad_input
      return
    end if
    if (he /= 0) then
      call he_solve(s%eps, s%eos_compat, n, logtau, xt(:, col_t), x(n, col_pe), boundary, bvalue, mu, pe_new, &
          ierr, pe_guess=x(:, col_pe))
      if (ierr /= err_ok) return
      xt(:, col_pe) = pe_new
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
  !> only). jac_reuse > 0 (pyinv): after an accepted step the Jacobian is updated by Broyden's secant
  !> formula instead of recomputed, at most jac_reuse times in a row; a step that fails with an updated
  !> Jacobian is retried with the exact one at the same lambda (0: a new Jacobian after every accepted
  !> step, as SIR). want_errors = 0: no uncertainties (err, cerr, cov stay 0; no final Jacobian).
  !> ierr: engine failure (the returned model is then the best one reached).
  pure subroutine lm_cycle(s, n, logtau, x, vmac, obs, weights, snr, nodes, maxnp, xnodes, usex, interp, &
                           svdtol, lambda0, boundary, bvalue, mu, maxit, jac_mode, jac_reuse, rtol, want_errors, &
                           fit, pg, rho, z, err, err_vmac, cerr, cerr_vmac, maxm, cov, maxtr, trace, info, rinfo, ierr)
    type(synth_setup), intent(in) :: s
    integer, intent(in) :: n, nodes(n_slots), maxnp, usex(n_slots), interp, boundary, maxit, jac_mode, maxm, &
                           maxtr, jac_reuse, want_errors
    real(dp), intent(in) :: logtau(n), obs(4, s%nw), weights(4), snr, xnodes(maxnp, n_slots), svdtol, &
                            lambda0, bvalue, mu, rtol
    real(dp), intent(out) :: trace(maxtr, 3)
    real(dp), intent(inout) :: x(n, n_cols), vmac
    real(dp), intent(out) :: fit(4, s%nw), pg(n), rho(n), z(n), err(n, 10), err_vmac, cerr(n, n_cols), &
                             cerr_vmac, cov(maxm, maxm), rinfo(n_rinfo)
    integer, intent(out) :: info(n_info), ierr
    real(dp) :: sig(4, s%nw), wgt(4, s%nw), syn(4, s%nw), st(4, s%nw), xt(n, n_cols), vt, lam, c2, c2t, amax(s%nl)
    real(dp) :: dsyn(4, s%nw)
    real(dp) :: hist(64), pe_he(n), xe(n, n_cols), ve, pg2(n), rho2(n), z2(n), dof
    real(dp), allocatable :: jac(:, :, :), alpha(:, :), beta(:), adamp(:, :), delta(:), sj(:), ainv(:, :), aold(:)
    integer, allocatable :: blk(:)
    type(layout) :: lay
    integer :: nobs, nmask, m, nh, nfail, nsucc, ntrial, nsynth, i, j, v, ie, he, nsmall, nreuse
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
    info(info_nobs) = nobs
    info(info_nmask) = nmask
    he = 1
    if (nodes(col_pe) > 0) he = 0
    ! velocity offset (§2.2)
    vmin = 0.0_dp
    if (nodes(col_vlos) > 0) vmin = minval(x(:, col_vlos)) - 7.0e5_dp
    call make_layout(n, logtau, nodes, maxnp, xnodes, usex, interp, x, vmac, vmin, lay, ierr)
    if (ierr /= err_ok) return
    m = lay%m
    info(info_m) = m
    allocate(jac(4, s%nw, m), alpha(m, m), beta(m), adamp(m, m), delta(m), sj(m), ainv(m, m), blk(m), aold(m))
    do v = 1, n_slots
      if (lay%s(v)%n > 0) blk(lay%s(v)%first:lay%s(v)%first + lay%s(v)%n - 1) = v
    end do
    dof = real(max(nobs - m - nmask, 1), dp)

    ! starting model (not re-equilibrated, §3.9)
    call synth_model(s, n, logtau, x, vmac, syn, amax, ierr)
    nsynth = nsynth + 1
    if (ierr /= err_ok) return
    c2 = chi2_raw(s%nw, obs, syn, wgt)
    rinfo(rinfo_chi2_start) = c2 / dof
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
    nreuse = 0
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
        call synth_model(s, n, logtau, xt, vt, st, amax, ie)
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
        dsyn = st - syn    ! the change of the profiles (for the Broyden update)
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
          call node_values_vector(lay, aold)
          call update_layout(n, logtau, x, vmac, lay, ierr)
          if (ierr /= err_ok) exit
          if (nreuse < jac_reuse) then
            ! pyinv (issue 9): a secant update of the Jacobian instead of new response functions
            call broyden_update(s%nw, lay, aold, dsyn, jac)
            nreuse = nreuse + 1
          else
            call node_jacobian(s, n, logtau, x, vmac, syn, lay, he, boundary, mu, jac_mode, jac, &
                               nsynth, ierr)
            if (ierr /= err_ok) exit
            nreuse = 0
            have_jac = .true.
          end if
        end if
      else if (nreuse > 0) then
        ! a failed step with an updated (approximate) Jacobian: take the exact one and retry at the
        ! same lambda before counting a failure
        call node_jacobian(s, n, logtau, x, vmac, syn, lay, he, boundary, mu, jac_mode, jac, nsynth, ierr)
        if (ierr /= err_ok) exit
        nreuse = 0
        have_jac = .true.
      else
        nfail = nfail + 1
        call lambda_update(lam, .false., hist, nh, frozen)
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
    call he_solve(s%eps, s%eos_compat, n, logtau, x(:, col_t), x(n, col_pe), boundary, bvalue, mu, pe_he, ie, &
        pg, rho, z)

    ! uncertainties (§3.10) at the final model (only when asked: a cycle followed by another needs none)
    if (want_errors == 0) then
      info(info_syntheses) = nsynth
      return
    end if
    call update_layout(n, logtau, x, vmac, lay, ierr)
    if (ierr /= err_ok) return
    if (.not. have_jac) then
      call node_jacobian(s, n, logtau, x, vmac, syn, lay, he, boundary, mu, jac_mode, jac, nsynth, ierr)
      if (ierr /= err_ok) then
        info(info_syntheses) = nsynth
        return
      end if
    end if
    info(info_syntheses) = nsynth
    do j = 1, m
      sj(j) = sqrt(c2 / (real(m, dp) * max(sum(wgt * jac(:, :, j)**2), 1.0e-10_dp)))
    end do
    call build_trial(s, n, logtau, x, vmac, lay, sj, .false., he, boundary, bvalue, mu, xe, ve, ie)
    if (ie == err_ok) then
      err(:, 1:n_cols) = abs(xe - x)
      err_vmac = abs(ve - vmac)
      if (he /= 0) then
        call he_solve(s%eps, s%eos_compat, n, logtau, xe(:, col_t), x(n, col_pe), boundary, bvalue, mu, &
            pe_he, ie, pg2, rho2, z2)
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
        if (v == slot_vmac) then
          cerr_vmac = sqrt(max(ainv(i, i), 0.0_dp)) * vmac
        else
          cerr(:, v) = sqrt(max(sum(matmul(lay%s(v)%d, ainv(i:j, i:j)) * lay%s(v)%d, dim=2), 0.0_dp))
        end if
      end do
    end if
  end subroutine lm_cycle

end module pyinv_inversion
