!> Continuous opacity of spec-forward.md §6 (Wittmann 1974 package as used by SIR): total continuum
!> cross-section per hydrogen nucleus [cm2] at an AIR wavelength [cm], with SIR's validity windows.
!> pyinv decision (§6.8, §12 item 23): He Rayleigh with Dalgarno's 5.94e10 (sir_compat = 1: 5.94e-10).
module pyinv_continuum
  use pyinv_kinds, only: dp
  use pyinv_errors, only: err_ok, err_domain, err_nonpositive_t, err_nonpositive_pe
  use pyinv_atomic, only: partition_functions
  use pyinv_eos, only: eos_state, eos_solve, eos_tfac, eos_tfactors, eos_solve_tf
  use pyinv_continuum_data
  implicit none
  private
  public :: kappa_continuum, kappa_continuum_deriv, n_air_edlen, kappa_components, kappa_coefficients, &
            kappa_from_coef

  !> number of individual contributions returned by kappa_components
  integer, parameter, public :: n_kappa_components = 13
  !> number of (lambda, T) coefficients of kappa_coefficients (13 components, Na and Mg separate)
  integer, parameter, public :: n_kappa_coef = 14
  ! indices into kappa_components' output
  integer, parameter, public :: kc_hminus_bf = 1, kc_hminus_ff = 2, kc_heminus_ff = 3, kc_hi = 4, &
    kc_h2minus_ff = 5, kc_h2plus = 6, kc_hei = 7, kc_thomson = 8, kc_rayleigh_h = 9, &
    kc_rayleigh_h2 = 10, kc_rayleigh_he = 11, kc_metals_c = 12, kc_metals_namg = 13

contains

  !> Refractive index of standard air (§6.1): 1.0004 below 0.18 micron, Edlen (1953) otherwise.
  pure elemental function n_air_edlen(lambda_cm) result(n)
    real(dp), intent(in) :: lambda_cm
    real(dp) :: n, s, lum
    lum = lambda_cm * 1.0e4_dp
    if (lum < 0.18_dp) then
      n = 1.0004_dp
    else
      s = 1.0_dp / lum**2
      n = 1.0_dp + 1.0000004_dp * (6.4328e-5_dp + 2.94981e-2_dp / (146.0_dp - s) + 2.554e-4_dp / (41.0_dp - s))
    end if
  end function n_air_edlen

  !> Total continuum cross-section per H nucleus [cm2] at air wavelength lambda_air_cm (§6.10).
  pure subroutine kappa_continuum(lambda_air_cm, st, eps, kappa, ierr, sir_compat)
    real(dp), intent(in) :: lambda_air_cm, eps(92)
    type(eos_state), intent(in) :: st
    real(dp), intent(out) :: kappa
    integer, intent(out) :: ierr
    integer, intent(in), optional :: sir_compat
    real(dp) :: comp(n_kappa_components)
    call kappa_components(lambda_air_cm, st, eps, comp, ierr, sir_compat)
    kappa = sum(comp)
  end subroutine kappa_continuum

  !> Individual continuum contributions per H nucleus [cm2] (indices kc_*; metals: C, Na+Mg).
  pure subroutine kappa_components(lambda_air_cm, st, eps, comp, ierr, sir_compat)
    real(dp), intent(in) :: lambda_air_cm, eps(92)
    type(eos_state), intent(in) :: st
    real(dp), intent(out) :: comp(n_kappa_components)
    integer, intent(out) :: ierr
    integer, intent(in), optional :: sir_compat
    real(dp) :: coef(n_kappa_coef)

    comp = 0.0_dp
    if (.not. (st%pe > 0.0_dp)) then
      ierr = err_nonpositive_pe
      if (.not. (st%t > 0.0_dp)) ierr = err_nonpositive_t
      if (.not. (lambda_air_cm > 0.0_dp) .or. lambda_air_cm > 1.0_dp) ierr = err_domain
      return
    end if
    call kappa_coefficients(lambda_air_cm, st%t, coef, ierr, sir_compat)
    if (ierr /= err_ok) return
    call kappa_comp_from_coef(coef, st, comp)
  end subroutine kappa_components

  !> Continuum cross-section per H nucleus from the (lambda, T) coefficients of kappa_coefficients
  !> evaluated at the temperature st%t (same value as kappa_continuum; no validation).
  pure function kappa_from_coef(coef, st) result(kappa)
    real(dp), intent(in) :: coef(n_kappa_coef)
    type(eos_state), intent(in) :: st
    real(dp) :: kappa
    real(dp) :: comp(n_kappa_components)
    call kappa_comp_from_coef(coef, st, comp)
    kappa = sum(comp)
  end function kappa_from_coef

  !> contributions = (lambda, T) coefficients times the EOS factors
  pure subroutine kappa_comp_from_coef(coef, st, comp)
    real(dp), intent(in) :: coef(n_kappa_coef)
    type(eos_state), intent(in) :: st
    real(dp), intent(out) :: comp(n_kappa_components)
    comp(kc_hminus_bf) = coef(kc_hminus_bf) * (st%g3 * st%f1)
    comp(kc_hminus_ff) = coef(kc_hminus_ff) * (st%pe * st%f1)
    comp(kc_heminus_ff) = coef(kc_heminus_ff) * (st%pe * st%p_he)
    comp(kc_hi) = coef(kc_hi) * st%f1
    comp(kc_h2minus_ff) = coef(kc_h2minus_ff) * (st%pe * st%f5)
    comp(kc_h2plus) = coef(kc_h2plus) * (st%f1 * st%pe * (st%f2 / st%fe))
    comp(kc_hei) = coef(kc_hei) * st%p_he
    comp(kc_thomson) = coef(kc_thomson) * st%fe
    comp(kc_rayleigh_h) = coef(kc_rayleigh_h) * st%f1
    comp(kc_rayleigh_h2) = coef(kc_rayleigh_h2) * st%f5
    comp(kc_rayleigh_he) = coef(kc_rayleigh_he) * st%p_he
    comp(kc_metals_c) = coef(kc_metals_c) * st%p_c
    comp(kc_metals_namg) = coef(kc_metals_namg) * st%p_na + coef(n_kappa_coef) * st%p_mg
  end subroutine kappa_comp_from_coef

  !> (lambda, T)-dependent factors of the continuum contributions (§6): contribution kc_X =
  !> coef(kc_X) * (EOS factor of X), see kappa_comp_from_coef; coef(n_kappa_coef) is the Mg I factor.
  pure subroutine kappa_coefficients(lambda_air_cm, t, coef, ierr, sir_compat)
    real(dp), intent(in) :: lambda_air_cm, t
    real(dp), intent(out) :: coef(n_kappa_coef)
    integer, intent(out) :: ierr
    integer, intent(in), optional :: sir_compat
    real(dp) :: lam, theta, nair, nu, zeta, lama, er, u, z1, ey, d1, l3, l2
    real(dp) :: sig, w, th_h, s, sp, qn, gn, kh, gff, z4, uh, u2, u3, lnu, q, lns, tr, he_c
    real(dp) :: tot
    integer :: m0, l0, n, i0, i
    logical :: compat

    ierr = err_ok
    coef = 0.0_dp
    compat = .false.
    if (present(sir_compat)) compat = sir_compat /= 0
    lam = lambda_air_cm
    if (.not. (lam > 0.0_dp) .or. lam > 1.0_dp) then
      ierr = err_domain; return
    end if
    if (.not. (t > 0.0_dp)) then
      ierr = err_nonpositive_t; return
    end if
    theta = 5040.0_dp / t


    ! §6.1 auxiliaries
    nair = n_air_edlen(lam)
    nu = 2.997925e10_dp / (lam * nair)
    zeta = log10(nu)
    lama = 1.0e8_dp * lam
    er = 911.3_dp / (lama * nair)
    m0 = int(sqrt(1.0_dp / er)) + 1
    l0 = max(m0, 4)
    u = 1.4388_dp / (lam * t)
    if (u < 1.0e-3_dp) then
      z1 = u
    else
      z1 = 1.0_dp - exp(-u)
    end if
    ey = er**(0.43_dp + 0.6_dp * log10(er + 10.0_dp))
    d1 = 1.0_dp + (5.9856e-2_dp - 3.4916e-4_dp * ey / (1.0_dp + 1.0e-2_dp * ey)) * er**(5.0_dp / 6.0_dp)
    l3 = 1.0e5_dp * lam
    l2 = 1.0e2_dp * lam

    ! §6.2 H- bound-free and free-free
    if (lam <= 1.64189e-4_dp) then
      if (lam <= 1.42e-4_dp) then
        sig = 1.0e-17_dp * (6.80133e-3_dp + l3 * (0.178708_dp + l3 * (0.16479_dp + l3 * (-0.0204842_dp &
              + l3 * 5.95244e-4_dp))))
      else
        w = 16.419_dp - l3
        sig = 1.0e-17_dp * w * (0.269818_dp + w * (0.22019_dp + w * (-0.0411288_dp + w * 0.00273236_dp)))
      end if
      coef(kc_hminus_bf) = sig * z1
    end if
    coef(kc_hminus_ff) = 1.0e-26_dp * (5.3666e-3_dp - 1.1493e-2_dp * theta + 2.7039e-2_dp * theta**2 &
      + theta * l2 * (-3.2062_dp + 11.924_dp * theta - 5.939_dp * theta**2) &
      + theta * l2 * l3 * (-0.40192_dp + 7.0355_dp * theta - 0.34592_dp * theta**2))

    ! §6.3 He- free-free and §6.5 H2- free-free (same validity window)
    if (.not. (er > 0.3_dp .or. t < 1500.0_dp .or. t > 16800.0_dp)) then
      if (t >= 9200.0_dp) then
        sig = 1.0e-26_dp * (2.46e-4_dp - 12.6_dp * lam + 5.67e6_dp * lam**2 &
              + theta * (-5.92e-4_dp + 51.2_dp * lam + 1.3e7_dp * lam**2) &
              + theta**2 * (1.45e-2_dp - 83.0_dp * lam - 1.8e6_dp * lam**2))
      else
        sig = 1.0e-34_dp * lama**2 * (0.49245_dp + t * (-1.0754e-4_dp + t * (9.5114e-9_dp - t * 2.3544e-13_dp)))
      end if
      coef(kc_heminus_ff) = sig
      sig = 1.0e-34_dp * lama**2 * (0.88967_dp + t * (-1.4274e-4_dp + t * (1.0879e-8_dp - t * 2.5658e-13_dp)))
      coef(kc_h2minus_ff) = sig
    end if

    ! §6.4 H I bound-free + free-free (also provides K_H, S', Z4 for §6.7)
    call partition_functions(1, t, uh, u2, u3)
    th_h = 1.568399e5_dp / t
    s = 0.0_dp; sp = 0.0_dp; kh = 0.0_dp; z4 = 0.0_dp
    if (m0 <= 12) then
      do n = m0, 12
        qn = exp(th_h / real(n * n, dp) - th_h) / real(n, dp)**3
        gn = (1.0_dp + (0.172826_dp - 0.345652_dp / (er * real(n * n, dp))) * er**(1.0_dp / 3.0_dp)) / d1
        s = s + gn * qn
        if (n >= l0) sp = sp + gn * qn
      end do
      kh = 2.08966e-2_dp * lam**3 * z1 / uh
      gff = 1.0828_dp + 3.865e-6_dp * t + lama * (7.564e-7_dp + 4.92e-10_dp * t - 2.482e-15_dp * t**2) &
            + lama**2 * (5.326e-12_dp - 3.904e-15_dp * t + 1.879e-20_dp * t**2)
      z4 = (exp(th_h / 144.0_dp - th_h) + exp(-th_h) * (gff - 1.0_dp)) / (2.0_dp * th_h)
      coef(kc_hi) = kh * (s + z4)
    end if

    ! §6.6 H2+ bound-free + free-free
    if (lam >= 3.8e-5_dp .and. lam <= 3.0e-4_dp) then
      lnu = log(nu)
      q = -2.409e-15_dp + nu * (1.028e-30_dp + nu * (-4.23e-46_dp + nu * (1.224e-61_dp - nu * 1.351e-77_dp)))
      lns = log(10.0_dp) * theta * (7.342e-3_dp - nu * q) - 3023.3_dp &
            + lnu * (377.97_dp + lnu * (-18.2496_dp + lnu * (0.39207_dp - lnu * 3.1672e-3_dp)))
      coef(kc_h2plus) = exp(lns) * 1.0e16_dp * z1 / (1.38054_dp * t)
    end if

    ! §6.7 He I bound-free
    tot = 0.0_dp
    if (lam <= 8.2610e-5_dp) then
      if (lam <= 3.6788e-5_dp) then
        i0 = 1
        if (lam > 5.0420e-6_dp) i0 = 2
        if (lam > 2.6003e-5_dp) i0 = 3
        if (lam > 3.1210e-5_dp) i0 = 4
        if (lam > 3.4210e-5_dp) i0 = 6
      else
        i0 = 8
        if (lam > 6.6322e-5_dp) i0 = 9
        if (lam > 7.4351e-5_dp) i0 = 10
        if (lam > 7.8438e-5_dp) i0 = 11
        if (lam > 8.1910e-5_dp) i0 = 12
      end if
      do i = i0, 12
        if (i == 2) then
          tot = tot + he_g(i) * 10.0_dp**(he_a(i) + he_b(i) * zeta - 0.727_dp * zeta**2 - theta * he_chi(i))
        else
          tot = tot + he_g(i) * 10.0_dp**(he_a(i) + he_b(i) * zeta - theta * he_chi(i))
        end if
      end do
    end if
    if (m0 <= 12 .and. theta <= 3.0_dp .and. abs(kh) >= 1.0e-25_dp .and. abs(sp + z4) >= 1.0e-25_dp) then
      tot = tot + 4.0_dp * 10.0_dp**(-10.992_dp * theta) * kh * (sp + z4)
    end if
    coef(kc_hei) = tot

    ! §6.8 scattering
    coef(kc_thomson) = 6.653e-25_dp
    if (lam >= 1.2e-5_dp) then
      tr = 1.0_dp / lama
      coef(kc_rayleigh_h) = tr**4 * (5.799e-13_dp + 1.422e-6_dp * tr**2 + 2.784_dp * tr**4)
      coef(kc_rayleigh_h2) = tr**4 * (8.14e-13_dp + 1.28e-6_dp * tr**2 + 1.61_dp * tr**4)
      he_c = 5.94e10_dp
      if (compat) he_c = 5.94e-10_dp
      coef(kc_rayleigh_he) = 5.484e-14_dp * tr**4 * (1.0_dp + 2.44e5_dp * tr**2 &
                             + he_c * tr**2 / (lama**2 - 2.9e5_dp))**2
    end if

    ! §6.9 C I, Na I, Mg I bound-free
    if (t > 3999.9_dp .and. t < 30000.1_dp) then
      coef(kc_metals_c) = metal_bf(1, lama, t) * z1
      coef(kc_metals_namg) = metal_bf(2, lama, t) * z1
      coef(n_kappa_coef) = metal_bf(3, lama, t) * z1
    end if
  end subroutine kappa_coefficients

  !> Photo-ionisation cross-section per neutral atom of C (el=1), Na (2), Mg (3) from Appendix B
  !> (zero outside the wavelength window); t within (3999.9, 30000.1) K.
  pure function metal_bf(el, lama, t) result(sig)
    integer, intent(in) :: el
    real(dp), intent(in) :: lama, t
    real(dp) :: sig, fh, y, yl, yl1
    real(dp) :: f(27)
    integer :: k, kk, l, m, jj
    real(dp) :: lag

    sig = 0.0_dp
    select case (el)
    case (1)
      if (.not. lama < 7100.0_dp) return
      f = fc
    case (2)
      if (.not. lama < 9850.0_dp) return
      f = fna
    case default
      if (.not. (lama > 1399.9_dp .and. lama < 9000.0_dp)) return
      f = fmg
    end select
    ! temperature node
    k = 27
    do kk = 2, 27
      if (t <= tnode(kk)) then
        k = kk; exit
      end if
    end do
    k = min(k, 26)
    ! three-point Lagrange interpolation of F through nodes k-1, k, k+1
    fh = 0.0_dp
    do m = k - 1, k + 1
      lag = 1.0_dp
      do jj = k - 1, k + 1
        if (jj /= m) lag = lag * (t - tnode(jj)) / (tnode(m) - tnode(jj))
      end do
      fh = fh + lag * f(m)
    end do
    ! column pair and weight
    if (el == 1) then
      if (k <= 5) then
        l = k - 1; y = (fh - f(k - 1)) / (f(k) - f(k - 1))
      else if (k <= 7) then
        l = 5; y = (fh - f(5)) / (f(7) - f(5))
      else if (k <= 12) then
        l = 6; y = (fh - f(7)) / (f(12) - f(7))
      else if (k <= 17) then
        l = 7; y = (fh - f(12)) / (f(17) - f(12))
      else
        l = 8; y = (fh - f(17)) / (f(27) - f(17))
      end if
    else
      if (k <= 3) then
        l = k - 1; y = (fh - f(k - 1)) / (f(k) - f(k - 1))
      else if (k <= 5) then
        l = 3; y = (fh - f(3)) / (f(5) - f(3))
      else if (k <= 7) then
        l = 4; y = (fh - f(5)) / (f(7) - f(5))
      else if (k <= 12) then
        l = 5; y = (fh - f(7)) / (f(12) - f(7))
      else if (k <= 17) then
        l = 6; y = (fh - f(12)) / (f(17) - f(12))
      else
        l = 7; y = (fh - f(17)) / (f(27) - f(17))
      end if
    end if
    ! wavelength interpolation in the table columns l and l+1
    select case (el)
    case (1)
      call interp_cols(c_wnode, c_ytab, lama, l, yl, yl1)
      sig = 10.0_dp**(-((1.0_dp - y) * yl + y * yl1) - 20.0_dp)
    case (2)
      call interp_cols(na_wnode, na_ytab, lama, l, yl, yl1)
      sig = 10.0_dp**(-((1.0_dp - y) * yl + y * yl1) - 10.0_dp)
    case default
      call interp_cols(mg_wnode, mg_ytab, lama, l, yl, yl1)
      sig = 10.0_dp**(-((1.0_dp - y) * yl + y * yl1) - 20.0_dp)
    end select
  end function metal_bf

  !> Linear interpolation in wavelength of table columns l, l+1 (first node j >= 2 with lama <= w_j).
  pure subroutine interp_cols(wn, tab, lama, l, yl, yl1)
    real(dp), intent(in) :: wn(:), tab(:, :), lama
    integer, intent(in) :: l
    real(dp), intent(out) :: yl, yl1
    integer :: j, jj
    real(dp) :: a
    j = size(wn)
    do jj = 2, size(wn)
      if (lama <= wn(jj)) then
        j = jj; exit
      end if
    end do
    if (wn(j) > wn(j - 1)) then
      a = (lama - wn(j - 1)) / (wn(j) - wn(j - 1))
    else
      a = 1.0_dp
    end if
    yl = tab(j - 1, l) + a * (tab(j, l) - tab(j - 1, l))
    yl1 = tab(j - 1, l + 1) + a * (tab(j, l + 1) - tab(j - 1, l + 1))
  end subroutine interp_cols

  !> kappa per H nucleus at (t, pe) and its total derivatives w.r.t. T (fixed Pe) and Pe (fixed T),
  !> EOS included, by Richardson-extrapolated central differences in ln T, ln Pe (the temperature
  !> factors of the EOS and of the opacity are computed once for the Pe differences).
  pure subroutine kappa_continuum_deriv(lambda_air_cm, t, pe, eps, kappa, dk_dt, dk_dpe, ierr, sir_compat)
    real(dp), intent(in) :: lambda_air_cm, t, pe, eps(92)
    real(dp), intent(out) :: kappa, dk_dt, dk_dpe
    integer, intent(out) :: ierr
    integer, intent(in), optional :: sir_compat
    real(dp), parameter :: h = 2.0e-4_dp
    type(eos_state) :: st
    type(eos_tfac) :: tf
    real(dp) :: kp, km, d(2), hk, coef(n_kappa_coef)
    integer :: k, ie

    dk_dt = 0.0_dp; dk_dpe = 0.0_dp; kappa = 0.0_dp
    call eos_solve(t, pe, eps, st, ierr, sir_compat)
    if (ierr /= err_ok) return
    call kappa_continuum(lambda_air_cm, st, eps, kappa, ierr, sir_compat)
    if (ierr /= err_ok) return
    do k = 1, 2
      hk = h / real(k, dp)
      kp = kappa_at_t(t * exp(hk))
      km = kappa_at_t(t * exp(-hk))
      d(k) = (kp - km) / (2.0_dp * hk)
    end do
    dk_dt = (4.0_dp * d(2) - d(1)) / 3.0_dp / t
    call eos_tfactors(t, eps, tf, ie, sir_compat)
    call kappa_coefficients(lambda_air_cm, t, coef, ie, sir_compat)
    do k = 1, 2
      hk = h / real(k, dp)
      call eos_solve_tf(tf, pe * exp(hk), st, ie)
      kp = kappa_from_coef(coef, st)
      call eos_solve_tf(tf, pe * exp(-hk), st, ie)
      km = kappa_from_coef(coef, st)
      d(k) = (kp - km) / (2.0_dp * hk)
    end do
    dk_dpe = (4.0_dp * d(2) - d(1)) / 3.0_dp / pe

  contains

    pure real(dp) function kappa_at_t(tt) result(kap)
      real(dp), intent(in) :: tt
      type(eos_state) :: s1
      integer :: i1
      call eos_solve(tt, pe, eps, s1, i1, sir_compat)
      call kappa_continuum(lambda_air_cm, s1, eps, kap, i1, sir_compat)
    end function kappa_at_t
  end subroutine kappa_continuum_deriv

end module pyinv_continuum
