// The diagonal linear scan h_t = a_t * h_{t-1} + b_t, alone or fused with minGRU's / minLSTM's gates
// (Feng et al. 2024), with an AVX-512 float32 pass where the CPU has it.
#include "cpu_common.h"

namespace {

constexpr int64_t SCAN_MAX_BLOCK = 4096;  // channels one linear-scan task holds (its state: 16/32 KiB, L1)

// Channels per linear-scan task: whole rows where there are at least as many rows as threads (then
// a task reads and writes contiguous memory position after position), else rows cut into about
// threads / batch blocks; multiples of 16 (a 64-byte line of float32), at most SCAN_MAX_BLOCK.
inline int64_t scan_block(int64_t batch, int64_t d) {
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  const int64_t per_row = std::max<int64_t>(1, (threads + batch - 1) / batch);
  int64_t block = (d + per_row - 1) / per_row;
  block = (block + 15) / 16 * 16;
  return std::max<int64_t>(16, std::min(block, SCAN_MAX_BLOCK));
}

// One task of h_t = a_t * h_{t-1} + b_t: channels [c0, c0 + nc) of batch row `row`, every position;
// the state lives in `h` (L1) and each h_t is written once.
template <typename scalar_t>
void linear_scan_task(const scalar_t* a, const scalar_t* b, const scalar_t* h0, scalar_t* out, int64_t row,
                      int64_t c0, int64_t nc, int64_t length, int64_t d) {
  alignas(64) scalar_t h[SCAN_MAX_BLOCK];
  for (int64_t c = 0; c < nc; ++c) h[c] = h0 != nullptr ? h0[row * d + c0 + c] : scalar_t(0);
  for (int64_t t = 0; t < length; ++t) {
    const int64_t off = (row * length + t) * d + c0;
    const scalar_t* at = a + off;
    const scalar_t* bt = b + off;
    scalar_t* ot = out + off;
#pragma omp simd
    for (int64_t c = 0; c < nc; ++c) {
      const scalar_t v = at[c] * h[c] + bt[c];
      h[c] = v;
      ot[c] = v;
    }
  }
}

// minGRU's g(v) = v + 1/2 for v >= 0, sigmoid(v) below (Feng et al. 2024, App. B).
template <typename scalar_t>
inline scalar_t min_g(scalar_t v) {
  const scalar_t s = sigmoid(v);
  return v >= scalar_t(0) ? v + scalar_t(0.5) : s;
}

// One task of the fused minGRU / minLSTM gates + scan, channels [c0, c0 + nc) of batch row `row`.
// minGRU (pre_i == nullptr): z = sigmoid(pre_a), h~ = g(pre_h), h_t = (1 - z) h_{t-1} + z h~; writes
// z over pre_a and h~ over pre_h. minLSTM: f = sigmoid(pre_a), i = sigmoid(pre_i), f' = f / (f + i),
// i' = i / (f + i), h~ = g(pre_h), h_t = f' h_{t-1} + i' h~; writes f', i', h~ over pre_a, pre_i, pre_h.
template <typename scalar_t>
void minimal_gates_scan_task(scalar_t* pre_a, scalar_t* pre_h, scalar_t* pre_i, const scalar_t* h0,
                             scalar_t* out, int64_t row, int64_t c0, int64_t nc, int64_t length, int64_t d) {
  alignas(64) scalar_t h[SCAN_MAX_BLOCK];
  for (int64_t c = 0; c < nc; ++c) h[c] = h0 != nullptr ? h0[row * d + c0 + c] : scalar_t(0);
  for (int64_t t = 0; t < length; ++t) {
    const int64_t off = (row * length + t) * d + c0;
    scalar_t* pa = pre_a + off;
    scalar_t* ph = pre_h + off;
    scalar_t* ot = out + off;
    if (pre_i == nullptr) {
#pragma omp simd
      for (int64_t c = 0; c < nc; ++c) {
        const scalar_t z = sigmoid(pa[c]);
        const scalar_t cand = min_g(ph[c]);
        const scalar_t v = (scalar_t(1) - z) * h[c] + z * cand;
        pa[c] = z;
        ph[c] = cand;
        h[c] = v;
        ot[c] = v;
      }
    } else {
      scalar_t* pi = pre_i + off;
#pragma omp simd
      for (int64_t c = 0; c < nc; ++c) {
        const scalar_t f = sigmoid(pa[c]), i = sigmoid(pi[c]);
        const scalar_t total = f + i;
        const scalar_t fn = f / total, in = i / total;
        const scalar_t cand = min_g(ph[c]);
        const scalar_t v = fn * h[c] + in * cand;
        pa[c] = fn;
        pi[c] = in;
        ph[c] = cand;
        h[c] = v;
        ot[c] = v;
      }
    }
  }
}

}  // namespace

#if defined(__AVX512F__)
namespace {

// float32 with AVX-512, the gates + scan pass of minimal_gates_scan_task: the same fast_exp (range
// reduction, degree-6 polynomial; 2^k by scalef) and sigmoid by rcp14 plus one Newton step (relative
// error ~1e-7) instead of a division, which dominated the generic loop. Clamps keep NaN (max / min
// return their second operand on NaN). Lanes c >= nc are masked off.
inline __m512 exp_avx512(__m512 x) {
  x = _mm512_max_ps(_mm512_set1_ps(-87.3f), x);
  x = _mm512_min_ps(_mm512_set1_ps(88.3f), x);
  const __m512 kf = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                         _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(kf, _mm512_set1_ps(0.693145751953125f), x);
  r = _mm512_fnmadd_ps(kf, _mm512_set1_ps(1.428606765330187e-06f), r);
  __m512 p = _mm512_set1_ps(1.0f / 720.0f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, kf);
}

inline __m512 reciprocal_avx512(__m512 d) {  // 1 / d: rcp14 (2^-14) refined by one Newton step
  const __m512 r = _mm512_rcp14_ps(d);
  return _mm512_mul_ps(r, _mm512_fnmadd_ps(d, r, _mm512_set1_ps(2.0f)));
}

inline __m512 sigmoid_avx512(__m512 v) {
  return reciprocal_avx512(_mm512_add_ps(_mm512_set1_ps(1.0f), exp_avx512(_mm512_sub_ps(_mm512_setzero_ps(), v))));
}

inline __m512 min_g_avx512(__m512 v) {  // v + 1/2 for v >= 0, sigmoid(v) below
  const __mmask16 positive = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_GE_OQ);
  return _mm512_mask_blend_ps(positive, sigmoid_avx512(v), _mm512_add_ps(v, _mm512_set1_ps(0.5f)));
}

void minimal_gates_scan_task_avx512(float* pre_a, float* pre_h, float* pre_i, const float* h0, float* out,
                                    int64_t row, int64_t c0, int64_t nc, int64_t length, int64_t d) {
  alignas(64) float h[SCAN_MAX_BLOCK];
  for (int64_t c = 0; c < nc; ++c) h[c] = h0 != nullptr ? h0[row * d + c0 + c] : 0.0f;
  for (int64_t t = 0; t < length; ++t) {
    const int64_t off = (row * length + t) * d + c0;
    float* pa = pre_a + off;
    float* ph = pre_h + off;
    float* pi = pre_i == nullptr ? nullptr : pre_i + off;
    float* ot = out + off;
    for (int64_t c = 0; c < nc; c += 16) {
      const __mmask16 m = nc - c >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (nc - c)) - 1u);
      const __m512 cand = min_g_avx512(_mm512_maskz_loadu_ps(m, ph + c));
      const __m512 hp = _mm512_maskz_loadu_ps(m, h + c);
      __m512 v;
      if (pi == nullptr) {  // minGRU: h = (1 - z) h + z h~
        const __m512 z = sigmoid_avx512(_mm512_maskz_loadu_ps(m, pa + c));
        v = _mm512_fmadd_ps(_mm512_sub_ps(_mm512_set1_ps(1.0f), z), hp, _mm512_mul_ps(z, cand));
        _mm512_mask_storeu_ps(pa + c, m, z);
      } else {  // minLSTM: h = f' h + i' h~
        const __m512 f = sigmoid_avx512(_mm512_maskz_loadu_ps(m, pa + c));
        const __m512 i = sigmoid_avx512(_mm512_maskz_loadu_ps(m, pi + c));
        const __m512 inv_total = reciprocal_avx512(_mm512_add_ps(f, i));
        const __m512 f_n = _mm512_mul_ps(f, inv_total), i_n = _mm512_mul_ps(i, inv_total);
        v = _mm512_fmadd_ps(f_n, hp, _mm512_mul_ps(i_n, cand));
        _mm512_mask_storeu_ps(pa + c, m, f_n);
        _mm512_mask_storeu_ps(pi + c, m, i_n);
      }
      _mm512_mask_storeu_ps(ph + c, m, cand);
      _mm512_mask_storeu_ps(h + c, m, v);
      _mm512_mask_storeu_ps(ot + c, m, v);
    }
  }
}

}  // namespace
#endif

namespace {

// The gates + scan task for one dtype: the AVX-512 pass for float32 where the CPU has it, else the
// generic loop (float64 always).
template <typename scalar_t>
void gates_scan_task(scalar_t* pre_a, scalar_t* pre_h, scalar_t* pre_i, const scalar_t* h0, scalar_t* out,
                     int64_t row, int64_t c0, int64_t nc, int64_t length, int64_t d) {
  minimal_gates_scan_task<scalar_t>(pre_a, pre_h, pre_i, h0, out, row, c0, nc, length, d);
}

#if defined(__AVX512F__)
inline void gates_scan_task(float* pre_a, float* pre_h, float* pre_i, const float* h0, float* out, int64_t row,
                            int64_t c0, int64_t nc, int64_t length, int64_t d) {
  minimal_gates_scan_task_avx512(pre_a, pre_h, pre_i, h0, out, row, c0, nc, length, d);
}
#endif

}  // namespace

// h_t = a_t * h_{t-1} + b_t: a, b, out [batch, pos, d]; h0 [batch, d] or none (zeros). Contiguous,
// one dtype (float32 or float64); checked by the Python wrapper.
void linear_scan_forward(at::Tensor a, at::Tensor b, c10::optional<at::Tensor> h0, at::Tensor out) {
  const int64_t batch = b.size(0), length = b.size(1), d = b.size(2);
  const int64_t block = scan_block(batch, d), blocks = (d + block - 1) / block;
  AT_DISPATCH_FLOATING_TYPES(b.scalar_type(), "linear_scan_forward", [&] {
    const scalar_t* ph0 = h0.has_value() ? h0->data_ptr<scalar_t>() : nullptr;
    const scalar_t *pa = a.data_ptr<scalar_t>(), *pb = b.data_ptr<scalar_t>();
    scalar_t* po = out.data_ptr<scalar_t>();
    at::parallel_for(0, batch * blocks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t task = begin; task < end; ++task) {
        const int64_t row = task / blocks, c0 = (task % blocks) * block;
        linear_scan_task<scalar_t>(pa, pb, ph0, po, row, c0, std::min(block, d - c0), length, d);
      }
    });
  });
}

// minGRU (pre_i none) or minLSTM gates and scan in one pass (see minimal_gates_scan_task): pre_a,
// pre_h, pre_i, out [batch, pos, d], the pre-activations overwritten with the gates; h0 [batch, d]
// or none. Contiguous, one dtype; checked by the Python wrapper.
void minimal_gates_scan_forward(at::Tensor pre_a, at::Tensor pre_h, c10::optional<at::Tensor> pre_i,
                                c10::optional<at::Tensor> h0, at::Tensor out) {
  const int64_t batch = pre_h.size(0), length = pre_h.size(1), d = pre_h.size(2);
  const int64_t block = scan_block(batch, d), blocks = (d + block - 1) / block;
  AT_DISPATCH_FLOATING_TYPES(pre_h.scalar_type(), "minimal_gates_scan_forward", [&] {
    const scalar_t* ph0 = h0.has_value() ? h0->data_ptr<scalar_t>() : nullptr;
    scalar_t* pi = pre_i.has_value() ? pre_i->data_ptr<scalar_t>() : nullptr;
    scalar_t *pa = pre_a.data_ptr<scalar_t>(), *ph = pre_h.data_ptr<scalar_t>();
    scalar_t* po = out.data_ptr<scalar_t>();
    at::parallel_for(0, batch * blocks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t task = begin; task < end; ++task) {
        const int64_t row = task / blocks, c0 = (task % blocks) * block;
        gates_scan_task(pa, ph, pi, ph0, po, row, c0, std::min(block, d - c0), length, d);
      }
    });
  });
}
