// Shared by the compiled CPU kernels (workbench.kernels.cpu_compiled builds them): the includes,
// a polynomial exp for float32 and the sigmoid / tanh built on it.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>
#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace {

// exp(x) for float32 by range reduction x = k ln2 + r, |r| <= ln2 / 2, and a degree-6 polynomial
// for e^r (relative error ~2e-7, below float32 rounding of the sums that follow); 2^k is built in
// the exponent bits. Only arithmetic, so `omp simd` loops vectorise it. NaN propagates; arguments
// below -87.3 give ~1e-38 (the state's contribution is gone either way).
inline float fast_exp(float x) {
  x = x < -87.3f ? -87.3f : x;
  x = x > 88.3f ? 88.3f : x;
  const float shifter = 12582912.0f;  // 1.5 * 2^23: adding it rounds to the nearest integer
  const float kf = (x * 1.44269504088896341f + shifter) - shifter;
  float r = x - kf * 0.693145751953125f;  // ln2, high part (exact product for |k| < 2^9)
  r = r - kf * 1.428606765330187e-06f;    // ln2, low part
  float p = 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(kf) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

inline double fast_exp(double x) { return std::exp(x); }

template <typename scalar_t>
inline scalar_t sigmoid(scalar_t v) { return scalar_t(1) / (scalar_t(1) + fast_exp(-v)); }

template <typename scalar_t>
inline scalar_t tanh_(scalar_t v) { return scalar_t(2) / (scalar_t(1) + fast_exp(scalar_t(-2) * v)) - scalar_t(1); }

}  // namespace
