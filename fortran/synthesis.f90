!> LTE Stokes synthesis of one model atmosphere (spec-forward.md §1, §7-§9).
!>
!> For each line group (a main line plus blends on a common grid of offsets from the main line):
!> equation of state at the model's T and Pe at every depth (no hydrostatic equilibrium, §1),
!> kappa5 and the continuum at the FIRST line of the group (§6.10), line opacities of all lines
!> summed (§7.9), the Hermitian formal solution (§8) with S = B_lambda(T) at the first line,
!> normalisation by the HSRA disk-centre continuum at the first line (§9.1, Appendix C),
!> macroturbulence (Gaussian of standard deviation lambda v_mac / c with lambda of the LAST line,
!> §9.2) and the spectral PSF (§9.3).
!>
!> The convolution itself (kernels, padding, FFT) is pyinv_convolution; convolve_spectrum applies it
!> group by group.
!>
!> NLTE departure coefficients (set-up bdep): SIR 2017's form (spec-forward §7.10: line opacity x b_lower,
!> the main line's two-level source function for the whole group), or with opt_desire_departures DeSIRe's
!> (pyinv_departures: NLTE stimulated emission, each line's own source function, the continuum at
!> Planck, through the source vector K^-1 j), field-free and magnetic.
!>
!> pyinv decisions (spec §12) taken here: a model is non-magnetic only if B = 0 at every depth (item 6;
!> option sir_threshold restores SIR's 1 G threshold); no damping cap (item 5; option damping_cap); HSRA
!> polynomials in double precision (item 2); the accurate Faddeeva function (pyinv_voigt; option sir_voigt: SIR's rational
!> approximation of §7.6, which differs by <= 4.5e-6 of H(0,0)).
!> Per-depth K (k7), S and the EOS states are formed per group/wavelength in plain arrays, so a
!> tangent-linear (response-function) pass can reuse the same loop structure.
!> Per wavelength, the Voigt/Faraday profiles of all Zeeman components of all lines of a group are
!> evaluated in one vectorised call (group_k7 / group_eta, workspace allocated once per group).
module pyinv_synthesis
  use pyinv_kinds, only: dp, ln10, pi
  use pyinv_errors, only: err_ok, err_bad_input, err_nonpositive_t, err_nonpositive_pe, &
                          err_logtau_order, err_not_finite, err_bad_size, err_bad_zeeman
  use pyinv_eos, only: eos_state, eos_solve
  use pyinv_continuum, only: kappa_continuum
  use pyinv_planck, only: planck, planck_nlte
  use pyinv_zeeman, only: zeeman_pattern, max_components
  use pyinv_propagation, only: line_depth_quantities, blend_offset_mA, air_to_vacuum, geometry_factors, &
                               voigt_hui_n, k7_add_profiles
  use pyinv_voigt, only: voigt_nw
  use pyinv_formal_solver, only: hermite_polarised_block, hermite_polarised, hermite_scalar
  use pyinv_departures, only: nlte_opacity_factor, line_source_excess, emission_add, line_first_column, &
                              source_vector
  use pyinv_convolution, only: convolve_group
  implicit none
  private
  public :: synth_setup, setup_from_buffers, synth_model, hsra_continuum, convolve_spectrum, &
            macro_sigma
  public :: synth_check_inputs, model_is_magnetic, line_components, group_wavelengths

  !> Model arrays x(n, n_cols): one column order for synthesis, response functions and inversion
  !> (T [K], Pe [dyn cm-2], vmic [cm/s], B [G], vlos [cm/s], gamma, phi [deg]); response functions
  !> rf(4, nw, n, n_cols) follow the same order.
  integer, parameter, public :: col_t = 1, col_pe = 2, col_vmic = 3, col_b = 4, col_vlos = 5, &
                                col_gam = 6, col_phi = 7, n_cols = 7

  !> Flat set-up buffers (what the API receives from Python, pyinv.engine.Setup; see setup_from_buffers).
  !> Integer buffer: ibuf(1) layout version, ibuf(2:7) = nl, ng, nglines, nw, npsf, ndb, ibuf(8:7+n_options)
  !> the options (0/1, slots opt_*), then iz(nl), stage(nl), use_geff(nl), gstart(ng), gcount(ng),
  !> glines(nglines), wgrp(nw). Real buffer: lam, chi_e, loggf, enh, alpha, sigma, mult_l, l_l, j_l,
  !> mult_u, l_u, j_u, geff (nl each), woff(nw), eps(92), psf_x(npsf), psf_y(npsf), then (ndb > 0) the
  !> NLTE departure coefficients bdep(ndb, 2, nl) (b_lower, b_upper per line on the model's ndb depths).
  integer, parameter, public :: setup_layout_version = 2, setup_header = 7
  !> option slots: exact blend offsets; physical Unsöld ion form; SIR's 1 G non-magnetic threshold;
  !> SIR's damping cap at 3; EOS sir_compat; no convolution; SIR's rational Voigt approximation (Hui
  !> et al. 1977) instead of the accurate Faddeeva function; DeSIRe's form of the departure coefficients
  integer, parameter, public :: opt_exact_blend = 1, opt_unsold_physical = 2, opt_sir_threshold = 3, &
                                opt_damping_cap = 4, opt_eos_compat = 5, opt_no_convolution = 6, &
                                opt_sir_voigt = 7, opt_desire_departures = 8, n_options = 8
  integer, parameter, public :: n_line_real = 13

  !> Line, group, wavelength-grid, abundance, PSF and option data of a synthesis problem: everything
  !> but the model. Built once per problem (setup_from_buffers) and passed to synthesis, response
  !> functions and inversion.
  type :: synth_setup
    integer :: nl = 0, ng = 0, nglines = 0, nw = 0, npsf = 0
    integer, allocatable :: iz(:), stage(:), use_geff(:), gstart(:), gcount(:), glines(:), wgrp(:)
    real(dp), allocatable :: lam(:), chi_e(:), loggf(:), enh(:), alpha(:), sigma(:), mult_l(:), l_l(:), &
                             j_l(:), mult_u(:), l_u(:), j_u(:), geff(:), woff(:), eps(:), psf_x(:), psf_y(:)
    !> options (0/1), named after the opt_* slots
    integer :: exact_blend = 0, unsold_physical = 0, sir_threshold = 0, damping_cap = 0, eos_compat = 0, &
               no_convolution = 0, sir_voigt = 0, desire_departures = 0
    !> NLTE departure coefficients (SIR 2017, spec-forward §7.10): ndb = 0 none, else bdep(ndb, 2, nl) =
    !> b_lower, b_upper of every line on the model's depth grid (ndb must equal the model's depth count)
    integer :: ndb = 0
    real(dp), allocatable :: bdep(:, :, :)
  end type synth_setup

  real(dp), parameter :: larmor = 4.6686e-5_dp       ! Delta lambda_B = larmor lambda^2 B
  !> wavelengths per block of the polarised formal solution (hermite_polarised_block)
  integer, parameter :: nblock = 32
  real(dp), parameter :: c_kms_mac = 3.0e5_dp        ! c [km/s] for the macroturbulence width
  real(dp), parameter :: deg = pi / 180.0_dp

  ! HSRA disk-centre continuum (Appendix C)
  real(dp), parameter :: hsra_lo(7) = [-huge(1.0_dp), 3644.15_dp, 3750.0_dp, 6250.0_dp, 8300.0_dp, &
                                       8850.0_dp, 10000.0_dp]
  real(dp), parameter :: hsra_c(0:4, 7) = reshape([ &
      -4.906054765549e+13_dp, 168473454403.9_dp, 15072545.17567_dp, -7561.242976546_dp, 0.0_dp, &
      -4.4650822755e+14_dp, 613197803510.6_dp, -93509280.03805_dp, 0.0_dp, 0.0_dp, &
      -1.025961e+15_dp, 1317285900000.0_dp, -387346500.0_dp, 46486.541_dp, -2.049_dp, &
      4.861821e+15_dp, -2258988500000.0_dp, 437643760.0_dp, -39279.61444_dp, 1.34388_dp, &
      1.758394e+15_dp, -329398600000.0_dp, 16782617.0_dp, 0.0_dp, 0.0_dp, &
      1.61455557e+16_dp, -6544209000000.0_dp, 1015931600.0_dp, -70695.58136_dp, 1.852022_dp, &
      7.97805136e+14_dp, -116906597000.0_dp, 5315222.0_dp, -4.57327954_dp, -0.003473452_dp], [5, 7])
  integer, parameter :: nseg = 38
  real(dp), parameter :: seg_l(nseg) = [11000.0_dp, 14202.0_dp, 14250.0_dp, 14500.0_dp, 14577.0_dp, &
      14600.0_dp, 16350.0_dp, 16419.0_dp, 16450.0_dp, 22750.0_dp, 22776.3_dp, 22800.0_dp, 30000.1_dp, &
      30049.999_dp, 32750.1_dp, 32797.9_dp, 32799.999_dp, 44600.102_dp, 44641.602_dp, 44650.002_dp, &
      58300.0_dp, 58307.398_dp, 58349.998_dp, 60950.0_dp, 73700.0_dp, 73795.398_dp, 73850.0_dp, &
      91100.0_dp, 91105.203_dp, 91150.0_dp, 110900.0_dp, 131150.0_dp, 131191.5_dp, 131200.0_dp, &
      160850.0_dp, 210800.0_dp, 260750.0_dp, 310700.0_dp]
  real(dp), parameter :: seg_s(nseg) = [1000.0_dp, 14000.0_dp, 1000.0_dp, 14000.0_dp, 14000.0_dp, &
      1000.0_dp, 16000.0_dp, 16000.0_dp, 1000.0_dp, 22800.0_dp, 22800.0_dp, 1000.0_dp, 30000.0_dp, &
      10000.0_dp, 30000.0_dp, 30000.0_dp, 10000.0_dp, 44600.0_dp, 44600.0_dp, 10000.0_dp, 58300.0_dp, &
      58300.0_dp, 10000.0_dp, 100000.0_dp, 73800.0_dp, 73800.0_dp, 100000.0_dp, 91100.0_dp, 91100.0_dp, &
      100000.0_dp, 100000.0_dp, 131150.0_dp, 131150.0_dp, 100000.0_dp, 100000.0_dp, 100000.0_dp, &
      100000.0_dp, 100000.0_dp]
  real(dp), parameter :: seg_o(nseg) = [30.0_dp, 31.633_dp, 30.0_dp, 31.58_dp, 31.58_dp, 30.0_dp, &
      31.28_dp, 31.28_dp, 30.0_dp, 30.08_dp, 30.08_dp, 30.0_dp, 29.035_dp, 30.0_dp, 28.7_dp, 28.7_dp, &
      30.0_dp, 27.503_dp, 27.503_dp, 30.0_dp, 26.454_dp, 26.454_dp, 30.0_dp, 25.0_dp, 25.525_dp, &
      25.525_dp, 25.0_dp, 24.69_dp, 24.69_dp, 25.0_dp, 20.0_dp, 23.239_dp, 23.239_dp, 20.0_dp, 20.0_dp, &
      20.0_dp, 20.0_dp, 20.0_dp]
  real(dp), parameter :: seg_p(0:5, nseg) = reshape([ &
      3.4828959_dp, 0.29332542_dp, -0.079358369_dp, 0.0050384849_dp, -0.00010911067_dp, 0.0_dp, &
      2.2519136_dp, -2.21467_dp, 0.0_dp, 0.0_dp, 0.0_dp, 0.0_dp, &
      4.0522751_dp, -0.18186949_dp, 0.00083747599_dp, 0.0_dp, 0.0_dp, 0.0_dp, &
      2.2966776_dp, -2.2066212_dp, 0.0_dp, 0.0_dp, 0.0_dp, 0.0_dp, &
      2.2530627_dp, -2.155536_dp, 0.0_dp, 0.0_dp, 0.0_dp, 0.0_dp, &
      16.038509_dp, -2.6510218_dp, 0.17030757_dp, -0.0038723181_dp, 0.0_dp, 0.0_dp, &
      -2.2817106_dp, 7.4979477_dp, -5.1365681_dp, 0.0_dp, 0.0_dp, 0.0_dp, &
      5.0576959_dp, -6.3530731_dp, 1.3913925_dp, 0.0_dp, 0.0_dp, 0.0_dp, &
      7.2813407_dp, -0.58288516_dp, 0.018436802_dp, -0.00036871446_dp, 3.22391e-06_dp, 0.0_dp, &
      2.0074463_dp, 2.2886963_dp, -6.8588867_dp, 2.5595589_dp, 0.0_dp, 0.0_dp, &
      3.7565713_dp, -3.7561476_dp, 0.0_dp, 0.0_dp, 0.0_dp, 0.0_dp, &
      6.8152949_dp, -0.49897589_dp, 0.012840221_dp, -0.00020295009_dp, 1.37788e-06_dp, 0.0_dp, &
      18.251404_dp, -32.633972_dp, 14.387756_dp, 0.0_dp, 0.0_dp, 0.0_dp, &
      4.5429795_dp, -2.3911509_dp, 0.18562412_dp, 0.0_dp, 0.0_dp, 0.0_dp, &
      1.9952565_dp, 1.9831088_dp, -5.4161187_dp, 1.7658206_dp, 0.0_dp, 0.0_dp, &
      3.8456789_dp, -3.5194291_dp, 0.0_dp, 0.0_dp, 0.0_dp, 0.0_dp, &
      5.8927794_dp, -3.8081024_dp, 0.71566516_dp, -0.080796182_dp, 0.0038640825_dp, 0.0_dp, &
      3.9016303_dp, -3.8992909_dp, 0.0_dp, 0.0_dp, 0.0_dp, 0.0_dp, &
      3.9005669_dp, -3.8980503_dp, 0.0_dp, 0.0_dp, 0.0_dp, 0.0_dp, &
      4.9412975_dp, -2.9472656_dp, 0.42248154_dp, -0.036235511_dp, 0.0013139183_dp, 0.0_dp, &
      3.9359391_dp, -3.9338882_dp, 0.0_dp, 0.0_dp, 0.0_dp, 0.0_dp, &
      3.9334708_dp, -3.9313729_dp, 0.0_dp, 0.0_dp, 0.0_dp, 0.0_dp, &
      2.217764_dp, -1.3022186_dp, 0.053848838_dp, 0.0_dp, 0.0_dp, 0.0_dp, &
      8.9635353_dp, -22.786591_dp, 25.027283_dp, -16.435974_dp, 4.5663452_dp, 0.0_dp, &
      3.959552_dp, -3.9584524_dp, 0.0_dp, 0.0_dp, 0.0_dp, 0.0_dp, &
      3.9558706_dp, -3.9547552_dp, 0.0_dp, 0.0_dp, 0.0_dp, 0.0_dp, &
      8.2165692_dp, -18.74957_dp, 16.827433_dp, -9.0172343_dp, 2.0436585_dp, 0.0_dp, &
      3.9799142_dp, -3.9787151_dp, 0.0_dp, 0.0_dp, 0.0_dp, 0.0_dp, &
      3.972252_dp, -3.9710477_dp, 0.0_dp, 0.0_dp, 0.0_dp, 0.0_dp, &
      6.5153636_dp, -11.660272_dp, 5.7148422_dp, -1.2492957_dp, 0.0_dp, 0.0_dp, &
      10.828452_dp, -9.7908309_dp, 4.0163633_dp, -0.73414296_dp, 0.0_dp, 0.0_dp, &
      3.990582_dp, -3.9896151_dp, 0.0_dp, 0.0_dp, 0.0_dp, 0.0_dp, &
      3.983481_dp, -3.9824753_dp, 0.0_dp, 0.0_dp, 0.0_dp, 0.0_dp, &
      10.113794_dp, -8.1683628_dp, 2.7866455_dp, -0.42295997_dp, 0.0_dp, 0.0_dp, &
      9.1879743_dp, -6.4657758_dp, 1.7401452_dp, -0.20796399_dp, 0.0_dp, 0.0_dp, &
      8.2386927_dp, -5.0976305_dp, 1.0811192_dp, -0.10187501_dp, 0.0_dp, 0.0_dp, &
      7.4709058_dp, -4.206995_dp, 0.73613949_dp, -0.057257409_dp, 0.0_dp, 0.0_dp, &
      6.9713039_dp, -3.9056023_dp, 0.74610918_dp, -0.093224197_dp, 0.0064254836_dp, -0.00018543588_dp], &
      [6, nseg])

contains

  !> HSRA disk-centre continuum intensity at the air wavelength lam [Å] (Appendix C), in
  !> erg s^-1 cm^-2 sr^-1 cm^-1. Double precision; lam = 11000 Å uses the first segment (§9.1).
  elemental function hsra_continuum(lam) result(ic)
    real(dp), intent(in) :: lam
    real(dp) :: ic, x, p
    integer :: k, n
    if (lam < 11000.0_dp) then
      n = 1
      do k = 2, 7
        if (lam >= hsra_lo(k)) n = k
      end do
      ic = hsra_c(0, n) + lam * (hsra_c(1, n) + lam * (hsra_c(2, n) + lam * (hsra_c(3, n) + lam * hsra_c(4, n))))
    else
      n = 1
      do k = 2, nseg
        if (seg_l(k) < lam) n = k
      end do
      x = lam / seg_s(n)
      p = seg_p(5, n)
      do k = 4, 0, -1
        p = p * x + seg_p(k, n)
      end do
      ic = exp(min(max(seg_o(n) + p, -87.3_dp), 88.7_dp))
    end if
  end function hsra_continuum

  !> Unpack the flat set-up buffers (layout in the module header) into a synth_setup. Sizes, layout
  !> version and index ranges are checked (err_bad_size / err_bad_input).
  pure subroutine setup_from_buffers(ni, ibuf, nr, rbuf, s, ierr)
    integer, intent(in) :: ni, nr
    integer, intent(in) :: ibuf(ni)
    real(dp), intent(in) :: rbuf(nr)
    type(synth_setup), intent(out) :: s
    integer, intent(out) :: ierr
    integer :: p, nl, ng, ngl, nw, npsf, ndb
    ierr = err_bad_size
    if (ni < setup_header + n_options) return
    if (ibuf(1) /= setup_layout_version) return
    nl = ibuf(2); ng = ibuf(3); ngl = ibuf(4); nw = ibuf(5); npsf = ibuf(6); ndb = ibuf(7)
    if (nl < 1 .or. ng < 1 .or. ngl < 1 .or. nw < 1 .or. npsf < 0 .or. ndb < 0) return
    if (ni /= setup_header + n_options + 3 * nl + 2 * ng + ngl + nw) return
    if (nr /= n_line_real * nl + nw + 92 + 2 * npsf + 2 * ndb * nl) return
    s%nl = nl; s%ng = ng; s%nglines = ngl; s%nw = nw; s%npsf = npsf; s%ndb = ndb
    p = setup_header
    s%exact_blend = ibuf(p + opt_exact_blend)
    s%unsold_physical = ibuf(p + opt_unsold_physical)
    s%sir_threshold = ibuf(p + opt_sir_threshold)
    s%damping_cap = ibuf(p + opt_damping_cap)
    s%eos_compat = ibuf(p + opt_eos_compat)
    s%no_convolution = ibuf(p + opt_no_convolution)
    s%sir_voigt = ibuf(p + opt_sir_voigt)
    s%desire_departures = ibuf(p + opt_desire_departures)
    p = p + n_options
    s%iz = ibuf(p + 1:p + nl); p = p + nl
    s%stage = ibuf(p + 1:p + nl); p = p + nl
    s%use_geff = ibuf(p + 1:p + nl); p = p + nl
    s%gstart = ibuf(p + 1:p + ng); p = p + ng
    s%gcount = ibuf(p + 1:p + ng); p = p + ng
    s%glines = ibuf(p + 1:p + ngl); p = p + ngl
    s%wgrp = ibuf(p + 1:p + nw)
    p = 0
    s%lam = rbuf(p + 1:p + nl); p = p + nl
    s%chi_e = rbuf(p + 1:p + nl); p = p + nl
    s%loggf = rbuf(p + 1:p + nl); p = p + nl
    s%enh = rbuf(p + 1:p + nl); p = p + nl
    s%alpha = rbuf(p + 1:p + nl); p = p + nl
    s%sigma = rbuf(p + 1:p + nl); p = p + nl
    s%mult_l = rbuf(p + 1:p + nl); p = p + nl
    s%l_l = rbuf(p + 1:p + nl); p = p + nl
    s%j_l = rbuf(p + 1:p + nl); p = p + nl
    s%mult_u = rbuf(p + 1:p + nl); p = p + nl
    s%l_u = rbuf(p + 1:p + nl); p = p + nl
    s%j_u = rbuf(p + 1:p + nl); p = p + nl
    s%geff = rbuf(p + 1:p + nl); p = p + nl
    s%woff = rbuf(p + 1:p + nw); p = p + nw
    s%eps = rbuf(p + 1:p + 92); p = p + 92
    s%psf_x = rbuf(p + 1:p + npsf); p = p + npsf
    s%psf_y = rbuf(p + 1:p + npsf); p = p + npsf
    if (ndb > 0) then
      s%bdep = reshape(rbuf(p + 1:p + 2 * ndb * nl), [ndb, 2, nl])
      if (.not. all(s%bdep > 0.0_dp)) then
        ierr = err_bad_input
        return
      end if
    end if
    ierr = err_bad_input
    if (any(s%gstart < 1) .or. any(s%gcount < 1) .or. any(s%gstart + s%gcount - 1 > ngl) .or. &
        any(s%glines < 1) .or. any(s%glines > nl) .or. any(s%wgrp < 1) .or. any(s%wgrp > ng) .or. &
        any(s%iz < 1) .or. any(s%iz > 92)) return
    if (.not. (all(abs(s%woff) < huge(1.0_dp)) .and. all(abs(rbuf) < huge(1.0_dp)))) then
      ierr = err_not_finite
      return
    end if
    ierr = err_ok
  end subroutine setup_from_buffers

  !> Standard deviation [mÅ] of the macroturbulence Gaussian of group g for vmac [km/s]: lambda of the
  !> group's LAST line times vmac / c (§9.2).
  pure real(dp) function macro_sigma(s, g, vmac) result(sig)
    type(synth_setup), intent(in) :: s
    integer, intent(in) :: g
    real(dp), intent(in) :: vmac
    sig = 1000.0_dp * s%lam(s%glines(s%gstart(g) + s%gcount(g) - 1)) * vmac / c_kms_mac
  end function macro_sigma

  !> Macroturbulence and PSF convolution of ncol spectra y(4, nw, ncol) (profiles, or Jacobian columns:
  !> the map is linear), group by group, as the synthesis applies it (nothing when s%no_convolution /= 0;
  !> a group is convolved when it has more than one point and vmac > 0 or a PSF is given; vmac <= 0
  !> with a PSF: a negligible 1e-7 km/s Gaussian). The kernel is built once per group for all columns.
  pure subroutine convolve_spectrum(s, vmac, ncol, y, ierr)
    type(synth_setup), intent(in) :: s
    real(dp), intent(in) :: vmac
    integer, intent(in) :: ncol
    real(dp), intent(inout) :: y(4, s%nw, ncol)
    integer, intent(out) :: ierr
    real(dp), allocatable :: wy(:, :)
    integer, allocatable :: widx(:)
    real(dp) :: vm
    integer :: g, nmw, c, i
    ierr = err_ok
    if (s%no_convolution /= 0) return
    do g = 1, s%ng
      call group_wavelengths(s%nw, s%wgrp, g, widx)
      nmw = size(widx)
      if (nmw <= 1 .or. .not. (vmac > 0.0_dp .or. s%npsf >= 2)) cycle
      vm = vmac
      if (vm <= 0.0_dp) vm = 1.0e-7_dp
      allocate(wy(4 * ncol, nmw))
      do i = 1, nmw
        do c = 1, ncol
          wy(4 * c - 3:4 * c, i) = y(:, widx(i), c)
        end do
      end do
      call convolve_group(4 * ncol, nmw, s%woff(widx), wy, macro_sigma(s, g, vm), s%npsf, s%psf_x, s%psf_y, ierr)
      if (ierr /= err_ok) return
      do i = 1, nmw
        do c = 1, ncol
          y(:, widx(i), c) = wy(4 * c - 3:4 * c, i)
        end do
      end do
      deallocate(wy)
    end do
  end subroutine convolve_spectrum

  !> Stokes profiles of one model atmosphere (normalised to the HSRA continuum, convolved).
  !>
  !> s: the problem's set-up (lines, groups, grid, abundances, PSF, options). Model x(n, n_cols) (columns
  !> col_*, n depths deepest first) on the grid logtau, vmac [km/s]. Groups: lines
  !> glines(gstart(g) : gstart(g)+gcount(g)-1) (the first is the main line); wavelengths woff [mÅ from
  !> the group's main line]. Out: stokes(4, nw); amax(nl) the largest damping parameter of each line
  !> (a > 3: SIR would cap). A profile that is not finite is reported as err_not_finite.
  pure subroutine synth_model(s, n, logtau, x, vmac, stokes, amax, ierr)
    type(synth_setup), intent(in) :: s
    integer, intent(in) :: n
    real(dp), intent(in) :: logtau(n), x(n, n_cols), vmac
    real(dp), intent(out) :: stokes(4, s%nw), amax(s%nl)
    integer, intent(out) :: ierr

    type(eos_state) :: st(n)
    real(dp) :: kappa5(n), ltau(n), geo(5, n), kc(n), src(n), k7(7, n), eta(n)
    real(dp), allocatable :: inv_dld(:, :), vshift(:, :), vb(:, :), adamp(:, :), c5(:, :, :), eta0(:, :)
    real(dp), allocatable :: boff(:), shift(:, :), strength(:, :)
    integer, allocatable :: ncomp(:), grp(:, :), widx(:), iwk(:), jb(:)
    real(dp), allocatable :: uu(:), aa(:), hh(:), ff(:), xwk(:, :), dlk(:), k7b(:, :, :), yb(:, :)
    real(dp), allocatable :: dsl(:, :)
    real(dp) :: dld(n), vdop(n), e0(n), ad(n), kap, lam1, ic, fse(n), dfse(n), dsdt(n), w(4, n), sv(4, n)
    real(dp) :: y4(4)
    integer :: i, g, k, l, m, nlg, jw, nmw, capflag, ntot, nbk
    logical :: magnetic, desire

    ierr = err_ok
    stokes = 0.0_dp
    amax = 0.0_dp
    call synth_check_inputs(s, n, logtau, x, vmac, ierr)
    if (ierr /= err_ok) return
    associate (t => x(:, col_t), pe => x(:, col_pe), vmic => x(:, col_vmic), bfield => x(:, col_b), &
               vlos => x(:, col_vlos), gam => x(:, col_gam), phi => x(:, col_phi), eps => s%eps, &
               iz => s%iz, stage => s%stage, lam => s%lam, chi_e => s%chi_e, loggf => s%loggf, &
               enh => s%enh, alpha => s%alpha, sigma => s%sigma, mult_l => s%mult_l, l_l => s%l_l, &
               j_l => s%j_l, mult_u => s%mult_u, l_u => s%l_u, j_u => s%j_u, use_geff => s%use_geff, &
               geff => s%geff, ng => s%ng, gstart => s%gstart, gcount => s%gcount, glines => s%glines, &
               nw => s%nw, woff => s%woff, wgrp => s%wgrp)

    ! ---------------- depth quantities shared by all groups
    do i = 1, n
      call eos_solve(t(i), pe(i), eps, st(i), ierr, s%eos_compat)
      if (ierr /= err_ok) return
      call kappa_continuum(5.0e-5_dp, st(i), eps, kappa5(i), ierr)
      if (ierr /= err_ok) return
      call geometry_factors(gam(i) * deg, phi(i) * deg, geo(:, i))
    end do
    ltau = ln10 * 10.0_dp**logtau
    magnetic = model_is_magnetic(n, bfield, s%sir_threshold)
    capflag = s%damping_cap
    desire = s%ndb > 0 .and. s%desire_departures /= 0

    do g = 1, ng
      nlg = gcount(g)
      l = glines(gstart(g))
      lam1 = lam(l)
      allocate(inv_dld(n, nlg), vshift(n, nlg), vb(n, nlg), adamp(n, nlg), c5(5, n, nlg), eta0(n, nlg))
      allocate(boff(nlg), ncomp(nlg), grp(3 * max_components, nlg), shift(3 * max_components, nlg), &
               strength(3 * max_components, nlg), dsl(n, nlg))
      ! continuum at the first line and the source function
      do i = 1, n
        call kappa_continuum(lam1 * 1.0e-8_dp, st(i), eps, kap, ierr)
        if (ierr /= err_ok) return
        kc(i) = kap / kappa5(i)
      end do
      src = planck(lam1 * 1.0e-8_dp, t)
      ! NLTE departures of the group's main line: SIR 2017's source function for the whole group (§7.10)
      ! (DeSIRe's form keeps the continuum at Planck and gives each line its own, below)
      if (s%ndb > 0 .and. .not. desire) src = planck_nlte(lam1 * 1.0e-8_dp, t, &
          s%bdep(:, 1, glines(gstart(g))) / s%bdep(:, 2, glines(gstart(g))))
      ! per-line depth quantities
      do k = 1, nlg
        l = glines(gstart(g) + k - 1)
        call line_depth_quantities(n, iz(l), stage(l), lam(l) * 1.0e-8_dp, chi_e(l), loggf(l), enh(l), &
                                   alpha(l), sigma(l), eps(iz(l)), s%unsold_physical, t, vmic, st, kappa5, &
                                   e0, ad, dld, vdop, ierr)
        if (ierr /= err_ok) return
        amax(l) = max(amax(l), maxval(ad))
        if (capflag /= 0 .and. maxval(ad) > 3.0_dp) ad = ad * (3.0_dp / maxval(ad))
        ! NLTE departures (SIR 2017, §7.10): line opacity times b_lower, LTE stimulated emission;
        ! DeSIRe's form (pyinv_departures): the NLTE stimulated-emission factor and the line's source
        ! function excess S_L - B over the group's Planck function
        dsl(:, k) = 0.0_dp
        if (desire) then
          call nlte_opacity_factor(lam(l) * 1.0e-8_dp, t, s%bdep(:, 1, l), s%bdep(:, 2, l), fse, dfse)
          e0 = e0 * fse
          call line_source_excess(lam1 * 1.0e-8_dp, t, s%bdep(:, 1, l), s%bdep(:, 2, l), dsl(:, k), dsdt)
        else if (s%ndb > 0) then
          e0 = e0 * s%bdep(:, 1, l)
        end if
        eta0(:, k) = e0
        adamp(:, k) = ad
        inv_dld(:, k) = 1.0_dp / dld
        vshift(:, k) = vlos / vdop
        vb(:, k) = larmor * air_to_vacuum(lam(l) * 1.0e-8_dp)**2 * bfield / dld
        do i = 1, n
          c5(:, i, k) = e0(i) * geo(:, i)
        end do
        boff(k) = blend_offset_mA(lam1, lam(l), s%exact_blend)
        ncomp(k) = 0
        if (magnetic) then
          call line_components(mult_l(l), l_l(l), j_l(l), mult_u(l), l_u(l), j_u(l), use_geff(l), geff(l), &
                               ncomp(k), grp(:, k), shift(:, k), strength(:, k), ierr)
          if (ierr /= err_ok) return
        end if
      end do

      ! wavelength points of this group, in the order given
      call group_wavelengths(nw, wgrp, g, widx)
      nmw = size(widx)
      ic = hsra_continuum(lam1)
      ! Voigt workspace: all components of all lines of the group at one wavelength in one call
      if (magnetic) then
        ntot = n * sum(ncomp)
      else
        ntot = n * nlg
      end if
      allocate(uu(ntot), aa(ntot), hh(ntot), ff(ntot), iwk(ntot), xwk(ntot, 4), dlk(nlg))
      if (magnetic) allocate(k7b(nblock, 7, n), yb(nblock, 4), jb(nblock))
      nbk = 0
      do m = 1, nmw
        jw = widx(m)
        do k = 1, nlg
          dlk(k) = (woff(jw) + boff(k)) * 1.0e-11_dp
        end do
        if (magnetic .and. desire) then
          ! DeSIRe's form: the emission excess of the lines' own source functions, one wavelength at a time
          call group_k7(n, nlg, dlk, inv_dld, vshift, vb, adamp, c5, kc, ncomp, grp, shift, strength, &
                        s%sir_voigt, ntot, uu, aa, hh, ff, iwk, xwk, k7, dsl, w)
          call source_vector(n, k7, w, sv, ierr)
          if (ierr /= err_ok) return
          call hermite_polarised(n, logtau, ltau, k7, src, y4, ierr, sv=sv)
          if (ierr /= err_ok) return
        else if (magnetic) then
          call group_k7(n, nlg, dlk, inv_dld, vshift, vb, adamp, c5, kc, ncomp, grp, shift, strength, &
                        s%sir_voigt, ntot, uu, aa, hh, ff, iwk, xwk, k7)
          ! solved for blocks of nblock wavelengths at once (hermite_polarised_block)
          nbk = nbk + 1
          k7b(nbk, :, :) = k7
          jb(nbk) = jw
          if (nbk == nblock .or. m == nmw) then
            call hermite_polarised_block(n, logtau, ltau, nbk, k7b(1:nbk, :, :), src, yb(1:nbk, :), ierr)
            if (ierr /= err_ok) return
            do k = 1, nbk
              stokes(:, jb(k)) = yb(k, :) / ic
            end do
            nbk = 0
          end if
          cycle
        else
          call group_eta(n, nlg, dlk, inv_dld, vshift, adamp, eta0, kc, s%sir_voigt, ntot, uu, aa, hh, ff, &
                         iwk, xwk, eta)
          y4 = 0.0_dp
          if (desire) then
            ! DeSIRe's separate emissivities: the source function B + sum eta0 H (S_L - B) / eta
            w(1, :) = 0.0_dp
            do k = 1, nlg
              call emission_add(1, n, eta0(:, k) * hh((k - 1) * n + 1:k * n), dsl(:, k), w(1:1, :))
            end do
            sv(1, :) = w(1, :) / eta
            call hermite_scalar(n, logtau, ltau, eta, src, y4(1), ierr, sv=sv(1, :))
          else
            call hermite_scalar(n, logtau, ltau, eta, src, y4(1), ierr)
          end if
          if (ierr /= err_ok) return
        end if
        stokes(:, jw) = y4 / ic
      end do

      deallocate(inv_dld, vshift, vb, adamp, c5, eta0, boff, ncomp, grp, shift, strength, widx, dsl)
      deallocate(uu, aa, hh, ff, iwk, xwk, dlk)
      if (magnetic) deallocate(k7b, yb, jb)
    end do
    end associate
    ! macroturbulence and PSF (lambda of each group's last line)
    call convolve_spectrum(s, vmac, 1, stokes, ierr)
    if (ierr /= err_ok) return
    if (.not. all(abs(stokes) < huge(1.0_dp))) ierr = err_not_finite
  end subroutine synth_model

  !> Propagation-matrix elements k7(7, n) of a line group at one wavelength: the continuum kc in
  !> eta_I plus, line by line, the Zeeman-split Voigt/Faraday profiles (same operations and order as
  !> k7_add_profiles per line). dlk(k) [cm]: offset from line k. The profiles of all components
  !> of all lines are evaluated in one vectorised call (uu, aa, hh, ff, iwk, xwk: workspace of ntot =
  !> n * sum(ncomp)). Optional, together (DeSIRe's form): the lines' source-function excess
  !> dsl(n, nlg) = S_L - B and their emission excess w(4, n) = sum_L (K_L e1) dsl_L (set here;
  !> pyinv_departures::emission_add).
  pure subroutine group_k7(n, nlg, dlk, inv_dld, vshift, vb, adamp, c5, kc, ncomp, grp, shift, strength, &
                           sirvoigt, ntot, uu, aa, hh, ff, iwk, xwk, k7, dsl, w)
    integer, intent(in) :: n, nlg, ncomp(nlg), grp(:, :), sirvoigt, ntot
    real(dp), intent(in) :: dlk(nlg), inv_dld(n, nlg), vshift(n, nlg), vb(n, nlg), adamp(n, nlg)
    real(dp), intent(in) :: c5(5, n, nlg), kc(n), shift(:, :), strength(:, :)
    real(dp), intent(out) :: uu(ntot), aa(ntot), hh(ntot), ff(ntot), xwk(ntot, 4), k7(7, n)
    integer, intent(out) :: iwk(ntot)
    real(dp), intent(in), optional :: dsl(n, nlg)
    real(dp), intent(out), optional :: w(4, n)
    real(dp) :: hs(n, 3), fs(n, 3), v, sk, wk, kl(4, n)
    integer :: i, k, c, o, g
    logical :: emit
    emit = present(dsl) .and. present(w)
    if (emit) w = 0.0_dp
    o = 0
    do k = 1, nlg
      do c = 1, ncomp(k)
        sk = shift(c, k)
        do i = 1, n
          v = dlk(k) * inv_dld(i, k) - vshift(i, k)
          uu(o + i) = v + sk * vb(i, k)
          aa(o + i) = adamp(i, k)
        end do
        o = o + n
      end do
    end do
    if (sirvoigt /= 0) then
      call voigt_hui_n(ntot, aa, uu, hh, ff)
    else
      call voigt_nw(ntot, aa, uu, hh, ff, iwk, xwk)
    end if
    do i = 1, n
      k7(1, i) = kc(i)
      k7(2:7, i) = 0.0_dp
    end do
    o = 0
    do k = 1, nlg
      hs = 0.0_dp
      fs = 0.0_dp
      do c = 1, ncomp(k)
        g = grp(c, k)
        wk = strength(c, k)
        do i = 1, n
          hs(i, g) = hs(i, g) + wk * hh(o + i)
          fs(i, g) = fs(i, g) + wk * ff(o + i)
        end do
        o = o + n
      end do
      call k7_add_profiles(n, c5(:, :, k), hs, fs, k7)
      if (emit) then
        do i = 1, n
          kl(:, i) = line_first_column(c5(:, i, k), hs(i, :))
        end do
        call emission_add(4, n, kl, dsl(:, k), w)
      end if
    end do
  end subroutine group_k7

  !> Non-magnetic analogue of group_k7: eta(n) = kc + sum over lines of eta0 H(a, v)
  !> line by line, one Voigt call for the group.
  pure subroutine group_eta(n, nlg, dlk, inv_dld, vshift, adamp, eta0, kc, sirvoigt, ntot, uu, aa, hh, ff, &
                            iwk, xwk, eta)
    integer, intent(in) :: n, nlg, sirvoigt, ntot
    real(dp), intent(in) :: dlk(nlg), inv_dld(n, nlg), vshift(n, nlg), adamp(n, nlg), eta0(n, nlg), kc(n)
    real(dp), intent(out) :: uu(ntot), aa(ntot), hh(ntot), ff(ntot), xwk(ntot, 4), eta(n)
    integer, intent(out) :: iwk(ntot)
    integer :: i, k, o
    do k = 1, nlg
      o = (k - 1) * n
      do i = 1, n
        uu(o + i) = dlk(k) * inv_dld(i, k) - vshift(i, k)
        aa(o + i) = adamp(i, k)
      end do
    end do
    if (sirvoigt /= 0) then
      call voigt_hui_n(n * nlg, aa, uu, hh, ff)
    else
      call voigt_nw(n * nlg, aa, uu, hh, ff, iwk, xwk)
    end if
    eta = kc
    do k = 1, nlg
      o = (k - 1) * n
      do i = 1, n
        eta(i) = eta(i) + eta0(i, k) * hh(o + i)
      end do
    end do
  end subroutine group_eta

  !> Whether the model needs the polarised solution: any B /= 0 (sir_compat /= 0: SIR's |B| > 1 G).
  pure function model_is_magnetic(n, bfield, sir_compat) result(magnetic)
    integer, intent(in) :: n, sir_compat
    real(dp), intent(in) :: bfield(n)
    logical :: magnetic
    if (sir_compat /= 0) then
      magnetic = any(abs(bfield) > 1.0_dp)
    else
      magnetic = any(bfield /= 0.0_dp)
    end if
  end function model_is_magnetic

  !> Zeeman components of one line with strength > 1e-12, flattened: ncomp components with group
  !> grp (1 pi, 2 sigma_r, 3 sigma_b), shift and strength (arrays of at least 3 * max_components).
  pure subroutine line_components(mult_l, l_l, j_l, mult_u, l_u, j_u, use_geff, geff, &
                                  ncomp, grp, shift, strength, ierr)
    real(dp), intent(in) :: mult_l, l_l, j_l, mult_u, l_u, j_u, geff
    integer, intent(in) :: use_geff
    integer, intent(out) :: ncomp, grp(:), ierr
    real(dp), intent(out) :: shift(:), strength(:)
    real(dp) :: sh(max_components, 3), sg(max_components, 3)
    integer :: nc(3), j, m
    ncomp = 0
    call zeeman_pattern(mult_l, l_l, j_l, mult_u, l_u, j_u, use_geff, geff, nc, sh, sg, ierr)
    if (ierr /= err_ok) return
    do j = 1, 3
      do m = 1, nc(j)
        if (sg(m, j) <= 1.0e-12_dp) cycle
        ncomp = ncomp + 1
        grp(ncomp) = j
        shift(ncomp) = sh(m, j)
        strength(ncomp) = sg(m, j)
      end do
    end do
  end subroutine line_components

  !> Indices (into the wavelength arrays, in the order given) of the wavelengths of group g.
  pure subroutine group_wavelengths(nw, wgrp, g, widx)
    integer, intent(in) :: nw, wgrp(nw), g
    integer, allocatable, intent(out) :: widx(:)
    integer :: jw, m
    allocate(widx(count(wgrp == g)))
    m = 0
    do jw = 1, nw
      if (wgrp(jw) == g) then
        m = m + 1
        widx(m) = jw
      end if
    end do
  end subroutine group_wavelengths

  !> Validation of synth_model's inputs (shared with the response functions): sizes, finiteness,
  !> T > 0, Pe > 0, strictly decreasing log tau, vmac >= 0 (the set-up's indices are checked when it is
  !> unpacked, setup_from_buffers).
  pure subroutine synth_check_inputs(s, n, logtau, x, vmac, ierr)
    type(synth_setup), intent(in) :: s
    integer, intent(in) :: n
    real(dp), intent(in) :: logtau(n), x(n, n_cols), vmac
    integer, intent(out) :: ierr
    ierr = err_ok
    if (n < 2 .or. s%nl < 1 .or. s%ng < 1 .or. s%nw < 1) then
      ierr = err_bad_size
      return
    end if
    if (.not. (all(abs(logtau) < huge(1.0_dp)) .and. all(abs(x(:, col_vmic:n_cols)) < huge(1.0_dp)) .and. &
               abs(vmac) < huge(1.0_dp))) then
      ierr = err_not_finite
      return
    end if
    if (.not. all(x(:, col_t) > 0.0_dp .and. x(:, col_t) < huge(1.0_dp))) then
      ierr = err_nonpositive_t
      return
    end if
    if (.not. all(x(:, col_pe) > 0.0_dp .and. x(:, col_pe) < huge(1.0_dp))) then
      ierr = err_nonpositive_pe
      return
    end if
    if (any(logtau(2:n) >= logtau(1:n-1))) then
      ierr = err_logtau_order
      return
    end if
    if (vmac < 0.0_dp) ierr = err_bad_input
    if (s%ndb > 0 .and. s%ndb /= n) ierr = err_bad_size   ! departures given on another depth grid

  end subroutine synth_check_inputs

end module pyinv_synthesis
