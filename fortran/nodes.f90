!> Node parameterisation of the inversion (spec-inversion.md §2): bases, layouts and the node Jacobian.
!>
!> * Node counts and equidistant placement on the log tau grid as SIR (§2.1): allowed counts are 0, 1, 2
!>   and every n >= 3 with (N-1) divisible by (n-1); node j sits at grid index 1 + (j-1)(N-1)/(n-1)
!>   (node 1 = deepest point, node n = top point). Explicit node positions in log tau (any strictly
!>   monotonic set inside or outside the grid) are a pyinv extension (§6.3).
!> * Interpolation bases F (N x n) acting on node PERTURBATIONS (§2.3): mode 0 = SIR's splines (n = 1
!>   constant, 2 linear, 3 parabola, n >= 4 not-a-knot cubic spline); mode 1 = linear (hat functions;
!>   on SIR layouts smoothed in place along depth with (1,2,3,2,1)/9, or (1,2,1)/4 when the nodes are
!>   adjacent grid points, deep to top). Outside the span of explicit nodes the basis is constant
!>   (the perturbation of the outermost node is carried on).
!> * Per-slot parameterisation (§2.2): relative (T, vmic, B, vmac), offset-relative (vlos: v - v_off),
!>   log-relative (Pe) and absolute (angles). The tangent matrix D(k, j) = d x_k / d delta_j maps the
!>   LM step variables delta (relative changes; absolute changes in RADIANS for angles, the model
!>   columns being in degrees) to depth perturbations; node RFs are R D (§2.4, chain rule).
!> * The node Jacobian (node_jacobian): jac_analytic = the analytic depth-resolved RFs of
!>   pyinv_response::synth_rf for the unconvolved profiles, compressed with the tangents (T columns plus
!>   the tangent-linear HE coupling of pyinv_hydrostatic::he_tangent), then convolved like the
!>   profiles; jac_finite_difference = directional finite differences in node space (one synthesis per
!>   free node parameter; mathematically the same compressed RF; kept as a cross-check).
module pyinv_nodes
  use pyinv_kinds, only: dp, pi
  use pyinv_errors, only: err_ok, err_bad_input, err_bad_size, err_singular, err_no_data, err_zero_parameter
  use pyinv_linalg, only: solve_dense
  use pyinv_synthesis, only: synth_setup, synth_model, convolve_spectrum, n_cols, col_t, col_pe, col_b, col_vlos, &
                             col_gam
  use pyinv_response, only: synth_rf
  use pyinv_hydrostatic, only: he_tangent, n_he_terms
  implicit none
  private
  public :: node_count_allowed, allowed_node_count, node_indices, node_basis, sir_node_basis, &
            node_values, node_tangent, apply_perturbation
  public :: layout, make_layout, update_layout, node_jacobian, node_jacobian_at, node_values_vector, &
            secant_step, secant_update, layout_penalty

  integer, parameter, public :: slot_relative = 1, slot_offset = 2, slot_log = 3, slot_angle = 4
  integer, parameter, public :: interp_spline = 0, interp_linear = 1
  !> Inversion slots: the model columns (pyinv_synthesis col_*) and, last, the macroturbulence
  integer, parameter, public :: slot_vmac = n_cols + 1, n_slots = n_cols + 1
  !> Jacobian providers: directional finite differences in node space, or the analytic depth RFs
  !> compressed by the chain rule
  integer, parameter, public :: jac_finite_difference = 0, jac_analytic = 1
  !> slot kinds in slot order T, Pe, vmic, B, vlos, gamma, phi, vmac
  integer, parameter :: slot_kind(n_slots) = [slot_relative, slot_log, slot_relative, slot_relative, &
                                              slot_offset, slot_angle, slot_angle, slot_relative]
  real(dp), parameter :: fd_step = 1.0e-4_dp          ! directional FD step (relative / radians)
  real(dp), parameter :: pole_zone = 1.0e-3_dp        ! node_jacobian's pole_chord: distance to a pole [rad]

  !> Node layout of one slot: n free nodes (first = index of the first in the parameter vector), basis
  !> f(ndep, n), node positions xn, node values a and tangent d(ndep, n) = d x / d delta.
  type :: slot_layout
    integer :: n = 0, first = 0, kind = slot_relative
    real(dp), allocatable :: f(:, :), xn(:), a(:), d(:, :)
  end type slot_layout

  !> Node layout of a cycle: m free parameters in nvar slots; voff the velocity offset (§2.2).
  type :: layout
    integer :: m = 0, nvar = 0
    type(slot_layout) :: s(n_slots)
    real(dp) :: voff = 0.0_dp
  end type layout
  real(dp), parameter :: rad2deg = 180.0_dp / pi

contains

  !> True when n nodes are a legal SIR count on a grid of ndep points (0, 1, 2, or (ndep-1) mod (n-1) = 0).
  pure logical function node_count_allowed(ndep, n) result(ok)
    integer, intent(in) :: ndep, n
    ok = .false.
    if (n < 0 .or. ndep < 1) return
    if (n <= 2) then
      ok = n <= ndep .or. n <= 1
      return
    end if
    if (n > ndep) return
    ok = mod(ndep - 1, n - 1) == 0
  end function node_count_allowed

  !> The largest allowed count <= n (SIR rounds requested counts down, §2.1). n <= 0 gives 0.
  pure integer function allowed_node_count(ndep, n) result(m)
    integer, intent(in) :: ndep, n
    m = min(n, ndep)
    if (m <= 0) then
      m = 0
      return
    end if
    do while (m > 2)
      if (node_count_allowed(ndep, m)) return
      m = m - 1
    end do
    if (ndep < 2) m = min(m, 1)
  end function allowed_node_count

  !> Grid indices of the n equidistant nodes (n must be allowed; n = 1: the deepest point is returned,
  !> though one-node slots act on the depth average).
  pure subroutine node_indices(ndep, n, idx, ierr)
    integer, intent(in) :: ndep, n
    integer, intent(out) :: idx(n), ierr
    integer :: j
    ierr = err_ok
    if (n < 1 .or. .not. node_count_allowed(ndep, n)) then
      ierr = err_bad_input
      idx = 1
      return
    end if
    if (n == 1) then
      idx(1) = 1
      return
    end if
    do j = 1, n
      idx(j) = 1 + (j - 1) * ((ndep - 1) / (n - 1))
    end do
  end subroutine node_indices

  !> Interpolation basis for nodes at arbitrary, strictly monotonic positions xn(n) (log tau) evaluated
  !> on the grid x(ndep): f(k, j) = value at x(k) of the interpolant of the unit vector e_j.
  !> mode 0: n = 1 ones, 2 linear, 3 parabola, >= 4 not-a-knot cubic spline; mode 1: hat functions.
  !> Constant beyond the outermost nodes.
  pure subroutine node_basis(ndep, x, n, xn, mode, f, ierr)
    integer, intent(in) :: ndep, n, mode
    real(dp), intent(in) :: x(ndep), xn(n)
    real(dp), intent(out) :: f(ndep, n)
    integer, intent(out) :: ierr
    real(dp) :: xs(n), y(n), m2(n), a(n, n), rhs(n), h(n), xx, t
    integer :: j, k, i, lo, jj, ord(n)
    logical :: rev

    ierr = err_ok
    f = 0.0_dp
    if (n < 1 .or. ndep < 1) then
      ierr = err_bad_size
      return
    end if
    if (n == 1) then
      f = 1.0_dp
      return
    end if
    if (all(xn(2:n) > xn(1:n-1))) then
      rev = .false.
    else if (all(xn(2:n) < xn(1:n-1))) then
      rev = .true.
    else
      ierr = err_bad_input
      return
    end if
    ! ascending copy; ord(i) = original column of ascending node i
    do i = 1, n
      if (rev) then
        ord(i) = n + 1 - i
      else
        ord(i) = i
      end if
      xs(i) = xn(ord(i))
    end do
    h(1:n-1) = xs(2:n) - xs(1:n-1)

    do jj = 1, n
      y = 0.0_dp
      y(jj) = 1.0_dp
      if (mode == 1 .or. n == 2) then
        do k = 1, ndep
          xx = min(max(x(k), xs(1)), xs(n))
          lo = interval(n, xs, xx)
          t = (xx - xs(lo)) / h(lo)
          f(k, ord(jj)) = y(lo) * (1.0_dp - t) + y(lo + 1) * t
        end do
      else if (n == 3) then
        do k = 1, ndep
          xx = min(max(x(k), xs(1)), xs(n))
          f(k, ord(jj)) = y(1) * (xx - xs(2)) * (xx - xs(3)) / ((xs(1) - xs(2)) * (xs(1) - xs(3))) &
                        + y(2) * (xx - xs(1)) * (xx - xs(3)) / ((xs(2) - xs(1)) * (xs(2) - xs(3))) &
                        + y(3) * (xx - xs(1)) * (xx - xs(2)) / ((xs(3) - xs(1)) * (xs(3) - xs(2)))
        end do
      else
        ! second derivatives m2 of the not-a-knot spline: interior continuity rows plus
        ! third-derivative continuity at nodes 2 and n-1
        a = 0.0_dp
        rhs = 0.0_dp
        a(1, 1) = -1.0_dp / h(1)
        a(1, 2) = 1.0_dp / h(1) + 1.0_dp / h(2)
        a(1, 3) = -1.0_dp / h(2)
        do i = 2, n - 1
          a(i, i - 1) = h(i - 1)
          a(i, i) = 2.0_dp * (h(i - 1) + h(i))
          a(i, i + 1) = h(i)
          rhs(i) = 6.0_dp * ((y(i + 1) - y(i)) / h(i) - (y(i) - y(i - 1)) / h(i - 1))
        end do
        a(n, n - 2) = -1.0_dp / h(n - 2)
        a(n, n - 1) = 1.0_dp / h(n - 2) + 1.0_dp / h(n - 1)
        a(n, n) = -1.0_dp / h(n - 1)
        call solve_dense(n, a, rhs, m2, ierr)
        if (ierr /= err_ok) return
        do k = 1, ndep
          xx = min(max(x(k), xs(1)), xs(n))
          lo = interval(n, xs, xx)
          f(k, ord(jj)) = m2(lo) * (xs(lo + 1) - xx)**3 / (6.0_dp * h(lo)) &
                        + m2(lo + 1) * (xx - xs(lo))**3 / (6.0_dp * h(lo)) &
                        + (y(lo) / h(lo) - m2(lo) * h(lo) / 6.0_dp) * (xs(lo + 1) - xx) &
                        + (y(lo + 1) / h(lo) - m2(lo + 1) * h(lo) / 6.0_dp) * (xx - xs(lo))
        end do
      end if
    end do
    ! exact nodal values where a node falls on a grid point (removes round-off)
    do j = 1, n
      do k = 1, ndep
        if (x(k) == xn(j)) then
          f(k, :) = 0.0_dp
          f(k, j) = 1.0_dp
        end if
      end do
    end do
  end subroutine node_basis

  !> Index lo (1..n-1) of the interval [xs(lo), xs(lo+1)] holding xx (xs ascending, xx clamped).
  pure integer function interval(n, xs, xx) result(lo)
    integer, intent(in) :: n
    real(dp), intent(in) :: xs(n), xx
    lo = 1
    do while (lo < n - 1)
      if (xx <= xs(lo + 1)) exit
      lo = lo + 1
    end do
  end function interval

  !> SIR's basis for n equidistant nodes on the grid x(ndep) (§2.3): nodes at node_indices; mode 0
  !> splines, mode 1 linear with SIR's in-place corner smoothing.
  pure subroutine sir_node_basis(ndep, x, n, mode, f, ierr)
    integer, intent(in) :: ndep, n, mode
    real(dp), intent(in) :: x(ndep)
    real(dp), intent(out) :: f(ndep, n)
    integer, intent(out) :: ierr
    integer :: idx(n), j, k, step
    real(dp) :: xn(n)

    f = 0.0_dp
    call node_indices(ndep, n, idx, ierr)
    if (ierr /= err_ok) return
    if (n == 1) then
      f = 1.0_dp
      return
    end if
    xn = x(idx)
    call node_basis(ndep, x, n, xn, mode, f, ierr)
    if (ierr /= err_ok) return
    if (mode == 1 .and. n >= 3) then
      step = (ndep - 1) / (n - 1)
      do j = 1, n
        if (step == 1) then
          do k = 2, ndep - 1
            f(k, j) = (f(k - 1, j) + 2.0_dp * f(k, j) + f(k + 1, j)) / 4.0_dp
          end do
        else
          do k = 3, ndep - 2
            f(k, j) = (f(k - 2, j) + 2.0_dp * f(k - 1, j) + 3.0_dp * f(k, j) + 2.0_dp * f(k + 1, j) &
                       + f(k + 2, j)) / 9.0_dp
          end do
        end if
      end do
    end if
  end subroutine sir_node_basis

  !> Node values a(n) of one model column col(ndep) (§2.2): n = 1 the depth average; otherwise the
  !> column at the node positions xn (linear interpolation in log tau; exact on grid nodes), minus voff
  !> for kind slot_offset. For slot_angle the values are returned in RADIANS (column in degrees).
  pure subroutine node_values(ndep, x, col, n, xn, kind, voff, a)
    integer, intent(in) :: ndep, n, kind
    real(dp), intent(in) :: x(ndep), col(ndep), xn(n), voff
    real(dp), intent(out) :: a(n)
    integer :: j, k
    real(dp) :: t
    if (n == 1) then
      a(1) = sum(col) / ndep
    else
      do j = 1, n
        if (xn(j) >= x(1)) then
          a(j) = col(1)
        else if (xn(j) <= x(ndep)) then
          a(j) = col(ndep)
        else
          k = 1
          do while (k < ndep - 1)
            if (x(k + 1) <= xn(j)) exit
            k = k + 1
          end do
          t = (xn(j) - x(k)) / (x(k + 1) - x(k))
          a(j) = col(k) * (1.0_dp - t) + col(k + 1) * t
        end if
      end do
    end if
    if (kind == slot_offset) a = a - voff
    if (kind == slot_angle) a = a / rad2deg
  end subroutine node_values

  !> Tangent matrix d(ndep, n) = d col_k / d delta_j (§2.4): relative/offset slots F_kj a_j (a_j the
  !> node value, v - v_off for vlos; n = 1: the depth average), log slot F_kj col_k, angles
  !> F_kj * 180/pi (degrees per radian).
  pure subroutine node_tangent(ndep, col, n, f, a, kind, d)
    integer, intent(in) :: ndep, n, kind
    real(dp), intent(in) :: col(ndep), f(ndep, n), a(n)
    real(dp), intent(out) :: d(ndep, n)
    integer :: j
    select case (kind)
    case (slot_log)
      do j = 1, n
        d(:, j) = f(:, j) * col
      end do
    case (slot_angle)
      d = f * rad2deg
    case default
      do j = 1, n
        d(:, j) = f(:, j) * a(j)
      end do
    end select
  end subroutine node_tangent

  !> Add the interpolated perturbation of the node changes delta(n) to a column (§2.3):
  !> relative/offset slots col + F (a delta); log slot col * exp(F delta); angles col + F delta (delta in
  !> radians, col in degrees). No clipping here (see pyinv_inversion).
  pure subroutine apply_perturbation(ndep, col, n, f, a, kind, delta, out)
    integer, intent(in) :: ndep, n, kind
    real(dp), intent(in) :: col(ndep), f(ndep, n), a(n), delta(n)
    real(dp), intent(out) :: out(ndep)
    select case (kind)
    case (slot_log)
      out = col * exp(matmul(f, delta))
    case (slot_angle)
      out = col + rad2deg * matmul(f, delta)
    case default
      out = col + matmul(f, a * delta)
    end select
  end subroutine apply_perturbation

  ! ================================================================================================
  ! layouts and the node Jacobian
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
      if (v == slot_vmac) nv = min(nv, 1)
      lay%s(v)%n = max(nv, 0)
      lay%s(v)%kind = slot_kind(v)
      if (nv <= 0) cycle
      lay%s(v)%first = lay%m + 1
      lay%m = lay%m + nv
      lay%nvar = lay%nvar + 1
      if (v == slot_vmac) then
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
      if (v == slot_vmac) then
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

  !> Node Jacobian jac(4, nw, m) = d stokes / d delta at the model (x, vmac) whose synthesis is syn.
  !> he: 1 when Pe follows hydrostatic equilibrium (T columns include the HE coupling).
  pure subroutine node_jacobian(s, n, logtau, x, vmac, syn, lay, he, boundary, mu, jac_mode, jac, nsynth, &
                                ierr, memo_ok, memo_want, memo_x, memo_st, memo_rf, memo_het, pole_chord)
    type(synth_setup), intent(in) :: s
    integer, intent(in) :: n, he, boundary, jac_mode
    real(dp), intent(in) :: logtau(n), x(n, n_cols), vmac, syn(4, s%nw), mu
    type(layout), intent(in) :: lay
    real(dp), intent(out) :: jac(4, s%nw, lay%m)
    integer, intent(inout) :: nsynth
    integer, intent(out) :: ierr
    !> optional memo of the last analytic RFs (pyinv, issue 17): memo_ok = 1 when memo_rf / memo_st /
    !> memo_het hold synth_rf's unconvolved RFs, profiles and HE terms at model memo_x for the variables
    !> memo_want; a Jacobian at that model (e.g. the first of the next cycle) reuses them
    integer, intent(inout), optional :: memo_ok, memo_want(n_cols)
    real(dp), intent(inout), optional :: memo_x(n, n_cols), memo_st(4, s%nw), memo_rf(4, s%nw, n, n_cols), &
                                         memo_het(n, n_he_terms)
    !> pyinv (issue 17, pole): an inclination node within pole_zone radians of 0 or pi gets the chord
    !> (S(gamma -+ h) - S(gamma)) / (-+h), h = pole_chord, towards the interior instead of the derivative: at a
    !> pole the Stokes vector is an even function of gamma - pole (sin^2 gamma, cos gamma), its derivative
    !> vanishes there (the SVD then drops the direction) and a linear model sees no way off the pole; the chord
    !> is the slope of a step of size h
    real(dp), intent(in), optional :: pole_chord
    real(dp) :: xp(n, n_cols), sp(4, s%nw), e(n), hstep(lay%m)
    real(dp), allocatable :: rf(:, :, :, :), st(:, :), het(:, :), dlt(:, :), dlp(:, :)
    real(dp) :: rfv(4, s%nw), amax(s%nl)
    logical :: need_fd(lay%m)
    type(synth_setup) :: s1
    integer :: v, j, nv, want(n_cols), jj

    ierr = err_ok
    jac = 0.0_dp
    if (jac_mode == jac_analytic) then
      ! depth-resolved analytic RFs of the UNCONVOLVED profiles, compressed with the chain rule, then
      ! the node columns convolved (linearity: identical to compressing convolved RFs, far cheaper)
      want = 0
      do v = 1, n_cols
        if (lay%s(v)%n > 0) want(v) = 1
      end do
      if (he /= 0 .and. lay%s(col_t)%n > 0) want(col_pe) = 1
      s1 = s
      s1%no_convolution = 1
      if (present(memo_ok) .and. present(memo_want) .and. present(memo_x) .and. present(memo_st) .and. &
          present(memo_rf) .and. present(memo_het)) then
        if (.not. (memo_ok == 1 .and. all(memo_want >= want) .and. all(memo_x == x))) then
          memo_ok = 0
          call synth_rf(s1, n, logtau, x, vmac, want, memo_st, memo_rf, rfv, amax, ierr, memo_het)
          nsynth = nsynth + 1
          if (ierr /= err_ok) return
          memo_ok = 1
          memo_want = want
          memo_x = x
        end if
        call analytic_columns(s, n, logtau, x, vmac, lay, he, boundary, mu, memo_st, memo_rf, memo_het, jac, ierr)
      else
        allocate(rf(4, s%nw, n, n_cols), st(4, s%nw), het(n, n_he_terms))
        call synth_rf(s1, n, logtau, x, vmac, want, st, rf, rfv, amax, ierr, het)
        nsynth = nsynth + 1
        if (ierr /= err_ok) return
        call analytic_columns(s, n, logtau, x, vmac, lay, he, boundary, mu, st, rf, het, jac, ierr)
      end if
      if (ierr /= err_ok) return
      ! safety net: a free parameter whose analytic column is identically zero (e.g. an RF path that
      ! does not provide it) is differenced directly below
      do jj = 1, lay%m
        need_fd(jj) = all(jac(:, :, jj) == 0.0_dp)
      end do
    else
      need_fd = .true.
    end if
    hstep = fd_step
    if (present(pole_chord)) then
      if (pole_chord > 0.0_dp .and. lay%s(col_gam)%n > 0) then
        do j = 1, lay%s(col_gam)%n
          jj = lay%s(col_gam)%first + j - 1
          if (lay%s(col_gam)%a(j) < pole_zone) then
            need_fd(jj) = .true.
            hstep(jj) = pole_chord
          else if (lay%s(col_gam)%a(j) > pi - pole_zone) then
            need_fd(jj) = .true.
            hstep(jj) = -pole_chord
          end if
        end do
      end if
    end if
    if (.not. any(need_fd)) return

    ! directional finite differences in node space
    if (he /= 0 .and. lay%s(col_t)%n > 0) then
      ! relative Pe changes along the temperature directions (tangent-linear HE at the current model)
      if (allocated(dlt)) deallocate(dlt, dlp)
      allocate(dlt(n, lay%s(col_t)%n), dlp(n, lay%s(col_t)%n))
      dlt = lay%s(col_t)%d * fd_step
      call he_tangent(s%eps, s%eos_compat, n, logtau, x(:, col_t), x(:, col_pe), boundary, mu, &
          lay%s(col_t)%n, dlt, dlp, ierr)
      if (ierr /= err_ok) return
    end if
    do v = 1, n_slots
      nv = lay%s(v)%n
      if (nv <= 0) cycle
      do j = 1, nv
        jj = lay%s(v)%first + j - 1
        if (.not. need_fd(jj)) cycle
        xp = x
        if (v == slot_vmac) then
          call synth_model(s, n, logtau, x, vmac * (1.0_dp + fd_step), sp, amax, ierr)
        else
          e = 0.0_dp
          e(j) = hstep(jj)
          call apply_perturbation(n, x(:, v), nv, lay%s(v)%f, lay%s(v)%a, lay%s(v)%kind, e(1:nv), xp(:, v))
          if (v == col_t .and. he /= 0) xp(:, col_pe) = x(:, col_pe) + dlp(:, j)
          call synth_model(s, n, logtau, xp, vmac, sp, amax, ierr)
        end if
        nsynth = nsynth + 1
        if (ierr /= err_ok) return
        jac(:, :, jj) = (sp - syn) / hstep(jj)
      end do
    end do
  end subroutine node_jacobian

  !> The node columns of the analytic Jacobian from synth_rf's unconvolved RFs rf, profiles st and HE
  !> terms het at model x: the chain rule through the node basis (and, for temperature in HE, the
  !> tangent-linear Pe change), the columns convolved, and the vmac column by central differences of the
  !> convolution alone.
  pure subroutine analytic_columns(s, n, logtau, x, vmac, lay, he, boundary, mu, st, rf, het, jac, ierr)
    type(synth_setup), intent(in) :: s
    integer, intent(in) :: n, he, boundary
    real(dp), intent(in) :: logtau(n), x(n, n_cols), vmac, mu, st(4, s%nw), rf(4, s%nw, n, n_cols), &
                            het(n, n_he_terms)
    type(layout), intent(in) :: lay
    real(dp), intent(inout) :: jac(4, s%nw, lay%m)
    integer, intent(out) :: ierr
    real(dp) :: sp(4, s%nw), rfv(4, s%nw), col(n)
    real(dp), allocatable :: dlt(:, :), dlp(:, :)
    integer :: v, j, nv, jj
    ierr = err_ok
    if (he /= 0 .and. lay%s(col_t)%n > 0) then
      allocate(dlt(n, lay%s(col_t)%n), dlp(n, lay%s(col_t)%n))
      dlt = lay%s(col_t)%d
      if (s%eos_compat == 0) then
        ! the EOS derivatives of the RF pass (its continuum opacity has no compat mode)
        call he_tangent(s%eps, s%eos_compat, n, logtau, x(:, col_t), x(:, col_pe), boundary, mu, &
            lay%s(col_t)%n, dlt, dlp, ierr, het)
      else
        call he_tangent(s%eps, s%eos_compat, n, logtau, x(:, col_t), x(:, col_pe), boundary, mu, &
            lay%s(col_t)%n, dlt, dlp, ierr)
      end if
      if (ierr /= err_ok) return
    end if
    do v = 1, n_cols
      nv = lay%s(v)%n
      do j = 1, nv
        jj = lay%s(v)%first + j - 1
        col = lay%s(v)%d(:, j)
        ! sum_k rf(:, :, k, v) col(k) in place (no reshaped copies of rf); the depths where a node's basis
        ! function vanishes (piecewise interpolation) add nothing and are skipped
        jac(:, :, jj) = 0.0_dp
        call add_depth_contraction(4 * s%nw, n, rf(:, :, :, v), col, jac(:, :, jj))
        if (v == col_t .and. he /= 0) call add_depth_contraction(4 * s%nw, n, rf(:, :, :, col_pe), dlp(:, j), &
                                                                 jac(:, :, jj))
      end do
    end do
    ! all columns convolved at once (one kernel per group)
    call convolve_spectrum(s, vmac, lay%m, jac, ierr)
    if (ierr /= err_ok) return
    if (lay%s(slot_vmac)%n > 0) then
      ! relative vmac: vmac dS/dvmac by central differences of the convolution alone
      sp = st
      call convolve_spectrum(s, vmac * (1.0_dp + fd_step), 1, sp, ierr)
      if (ierr /= err_ok) return
      rfv = st
      call convolve_spectrum(s, vmac * (1.0_dp - fd_step), 1, rfv, ierr)
      if (ierr /= err_ok) return
      jac(:, :, lay%s(slot_vmac)%first) = (sp - rfv) / (2.0_dp * fd_step)
    end if
  end subroutine analytic_columns

  !> y += sum_k a(:, k) c(k) over the k with c(k) /= 0 (a: ma x n, column k contiguous).
  pure subroutine add_depth_contraction(ma, n, a, c, y)
    integer, intent(in) :: ma, n
    real(dp), intent(in) :: a(ma, n), c(n)
    real(dp), intent(inout) :: y(ma)
    integer :: k
    do k = 1, n
      if (c(k) /= 0.0_dp) y = y + c(k) * a(:, k)
    end do
  end subroutine add_depth_contraction

  !> Node Jacobian at model x for node counts nodes(n_slots) (layout as in the LM cycle, v_off from x).
  pure subroutine node_jacobian_at(s, n, logtau, x, vmac, nodes, maxnp, xnodes, usex, interp, he, &
                                         boundary, bvalue, mu, jac_mode, maxm, jac, m, ierr)
    type(synth_setup), intent(in) :: s
    integer, intent(in) :: n, nodes(n_slots), maxnp, usex(n_slots), interp, he, boundary, jac_mode, maxm
    real(dp), intent(in) :: logtau(n), x(n, n_cols), vmac, xnodes(maxnp, n_slots), bvalue, mu
    real(dp), intent(out) :: jac(4, s%nw, maxm)
    integer, intent(out) :: m, ierr
    type(layout) :: lay
    real(dp) :: syn(4, s%nw), voff, amax(s%nl)
    real(dp), allocatable :: jj(:, :, :)
    integer :: ns
    jac = 0.0_dp
    m = 0
    voff = 0.0_dp
    if (nodes(col_vlos) > 0) voff = minval(x(:, col_vlos)) - 7.0e5_dp
    call make_layout(n, logtau, nodes, maxnp, xnodes, usex, interp, x, vmac, voff, lay, ierr)
    if (ierr /= err_ok) return
    m = lay%m
    if (m > maxm) then
      ierr = err_bad_size
      return
    end if
    call synth_model(s, n, logtau, x, vmac, syn, amax, ierr)
    if (ierr /= err_ok) return
    allocate(jj(4, s%nw, m))
    ns = 0
    call node_jacobian(s, n, logtau, x, vmac, syn, lay, he, boundary, mu, jac_mode, jj, ns, ierr)
    jac(:, :, 1:m) = jj
  end subroutine node_jacobian_at

  !> The node values of every free parameter, in parameter order (a(m)).
  pure subroutine node_values_vector(lay, a)
    type(layout), intent(in) :: lay
    real(dp), intent(out) :: a(lay%m)
    integer :: v
    do v = 1, n_slots
      if (lay%s(v)%n > 0) a(lay%s(v)%first:lay%s(v)%first + lay%s(v)%n - 1) = lay%s(v)%a
    end do
  end subroutine node_values_vector

  !> Regularisation of SIR's interpolation modes 2-5 (spec-inversion §4.8, only qualitative there; pyinv's
  !> choice): P = sum over the slots with >= 3 nodes (vmac excluded) of a slot term divided by the
  !> absolute value of the slot's first node value (angles: by 1 radian). regmode 1 (modes 2/3): the total
  !> variation of the node values in excess of their net change, sum |a_j+1 - a_j| - |a_n - a_1| (zero
  !> for monotonic stratifications). regmode 2 (modes 4/5): at every interior node where consecutive
  !> differences change sign (a local extremum), 2 min(|a_j - a_j-1|, |a_j+1 - a_j|) (the same total
  !> variation, counted only at extrema). Node values of model x (node_values); g(m) = dP/d delta in the
  !> LM step variables (relative slots: a_j dP/da_j; angles dP/da_j), by central differences in a.
  pure subroutine layout_penalty(n, logtau, x, lay, regmode, p, g)
    integer, intent(in) :: n, regmode
    real(dp), intent(in) :: logtau(n), x(n, n_cols)
    type(layout), intent(in) :: lay
    real(dp), intent(out) :: p, g(lay%m)
    real(dp) :: a(n), ap(n), pp, pm, h
    integer :: v, nv, j
    p = 0.0_dp
    g = 0.0_dp
    do v = 1, n_cols
      nv = lay%s(v)%n
      if (nv < 3) cycle
      call node_values(n, logtau, x(:, v), nv, lay%s(v)%xn, lay%s(v)%kind, lay%voff, a(1:nv))
      p = p + slot_penalty(nv, a(1:nv), lay%s(v)%kind, regmode)
      do j = 1, nv
        h = 1.0e-7_dp * max(abs(a(j)), 1.0e-3_dp)
        ap(1:nv) = a(1:nv)
        ap(j) = a(j) + h
        pp = slot_penalty(nv, ap(1:nv), lay%s(v)%kind, regmode)
        ap(j) = a(j) - h
        pm = slot_penalty(nv, ap(1:nv), lay%s(v)%kind, regmode)
        g(lay%s(v)%first + j - 1) = (pp - pm) / (2.0_dp * h)
        if (lay%s(v)%kind /= slot_angle) g(lay%s(v)%first + j - 1) = g(lay%s(v)%first + j - 1) * a(j)
      end do
    end do
  end subroutine layout_penalty

  pure real(dp) function slot_penalty(nv, a, kind, regmode) result(p)
    integer, intent(in) :: nv, kind, regmode
    real(dp), intent(in) :: a(nv)
    real(dp) :: scale, d(nv - 1)
    integer :: j
    scale = 1.0_dp
    if (kind /= slot_angle) scale = max(abs(a(1)), tiny(1.0_dp))
    d = a(2:nv) - a(1:nv - 1)
    if (regmode == 1) then
      p = sum(abs(d)) - abs(a(nv) - a(1))
    else
      p = 0.0_dp
      do j = 2, nv - 1
        if (d(j - 1) * d(j) < 0.0_dp) p = p + 2.0_dp * min(abs(d(j - 1)), abs(d(j)))
      end do
    end if
    p = max(p, 0.0_dp) / scale
  end function slot_penalty

  !> The step actually taken between node values a_old and the layout's current ones, in the new model's
  !> step variables (pyinv, issue 9: Jacobian reuse between analytic RF evaluations): relative and
  !> offset slots delta_j = (a_new - a_old) / a_new (their Jacobian columns rescaled by a_new / a_old,
  !> since d S / d delta_j = a_j d S / d a_j), log slots ln(a_new / a_old), angles a_new - a_old (radians).
  pure subroutine secant_step(nw, lay, a_old, jac, delta)
    integer, intent(in) :: nw
    type(layout), intent(in) :: lay
    real(dp), intent(in) :: a_old(lay%m)
    real(dp), intent(inout) :: jac(4, nw, lay%m)
    real(dp), intent(out) :: delta(lay%m)
    real(dp) :: a_new(lay%m)
    integer :: v, j, k
    call node_values_vector(lay, a_new)
    do v = 1, n_slots
      do k = 1, lay%s(v)%n
        j = lay%s(v)%first + k - 1
        select case (lay%s(v)%kind)
        case (slot_relative, slot_offset)
          jac(:, :, j) = jac(:, :, j) * (a_new(j) / a_old(j))
          delta(j) = (a_new(j) - a_old(j)) / a_new(j)
        case (slot_log)
          delta(j) = log(a_new(j) / a_old(j))
        case default
          delta(j) = a_new(j) - a_old(j)
        end select
      end do
    end do
  end subroutine secant_step

  !> Broyden rank-one update of a Jacobian jac(4, nw, m) after an accepted step delta(m) (step variables)
  !> that changed the profiles by dsyn = S_new - S_old: jac <- jac + (dsyn - jac delta) delta^T /
  !> (delta^T delta), so that jac delta = dsyn (the secant condition).
  pure subroutine secant_update(nw, m, delta, dsyn, jac)
    integer, intent(in) :: nw, m
    real(dp), intent(in) :: delta(m), dsyn(4, nw)
    real(dp), intent(inout) :: jac(4, nw, m)
    real(dp) :: r(4, nw), dd
    integer :: j
    dd = sum(delta**2)
    if (.not. (dd > 0.0_dp)) return
    r = dsyn
    do j = 1, m
      r = r - jac(:, :, j) * delta(j)
    end do
    do j = 1, m
      jac(:, :, j) = jac(:, :, j) + r * (delta(j) / dd)
    end do
  end subroutine secant_update

end module pyinv_nodes
