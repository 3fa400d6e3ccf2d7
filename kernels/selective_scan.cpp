// S6 selective scan (Gu & Dao 2023, Alg. 2) and Mamba's causal depthwise conv + SiLU, forward only.
#include "cpu_common.h"

namespace {

constexpr int64_t BLOCK = 64;  // channels per task; the state is held as [n, BLOCK] (channels innermost)

// out[c * n + k] = s[k * BLOCK + c] for c < nc, k < n: the block's state from [n, BLOCK] to the
// recording's [nc, n] layout.
template <typename scalar_t>
inline void write_rows(const scalar_t* s, scalar_t* out, int64_t nc, int64_t n, bool) {
  for (int64_t c = 0; c < nc; ++c)
    for (int64_t k = 0; k < n; ++k) out[c * n + k] = s[k * BLOCK + c];
}

#if defined(__AVX2__)
// float32 with AVX2: 8x8 tiles transposed in registers. Tiles go channel by channel so each channel's
// row (n = 16: one 64-byte cache line) is completed at once; with `stream` (rows 32-byte aligned) the
// stores bypass the cache, since a recording is not read back soon and a cached store would first
// read the line it overwrites.
inline void write_rows(const float* s, float* out, int64_t nc, int64_t n, bool stream) {
  const int64_t nc8 = nc & ~int64_t(7), n8 = n & ~int64_t(7);
  for (int64_t c0 = 0; c0 < nc8; c0 += 8) {
    for (int64_t k0 = 0; k0 < n8; k0 += 8) {
      const float* p = s + k0 * BLOCK + c0;
      const __m256 r0 = _mm256_loadu_ps(p), r1 = _mm256_loadu_ps(p + BLOCK);
      const __m256 r2 = _mm256_loadu_ps(p + 2 * BLOCK), r3 = _mm256_loadu_ps(p + 3 * BLOCK);
      const __m256 r4 = _mm256_loadu_ps(p + 4 * BLOCK), r5 = _mm256_loadu_ps(p + 5 * BLOCK);
      const __m256 r6 = _mm256_loadu_ps(p + 6 * BLOCK), r7 = _mm256_loadu_ps(p + 7 * BLOCK);
      const __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
      const __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
      const __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
      const __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
      const __m256 u0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
      const __m256 u1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
      const __m256 u2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
      const __m256 u3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
      const __m256 u4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
      const __m256 u5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
      const __m256 u6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
      const __m256 u7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
      const __m256 rows[8] = {
          _mm256_permute2f128_ps(u0, u4, 0x20), _mm256_permute2f128_ps(u1, u5, 0x20),
          _mm256_permute2f128_ps(u2, u6, 0x20), _mm256_permute2f128_ps(u3, u7, 0x20),
          _mm256_permute2f128_ps(u0, u4, 0x31), _mm256_permute2f128_ps(u1, u5, 0x31),
          _mm256_permute2f128_ps(u2, u6, 0x31), _mm256_permute2f128_ps(u3, u7, 0x31)};
      float* q = out + c0 * n + k0;
      if (stream) {
        for (int j = 0; j < 8; ++j) _mm256_stream_ps(q + j * n, rows[j]);
      } else {
        for (int j = 0; j < 8; ++j) _mm256_storeu_ps(q + j * n, rows[j]);
      }
    }
    for (int64_t c = c0; c < c0 + 8; ++c)
      for (int64_t k = n8; k < n; ++k) out[c * n + k] = s[k * BLOCK + c];
  }
  for (int64_t c = nc8; c < nc; ++c)
    for (int64_t k = 0; k < n; ++k) out[c * n + k] = s[k * BLOCK + c];
}
#endif

// One task: channels [c0, c0 + nc) of batch row `row`, every position, all in group `group` (which
// reads B and C). The lanes c >= nc hold zeros (delta = 0, A = 0: exp(0) * 0 + 0) and are never
// written out.
template <typename scalar_t>
void scan_task(const scalar_t* u, const scalar_t* delta, const scalar_t* A, const scalar_t* B,
               const scalar_t* C, const scalar_t* D, const scalar_t* state0, scalar_t* y,
               scalar_t* states, scalar_t* last, int64_t row, int64_t c0, int64_t nc,
               int64_t length, int64_t d, int64_t n, int64_t groups, int64_t group,
               bool write_states, bool stream) {
  std::vector<scalar_t> s(n * BLOCK, scalar_t(0)), At(n * BLOCK, scalar_t(0));  // [n, BLOCK]
  for (int64_t c = 0; c < nc; ++c) {
    for (int64_t k = 0; k < n; ++k) {
      At[k * BLOCK + c] = A[(c0 + c) * n + k];
      if (state0 != nullptr) s[k * BLOCK + c] = state0[(row * d + c0 + c) * n + k];
    }
  }
  alignas(64) scalar_t dtb[BLOCK], du[BLOCK], acc[BLOCK];
  scalar_t* sp = s.data();
  const scalar_t* ap = At.data();
  for (int64_t t = 0; t < length; ++t) {
    const int64_t bt = row * length + t;
    const scalar_t* ut = u + bt * d + c0;
    const scalar_t* dt = delta + bt * d + c0;
    const scalar_t* Bt = B + (bt * groups + group) * n;  // this task's group's B_t, C_t
    const scalar_t* Ct = C + (bt * groups + group) * n;
    for (int64_t c = 0; c < BLOCK; ++c) {
      dtb[c] = c < nc ? dt[c] : scalar_t(0);
      du[c] = c < nc ? dt[c] * ut[c] : scalar_t(0);
      acc[c] = scalar_t(0);
    }
    for (int64_t k = 0; k < n; ++k) {
      const scalar_t bk = Bt[k], ck = Ct[k];
      scalar_t* sk = sp + k * BLOCK;
      const scalar_t* ak = ap + k * BLOCK;
#pragma omp simd
      for (int64_t c = 0; c < BLOCK; ++c) {  // s = exp(delta A) s + (delta u) B;  y += s C
        const scalar_t v = fast_exp(dtb[c] * ak[c]) * sk[c] + du[c] * bk;
        sk[c] = v;
        acc[c] += v * ck;
      }
    }
    scalar_t* yt = y + bt * d + c0;
    for (int64_t c = 0; c < nc; ++c) yt[c] = acc[c] + D[c0 + c] * ut[c];
    if (write_states) write_rows(sp, states + (bt * d + c0) * n, nc, n, stream);
  }
  write_rows(sp, last + (row * d + c0) * n, nc, n, false);
#if defined(__AVX2__)
  if (stream) _mm_sfence();
#endif
}

}  // namespace

// u, delta: [batch, pos, d]; A: [d, n]; B, C: [batch, pos, groups, n], channel c in group
// c / (d / groups) (Mamba-2's groups of heads; groups = 1 is S6); D: [d]; state0: [batch, d, n] or
// none; y: [batch, pos, d]; states: [batch, pos, d, n] (written if write_states); last: [batch, d, n].
// All contiguous, one dtype (float32 or float64), d divisible by groups; checked by the Python wrapper.
void selective_scan_forward(at::Tensor u, at::Tensor delta, at::Tensor A, at::Tensor B,
                            at::Tensor C, at::Tensor D, c10::optional<at::Tensor> state0,
                            at::Tensor y, at::Tensor states, at::Tensor last,
                            bool write_states, int64_t groups) {
  const int64_t batch = u.size(0), length = u.size(1), d = u.size(2), n = A.size(1);
  const int64_t per_group = d / groups;  // channels per group; tasks never straddle two groups
  const int64_t blocks = (per_group + BLOCK - 1) / BLOCK;  // tasks per group and batch row
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "selective_scan_forward", [&] {
    const scalar_t* s0 = state0.has_value() ? state0->data_ptr<scalar_t>() : nullptr;
    const scalar_t *pu = u.data_ptr<scalar_t>(), *pdelta = delta.data_ptr<scalar_t>();
    const scalar_t *pA = A.data_ptr<scalar_t>(), *pB = B.data_ptr<scalar_t>();
    const scalar_t *pC = C.data_ptr<scalar_t>(), *pD = D.data_ptr<scalar_t>();
    scalar_t *py = y.data_ptr<scalar_t>(), *pstates = states.data_ptr<scalar_t>();
    scalar_t* plast = last.data_ptr<scalar_t>();
    // non-temporal stores need every 8-float row piece 32-byte aligned
    const bool stream = write_states && sizeof(scalar_t) == 4 && n % 8 == 0 &&
                        reinterpret_cast<std::uintptr_t>(pstates) % 32 == 0;
    at::parallel_for(0, batch * groups * blocks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t task = begin; task < end; ++task) {
        const int64_t row = task / (groups * blocks), group = (task / blocks) % groups;
        const int64_t within = (task % blocks) * BLOCK;  // first channel of the block in its group
        const int64_t c0 = group * per_group + within;
        scan_task<scalar_t>(pu, pdelta, pA, pB, pC, pD, s0, py, pstates, plast, row, c0,
                            std::min(BLOCK, per_group - within), length, d, n, groups, group,
                            write_states, stream);
      }
    });
  });
}

namespace {

// One task of the causal depthwise conv + SiLU: channels [c0, c0 + nc) of batch row `row`.
// xp (the conv's input) is conv_state [d, km1] followed by x [pos, d] along time.
template <typename scalar_t>
void conv_task(const scalar_t* x, const scalar_t* cs, const scalar_t* w, const scalar_t* bias,
               scalar_t* out, int64_t row, int64_t c0, int64_t nc, int64_t length, int64_t d,
               int64_t k) {
  const int64_t km1 = k - 1;
  alignas(64) scalar_t wt[16 * BLOCK], acc[BLOCK];  // weights as [k, BLOCK]
  for (int64_t j = 0; j < k; ++j)
    for (int64_t c = 0; c < BLOCK; ++c) wt[j * BLOCK + c] = c < nc ? w[(c0 + c) * k + j] : scalar_t(0);
  for (int64_t t = 0; t < length; ++t) {
    for (int64_t c = 0; c < BLOCK; ++c) acc[c] = bias != nullptr && c < nc ? bias[c0 + c] : scalar_t(0);
    for (int64_t j = 0; j < k; ++j) {
      const int64_t i = t + j;  // position in xp
      const scalar_t* wj = wt + j * BLOCK;
      if (i < km1) {
        for (int64_t c = 0; c < nc; ++c) acc[c] += wj[c] * cs[(row * d + c0 + c) * km1 + i];
      } else {
        const scalar_t* xi = x + (row * length + i - km1) * d + c0;
#pragma omp simd
        for (int64_t c = 0; c < nc; ++c) acc[c] += wj[c] * xi[c];
      }
    }
    scalar_t* o = out + (row * length + t) * d + c0;
#pragma omp simd
    for (int64_t c = 0; c < nc; ++c) o[c] = acc[c] / (scalar_t(1) + fast_exp(-acc[c]));  // SiLU
  }
}

}  // namespace

// u = SiLU(causal depthwise conv(x)): x [batch, pos, d]; conv_state [batch, d, k - 1]; weight [d, k];
// bias [d] or none; out [batch, pos, d]. Contiguous, one dtype; k <= 16 (checked by the wrapper).
void causal_conv_silu_forward(at::Tensor x, at::Tensor conv_state, at::Tensor weight,
                              c10::optional<at::Tensor> bias, at::Tensor out) {
  const int64_t batch = x.size(0), length = x.size(1), d = x.size(2), k = weight.size(1);
  const int64_t blocks = (d + BLOCK - 1) / BLOCK;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "causal_conv_silu_forward", [&] {
    const scalar_t* pb = bias.has_value() ? bias->data_ptr<scalar_t>() : nullptr;
    const scalar_t *px = x.data_ptr<scalar_t>(), *pcs = conv_state.data_ptr<scalar_t>();
    const scalar_t* pw = weight.data_ptr<scalar_t>();
    scalar_t* po = out.data_ptr<scalar_t>();
    at::parallel_for(0, batch * blocks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t task = begin; task < end; ++task) {
        const int64_t row = task / blocks, c0 = (task % blocks) * BLOCK;
        conv_task<scalar_t>(px, pcs, pw, pb, po, row, c0, std::min(BLOCK, d - c0), length, d, k);
      }
    });
  });
}
