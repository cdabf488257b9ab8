// CKKS packed encoding in OpenFHE's slot order (the special FFT over the rotation group 5^j,
// after Cheon, Kim, Kim and Song 2017, "Homomorphic Encryption for Arithmetic of Approximate
// Numbers", and HEAAN's fftSpecialInv), into RNS towers in evaluation form.
#pragma once
#include <complex>
#include <cstdint>

#include "medtwin/params.h"

namespace medtwin {

/// Encode len <= slots real values (zero padded) at `scale` into T towers [T][N] (NTT form).
/// Throws std::invalid_argument for a bad slot count or values too large for 2^126.
void encode_real(const Context& ctx, const double* values, std::size_t len, std::uint32_t slots,
                 double scale, std::uint32_t T, u64* out);
/// Coefficients (real, before scaling) of the encoding of `values` (for tests).
void encode_coeffs(std::uint32_t n, const double* values, std::size_t len, std::uint32_t slots, double* coeffs);

}  // namespace medtwin
