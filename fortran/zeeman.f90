!> Zeeman patterns of LS-coupled transitions (spec-forward.md §7.7).
!>
!> A pattern has three groups of components: pi (M_u = M_l), sigma_r (M_u = M_l + 1) and sigma_b
!> (M_u = M_l - 1). Component k of group g carries a shift parameter s = g_l M_l - g_u M_u (the
!> profile argument is u = v + s v_B) and a relative strength proportional to the squared Wigner 3j
!> symbol (J_u J_l 1; -M_u M_l M_u-M_l), each group normalised to unit sum. Normal triplets (one
!> level with J = 0, equal Landé factors, or an explicit effective-Landé override) have one
!> component per group: pi at s = 0, sigma_r at s = -g_eff, sigma_b at s = +g_eff.
module pyinv_zeeman
  use pyinv_kinds, only: dp
  use pyinv_errors, only: err_ok, err_bad_zeeman
  implicit none
  private
  public :: lande_ls, zeeman_pattern, max_components

  !> components per group (J up to 9.5)
  integer, parameter :: max_components = 20
  integer, parameter :: g_pi = 1, g_red = 2, g_blue = 3

contains

  !> LS-coupling Landé factor g = 3/2 + [S(S+1) - L(L+1)] / [2 J(J+1)] (J > 0).
  elemental function lande_ls(s, l, j) result(g)
    real(dp), intent(in) :: s, l, j
    real(dp) :: g
    g = 1.5_dp + (s * (s + 1.0_dp) - l * (l + 1.0_dp)) / (2.0_dp * j * (j + 1.0_dp))
  end function lande_ls

  !> Zeeman pattern of a transition between LS terms (2S+1)L_J.
  !>
  !> mult_l, l_l, j_l / mult_u, l_u, j_u : multiplicity 2S+1, orbital L (may be half-integer) and J
  !> of the lower / upper level. geff > 0 with use_geff /= 0 forces a normal triplet of that
  !> effective Landé factor (terms unused). Outputs per group g (1 = pi, 2 = sigma_r, 3 = sigma_b):
  !> ncomp(g), shift(1:ncomp(g), g), strength(1:ncomp(g), g). ierr = err_bad_zeeman for an unusable
  !> term (L < 0, mult < 1), a forbidden J combination or more than max_components per group.
  pure subroutine zeeman_pattern(mult_l, l_l, j_l, mult_u, l_u, j_u, use_geff, geff, &
                                 ncomp, shift, strength, ierr)
    real(dp), intent(in) :: mult_l, l_l, j_l, mult_u, l_u, j_u, geff
    integer, intent(in) :: use_geff
    integer, intent(out) :: ncomp(3)
    real(dp), intent(out) :: shift(max_components, 3), strength(max_components, 3)
    integer, intent(out) :: ierr
    real(dp) :: s_l, s_u, g_l, g_u, w
    integer :: j2l, j2u, m2l, m2u, dm2, g, k

    ierr = err_ok
    ncomp = 0
    shift = 0.0_dp
    strength = 0.0_dp
    if (use_geff /= 0) then
      call triplet(geff, ncomp, shift, strength)
      return
    end if
    if (.not. (mult_l >= 1.0_dp .and. mult_u >= 1.0_dp .and. l_l >= 0.0_dp .and. l_u >= 0.0_dp &
               .and. j_l >= 0.0_dp .and. j_u >= 0.0_dp)) then
      ierr = err_bad_zeeman
      return
    end if
    j2l = nint(2.0_dp * j_l)
    j2u = nint(2.0_dp * j_u)
    if (abs(j2u - j2l) > 2 .or. (j2l == 0 .and. j2u == 0) .or. mod(j2u - j2l, 2) /= 0 &
        .or. j2l > 2 * max_components - 2 .or. j2u > 2 * max_components - 2) then
      ierr = err_bad_zeeman
      return
    end if
    s_l = 0.5_dp * (mult_l - 1.0_dp)
    s_u = 0.5_dp * (mult_u - 1.0_dp)
    if (j2l == 0) then
      call triplet(lande_ls(s_u, l_u, 1.0_dp), ncomp, shift, strength)
      return
    else if (j2u == 0) then
      call triplet(lande_ls(s_l, l_l, 1.0_dp), ncomp, shift, strength)
      return
    end if
    g_l = lande_ls(s_l, l_l, 0.5_dp * j2l)
    g_u = lande_ls(s_u, l_u, 0.5_dp * j2u)
    if (abs(g_u - g_l) <= 5.0e-6_dp) then
      call triplet(g_u, ncomp, shift, strength)
      return
    end if

    ! anomalous pattern: all (M_l, M_u) with M_u - M_l in {0, +1, -1}
    do m2l = -j2l, j2l, 2
      do dm2 = -2, 2, 2
        m2u = m2l + dm2
        if (abs(m2u) > j2u) cycle
        select case (dm2)
        case (0);  g = g_pi
        case (2);  g = g_red
        case default; g = g_blue
        end select
        if (ncomp(g) >= max_components) then
          ierr = err_bad_zeeman
          return
        end if
        ncomp(g) = ncomp(g) + 1
        k = ncomp(g)
        shift(k, g) = g_l * 0.5_dp * m2l - g_u * 0.5_dp * m2u
        strength(k, g) = threej_sq(j2u, j2l, 2, -m2u, m2l, m2u - m2l)
      end do
    end do
    do g = 1, 3
      w = sum(strength(1:ncomp(g), g))
      if (w > 0.0_dp) strength(1:ncomp(g), g) = strength(1:ncomp(g), g) / w
    end do

  end subroutine zeeman_pattern

  !> Normal Zeeman triplet of effective Landé factor ge (unit strength per group).
  pure subroutine triplet(ge, ncomp, shift, strength)
    real(dp), intent(in) :: ge
    integer, intent(inout) :: ncomp(3)
    real(dp), intent(inout) :: shift(max_components, 3), strength(max_components, 3)
    ncomp = 1
    shift(1, g_pi) = 0.0_dp
    shift(1, g_red) = -ge
    shift(1, g_blue) = ge
    strength(1, :) = 1.0_dp
  end subroutine triplet

  !> Squared Wigner 3j symbol (j1 j2 j3; m1 m2 m3), all arguments doubled (2j, 2m), by Racah's
  !> single-sum formula. Zero when the selection rules fail.
  pure function threej_sq(j1, j2, j3, m1, m2, m3) result(w2)
    integer, intent(in) :: j1, j2, j3, m1, m2, m3
    real(dp) :: w2, pre, s, term
    integer :: k, kmin, kmax, a(6)
    w2 = 0.0_dp
    if (m1 + m2 + m3 /= 0) return
    if (abs(m1) > j1 .or. abs(m2) > j2 .or. abs(m3) > j3) return
    if (j3 > j1 + j2 .or. j3 < abs(j1 - j2)) return
    if (mod(j1 + j2 + j3, 2) /= 0) return
    ! triangle coefficient and the six (j +- m)! factors (undoubled integers below)
    pre = fact((j1 + j2 - j3) / 2) * fact((j1 - j2 + j3) / 2) * fact((-j1 + j2 + j3) / 2) &
          / fact((j1 + j2 + j3) / 2 + 1)
    pre = pre * fact((j1 + m1) / 2) * fact((j1 - m1) / 2) * fact((j2 + m2) / 2) &
          * fact((j2 - m2) / 2) * fact((j3 + m3) / 2) * fact((j3 - m3) / 2)
    ! denominators: k!, (j3-j2+k+m1)!, (j3-j1+k-m2)!, (j1+j2-j3-k)!, (j1-k-m1)!, (j2-k+m2)!
    a(1) = (j3 - j2 + m1) / 2
    a(2) = (j3 - j1 - m2) / 2
    a(3) = (j1 + j2 - j3) / 2
    a(4) = (j1 - m1) / 2
    a(5) = (j2 + m2) / 2
    kmin = max(0, -a(1), -a(2))
    kmax = min(a(3), a(4), a(5))
    s = 0.0_dp
    do k = kmin, kmax
      term = 1.0_dp / (fact(k) * fact(a(1) + k) * fact(a(2) + k) * fact(a(3) - k) &
                       * fact(a(4) - k) * fact(a(5) - k))
      if (mod(k, 2) == 0) then
        s = s + term
      else
        s = s - term
      end if
    end do
    w2 = pre * s * s
  end function threej_sq

  !> n! as a real (n >= 0, small).
  pure function fact(n) result(f)
    integer, intent(in) :: n
    real(dp) :: f
    integer :: i
    f = 1.0_dp
    do i = 2, n
      f = f * real(i, dp)
    end do
  end function fact

end module pyinv_zeeman
