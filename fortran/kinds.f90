!> Kind parameters and physical constants shared by every pyinv engine module.
!> cgs units throughout. Values follow spec-forward.md §11 (the constants SIR uses).
module pyinv_kinds
  use, intrinsic :: iso_c_binding, only: c_double, c_int
  implicit none
  private
  integer, parameter, public :: dp = c_double
  integer, parameter, public :: ip = c_int

  real(dp), parameter, public :: pi = 3.14159265358979323846_dp
  real(dp), parameter, public :: sqrtpi = 1.77245385090551602730_dp
  real(dp), parameter, public :: ln10 = 2.30258509299404568402_dp
  !> speed of light [cm/s] (Doppler widths)
  real(dp), parameter, public :: c_light = 2.99792458e10_dp
  !> Boltzmann constant as used in the EOS [erg/K]
  real(dp), parameter, public :: k_boltz = 1.38054e-16_dp
  !> first radiation constant 2hc^2 [erg cm^2 / s] (Planck, lambda in cm)
  real(dp), parameter, public :: c1_planck = 1.1910627e-5_dp
  !> second radiation constant hc/k [cm K]
  real(dp), parameter, public :: c2_planck = 1.43880_dp
  !> 2k/m_u [erg / (K g)] : v_D^2 = (2k/m_u) T / W + vmic^2
  real(dp), parameter, public :: two_k_over_mu = 1.66286e8_dp
  !> gas constant [erg / (mol K)]
  real(dp), parameter, public :: r_gas = 8.31451e7_dp
  !> Avogadro's number as SIR uses it
  real(dp), parameter, public :: n_avogadro = 6.023e23_dp
  !> solar surface gravity [cm/s^2]
  real(dp), parameter, public :: g_sun = 2.7414e4_dp
  !> atomic mass unit [g]
  real(dp), parameter, public :: m_u = 1.660540e-24_dp
end module pyinv_kinds
