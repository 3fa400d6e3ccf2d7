"""Compiled C++ CPU kernels, JIT-built on first use: the S6 selective scan (Gu & Dao 2023, Alg. 2),
Mamba's causal depthwise conv + SiLU, the gate-writing Elman, LSTM and GRU recording loops, and the diagonal
linear scan h_t = a_t ⊙ h_{t-1} + b_t, alone or fused with minGRU's / minLSTM's gates.

S6: s_t = exp(delta_t A) * s_{t-1} + (delta_t u_t) B_t,   y_t = s_t C_t + D u_t,   s: [d, n] per row.

Why: on CPU the pure-PyTorch `selective_scan` makes five element-wise passes over [batch, pos, d, n]
and Python dispatches one op per position; this kernel makes one. Each task owns a batch row and a
block of 64 channels, keeps its slice of the state in L1 cache as [n, 64] (vector lanes run over
channels, so no horizontal sums) and walks the positions: exp(delta A) (a vectorisable polynomial
exp for float32, std::exp for float64), the state update and the read-out against C are fused, and
the states are written once only when they are asked for (into `recording_buffer` memory, with
non-temporal stores where aligned). The conv + SiLU works in the [batch, pos, d] layout the scan
reads, with no concatenation or transposes. The LSTM loop replaces `lstm_forward_recording`'s
per-step Python ops by one C++ loop (recurrent product, then one fused gate/cell pass); the GRU and
Elman loops likewise.
The linear scan reads a and b once and writes h once (the chunked PyTorch scan makes two passes and
one Python step per position of a chunk); its minGRU / minLSTM form computes the gates from the
pre-activations in the same pass, writing them over their inputs. Tasks are spread over
`at::parallel_for` (OpenMP in torch's CPU builds), so torch.set_num_threads governs it.

The extension is built by torch.utils.cpp_extension.load_inline (needs a C++ compiler and ninja)
the first time it is needed (~25-30 s on a 2-core VM), cached in torch's default extensions
directory, and reused by later processes. If the build fails for any reason,
`compiled_kernels_available()` is False, a warning is logged once and callers keep the PyTorch
paths. WORKBENCH_NO_COMPILED=1 disables the kernels. Forward only, no autograd: the mixers use them
when no gradient is needed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import sys
import threading
import time
from types import ModuleType

import torch
from torch import Tensor

from .buffers import recording_buffer

__all__ = [
    "compiled_causal_conv_silu",
    "compiled_elman_forward_recording",
    "compiled_gru_forward_recording",
    "compiled_kernels_available",
    "compiled_linear_scan",
    "compiled_lstm_forward_recording",
    "compiled_mingru_gates_scan",
    "compiled_minlstm_gates_scan",
    "compiled_selective_scan",
    "use_compiled_kernels",
    "use_compiled_scan",
]

MAX_CONV_WIDTH = 16  # kernel widths the compiled conv holds in its weight buffer
SMALL_BATCH, SMALL_BATCH_MAX_HIDDEN = 4, 512  # LSTM: in-place product loop up to here (W_hh^T <= 4 MiB)

_LOG = logging.getLogger(__name__)
DISABLE_ENV = "WORKBENCH_NO_COMPILED"

_CPP_SOURCE = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/stack.h>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>
#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace {

constexpr int64_t BLOCK = 64;  // channels per task; the state is held as [n, BLOCK] (channels innermost)

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

// One task: channels [c0, c0 + nc) of batch row `row`, every position. The lanes c >= nc hold
// zeros (delta = 0, A = 0: exp(0) * 0 + 0) and are never written out.
template <typename scalar_t>
void scan_task(const scalar_t* u, const scalar_t* delta, const scalar_t* A, const scalar_t* B,
               const scalar_t* C, const scalar_t* D, const scalar_t* state0, scalar_t* y,
               scalar_t* states, scalar_t* last, int64_t row, int64_t c0, int64_t nc,
               int64_t length, int64_t d, int64_t n, bool write_states, bool stream) {
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
    const scalar_t* Bt = B + bt * n;
    const scalar_t* Ct = C + bt * n;
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

// u, delta: [batch, pos, d]; A: [d, n]; B, C: [batch, pos, n]; D: [d]; state0: [batch, d, n] or
// none; y: [batch, pos, d]; states: [batch, pos, d, n] (written if write_states); last: [batch, d, n].
// All contiguous, one dtype (float32 or float64); checked by the Python wrapper.
void selective_scan_forward(torch::Tensor u, torch::Tensor delta, torch::Tensor A, torch::Tensor B,
                            torch::Tensor C, torch::Tensor D, c10::optional<torch::Tensor> state0,
                            torch::Tensor y, torch::Tensor states, torch::Tensor last,
                            bool write_states) {
  const int64_t batch = u.size(0), length = u.size(1), d = u.size(2), n = A.size(1);
  const int64_t blocks = (d + BLOCK - 1) / BLOCK;
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
    at::parallel_for(0, batch * blocks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t task = begin; task < end; ++task) {
        const int64_t row = task / blocks, c0 = (task % blocks) * BLOCK;
        scan_task<scalar_t>(pu, pdelta, pA, pB, pC, pD, s0, py, pstates, plast, row, c0,
                            std::min(BLOCK, d - c0), length, d, n, write_states, stream);
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
void causal_conv_silu_forward(torch::Tensor x, torch::Tensor conv_state, torch::Tensor weight,
                              c10::optional<torch::Tensor> bias, torch::Tensor out) {
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

namespace {

template <typename scalar_t>
inline scalar_t sigmoid(scalar_t v) { return scalar_t(1) / (scalar_t(1) + fast_exp(-v)); }

template <typename scalar_t>
inline scalar_t tanh_(scalar_t v) { return scalar_t(2) / (scalar_t(1) + fast_exp(scalar_t(-2) * v)) - scalar_t(1); }

// One LSTM step's element-wise part for batch rows [b0, b1): pre-activations = the input projection
// already in `gates` (row stride gs) + the recurrent product in `rec` ([batch, 4H], contiguous);
// writes i, f, g, o over the pre-activations, c_t and h_t.
// With rec == nullptr the recurrent product is already added into `gates`.
template <typename scalar_t>
void lstm_cell_rows(scalar_t* gates, int64_t gs, const scalar_t* rec, const scalar_t* c_prev, int64_t cs,
                    scalar_t* c_out, scalar_t* h_out, int64_t hs, int64_t hidden, int64_t b0, int64_t b1) {
  std::vector<scalar_t> zeros(rec == nullptr ? 4 * hidden : 0, scalar_t(0));
  for (int64_t b = b0; b < b1; ++b) {
    scalar_t* G = gates + b * gs;
    const scalar_t* R = rec == nullptr ? zeros.data() : rec + b * 4 * hidden;
    const scalar_t* cp = c_prev + b * cs;
    scalar_t* co = c_out + b * hs;
    scalar_t* ho = h_out + b * hs;
#pragma omp simd
    for (int64_t j = 0; j < hidden; ++j) {
      const scalar_t i = sigmoid(G[j] + R[j]);
      const scalar_t f = sigmoid(G[hidden + j] + R[hidden + j]);
      const scalar_t g = tanh_(G[2 * hidden + j] + R[2 * hidden + j]);
      const scalar_t o = sigmoid(G[3 * hidden + j] + R[3 * hidden + j]);
      const scalar_t c = f * cp[j] + i * g;
      G[j] = i;
      G[hidden + j] = f;
      G[2 * hidden + j] = g;
      G[3 * hidden + j] = o;
      co[j] = c;
      ho[j] = o * tanh_(c);
    }
  }
}

// gates[b, :] += h[b, :] W_hh^T for b < batch (row strides gs, hs), columns [c0, c1): the weight
// as W_hh^T [H, 4H] is streamed once per step for all rows; the output slices stay in L1.
// wcols: W_hh^T's row length (4H for the LSTM, 3H for the GRU).
template <typename scalar_t>
void small_batch_product(scalar_t* gates, int64_t gs, const scalar_t* h, int64_t hs, const scalar_t* w_t,
                         int64_t wcols, int64_t batch, int64_t hidden, int64_t c0, int64_t c1) {
  for (int64_t j = 0; j < hidden; ++j) {
    const scalar_t* w = w_t + j * wcols;
    for (int64_t b = 0; b < batch; ++b) {
      const scalar_t hj = h[b * hs + j];
      scalar_t* G = gates + b * gs;
#pragma omp simd
      for (int64_t c = c0; c < c1; ++c) G[c] += hj * w[c];
    }
  }
}

}  // namespace

namespace {

// oneDNN's packed linear op, looked up once per call when the weight was prepacked (else none).
c10::optional<c10::OperatorHandle> packed_linear_op(const c10::optional<torch::Tensor>& packed) {
  if (!packed.has_value()) return c10::nullopt;
  return c10::Dispatcher::singleton().findSchemaOrThrow("mkldnn::_linear_pointwise", "");
}

// The recurrent product h_prev W_hh^T (+ bias) as a fresh contiguous [batch, rows] tensor: through
// the packed oneDNN linear when there is one, else at::addmm / at::mm over w_t = W_hh^T [H, rows].
torch::Tensor recurrent_product(const torch::Tensor& h_prev, const c10::optional<torch::Tensor>& packed,
                                const c10::optional<c10::OperatorHandle>& linear, const torch::Tensor& w_t,
                                const c10::optional<torch::Tensor>& bias) {
  if (linear.has_value()) {
    torch::jit::Stack stack{h_prev.contiguous(), *packed, bias.has_value() ? c10::IValue(*bias) : c10::IValue(),
                            std::string("none"), c10::List<c10::optional<at::Scalar>>(),
                            c10::IValue(std::string(""))};
    linear->callBoxed(&stack);
    return stack[0].toTensor().contiguous();
  }
  return bias.has_value() ? at::addmm(*bias, h_prev, w_t) : at::mm(h_prev, w_t);
}

}  // namespace

// gates: [batch, pos, 4H] holding W_ih x_t + b (overwritten with i, f, g, o); h0, c0: [batch, H];
// weight_hh: [4H, H]; packed: weight_hh in oneDNN's layout (or none: at::mm); cells, hiddens:
// [batch, pos, H]. All contiguous, one dtype; checked by the Python wrapper.
// weight_hh_t: W_hh^T [H, 4H] contiguous, used (small batches) by the in-place product instead of a matmul call.
void lstm_recording_forward(torch::Tensor gates, torch::Tensor h0, torch::Tensor c0, torch::Tensor weight_hh,
                            c10::optional<torch::Tensor> packed, c10::optional<torch::Tensor> weight_hh_t,
                            torch::Tensor cells, torch::Tensor hiddens) {
  const int64_t batch = gates.size(0), length = gates.size(1), hidden = weight_hh.size(1);
  const torch::Tensor w_t = weight_hh.t();  // [H, 4H]
  const c10::optional<c10::OperatorHandle> linear = packed_linear_op(packed);
  AT_DISPATCH_FLOATING_TYPES(gates.scalar_type(), "lstm_recording_forward", [&] {
    scalar_t* pg = gates.data_ptr<scalar_t>();
    scalar_t* pc = cells.data_ptr<scalar_t>();
    scalar_t* ph = hiddens.data_ptr<scalar_t>();
    const int64_t gs = length * 4 * hidden, hs = length * hidden;
    for (int64_t t = 0; t < length; ++t) {
      const torch::Tensor h_prev = t == 0 ? h0 : hiddens.select(1, t - 1);  // [batch, H]
      torch::Tensor rec;  // [batch, 4H] = h_{t-1} W_hh^T (undefined: added into the gates in place)
      if (weight_hh_t.has_value()) {
        const scalar_t* hp = t == 0 ? h0.data_ptr<scalar_t>() : ph + (t - 1) * hidden;
        const int64_t h_stride = t == 0 ? hidden : hs;
        const scalar_t* pw = weight_hh_t->data_ptr<scalar_t>();
        at::parallel_for(0, 4 * hidden, 256, [&](int64_t col0, int64_t col1) {
          small_batch_product<scalar_t>(pg + t * 4 * hidden, gs, hp, h_stride, pw, 4 * hidden, batch, hidden,
                                        col0, col1);
        });
      } else {
        rec = recurrent_product(h_prev, packed, linear, w_t, c10::nullopt);
      }
      const scalar_t* prec = rec.defined() ? rec.data_ptr<scalar_t>() : nullptr;
      const scalar_t* c_prev = t == 0 ? c0.data_ptr<scalar_t>() : pc + (t - 1) * hidden;
      const int64_t cs = t == 0 ? hidden : hs;
      const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, hidden));  // rows per task
      at::parallel_for(0, batch, grain, [&](int64_t b0, int64_t b1) {
        lstm_cell_rows<scalar_t>(pg + t * 4 * hidden, gs, prec, c_prev, cs, pc + t * hidden, ph + t * hidden, hs,
                                 hidden, b0, b1);
      });
    }
  });
}

namespace {

// One GRU step's element-wise part for batch rows [b0, b1): `gates` (row stride gs) holds the input
// projection W_i· x_t + b_i· as [r | z | n] pre-activations, `rec` ([batch, 3H], contiguous) holds
// W_h· h_{t-1} + b_h·; writes r, z, n over the pre-activations and h_t = n + z (h_{t-1} - n).
template <typename scalar_t>
void gru_cell_rows(scalar_t* gates, int64_t gs, const scalar_t* rec, const scalar_t* h_prev, int64_t ps,
                   scalar_t* h_out, int64_t hs, int64_t hidden, int64_t b0, int64_t b1) {
  for (int64_t b = b0; b < b1; ++b) {
    scalar_t* G = gates + b * gs;
    const scalar_t* R = rec + b * 3 * hidden;
    const scalar_t* hp = h_prev + b * ps;
    scalar_t* ho = h_out + b * hs;
#pragma omp simd
    for (int64_t j = 0; j < hidden; ++j) {
      const scalar_t r = sigmoid(G[j] + R[j]);
      const scalar_t z = sigmoid(G[hidden + j] + R[hidden + j]);
      const scalar_t n = tanh_(G[2 * hidden + j] + r * R[2 * hidden + j]);
      G[j] = r;
      G[hidden + j] = z;
      G[2 * hidden + j] = n;
      ho[j] = n + z * (hp[j] - n);
    }
  }
}

}  // namespace

// gates: [batch, pos, 3H] holding W_ih x_t + b_ih (overwritten with r, z, n); h0: [batch, H];
// weight_hh: [3H, H]; bias_hh: [3H] or none; packed: weight_hh in oneDNN's layout (or none);
// weight_hh_t: W_hh^T [H, 3H] (small batches: the in-place product loop instead of a matmul call);
// hiddens: [batch, pos, H]. All contiguous, one dtype; checked by the Python wrapper.
void gru_recording_forward(torch::Tensor gates, torch::Tensor h0, torch::Tensor weight_hh,
                           c10::optional<torch::Tensor> bias_hh, c10::optional<torch::Tensor> packed,
                           c10::optional<torch::Tensor> weight_hh_t, torch::Tensor hiddens) {
  const int64_t batch = gates.size(0), length = gates.size(1), hidden = weight_hh.size(1);
  const torch::Tensor w_t = weight_hh.t();  // [H, 3H]
  const c10::optional<c10::OperatorHandle> linear = packed_linear_op(packed);
  // [batch, 3H] scratch for the small-batch product, reset to b_hh (or zeros) each step
  const torch::Tensor base = bias_hh.has_value() ? bias_hh->unsqueeze(0).expand({batch, 3 * hidden})
                                                 : at::zeros({batch, 3 * hidden}, gates.options());
  torch::Tensor scratch = at::empty({batch, 3 * hidden}, gates.options());
  AT_DISPATCH_FLOATING_TYPES(gates.scalar_type(), "gru_recording_forward", [&] {
    scalar_t* pg = gates.data_ptr<scalar_t>();
    scalar_t* ph = hiddens.data_ptr<scalar_t>();
    const int64_t gs = length * 3 * hidden, hs = length * hidden;
    for (int64_t t = 0; t < length; ++t) {
      const torch::Tensor h_prev = t == 0 ? h0 : hiddens.select(1, t - 1);  // [batch, H]
      const scalar_t* hp = t == 0 ? h0.data_ptr<scalar_t>() : ph + (t - 1) * hidden;
      const int64_t h_stride = t == 0 ? hidden : hs;
      torch::Tensor rec;  // [batch, 3H] = h_{t-1} W_hh^T + b_hh
      if (weight_hh_t.has_value()) {
        scratch.copy_(base);
        scalar_t* ps = scratch.data_ptr<scalar_t>();
        const scalar_t* pw = weight_hh_t->data_ptr<scalar_t>();
        at::parallel_for(0, 3 * hidden, 256, [&](int64_t col0, int64_t col1) {
          small_batch_product<scalar_t>(ps, 3 * hidden, hp, h_stride, pw, 3 * hidden, batch, hidden, col0, col1);
        });
        rec = scratch;
      } else {
        rec = recurrent_product(h_prev, packed, linear, w_t, bias_hh);
      }
      const scalar_t* prec = rec.data_ptr<scalar_t>();
      const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, hidden));  // rows per task
      at::parallel_for(0, batch, grain, [&](int64_t b0, int64_t b1) {
        gru_cell_rows<scalar_t>(pg + t * 3 * hidden, gs, prec, hp, h_stride, ph + t * hidden, hs, hidden, b0, b1);
      });
    }
  });
}
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
void linear_scan_forward(torch::Tensor a, torch::Tensor b, c10::optional<torch::Tensor> h0, torch::Tensor out) {
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
void minimal_gates_scan_forward(torch::Tensor pre_a, torch::Tensor pre_h, c10::optional<torch::Tensor> pre_i,
                                c10::optional<torch::Tensor> h0, torch::Tensor out) {
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
namespace {

// One Elman step's element-wise part for batch rows [b0, b1): `pres` (row stride ps) holds
// W_ih x_t + b_ih + b_hh; adds the recurrent product `rec` ([batch, H], contiguous; nullptr: already
// added in place), keeping the sum as the recorded pre-activation, and writes h_t = tanh(pre_t).
template <typename scalar_t>
void elman_cell_rows(scalar_t* pres, int64_t ps, const scalar_t* rec, scalar_t* h_out, int64_t hs,
                     int64_t hidden, int64_t b0, int64_t b1) {
  for (int64_t b = b0; b < b1; ++b) {
    scalar_t* P = pres + b * ps;
    scalar_t* ho = h_out + b * hs;
    if (rec != nullptr) {
      const scalar_t* R = rec + b * hidden;
#pragma omp simd
      for (int64_t j = 0; j < hidden; ++j) {
        const scalar_t pre = P[j] + R[j];
        P[j] = pre;
        ho[j] = tanh_(pre);
      }
    } else {
#pragma omp simd
      for (int64_t j = 0; j < hidden; ++j) ho[j] = tanh_(P[j]);
    }
  }
}

}  // namespace

// pres: [batch, pos, H] holding W_ih x_t + b_ih + b_hh (the recurrent product is added in place: it
// becomes the recorded pre-activation); h0: [batch, H]; weight_hh: [H, H]; packed: weight_hh in
// oneDNN's layout (or none: at::mm); weight_hh_t: W_hh^T [H, H] (small batches: the in-place product
// loop instead of a matmul call); hiddens: [batch, pos, H]. Contiguous, one dtype; checked by the
// Python wrapper.
void elman_recording_forward(torch::Tensor pres, torch::Tensor h0, torch::Tensor weight_hh,
                             c10::optional<torch::Tensor> packed, c10::optional<torch::Tensor> weight_hh_t,
                             torch::Tensor hiddens) {
  const int64_t batch = pres.size(0), length = pres.size(1), hidden = weight_hh.size(1);
  const torch::Tensor w_t = weight_hh.t();  // [H, H]
  const c10::optional<c10::OperatorHandle> linear = packed_linear_op(packed);
  AT_DISPATCH_FLOATING_TYPES(pres.scalar_type(), "elman_recording_forward", [&] {
    scalar_t* pp = pres.data_ptr<scalar_t>();
    scalar_t* ph = hiddens.data_ptr<scalar_t>();
    const int64_t hs = length * hidden;
    for (int64_t t = 0; t < length; ++t) {
      const scalar_t* hp = t == 0 ? h0.data_ptr<scalar_t>() : ph + (t - 1) * hidden;
      const int64_t h_stride = t == 0 ? hidden : hs;
      torch::Tensor rec;  // [batch, H] = h_{t-1} W_hh^T (undefined: added into the pre-activations in place)
      if (weight_hh_t.has_value()) {
        const scalar_t* pw = weight_hh_t->data_ptr<scalar_t>();
        at::parallel_for(0, hidden, 256, [&](int64_t col0, int64_t col1) {
          small_batch_product<scalar_t>(pp + t * hidden, hs, hp, h_stride, pw, hidden, batch, hidden, col0, col1);
        });
      } else {
        const torch::Tensor h_prev = t == 0 ? h0 : hiddens.select(1, t - 1);  // [batch, H]
        rec = recurrent_product(h_prev, packed, linear, w_t, c10::nullopt);
      }
      const scalar_t* prec = rec.defined() ? rec.data_ptr<scalar_t>() : nullptr;
      const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, hidden));  // rows per task
      at::parallel_for(0, batch, grain, [&](int64_t b0, int64_t b1) {
        elman_cell_rows<scalar_t>(pp + t * hidden, hs, prec, ph + t * hidden, hs, hidden, b0, b1);
      });
    }
  });
}
"""

_CPP_DECL = """
void selective_scan_forward(torch::Tensor u, torch::Tensor delta, torch::Tensor A, torch::Tensor B,
                            torch::Tensor C, torch::Tensor D, c10::optional<torch::Tensor> state0,
                            torch::Tensor y, torch::Tensor states, torch::Tensor last,
                            bool write_states);
void causal_conv_silu_forward(torch::Tensor x, torch::Tensor conv_state, torch::Tensor weight,
                              c10::optional<torch::Tensor> bias, torch::Tensor out);
void lstm_recording_forward(torch::Tensor gates, torch::Tensor h0, torch::Tensor c0, torch::Tensor weight_hh,
                            c10::optional<torch::Tensor> packed, c10::optional<torch::Tensor> weight_hh_t,
                            torch::Tensor cells, torch::Tensor hiddens);
void gru_recording_forward(torch::Tensor gates, torch::Tensor h0, torch::Tensor weight_hh,
                           c10::optional<torch::Tensor> bias_hh, c10::optional<torch::Tensor> packed,
                           c10::optional<torch::Tensor> weight_hh_t, torch::Tensor hiddens);
void linear_scan_forward(torch::Tensor a, torch::Tensor b, c10::optional<torch::Tensor> h0, torch::Tensor out);
void minimal_gates_scan_forward(torch::Tensor pre_a, torch::Tensor pre_h, c10::optional<torch::Tensor> pre_i,
                                c10::optional<torch::Tensor> h0, torch::Tensor out);
void elman_recording_forward(torch::Tensor pres, torch::Tensor h0, torch::Tensor weight_hh,
                             c10::optional<torch::Tensor> packed, c10::optional<torch::Tensor> weight_hh_t,
                             torch::Tensor hiddens);
"""

_lock = threading.Lock()
_module: ModuleType | None = None
_failed = False


STALE_LOCK_S = 600.0  # a build lock older than this was left by a process killed mid-build (a build takes ~30 s)


def _cpu_tag() -> str:
    """Short hash of the CPU model and flags, the torch version and the environment: the kernel is
    built with -march=native against this torch, so a cache shared between machines or virtual
    environments must not hand one's binary to another."""
    info = f"{platform.machine()} {torch.__version__} {sys.prefix}"
    try:
        with open("/proc/cpuinfo") as f:
            info += "".join(line for line in f if line.startswith(("model name", "flags")))
    except OSError:
        pass
    return hashlib.sha1(info.encode()).hexdigest()[:10]


def _wait_for_lock(build_dir: str) -> None:
    """Wait while another process builds the extension; remove a lock left behind by a process
    killed mid-build (torch's own wait on it would never end)."""
    lock = os.path.join(build_dir, "lock")
    while os.path.exists(lock):
        try:
            if time.time() - os.path.getmtime(lock) > STALE_LOCK_S:
                _LOG.warning("removing a stale build lock %s", lock)
                os.remove(lock)
                return
        except OSError:  # released meanwhile
            return
        time.sleep(1.0)


def _build() -> ModuleType:
    from torch.utils import cpp_extension
    from torch.utils.cpp_extension import load_inline

    name = f"workbench_cpu_compiled_{_cpu_tag()}"
    build_directory = getattr(cpp_extension, "_get_build_directory", None)  # private: used only if present
    if build_directory is not None:
        _wait_for_lock(build_directory(name, verbose=False))
    _LOG.info("building the compiled CPU kernels %s (first use; ~30 s)", name)
    return load_inline(
        name=name,
        cpp_sources=[_CPP_DECL, _CPP_SOURCE],
        functions=["selective_scan_forward", "causal_conv_silu_forward", "lstm_recording_forward",
                   "gru_recording_forward", "linear_scan_forward", "minimal_gates_scan_forward",
                   "elman_recording_forward"],
        extra_cflags=["-O3", "-march=native", "-fopenmp"],
        extra_ldflags=["-fopenmp"],
        verbose=False,
    )


def _load() -> ModuleType | None:
    """The built extension, building it on the first call; None if disabled or the build failed."""
    global _module, _failed
    if os.environ.get(DISABLE_ENV, "") not in ("", "0"):
        return None
    if _module is not None or _failed:
        return _module
    with _lock:
        if _module is None and not _failed:
            try:
                _module = _build()
            except Exception as exc:  # no compiler, no ninja, a broken toolchain: keep the torch path
                _failed = True
                last_line = (str(exc).strip().splitlines() or [""])[-1]
                _LOG.warning("compiled CPU kernels unavailable (%s: %s); using the PyTorch path",
                             type(exc).__name__, last_line)
    return _module


def compiled_kernels_available() -> bool:
    """True when the C++ kernels are built (building them now if needed) and not disabled by
    WORKBENCH_NO_COMPILED=1."""
    return _load() is not None


def use_compiled_kernels(*tensors: Tensor | None) -> bool:
    """Whether a computation over `tensors` should run a compiled kernel: all on CPU, float32 or
    float64, no gradient needed (the kernels are forward only), and the kernels are available."""
    present = [t for t in tensors if t is not None]
    if any(t.device.type != "cpu" or t.dtype not in (torch.float32, torch.float64) for t in present):
        return False
    if torch.is_grad_enabled() and any(t.requires_grad for t in present):
        return False
    return compiled_kernels_available()


use_compiled_scan = use_compiled_kernels  # the S6 mixer's name for it


def compiled_selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor,
    state0: Tensor | None = None,
    return_states: bool = False,
) -> tuple[Tensor, Tensor]:
    """Same contract as `selective_scan`: u, delta [batch, pos, d]; A [d, n]; B, C [batch, pos, n];
    D [d]; state0 [batch, d, n] or None (zeros). Returns (y [batch, pos, d], states
    [batch, pos, d, n] if return_states else the last state [batch, d, n]) in the promoted dtype
    (float32 or float64). CPU only, no autograd; raises RuntimeError if the kernel is unavailable."""
    module = _load()
    if module is None:
        raise RuntimeError("compiled CPU kernels are unavailable (see compiled_kernels_available())")
    if u.dim() != 3:
        raise ValueError(f"u must be [batch, pos, d], got shape {tuple(u.shape)}")
    batch, length, d = u.shape
    n = A.shape[-1] if A.dim() == 2 else -1
    fits = delta.shape == u.shape and A.shape == (d, n) and D.shape == (d,)
    if not fits or B.shape != (batch, length, n) or C.shape != B.shape:
        raise ValueError(
            f"shapes do not fit S6: u {tuple(u.shape)}, delta {tuple(delta.shape)}, A {tuple(A.shape)}, "
            f"B {tuple(B.shape)}, C {tuple(C.shape)}, D {tuple(D.shape)}"
        )
    if state0 is not None and state0.shape != (batch, d, n):
        raise ValueError(f"state0 must be [batch, d, n] = {(batch, d, n)}, got {tuple(state0.shape)}")
    inputs = [u, delta, A, B, C, D] + ([state0] if state0 is not None else [])
    if any(t.device.type != "cpu" for t in inputs):
        raise ValueError("compiled_selective_scan runs on CPU tensors only")
    dtype = torch.float32
    for t in inputs:
        dtype = torch.promote_types(dtype, t.dtype)
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"compiled_selective_scan supports float32 and float64, got {dtype}")
    u, delta, A, B, C, D = (t.detach().to(dtype).contiguous() for t in (u, delta, A, B, C, D))
    if state0 is not None:
        state0 = state0.detach().to(dtype).contiguous()
    y = recording_buffer((batch, length, d), dtype, "cpu")  # [batch, pos, d], recorded as the y hook
    last = u.new_empty(batch, d, n)  # [batch, d, n]
    # [batch, pos, d, n] when recorded; otherwise an unused placeholder
    states = recording_buffer((batch, length, d, n), dtype, "cpu") if return_states else last
    if length == 0 or d == 0 or n == 0 or batch == 0:
        if state0 is not None:
            last.copy_(state0)
        else:
            last.zero_()
        if length > 0:  # n == 0: no state, y = D u
            y.copy_(D * u)
        return y, states if return_states else last
    module.selective_scan_forward(u, delta, A, B, C, D, state0, y, states, last, return_states)
    return y, states if return_states else last


def compiled_causal_conv_silu(
    x: Tensor, conv_state: Tensor, weight: Tensor, bias: Tensor | None
) -> tuple[Tensor, Tensor]:
    """Mamba's causal depthwise conv followed by SiLU, in one pass in the [batch, pos, d] layout:

        u_t = SiLU(bias + sum_j weight[:, j] * xp_{t+j}),  xp = (conv_state, x) along time,

    the same numbers as SiLU(conv1d(cat(conv_state, x^T), groups=d)) without the concatenation, the
    transposes and the separate SiLU pass. x: [batch, pos, d]; conv_state: [batch, d, k-1] (the last
    k-1 inputs before x); weight: [d, 1, k] (nn.Conv1d's) or [d, k]; bias: [d] or None.
    Returns (u [batch, pos, d], new conv state [batch, d, k-1]: the last k-1 entries of xp).
    CPU only, no autograd; raises RuntimeError if the kernel is unavailable."""
    module = _load()
    if module is None:
        raise RuntimeError("compiled CPU kernels are unavailable (see compiled_kernels_available())")
    if weight.dim() == 3:
        weight = weight.squeeze(1)
    if x.dim() != 3 or weight.dim() != 2:
        raise ValueError(f"x must be [batch, pos, d] and weight [d, k], got {tuple(x.shape)}, {tuple(weight.shape)}")
    batch, length, d = x.shape
    k = weight.shape[1]
    if weight.shape[0] != d or conv_state.shape != (batch, d, k - 1) or (bias is not None and bias.shape != (d,)):
        raise ValueError(
            f"shapes do not fit a depthwise conv: x {tuple(x.shape)}, conv_state {tuple(conv_state.shape)}, "
            f"weight {tuple(weight.shape)}, bias {None if bias is None else tuple(bias.shape)}"
        )
    if not 1 <= k <= MAX_CONV_WIDTH:
        raise ValueError(f"compiled conv supports kernel widths 1..{MAX_CONV_WIDTH}, got {k}")
    tensors = [x, conv_state, weight] + ([bias] if bias is not None else [])
    dtype = torch.float32
    for t in tensors:
        if t.device.type != "cpu":
            raise ValueError("compiled_causal_conv_silu runs on CPU tensors only")
        dtype = torch.promote_types(dtype, t.dtype)
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"compiled_causal_conv_silu supports float32 and float64, got {dtype}")
    x, conv_state, weight = (t.detach().to(dtype).contiguous() for t in (x, conv_state, weight))
    if bias is not None:
        bias = bias.detach().to(dtype).contiguous()
    out = recording_buffer((batch, length, d), dtype, "cpu")  # [batch, pos, d], recorded as the conv hook
    if out.numel() > 0:
        module.causal_conv_silu_forward(x, conv_state, weight, bias, out)
    keep = k - 1  # new conv state: the last k-1 positions of (conv_state, x)
    if length >= keep:
        new_state = x[:, length - keep:].transpose(1, 2).contiguous()  # [batch, d, k-1]
    else:
        new_state = torch.cat([conv_state[..., length:], x.transpose(1, 2)], dim=-1)
    return out, new_state


def _check_rnn_call(
    name: str, family: str, n_gates: int, x: Tensor, states: dict[str, Tensor], weight_ih: Tensor,
    weight_hh: Tensor, biases: tuple[Tensor | None, Tensor | None],
) -> tuple[ModuleType, int, int, int]:
    """The loaded kernels and (batch, pos, H) of a recording-loop call, after checking its shapes
    (weights [n_gates·H, d_in] and [n_gates·H, H], states [batch, H], biases [n_gates·H] or None)
    and that x is a CPU float32 / float64 tensor; raises with every shape named otherwise."""
    module = _load()
    if module is None:
        raise RuntimeError("compiled CPU kernels are unavailable (see compiled_kernels_available())")
    rows_name = "H" if n_gates == 1 else f"{n_gates}H"
    if x.dim() != 3 or weight_hh.dim() != 2:
        raise ValueError(f"x must be [batch, pos, d_in] and weight_hh [{rows_name}, H], got {tuple(x.shape)}, "
                         f"{tuple(weight_hh.shape)}")
    batch, _, d_in = x.shape
    hidden = weight_hh.shape[1]
    rows = n_gates * hidden
    shapes_fit = (
        weight_hh.shape == (rows, hidden) and weight_ih.shape == (rows, d_in)
        and all(s.shape == (batch, hidden) for s in states.values())
        and all(b is None or b.shape == (rows,) for b in biases)
    )
    if not shapes_fit:
        named_states = ", ".join(f"{k} {tuple(v.shape)}" for k, v in states.items())
        raise ValueError(
            f"shapes do not fit {family}: x {tuple(x.shape)}, {named_states}, "
            f"weight_ih {tuple(weight_ih.shape)}, weight_hh {tuple(weight_hh.shape)}"
        )
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"{name} runs on CPU float32/float64, got {x.device} {x.dtype}")
    return module, batch, x.shape[1], hidden


def _recurrent_operands(weight_hh: Tensor, batch: int, length: int, hidden: int) -> tuple[Tensor | None, object]:
    """How the loop forms h_{t-1} W_hh^T: (W_hh^T for the in-place loop that streams it once per step,
    used for small batches where a matmul call costs more than the product; else None) and (the
    oneDNN-prepacked weight for the other sizes, or None where at::mm serves)."""
    from .rnn_recording import StepMatmul

    small = batch <= SMALL_BATCH and hidden <= SMALL_BATCH_MAX_HIDDEN
    weight_t = weight_hh.T.contiguous() if small else None  # [H, n_gates·H]
    packed = StepMatmul(weight_hh, batch).packed if length > 0 and not small else None
    return weight_t, packed


def compiled_lstm_forward_recording(
    x: Tensor,
    h0: Tensor,
    c0: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None = None,
    bias_hh: Tensor | None = None,
) -> dict[str, Tensor]:
    """`lstm_forward_recording` with the per-position loop in C++: the same contract and numbers.

    One matmul for the input projection of every position (into the recorded gate buffer), then per
    position one recurrent product h_{t-1} W_hh^T (oneDNN with the weight prepacked, as
    `StepMatmul`, else at::mm) and one fused pass that adds it, applies the gate nonlinearities,
    updates c and h and writes i, f, g, o, c, h in place: no Python and no extra passes per step.
    x: [batch, pos, d_in]; h0, c0: [batch, H]; weight_ih: [4H, d_in]; weight_hh: [4H, H]; biases:
    [4H] or None. Returns {"i", "f", "g", "o", "c", "h"}, each [batch, pos, H] (the gates: column
    slices of one [batch, pos, 4H] buffer). CPU, float32 / float64, no autograd."""
    from .rnn_recording import _bias, _input_projection

    module, batch, length, hidden = _check_rnn_call(
        "compiled_lstm_forward_recording", "an LSTM", 4, x, {"h0": h0, "c0": c0}, weight_ih, weight_hh,
        (bias_ih, bias_hh))
    dtype = x.dtype
    with torch.no_grad():
        weight_ih, weight_hh = weight_ih.to(dtype), weight_hh.to(dtype).contiguous()
        bias = _bias(*(None if b is None else b.to(dtype) for b in (bias_ih, bias_hh)))
        gates = _input_projection(x.contiguous(), weight_ih, bias)  # [batch, pos, 4H], becomes i, f, g, o
        cells = recording_buffer((batch, length, hidden), dtype, "cpu")  # [batch, pos, H]
        hiddens = recording_buffer((batch, length, hidden), dtype, "cpu")
        weight_t, packed = _recurrent_operands(weight_hh, batch, length, hidden)
        h0, c0 = h0.detach().to(dtype).contiguous(), c0.detach().to(dtype).contiguous()
        if length > 0 and batch > 0:
            module.lstm_recording_forward(gates, h0, c0, weight_hh, packed, weight_t, cells, hiddens)
    quarters = {name: gates[..., k * hidden : (k + 1) * hidden] for k, name in enumerate("ifgo")}
    return {**quarters, "c": cells, "h": hiddens}


def compiled_gru_forward_recording(
    x: Tensor,
    h0: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None = None,
    bias_hh: Tensor | None = None,
) -> dict[str, Tensor]:
    """`gru_forward_recording` with the per-position loop in C++: the same contract and numbers.

    r, z = σ(W_i· x + b_i· + W_h· h + b_h·); n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn));
    h_t = (1 − z) ⊙ n + z ⊙ h_{t−1}. One matmul for the input projection of every position (into the
    recorded gate buffer), then per position one recurrent product W_h· h_{t-1} + b_h· (small batches: a
    loop streaming W_hh^T once; else oneDNN with the weight prepacked, or at::addmm) and one fused pass
    that writes r, z, n and h in place. x: [batch, pos, d_in]; h0: [batch, H]; weight_ih: [3H, d_in];
    weight_hh: [3H, H]; biases: [3H] or None. Returns {"r", "z", "n", "h"}, each [batch, pos, H]
    (r, z, n: column slices of one [batch, pos, 3H] buffer). CPU, float32 / float64, no autograd."""
    from .rnn_recording import _input_projection

    module, batch, length, hidden = _check_rnn_call(
        "compiled_gru_forward_recording", "a GRU", 3, x, {"h0": h0}, weight_ih, weight_hh, (bias_ih, bias_hh))
    dtype = x.dtype
    with torch.no_grad():
        weight_ih, weight_hh = weight_ih.to(dtype), weight_hh.to(dtype).contiguous()
        bias_ih = None if bias_ih is None else bias_ih.to(dtype)
        bias_hh = None if bias_hh is None else bias_hh.to(dtype).contiguous()
        gates = _input_projection(x.contiguous(), weight_ih, bias_ih)  # [batch, pos, 3H], becomes r, z, n
        hiddens = recording_buffer((batch, length, hidden), dtype, "cpu")  # [batch, pos, H]
        weight_t, packed = _recurrent_operands(weight_hh, batch, length, hidden)
        h0 = h0.detach().to(dtype).contiguous()
        if length > 0 and batch > 0:
            module.gru_recording_forward(gates, h0, weight_hh, bias_hh, packed, weight_t, hiddens)
    thirds = {name: gates[..., k * hidden : (k + 1) * hidden] for k, name in enumerate("rzn")}
    return {**thirds, "h": hiddens}


def compiled_elman_forward_recording(
    x: Tensor,
    h0: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None = None,
    bias_hh: Tensor | None = None,
) -> dict[str, Tensor]:
    """`elman_forward_recording` with the per-position loop in C++: the same contract and numbers.

    pre_t = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh, h_t = tanh(pre_t) (torch.nn.RNN, tanh). One matmul
    for the input projection of every position with both biases (into the recorded pre-activation
    buffer), then per position the recurrent product added in place (small batches: a loop streaming
    W_hh^T once; else oneDNN with the weight prepacked, or at::mm) and one pass writing h.
    x: [batch, pos, d_in]; h0: [batch, H]; weight_ih: [H, d_in]; weight_hh: [H, H]; biases: [H] or
    None. Returns {"pre", "h"}, each [batch, pos, H]. CPU, float32 / float64, no autograd."""
    from .rnn_recording import _bias, _input_projection

    module, batch, length, hidden = _check_rnn_call(
        "compiled_elman_forward_recording", "an Elman RNN", 1, x, {"h0": h0}, weight_ih, weight_hh,
        (bias_ih, bias_hh))
    dtype = x.dtype
    with torch.no_grad():
        weight_ih, weight_hh = weight_ih.to(dtype), weight_hh.to(dtype).contiguous()
        bias = _bias(*(None if b is None else b.to(dtype) for b in (bias_ih, bias_hh)))
        pres = _input_projection(x.contiguous(), weight_ih, bias)  # [batch, pos, H], becomes pre
        hiddens = recording_buffer((batch, length, hidden), dtype, "cpu")  # [batch, pos, H]
        weight_t, packed = _recurrent_operands(weight_hh, batch, length, hidden)
        h0 = h0.detach().to(dtype).contiguous()
        if length > 0 and batch > 0:
            module.elman_recording_forward(pres, h0, weight_hh, packed, weight_t, hiddens)
    return {"pre": pres, "h": hiddens}


def _scan_dtype(name: str, tensors: list[Tensor]) -> torch.dtype:
    """The promoted dtype of `tensors` (float32 at least), checked to be a CPU float32 / float64."""
    dtype = torch.float32
    for t in tensors:
        if t.device.type != "cpu":
            raise ValueError(f"{name} runs on CPU tensors only, got {t.device}")
        dtype = torch.promote_types(dtype, t.dtype)
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"{name} supports float32 and float64, got {dtype}")
    return dtype


def _check_scan_shapes(name: str, tensors: dict[str, Tensor], h0: Tensor | None) -> tuple[int, int, int]:
    """(batch, pos, d) shared by every [batch, pos, d] tensor in `tensors`; h0 must be [batch, d]."""
    first = next(iter(tensors.values()))
    if first.dim() != 3 or any(t.shape != first.shape for t in tensors.values()):
        shapes = ", ".join(f"{k} {tuple(t.shape)}" for k, t in tensors.items())
        raise ValueError(f"{name} needs equal [batch, pos, d] shapes, got {shapes}")
    batch, length, d = first.shape
    if h0 is not None and h0.shape != (batch, d):
        raise ValueError(f"h0 must be [batch, d] = {(batch, d)}, got {tuple(h0.shape)}")
    return batch, length, d


def _consumable(t: Tensor, dtype: torch.dtype) -> Tensor:
    """`t` itself when the kernel may write over it (contiguous, of `dtype`), else a fresh copy."""
    t = t.detach()
    return t if t.dtype == dtype and t.is_contiguous() else t.to(dtype).contiguous()


def compiled_linear_scan(a: Tensor, b: Tensor, h0: Tensor | None = None) -> Tensor:
    """h_t = a_t ⊙ h_{t-1} + b_t for t = 0..pos-1 from h_{-1} = h0 (zeros if None), in one pass over
    memory: the same numbers as `linear_scan_reference` (the loop's own arithmetic, in order).

    Each task owns a batch row and a block of channels (whole rows when there are as many rows as
    threads), keeps its slice of h in L1 and walks the positions, vectorised over channels; every h_t
    is written once, into a `recording_buffer`. a, b: [batch, pos, d]; h0: [batch, d] or None.
    Returns h [batch, pos, d] in the promoted dtype (float32 or float64). CPU, no autograd; raises
    RuntimeError if the kernels are unavailable."""
    module = _load()
    if module is None:
        raise RuntimeError("compiled CPU kernels are unavailable (see compiled_kernels_available())")
    batch, length, d = _check_scan_shapes("compiled_linear_scan", {"a": a, "b": b}, h0)
    dtype = _scan_dtype("compiled_linear_scan", [a, b] + ([h0] if h0 is not None else []))
    a, b = (t.detach().to(dtype).contiguous() for t in (a, b))
    h0 = None if h0 is None else h0.detach().to(dtype).contiguous()
    out = recording_buffer((batch, length, d), dtype, "cpu")  # [batch, pos, d]
    if out.numel() > 0:
        module.linear_scan_forward(a, b, h0, out)
    return out


def compiled_mingru_gates_scan(pre_z: Tensor, pre_h: Tensor, h0: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """minGRU's gates and recurrence in one pass (Feng et al. 2024): z = σ(pre_z), h̃ = g(pre_h)
    (g(v) = v + ½ for v ≥ 0, σ(v) below), h_t = (1 − z_t) ⊙ h_{t−1} + z_t ⊙ h̃_t from h0 (zeros if None).

    Reads the two pre-activations once and writes z, h̃ and h once: z over pre_z and h̃ over pre_h
    when those are contiguous tensors of the promoted dtype (the caller's fresh projection outputs,
    which it must not read again), else over copies. pre_z, pre_h: [batch, pos, d]; h0: [batch, d]
    or None. Returns (z, h_tilde, h), each [batch, pos, d]. CPU, float32 / float64, no autograd."""
    return _gates_scan("compiled_mingru_gates_scan", {"pre_z": pre_z, "pre_h": pre_h}, h0)


def compiled_minlstm_gates_scan(
    pre_f: Tensor, pre_i: Tensor, pre_h: Tensor, h0: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """minLSTM's gates and recurrence in one pass: f = σ(pre_f), i = σ(pre_i), normalised to
    f' = f / (f + i), i' = i / (f + i); h̃ = g(pre_h); h_t = f'_t ⊙ h_{t−1} + i'_t ⊙ h̃_t from h0.

    Like `compiled_mingru_gates_scan`, f', i', h̃ are written over the pre-activations (when
    contiguous and of the promoted dtype, else over copies). Returns (f, i, h_tilde, h), each
    [batch, pos, d]. CPU, float32 / float64, no autograd."""
    return _gates_scan("compiled_minlstm_gates_scan", {"pre_f": pre_f, "pre_i": pre_i, "pre_h": pre_h}, h0)


def _gates_scan(name: str, pre: dict[str, Tensor], h0: Tensor | None) -> tuple[Tensor, ...]:
    """Shared body of the minGRU / minLSTM gates + scan wrappers: checks, then one kernel call."""
    module = _load()
    if module is None:
        raise RuntimeError("compiled CPU kernels are unavailable (see compiled_kernels_available())")
    batch, length, d = _check_scan_shapes(name, pre, h0)
    dtype = _scan_dtype(name, list(pre.values()) + ([h0] if h0 is not None else []))
    gates = [_consumable(t, dtype) for t in pre.values()]  # [batch, pos, d] each, overwritten
    spans = sorted((t.data_ptr(), t.data_ptr() + t.numel() * t.element_size()) for t in gates)
    if any(start < end for (_, end), (start, _) in zip(spans, spans[1:], strict=False)):
        raise ValueError(f"{name}: the pre-activations must not share memory (they are overwritten)")
    h0 = None if h0 is None else h0.detach().to(dtype).contiguous()
    out = recording_buffer((batch, length, d), dtype, "cpu")  # [batch, pos, d]
    if out.numel() > 0:
        pre_a, pre_i, pre_h = (gates[0], None, gates[1]) if len(gates) == 2 else gates
        module.minimal_gates_scan_forward(pre_a, pre_h, pre_i, h0, out)
    return (*gates, out)
