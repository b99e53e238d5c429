!> Macroturbulence and spectral-PSF convolution of one line group, and the FFT it uses
!> (spec-forward.md §9.2-§9.3). Used by pyinv_synthesis (the synthesis applies it group by group,
!> convolve_spectrum) and pyinv_response (the same linear map as a matrix, convolution_matrix, with its
!> derivative with respect to the Gaussian width).
!>
!> Convolution: on a uniform group the result equals SIR's 1024-point circular FFT convolution with
!> edge-value padding (the discrete kernel is built the same way and applied directly, with the
!> padded parts summed in closed form); groups longer than 1024 samples use the next power of two
!> >= 2n. On a non-uniform group (pyinv: correct, §9.2) the Gaussian is applied on the actual
!> wavelengths to the piecewise-linear profile extended by its edge values; a PSF needs a uniform
!> group (err_bad_input otherwise).
module pyinv_convolution
  use pyinv_kinds, only: dp, pi
  use pyinv_errors, only: err_ok, err_bad_input
  implicit none
  private
  public :: convolve_group, convolution_matrix, fft_inplace

  real(dp), parameter :: pi_fft = 3.14159_dp         ! pi in SIR's Gaussian transfer function
  integer, parameter :: n_fft_sir = 1024

contains

  !> Convolve the four Stokes rows y(4, m) sampled at offsets x(m) [mÅ] with a Gaussian of standard
  !> deviation sigma [mÅ] and (npsf >= 2) the PSF (psf_x [mÅ], psf_y), as described in the module
  !> header. x must be strictly monotonic.
  pure subroutine convolve_group(nr, m, x, y, sigma, npsf, psf_x, psf_y, ierr)
    integer, intent(in) :: nr, m, npsf
    real(dp), intent(in) :: x(m), sigma, psf_x(npsf), psf_y(npsf)
    real(dp), intent(inout) :: y(nr, m)
    integer, intent(out) :: ierr
    real(dp), allocatable :: c(:), cs(:), out(:, :), cl(:)
    integer :: nfft, i, j, k, i1, q
    logical :: uniform

    ierr = err_ok
    if (m < 2) return
    call conv_kernel(m, x, sigma, npsf, psf_x, psf_y, uniform, nfft, c, cs, ierr)
    if (ierr /= err_ok) return
    if (.not. uniform) then
      call gauss_nonuniform(nr, m, x, y, sigma)
      return
    end if
    allocate(out(nr, m), cl(1 - m:m - 1))
    ! the kernel by signed lag (circular index taken once)
    do k = 1 - m, m - 1
      cl(k) = c(modulo(k, nfft))
    end do
    ! circular convolution of the edge-padded array, output at the data positions
    i1 = (nfft - m) / 2
    out = 0.0_dp
    do i = 1, m
      q = i1 + i - 1
      ! left padding (first value): lags i .. q ; right padding (last value): lags q+1 .. nfft-m+i-1
      out(:, i) = (cs(q) - cs(i - 1)) * y(:, 1) + (cs(nfft - m + i - 1) - cs(q)) * y(:, m)
      do j = 1, m
        out(:, i) = out(:, i) + cl(i - j) * y(:, j)
      end do
    end do
    y = out
  end subroutine convolve_group

  !> The linear map of convolve_group as a matrix, and its derivative with respect to sigma:
  !> convolve_group turns y(:, j) into sum_j cm(i, j) y(:, j); dcm = d cm / d sigma [per mÅ].
  !> Same kernels, padding and error rules as convolve_group (sigma <= 0 on a non-uniform grid: the
  !> identity).
  pure subroutine convolution_matrix(m, x, sigma, npsf, psf_x, psf_y, cm, dcm, ierr)
    integer, intent(in) :: m, npsf
    real(dp), intent(in) :: x(m), sigma, psf_x(npsf), psf_y(npsf)
    real(dp), intent(out) :: cm(m, m), dcm(m, m)
    integer, intent(out) :: ierr
    real(dp), allocatable :: c(:), cs(:), dc(:), dcs(:)
    integer :: nfft, i, j, k, i1, q
    logical :: uniform

    ierr = err_ok
    cm = 0.0_dp
    dcm = 0.0_dp
    do i = 1, m
      cm(i, i) = 1.0_dp
    end do
    if (m < 2) return
    call conv_kernel(m, x, sigma, npsf, psf_x, psf_y, uniform, nfft, c, cs, ierr, dc, dcs)
    if (ierr /= err_ok) return
    if (.not. uniform) then
      call gauss_nonuniform_matrix(m, x, sigma, cm, dcm)
      return
    end if
    i1 = (nfft - m) / 2
    do i = 1, m
      q = i1 + i - 1
      do j = 1, m
        k = modulo(i - j, nfft)
        cm(i, j) = c(k)
        dcm(i, j) = dc(k)
      end do
      cm(i, 1) = cm(i, 1) + (cs(q) - cs(i - 1))
      cm(i, m) = cm(i, m) + (cs(nfft - m + i - 1) - cs(q))
      dcm(i, 1) = dcm(i, 1) + (dcs(q) - dcs(i - 1))
      dcm(i, m) = dcm(i, m) + (dcs(nfft - m + i - 1) - dcs(q))
    end do
  end subroutine convolution_matrix

  !> Grid checks and discrete kernel shared by convolve_group and convolution_matrix (m >= 2). x must
  !> be strictly monotonic (else err_bad_input); on a non-uniform grid uniform = .false. and no kernel
  !> is made (with a PSF: err_bad_input). Otherwise c(0:nfft-1) is the circular kernel (IDFT of SIR's
  !> Gaussian transfer function, clipped at exp(-26), times the PSF's normalised transfer function)
  !> and cs its cumulative sum; dc, dcs (when present) their derivatives with respect to sigma.
  pure subroutine conv_kernel(m, x, sigma, npsf, psf_x, psf_y, uniform, nfft, c, cs, ierr, dc, dcs)
    integer, intent(in) :: m, npsf
    real(dp), intent(in) :: x(m), sigma, psf_x(npsf), psf_y(npsf)
    logical, intent(out) :: uniform
    integer, intent(out) :: nfft, ierr
    real(dp), allocatable, intent(out) :: c(:), cs(:)
    real(dp), allocatable, intent(out), optional :: dc(:), dcs(:)
    real(dp) :: step, f, arg, g
    complex(dp), allocatable :: ck(:), dk(:), pk(:)
    integer :: k
    logical :: deriv

    ierr = err_ok
    nfft = 0
    deriv = present(dc) .and. present(dcs)
    step = abs(x(2) - x(1))
    if (step == 0.0_dp) step = 1.0_dp
    uniform = all(abs(abs(x(2:m) - x(1:m-1)) - step) <= 1.0e-3_dp * step)
    if (.not. (all(x(2:m) > x(1:m-1)) .or. all(x(2:m) < x(1:m-1)))) then
      ierr = err_bad_input
      return
    end if
    if (.not. uniform) then
      if (npsf >= 2) ierr = err_bad_input
      return
    end if

    nfft = n_fft_sir
    do while (nfft < m .or. (m > n_fft_sir .and. nfft < 2 * m))
      nfft = 2 * nfft
    end do
    allocate(ck(0:nfft-1), c(0:nfft-1), cs(0:nfft-1))
    if (deriv) allocate(dk(0:nfft-1), dc(0:nfft-1), dcs(0:nfft-1))
    ! Gaussian transfer function (SIR's form, including its clip at exp(-26))
    do k = 0, nfft - 1
      if (k < nfft / 2) then
        f = real(k, dp) / (nfft * step)
      else
        f = real(nfft - k, dp) / (nfft * step)
      end if
      arg = 2.0_dp * pi_fft**2 * sigma**2 * f**2
      g = exp(-min(arg, 26.0_dp))
      ck(k) = cmplx(g, 0.0_dp, dp)
      if (deriv) then
        if (arg < 26.0_dp) then
          dk(k) = cmplx(-4.0_dp * pi_fft**2 * sigma * f**2 * g, 0.0_dp, dp)
        else
          dk(k) = (0.0_dp, 0.0_dp)
        end if
      end if
    end do
    if (npsf >= 2) then
      allocate(pk(0:nfft-1))
      do k = 0, nfft - 1
        if (k < nfft / 2) then
          pk(k) = cmplx(psf_sample(real(k, dp) * step, npsf, psf_x, psf_y), 0.0_dp, dp)
        else
          pk(k) = cmplx(psf_sample(real(k - nfft, dp) * step, npsf, psf_x, psf_y), 0.0_dp, dp)
        end if
      end do
      call fft_inplace(nfft, pk, -1)
      if (.not. (abs(pk(0)) > 0.0_dp)) then
        ierr = err_bad_input
        return
      end if
      ck = ck * pk / pk(0)
      if (deriv) dk = dk * pk / pk(0)
    end if
    ! discrete kernel c_k = IDFT(C)
    call fft_inplace(nfft, ck, +1)
    c = real(ck, dp) / nfft
    cs(0) = c(0)
    do k = 1, nfft - 1
      cs(k) = cs(k - 1) + c(k)
    end do
    if (deriv) then
      call fft_inplace(nfft, dk, +1)
      dc = real(dk, dp) / nfft
      dcs(0) = dc(0)
      do k = 1, nfft - 1
        dcs(k) = dcs(k - 1) + dc(k)
      end do
    end if
  end subroutine conv_kernel

  !> Matrix form of gauss_nonuniform and its derivative with respect to sigma.
  pure subroutine gauss_nonuniform_matrix(m, x, sigma, cm, dcm)
    integer, intent(in) :: m
    real(dp), intent(in) :: x(m), sigma
    real(dp), intent(inout) :: cm(m, m), dcm(m, m)
    real(dp) :: xs(m), a, b, ea, eb, ga, gb, w0, w1, s2, dga, dgb, dw0, dw1, isp, hseg
    integer :: i, j, ii, ja, jb, perm(m)
    if (sigma <= 0.0_dp) return
    cm = 0.0_dp
    dcm = 0.0_dp
    if (x(m) < x(1)) then
      xs = x(m:1:-1)
      perm = [(m + 1 - i, i = 1, m)]
    else
      xs = x
      perm = [(i, i = 1, m)]
    end if
    s2 = sqrt(2.0_dp) * sigma
    isp = 1.0_dp / sqrt(pi)
    do i = 1, m
      ii = perm(i)
      a = (xs(1) - xs(i)) / s2
      b = (xs(m) - xs(i)) / s2
      cm(ii, perm(1)) = cm(ii, perm(1)) + 0.5_dp * erfc(-a)
      cm(ii, perm(m)) = cm(ii, perm(m)) + 0.5_dp * erfc(b)
      dcm(ii, perm(1)) = dcm(ii, perm(1)) - isp * exp(-a * a) * a / sigma
      dcm(ii, perm(m)) = dcm(ii, perm(m)) + isp * exp(-b * b) * b / sigma
      do j = 1, m - 1
        a = (xs(j) - xs(i)) / s2
        b = (xs(j + 1) - xs(i)) / s2
        ea = exp(-a * a); eb = exp(-b * b)
        ga = 0.5_dp * (erf(b) - erf(a))
        gb = (ea - eb) / (2.0_dp * sqrt(pi)) * s2
        dga = isp * (a * ea - b * eb) / sigma
        dgb = ((2.0_dp * a * a * ea - 2.0_dp * b * b * eb) / sigma * s2 + (ea - eb) * sqrt(2.0_dp)) &
              / (2.0_dp * sqrt(pi))
        hseg = xs(j + 1) - xs(j)
        w1 = (gb - (xs(j) - xs(i)) * ga) / hseg
        w0 = ga - w1
        dw1 = (dgb - (xs(j) - xs(i)) * dga) / hseg
        dw0 = dga - dw1
        ja = perm(j); jb = perm(j + 1)
        cm(ii, ja) = cm(ii, ja) + w0
        cm(ii, jb) = cm(ii, jb) + w1
        dcm(ii, ja) = dcm(ii, ja) + dw0
        dcm(ii, jb) = dcm(ii, jb) + dw1
      end do
    end do
  end subroutine gauss_nonuniform_matrix

  !> PSF value at offset xo [mÅ]: three-point Lagrange interpolation through nodes j-1, j, j+1 with
  !> x_j < xo <= x_j+1 (indices clamped to the table), zero outside [x_first, x_last] (§9.3).
  pure function psf_sample(xo, np_, px, py) result(v)
    real(dp), intent(in) :: xo
    integer, intent(in) :: np_
    real(dp), intent(in) :: px(np_), py(np_)
    real(dp) :: v, x0, x1, x2
    integer :: j, a
    v = 0.0_dp
    if (xo < px(1) .or. xo > px(np_)) return
    if (np_ < 3) then
      if (px(2) > px(1)) v = py(1) + (py(2) - py(1)) * (xo - px(1)) / (px(2) - px(1))
      return
    end if
    j = 1
    do while (j < np_ - 1 .and. px(j + 1) < xo)
      j = j + 1
    end do
    ! j: px(j) < xo <= px(j+1) (xo = px(1) gives j = 1); nodes j-1, j, j+1 clamped to 1..np
    a = min(max(j - 1, 1), np_ - 2)
    x0 = px(a); x1 = px(a + 1); x2 = px(a + 2)
    v = py(a) * (xo - x1) * (xo - x2) / ((x0 - x1) * (x0 - x2)) &
        + py(a + 1) * (xo - x0) * (xo - x2) / ((x1 - x0) * (x1 - x2)) &
        + py(a + 2) * (xo - x0) * (xo - x1) / ((x2 - x0) * (x2 - x1))
  end function psf_sample

  !> Gaussian convolution on a non-uniform grid: the profile is taken piecewise linear between the
  !> samples and constant (edge values) outside; the integral against the Gaussian is exact.
  pure subroutine gauss_nonuniform(nr, m, x, y, sigma)
    integer, intent(in) :: nr, m
    real(dp), intent(in) :: x(m), sigma
    real(dp), intent(inout) :: y(nr, m)
    real(dp) :: out(nr, m), xs(m), ys(nr, m), a, b, ea, eb, ga, gb, w0, w1, s2
    integer :: i, j
    if (sigma <= 0.0_dp) return
    if (x(m) < x(1)) then
      xs = x(m:1:-1)
      ys = y(:, m:1:-1)
    else
      xs = x
      ys = y
    end if
    s2 = sqrt(2.0_dp) * sigma
    do i = 1, m
      ! tails: Phi((x1 - xi)/sigma) y1 + (1 - Phi((xm - xi)/sigma)) ym
      a = (xs(1) - xs(i)) / s2
      b = (xs(m) - xs(i)) / s2
      out(:, i) = 0.5_dp * erfc(-a) * ys(:, 1) + 0.5_dp * erfc(b) * ys(:, m)
      do j = 1, m - 1
        ! segment [x_j, x_j+1], linear: weights of y_j and y_j+1
        a = (xs(j) - xs(i)) / s2
        b = (xs(j + 1) - xs(i)) / s2
        ea = exp(-a * a); eb = exp(-b * b)
        ga = 0.5_dp * (erf(b) - erf(a))                    ! int of the Gaussian over the segment
        gb = (ea - eb) / (2.0_dp * sqrt(pi)) * s2          ! int of (x - xi) Gaussian
        ! linear interpolant: y_j + (y_j+1 - y_j) (x - x_j)/h, with (x - x_j) = (x - xi) - (x_j - xi)
        w1 = (gb - (xs(j) - xs(i)) * ga) / (xs(j + 1) - xs(j))
        w0 = ga - w1
        out(:, i) = out(:, i) + w0 * ys(:, j) + w1 * ys(:, j + 1)
      end do
    end do
    if (x(m) < x(1)) then
      y = out(:, m:1:-1)
    else
      y = out
    end if
  end subroutine gauss_nonuniform

  !> In-place radix-2 complex FFT of length nfft (a power of two): sign -1 forward
  !> (X_k = sum x_j e^{-2 pi i jk/N}), +1 backward (unnormalised).
  pure subroutine fft_inplace(nfft, a, sign)
    integer, intent(in) :: nfft, sign
    complex(dp), intent(inout) :: a(0:nfft-1)
    integer :: i, j, k, len, half
    complex(dp) :: w, u, v, tmp, wstep
    real(dp) :: ang
    j = 0
    do i = 0, nfft - 2
      if (i < j) then
        tmp = a(i); a(i) = a(j); a(j) = tmp
      end if
      k = nfft / 2
      do while (k >= 1 .and. j >= k)
        j = j - k
        k = k / 2
      end do
      j = j + k
    end do
    len = 2
    do while (len <= nfft)
      half = len / 2
      ang = real(sign, dp) * 2.0_dp * pi / real(len, dp)
      wstep = cmplx(cos(ang), sin(ang), dp)
      w = (1.0_dp, 0.0_dp)
      do k = 0, half - 1
        ! twiddle e^(i ang k) by recurrence (rounding drift ~k eps, < 1e-13 for the 1024-point kernels),
        ! refreshed exactly every 64 steps
        if (iand(k, 63) == 0) w = cmplx(cos(ang * k), sin(ang * k), dp)
        do i = k, nfft - 1, len
          u = a(i)
          v = a(i + half) * w
          a(i) = u + v
          a(i + half) = u - v
        end do
        w = w * wstep
      end do
      len = 2 * len
    end do
  end subroutine fft_inplace

end module pyinv_convolution
