!> Line opacity and the propagation matrix (spec-forward.md §7).
!>
!> Per line and depth (line_depth_quantities): lowered-ionisation populations (§7.3), line-centre
!> opacity eta0 in units of kappa5 (§7.4), damping parameter a (§7.5: radiative + van der Waals,
!> Unsöld or Anstee-Barklem-O'Mara), Doppler width (§7.2). Per wavelength (pyinv_synthesis::group_k7): the
!> Zeeman-split Voigt/Faraday-Voigt profiles summed into the seven propagation-matrix elements
!> (§7.8). Blend offsets (§7.9) by blend_offset_mA.
!>
!> pyinv decisions implemented here (spec §12): no damping cap (a > 3 is only reported through
!> the returned maximum, item 5); the Unsöld ion branch keeps SIR's -(stage-1) chi_I term and x1.741
!> by default (item 4; option unsold_physical); blend offsets from float32-rounded wavelengths by
!> default (item 2; option exact).
module pyinv_propagation
  use, intrinsic :: iso_fortran_env, only: real32
  use pyinv_kinds, only: dp, ln10, k_boltz, c_light, two_k_over_mu, r_gas, m_u
  use pyinv_errors, only: err_ok, err_bad_input, err_domain
  use pyinv_atomic, only: atomic_weight, ionisation_energies, partition_functions, partition_functions_dt
  use pyinv_eos, only: eos_state, saha_phi
  use pyinv_voigt, only: voigt_n
  implicit none
  private
  public :: line_depth_quantities, blend_offset_mA, air_to_vacuum, &
            geometry_factors, k7_add_profiles
  public :: line_depth_quantities_tl, voigt_hui_deriv_n, voigt_hui_n

  !> sqrt(pi) e^2 / (m_e c) [cm^2 s^-1]
  real(dp), parameter :: c_eta0 = 1.49736e-2_dp
  !> h c / k for the line's stimulated emission [cm K]
  real(dp), parameter :: c2_line = 1.4388_dp
  !> h c [eV cm]
  real(dp), parameter :: hc_ev = 1.2398539e-4_dp
  !> classical radiative damping: gamma_rad * lambda = 0.22233 / lambda
  real(dp), parameter :: c_rad = 0.22233_dp
  real(dp), parameter :: four_pi = 12.5663706_dp
  !> ionisation-energy lowering [eV cm] times n_e^(1/3)
  real(dp), parameter :: dchi1 = 6.96e-7_dp, dchi2 = 1.1048e-6_dp
  !> ABO constants
  real(dp), parameter :: pi_abo = 3.1415926_dp, k_abo = 1.3807e-16_dp, v0_abo = 1.0e6_dp
  real(dp), parameter :: m_h = 1.008_dp, m_he = 4.0026_dp, m_h2 = 2.016_dp
  !> Hui, Armstrong & Wray (1977) coefficients (spec §7.6), numerator A_0..A_6, denominator B_0..B_6
  real(dp), parameter :: ha(0:6) = [122.607931777104326_dp, 214.382388694706425_dp, 181.928533092181549_dp, &
      93.155580458138441_dp, 30.180142196210589_dp, 5.912626209773153_dp, 0.564189583562615_dp]
  real(dp), parameter :: hb(0:6) = [122.60793177387535_dp, 352.730625110963558_dp, 457.334478783897737_dp, &
      348.703917719495792_dp, 170.354001821091472_dp, 53.992906912940207_dp, 10.479857114260399_dp]
  real(dp), parameter :: gam_b(5) = [-0.5748646_dp, 0.9512363_dp, -0.6998588_dp, 0.4245549_dp, &
                                     -0.1010678_dp]


  !> Depth-independent constants of one line (line_setup).
  type :: line_consts
    real(dp) :: w, chi1, chi2, lv, grad, vv, beta, wh, whe, wh2, cu
    logical :: abo
  end type line_consts

contains

  !> Depth-independent constants of one line (§7.2-§7.5): weight, ionisation energies, vacuum
  !> wavelength, radiative damping and the van der Waals (ABO or Unsöld) factors.
  pure subroutine line_setup(iz, stage, lam, chi_e, enh, alpha, sigma, unsold_physical, lc)
    integer, intent(in) :: iz, stage, unsold_physical
    real(dp), intent(in) :: lam, chi_e, enh, alpha, sigma
    type(line_consts), intent(out) :: lc
    real(dp) :: w, chi1, chi2, lv, grad, chis, eup, du, dl, cu, pw, wh, whe, wh2, vv, beta, gam, sg
    real(dp) :: mu_h, mu_he, mu_h2
    logical :: abo
    vv = 0.0_dp; beta = 0.0_dp; cu = 0.0_dp
    w = atomic_weight(iz)
    call ionisation_energies(iz, chi1, chi2)
    lv = air_to_vacuum(lam)
    grad = c_rad / lv                      ! gamma_rad * lambda
    abo = (alpha /= 0.0_dp .and. sigma /= 0.0_dp)

    if (abo) then
      vv = 0.5_dp * (1.0_dp - alpha)
      sg = 1.0_dp - 0.5_dp * alpha
      gam = 1.0_dp + sg * (gam_b(1) + sg * (gam_b(2) + sg * (gam_b(3) + sg * (gam_b(4) + sg * gam_b(5)))))
      beta = 2.0_dp * lam * (4.0_dp / pi_abo)**(0.5_dp * alpha) * gam * v0_abo**alpha * sigma &
             * (8.0_dp * k_abo / pi_abo)**vv
      mu_h = m_u * w * m_h / (w + m_h)
      mu_he = m_u * w * m_he / (w + m_he)
      mu_h2 = m_u * w * m_h2 / (w + m_h2)
      wh = mu_h**(-vv)
      whe = 0.3181818_dp * mu_he**(-vv)
      wh2 = 1.212121_dp * mu_h2**(-vv)
    else
      if (stage == 1) then
        chis = chi1
      else
        chis = chi2
      end if
      eup = chi_e + hc_ev / lv
      if (unsold_physical /= 0 .or. stage == 1) then
        du = max(chis - eup, 1.0_dp)
        dl = max(chis - chi_e, 3.0_dp)
      else
        du = max(chis - eup - real(stage - 1, dp) * chi1, 1.0_dp)
        dl = max(chis - chi_e - real(stage - 1, dp) * chi1, 3.0_dp)
      end if
      cu = lam * 5.34784e3_dp * 10.0_dp**(0.4_dp * log10(1.0_dp / du**2 - 1.0_dp / dl**2) - 12.213_dp) * enh
      if (stage == 2) cu = cu * 1.741_dp
      pw = 1.0_dp / w
      wh = (0.992093_dp + pw)**0.3_dp
      whe = 0.6325_dp * (0.2498376_dp + pw)**0.3_dp
      wh2 = 0.48485_dp * (0.4960465_dp + pw)**0.3_dp
    end if

    lc = line_consts(w, chi1, chi2, lv, grad, vv, beta, wh, whe, wh2, cu, abo)
  end subroutine line_setup

  !> Vacuum wavelength from an air wavelength [cm] (Edlén 1953 as in §6.1; n = 1.0004 below 1800 Å).
  elemental function air_to_vacuum(lam_cm) result(lv)
    real(dp), intent(in) :: lam_cm
    real(dp) :: lv, s, n
    if (lam_cm < 1.8e-5_dp) then
      n = 1.0004_dp
    else
      s = 1.0_dp / (lam_cm * 1.0e4_dp)**2
      n = 1.0_dp + 1.0000004_dp * (6.4328e-5_dp + 2.94981e-2_dp / (146.0_dp - s) + 2.554e-4_dp / (41.0_dp - s))
    end if
    lv = n * lam_cm
  end function air_to_vacuum

  !> Offset [mÅ] to add to a group's grid offsets (relative to the first line, lam1 [Å]) to obtain
  !> offsets relative to the blend component lamj [Å]: (lam1 - lamj) * 1000. By default (exact = 0)
  !> both wavelengths are first rounded to IEEE single precision, as SIR does (§7.9).
  elemental function blend_offset_mA(lam1, lamj, exact) result(d)
    real(dp), intent(in) :: lam1, lamj
    integer, intent(in) :: exact
    real(dp) :: d
    if (exact /= 0) then
      d = (lam1 - lamj) * 1000.0_dp
    else
      d = (real(real(lam1, real32), dp) - real(real(lamj, real32), dp)) * 1000.0_dp
    end if
  end function blend_offset_mA

  !> Geometric factors of the propagation matrix per depth (§7.8) from gamma, phi [rad]:
  !> g(1) = sin^2(g)/2, g(2) = (1+cos^2 g)/4, g(3) = sin^2(g) cos(2 phi)/2, g(4) = sin^2(g) sin(2 phi)/2,
  !> g(5) = cos(g)/2.
  pure subroutine geometry_factors(gam, phi, g)
    real(dp), intent(in) :: gam, phi
    real(dp), intent(out) :: g(5)
    real(dp) :: s2, c
    c = cos(gam)
    s2 = sin(gam)**2
    g(1) = 0.5_dp * s2
    g(2) = 0.25_dp * (1.0_dp + c * c)
    g(3) = 0.5_dp * s2 * cos(2.0_dp * phi)
    g(4) = 0.5_dp * s2 * sin(2.0_dp * phi)
    g(5) = 0.5_dp * c
  end subroutine geometry_factors

  !> Depth-dependent quantities of one line (§7.2-§7.5).
  !>
  !> iz, stage (1 or 2): element and ionisation stage; lam [cm, air]; chi_e [eV]; loggf; enh (Unsöld
  !> enhancement E); alpha, sigma [cm^2] (ABO; Unsöld if either is 0); eps_z = N_Z/N_H; unsold_physical
  !> /= 0 selects the Unsöld ion form without SIR's -chi_I term. Per depth: t [K], vmic [cm/s], st
  !> (EOS state at T, Pe), kappa5 (per H nucleus). Out: eta0 (line-centre opacity / kappa5, to be
  !> multiplied by H(a,u) with int H du = sqrt(pi)), adamp (damping parameter), dld (Doppler width
  !> [cm], vacuum wavelength), vdop (Doppler velocity [cm/s]).
  pure subroutine line_depth_quantities(n, iz, stage, lam, chi_e, loggf, enh, alpha, sigma, eps_z, &
                                        unsold_physical, t, vmic, st, kappa5, eta0, adamp, dld, vdop, ierr)
    integer, intent(in) :: n, iz, stage, unsold_physical
    real(dp), intent(in) :: lam, chi_e, loggf, enh, alpha, sigma, eps_z
    real(dp), intent(in) :: t(n), vmic(n), kappa5(n)
    type(eos_state), intent(in) :: st(n)
    real(dp), intent(out) :: eta0(n), adamp(n), dld(n), vdop(n)
    integer, intent(out) :: ierr
    real(dp) :: w, chi1, chi2, lv, gf, u1, u2, u3, ne3, r12, r23, rtot, pop, theta
    real(dp) :: cu, wh, whe, wh2, vv, beta
    real(dp) :: nhi, nhei, nh2, g6, grad, vdp
    type(line_consts) :: lc
    logical :: abo
    integer :: i

    ierr = err_ok
    eta0 = 0.0_dp; adamp = 0.0_dp; dld = 0.0_dp; vdop = 0.0_dp
    if (iz < 1 .or. iz > 92 .or. stage < 1 .or. stage > 2 .or. .not. (lam > 0.0_dp)) then
      ierr = err_bad_input
      return
    end if
    call line_setup(iz, stage, lam, chi_e, enh, alpha, sigma, unsold_physical, lc)
    w = lc%w; chi1 = lc%chi1; chi2 = lc%chi2; lv = lc%lv; gf = 10.0_dp**loggf; grad = lc%grad
    abo = lc%abo; vv = lc%vv; beta = lc%beta; cu = lc%cu; wh = lc%wh; whe = lc%whe; wh2 = lc%wh2

    do i = 1, n
      theta = st(i)%theta
      vdop(i) = sqrt(two_k_over_mu * t(i) / w + vmic(i)**2)
      dld(i) = lv * vdop(i) / c_light
      ! populations (§7.3) with ionisation energies lowered by the electron density
      call partition_functions(iz, t(i), u1, u2, u3)
      ne3 = st(i)%ne**(1.0_dp / 3.0_dp)
      r12 = saha_phi(theta, chi1 - dchi1 * ne3, u1, u2, st(i)%pe)
      if (u2 > 0.0_dp .and. u3 > 0.0_dp) then
        r23 = saha_phi(theta, chi2 - dchi2 * ne3, u2, u3, st(i)%pe)
      else
        r23 = 0.0_dp
      end if
      rtot = 1.0_dp + r12 * (1.0_dp + r23)
      pop = c_eta0 * gf * eps_z * lv * 10.0_dp**(-theta * chi_e) / (u1 * vdop(i) * rtot * kappa5(i))
      if (stage == 2) pop = pop * u1 * r12 / u2
      eta0(i) = pop * (1.0_dp - exp(-c2_line / (t(i) * lv)))
      ! damping (§7.5)
      nhi = st(i)%f1 * st(i)%nh
      nhei = st(i)%p_he * st(i)%nh
      nh2 = st(i)%f5 * st(i)%nh
      if (abo) then
        g6 = beta * t(i)**vv * (nhi * wh + nhei * whe + nh2 * wh2)
        vdp = sqrt(2.0_dp * r_gas * t(i) / w + vmic(i)**2)
        adamp(i) = (grad / vdop(i) + g6 / vdp) / four_pi
      else
        g6 = cu * t(i)**0.3_dp * (nhi * wh + nhei * whe + nh2 * wh2)
        adamp(i) = (grad + g6) / (four_pi * vdop(i))
      end if
      if (.not. (eta0(i) >= 0.0_dp .and. eta0(i) < huge(1.0_dp) .and. adamp(i) >= 0.0_dp &
                 .and. adamp(i) < huge(1.0_dp))) then
        ierr = err_domain
        return
      end if
    end do
  end subroutine line_depth_quantities

  !> Voigt H(a,u) and Faraday-Voigt F(a,u) (= Im w / 2) by the rational approximation of Hui,
  !> Armstrong & Wray (1977) that SIR uses (spec §7.6): w = P(z)/Q(z), z = a - i|u|, H = Re w,
  !> F = sign(u) Im w / 2. It differs from the exact Faddeeva function by <= 4.5e-6 (absolute, H(0,0) = 1);
  !> using it keeps pyinv's profiles within ~1e-6 of SIR's where the exact function would differ by
  !> up to a few 1e-5 (small damping). Written in real arithmetic, on n points, so that depth loops
  !> vectorise.
  pure subroutine voigt_hui_n(n, a, u, h, f)
    integer, intent(in) :: n
    real(dp), intent(in) :: a(n), u(n)
    real(dp), intent(out) :: h(n), f(n)
    real(dp) :: x, y, pr, pi_, qr, qi, t, d
    integer :: i
    do i = 1, n
      x = a(i)
      y = -abs(u(i))
      pr = ha(6) * x + ha(5); pi_ = ha(6) * y
      t = pr * x - pi_ * y; pi_ = pr * y + pi_ * x; pr = t + ha(4)
      t = pr * x - pi_ * y; pi_ = pr * y + pi_ * x; pr = t + ha(3)
      t = pr * x - pi_ * y; pi_ = pr * y + pi_ * x; pr = t + ha(2)
      t = pr * x - pi_ * y; pi_ = pr * y + pi_ * x; pr = t + ha(1)
      t = pr * x - pi_ * y; pi_ = pr * y + pi_ * x; pr = t + ha(0)
      qr = x + hb(6); qi = y
      t = qr * x - qi * y; qi = qr * y + qi * x; qr = t + hb(5)
      t = qr * x - qi * y; qi = qr * y + qi * x; qr = t + hb(4)
      t = qr * x - qi * y; qi = qr * y + qi * x; qr = t + hb(3)
      t = qr * x - qi * y; qi = qr * y + qi * x; qr = t + hb(2)
      t = qr * x - qi * y; qi = qr * y + qi * x; qr = t + hb(1)
      t = qr * x - qi * y; qi = qr * y + qi * x; qr = t + hb(0)
      d = 1.0_dp / (qr * qr + qi * qi)
      h(i) = (pr * qr + pi_ * qi) * d
      f(i) = sign(0.5_dp, u(i)) * (pi_ * qr - pr * qi) * d
    end do
  end subroutine voigt_hui_n

  !> k7(7, n) += one line's contribution from its component-summed profiles: hs(n, g), fs(n, g) =
  !> sum of strength * H (resp. F) over the components of group g (1 pi, 2 sigma_r, 3 sigma_b);
  !> c5(5, n) = eta0 * geometry factors (see geometry_factors).
  pure subroutine k7_add_profiles(n, c5, hs, fs, k7)
    integer, intent(in) :: n
    real(dp), intent(in) :: c5(5, n), hs(n, 3), fs(n, 3)
    real(dp), intent(inout) :: k7(7, n)
    real(dp) :: ps, pd, ds, dd
    integer :: i
    do i = 1, n
      ps = hs(i, 2) + hs(i, 3)
      pd = 2.0_dp * (fs(i, 2) + fs(i, 3))
      ds = hs(i, 1) - 0.5_dp * ps
      dd = 2.0_dp * fs(i, 1) - 0.5_dp * pd
      k7(1, i) = k7(1, i) + c5(1, i) * hs(i, 1) + c5(2, i) * ps
      k7(2, i) = k7(2, i) + c5(3, i) * ds
      k7(3, i) = k7(3, i) + c5(4, i) * ds
      k7(4, i) = k7(4, i) + c5(5, i) * (hs(i, 2) - hs(i, 3))
      k7(5, i) = k7(5, i) + c5(3, i) * dd
      k7(6, i) = k7(6, i) + c5(4, i) * dd
      k7(7, i) = k7(7, i) + 2.0_dp * c5(5, i) * (fs(i, 2) - fs(i, 3))
    end do
  end subroutine k7_add_profiles

  !> line_depth_quantities and its tangent-linear: derivatives with respect to T (at fixed Pe), Pe
  !> (at fixed T) and vmic at the same depth. dst_t, dst_p: EOS-state derivatives (eos_solve_deriv
  !> convention); dk5(1:2, n) = d kappa5 / dT, d kappa5 / dPe. Out (besides line_depth_quantities'
  !> results, identical): deta0(1:3, n), dadamp(1:3, n) w.r.t. (T, Pe, vmic); dlnv(1:2, n) =
  !> d ln vdop / dT, d ln vdop / dvmic (the Doppler width scales with vdop).
  pure subroutine line_depth_quantities_tl(n, iz, stage, lam, chi_e, loggf, enh, alpha, sigma, eps_z, &
                                           unsold_physical, t, vmic, st, dst_t, dst_p, kappa5, dk5, &
                                           eta0, adamp, dld, vdop, deta0, dadamp, dlnv, ierr)
    integer, intent(in) :: n, iz, stage, unsold_physical
    real(dp), intent(in) :: lam, chi_e, loggf, enh, alpha, sigma, eps_z
    real(dp), intent(in) :: t(n), vmic(n), kappa5(n), dk5(2, n)
    type(eos_state), intent(in) :: st(n), dst_t(n), dst_p(n)
    real(dp), intent(out) :: eta0(n), adamp(n), dld(n), vdop(n), deta0(3, n), dadamp(3, n), dlnv(2, n)
    integer, intent(out) :: ierr
    type(line_consts) :: lc
    real(dp) :: theta, u1, u2, u3, du1, du2, du3, ne3, chl1, chl2, r12, r23, rtot, pop, ex, se
    real(dp) :: dth(2), dne3(2), dl12(2), dl23(2), drt(2), dlpop(3), dvd(3), dse(3)
    real(dp) :: nhi, nhei, nh2, ssum, dsum(3), g6, dg6(3), vdp, dvdp(3), tv
    integer :: i, k

    deta0 = 0.0_dp; dadamp = 0.0_dp; dlnv = 0.0_dp
    call line_depth_quantities(n, iz, stage, lam, chi_e, loggf, enh, alpha, sigma, eps_z, unsold_physical, &
                               t, vmic, st, kappa5, eta0, adamp, dld, vdop, ierr)
    if (ierr /= err_ok) return
    call line_setup(iz, stage, lam, chi_e, enh, alpha, sigma, unsold_physical, lc)
    do i = 1, n
      theta = st(i)%theta
      dth = [dst_t(i)%theta, dst_p(i)%theta]
      ! Doppler velocity: derivatives (T, Pe, vmic)
      dvd = [two_k_over_mu / lc%w / (2.0_dp * vdop(i)), 0.0_dp, vmic(i) / vdop(i)]
      dlnv(1, i) = dvd(1) / vdop(i)
      dlnv(2, i) = dvd(3) / vdop(i)
      call partition_functions_dt(iz, t(i), u1, u2, u3, du1, du2, du3)
      ne3 = st(i)%ne**(1.0_dp / 3.0_dp)
      dne3 = ne3 / (3.0_dp * st(i)%ne) * [dst_t(i)%ne, dst_p(i)%ne]
      chl1 = lc%chi1 - dchi1 * ne3
      chl2 = lc%chi2 - dchi2 * ne3
      r12 = saha_phi(theta, chl1, u1, u2, st(i)%pe)
      ! d ln r12 (T, Pe): ln r = ln(uu/ul) + ln10 (C - theta chi) - ln pe - 2.5 ln theta
      dl12(1) = du2 / u2 - du1 / u1 - ln10 * (dth(1) * chl1 - theta * dchi1 * dne3(1)) - 2.5_dp * dth(1) / theta
      dl12(2) = -ln10 * (dth(2) * chl1 - theta * dchi1 * dne3(2)) - 1.0_dp / st(i)%pe - 2.5_dp * dth(2) / theta
      if (u2 > 0.0_dp .and. u3 > 0.0_dp) then
        r23 = saha_phi(theta, chl2, u2, u3, st(i)%pe)
        dl23(1) = du3 / u3 - du2 / u2 - ln10 * (dth(1) * chl2 - theta * dchi2 * dne3(1)) &
                  - 2.5_dp * dth(1) / theta
        dl23(2) = -ln10 * (dth(2) * chl2 - theta * dchi2 * dne3(2)) - 1.0_dp / st(i)%pe &
                  - 2.5_dp * dth(2) / theta
      else
        r23 = 0.0_dp
        dl23 = 0.0_dp
      end if
      rtot = 1.0_dp + r12 * (1.0_dp + r23)
      drt = r12 * dl12 * (1.0_dp + r23) + r12 * r23 * dl23
      ! d ln pop (T, Pe, vmic)
      dlpop(1) = -ln10 * chi_e * dth(1) - du1 / u1 - dvd(1) / vdop(i) - drt(1) / rtot - dk5(1, i) / kappa5(i)
      dlpop(2) = -ln10 * chi_e * dth(2) - drt(2) / rtot - dk5(2, i) / kappa5(i)
      dlpop(3) = -dvd(3) / vdop(i)
      if (stage == 2) then
        dlpop(1) = dlpop(1) + du1 / u1 + dl12(1) - du2 / u2
        dlpop(2) = dlpop(2) + dl12(2)
      end if
      ex = exp(-c2_line / (t(i) * lc%lv))
      se = 1.0_dp - ex
      pop = eta0(i) / se
      dse = [-ex * c2_line / (t(i)**2 * lc%lv), 0.0_dp, 0.0_dp]
      do k = 1, 3
        deta0(k, i) = eta0(i) * dlpop(k) + pop * dse(k)
      end do
      ! damping
      nhi = st(i)%f1 * st(i)%nh
      nhei = st(i)%p_he * st(i)%nh
      nh2 = st(i)%f5 * st(i)%nh
      ssum = nhi * lc%wh + nhei * lc%whe + nh2 * lc%wh2
      dsum(1) = (dst_t(i)%f1 * st(i)%nh + st(i)%f1 * dst_t(i)%nh) * lc%wh &
                + (dst_t(i)%p_he * st(i)%nh + st(i)%p_he * dst_t(i)%nh) * lc%whe &
                + (dst_t(i)%f5 * st(i)%nh + st(i)%f5 * dst_t(i)%nh) * lc%wh2
      dsum(2) = (dst_p(i)%f1 * st(i)%nh + st(i)%f1 * dst_p(i)%nh) * lc%wh &
                + (dst_p(i)%p_he * st(i)%nh + st(i)%p_he * dst_p(i)%nh) * lc%whe &
                + (dst_p(i)%f5 * st(i)%nh + st(i)%f5 * dst_p(i)%nh) * lc%wh2
      dsum(3) = 0.0_dp
      if (lc%abo) then
        tv = lc%beta * t(i)**lc%vv
        g6 = tv * ssum
        dg6 = tv * dsum
        dg6(1) = dg6(1) + g6 * lc%vv / t(i)
        vdp = sqrt(2.0_dp * r_gas * t(i) / lc%w + vmic(i)**2)
        dvdp = [r_gas / lc%w / vdp, 0.0_dp, vmic(i) / vdp]
        dadamp(:, i) = (-lc%grad * dvd / vdop(i)**2 + dg6 / vdp - g6 * dvdp / vdp**2) / four_pi
      else
        tv = lc%cu * t(i)**0.3_dp
        g6 = tv * ssum
        dg6 = tv * dsum
        dg6(1) = dg6(1) + g6 * 0.3_dp / t(i)
        dadamp(:, i) = dg6 / (four_pi * vdop(i)) - adamp(i) * dvd / vdop(i)
      end if
    end do
  end subroutine line_depth_quantities_tl

  !> voigt_hui_n with the partial derivatives of H and F with respect to u and a (exact
  !> derivatives of the rational approximation: w' = (P' - w Q') / Q). H, F identical to voigt_hui_n.
  pure subroutine voigt_hui_deriv_n(n, a, u, h, f, dhdu, dfdu, dhda, dfda)
    integer, intent(in) :: n
    real(dp), intent(in) :: a(n), u(n)
    real(dp), intent(out) :: h(n), f(n), dhdu(n), dfdu(n), dhda(n), dfda(n)
    real(dp) :: x, y, pr, pi_, qr, qi, t, d, dpr, dpi, dqr, dqi, wr, wi, nr, ni, vr, vi, sg
    integer :: i
    do i = 1, n
      x = a(i)
      y = -abs(u(i))
      ! P and P' (Horner; the derivative recursion uses the value before each update)
      pr = ha(6) * x + ha(5); pi_ = ha(6) * y
      dpr = ha(6); dpi = 0.0_dp
      t = dpr * x - dpi * y + pr; dpi = dpr * y + dpi * x + pi_; dpr = t
      t = pr * x - pi_ * y; pi_ = pr * y + pi_ * x; pr = t + ha(4)
      t = dpr * x - dpi * y + pr; dpi = dpr * y + dpi * x + pi_; dpr = t
      t = pr * x - pi_ * y; pi_ = pr * y + pi_ * x; pr = t + ha(3)
      t = dpr * x - dpi * y + pr; dpi = dpr * y + dpi * x + pi_; dpr = t
      t = pr * x - pi_ * y; pi_ = pr * y + pi_ * x; pr = t + ha(2)
      t = dpr * x - dpi * y + pr; dpi = dpr * y + dpi * x + pi_; dpr = t
      t = pr * x - pi_ * y; pi_ = pr * y + pi_ * x; pr = t + ha(1)
      t = dpr * x - dpi * y + pr; dpi = dpr * y + dpi * x + pi_; dpr = t
      t = pr * x - pi_ * y; pi_ = pr * y + pi_ * x; pr = t + ha(0)
      ! Q (monic, degree 7) and Q'
      qr = x + hb(6); qi = y
      dqr = 1.0_dp; dqi = 0.0_dp
      t = dqr * x - dqi * y + qr; dqi = dqr * y + dqi * x + qi; dqr = t
      t = qr * x - qi * y; qi = qr * y + qi * x; qr = t + hb(5)
      t = dqr * x - dqi * y + qr; dqi = dqr * y + dqi * x + qi; dqr = t
      t = qr * x - qi * y; qi = qr * y + qi * x; qr = t + hb(4)
      t = dqr * x - dqi * y + qr; dqi = dqr * y + dqi * x + qi; dqr = t
      t = qr * x - qi * y; qi = qr * y + qi * x; qr = t + hb(3)
      t = dqr * x - dqi * y + qr; dqi = dqr * y + dqi * x + qi; dqr = t
      t = qr * x - qi * y; qi = qr * y + qi * x; qr = t + hb(2)
      t = dqr * x - dqi * y + qr; dqi = dqr * y + dqi * x + qi; dqr = t
      t = qr * x - qi * y; qi = qr * y + qi * x; qr = t + hb(1)
      t = dqr * x - dqi * y + qr; dqi = dqr * y + dqi * x + qi; dqr = t
      t = qr * x - qi * y; qi = qr * y + qi * x; qr = t + hb(0)
      d = 1.0_dp / (qr * qr + qi * qi)
      wr = (pr * qr + pi_ * qi) * d
      wi = (pi_ * qr - pr * qi) * d
      h(i) = wr
      f(i) = sign(0.5_dp, u(i)) * wi
      ! w' = (P' - w Q') / Q
      nr = dpr - (wr * dqr - wi * dqi)
      ni = dpi - (wr * dqi + wi * dqr)
      vr = (nr * qr + ni * qi) * d
      vi = (ni * qr - nr * qi) * d
      ! z = a - i|u|: dw/da = w', dw/d|u| = -i w'
      sg = sign(1.0_dp, u(i))
      dhda(i) = vr
      dfda(i) = 0.5_dp * sg * vi
      dhdu(i) = sg * vi
      dfdu(i) = -0.5_dp * vr
    end do
  end subroutine voigt_hui_deriv_n

end module pyinv_propagation
