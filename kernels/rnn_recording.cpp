// Gate-writing recording loops for the LSTM, GRU and Elman RNN: one C++ loop over positions, the
// recurrent product per step, then one fused element-wise pass that writes every gate and state.
#include "cpu_common.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/stack.h>

namespace {

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
c10::optional<c10::OperatorHandle> packed_linear_op(const c10::optional<at::Tensor>& packed) {
  if (!packed.has_value()) return c10::nullopt;
  return c10::Dispatcher::singleton().findSchemaOrThrow("mkldnn::_linear_pointwise", "");
}

// The recurrent product h_prev W_hh^T (+ bias) as a fresh contiguous [batch, rows] tensor: through
// the packed oneDNN linear when there is one, else at::addmm / at::mm over w_t = W_hh^T [H, rows].
at::Tensor recurrent_product(const at::Tensor& h_prev, const c10::optional<at::Tensor>& packed,
                                const c10::optional<c10::OperatorHandle>& linear, const at::Tensor& w_t,
                                const c10::optional<at::Tensor>& bias) {
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
void lstm_recording_forward(at::Tensor gates, at::Tensor h0, at::Tensor c0, at::Tensor weight_hh,
                            c10::optional<at::Tensor> packed, c10::optional<at::Tensor> weight_hh_t,
                            at::Tensor cells, at::Tensor hiddens) {
  const int64_t batch = gates.size(0), length = gates.size(1), hidden = weight_hh.size(1);
  const at::Tensor w_t = weight_hh.t();  // [H, 4H]
  const c10::optional<c10::OperatorHandle> linear = packed_linear_op(packed);
  AT_DISPATCH_FLOATING_TYPES(gates.scalar_type(), "lstm_recording_forward", [&] {
    scalar_t* pg = gates.data_ptr<scalar_t>();
    scalar_t* pc = cells.data_ptr<scalar_t>();
    scalar_t* ph = hiddens.data_ptr<scalar_t>();
    const int64_t gs = length * 4 * hidden, hs = length * hidden;
    for (int64_t t = 0; t < length; ++t) {
      const at::Tensor h_prev = t == 0 ? h0 : hiddens.select(1, t - 1);  // [batch, H]
      at::Tensor rec;  // [batch, 4H] = h_{t-1} W_hh^T (undefined: added into the gates in place)
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
void gru_recording_forward(at::Tensor gates, at::Tensor h0, at::Tensor weight_hh,
                           c10::optional<at::Tensor> bias_hh, c10::optional<at::Tensor> packed,
                           c10::optional<at::Tensor> weight_hh_t, at::Tensor hiddens) {
  const int64_t batch = gates.size(0), length = gates.size(1), hidden = weight_hh.size(1);
  const at::Tensor w_t = weight_hh.t();  // [H, 3H]
  const c10::optional<c10::OperatorHandle> linear = packed_linear_op(packed);
  // [batch, 3H] scratch for the small-batch product, reset to b_hh (or zeros) each step
  const at::Tensor base = bias_hh.has_value() ? bias_hh->unsqueeze(0).expand({batch, 3 * hidden})
                                                 : at::zeros({batch, 3 * hidden}, gates.options());
  at::Tensor scratch = at::empty({batch, 3 * hidden}, gates.options());
  AT_DISPATCH_FLOATING_TYPES(gates.scalar_type(), "gru_recording_forward", [&] {
    scalar_t* pg = gates.data_ptr<scalar_t>();
    scalar_t* ph = hiddens.data_ptr<scalar_t>();
    const int64_t gs = length * 3 * hidden, hs = length * hidden;
    for (int64_t t = 0; t < length; ++t) {
      const at::Tensor h_prev = t == 0 ? h0 : hiddens.select(1, t - 1);  // [batch, H]
      const scalar_t* hp = t == 0 ? h0.data_ptr<scalar_t>() : ph + (t - 1) * hidden;
      const int64_t h_stride = t == 0 ? hidden : hs;
      at::Tensor rec;  // [batch, 3H] = h_{t-1} W_hh^T + b_hh
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
void elman_recording_forward(at::Tensor pres, at::Tensor h0, at::Tensor weight_hh,
                             c10::optional<at::Tensor> packed, c10::optional<at::Tensor> weight_hh_t,
                             at::Tensor hiddens) {
  const int64_t batch = pres.size(0), length = pres.size(1), hidden = weight_hh.size(1);
  const at::Tensor w_t = weight_hh.t();  // [H, H]
  const c10::optional<c10::OperatorHandle> linear = packed_linear_op(packed);
  AT_DISPATCH_FLOATING_TYPES(pres.scalar_type(), "elman_recording_forward", [&] {
    scalar_t* pp = pres.data_ptr<scalar_t>();
    scalar_t* ph = hiddens.data_ptr<scalar_t>();
    const int64_t hs = length * hidden;
    for (int64_t t = 0; t < length; ++t) {
      const scalar_t* hp = t == 0 ? h0.data_ptr<scalar_t>() : ph + (t - 1) * hidden;
      const int64_t h_stride = t == 0 ? hidden : hs;
      at::Tensor rec;  // [batch, H] = h_{t-1} W_hh^T (undefined: added into the pre-activations in place)
      if (weight_hh_t.has_value()) {
        const scalar_t* pw = weight_hh_t->data_ptr<scalar_t>();
        at::parallel_for(0, hidden, 256, [&](int64_t col0, int64_t col1) {
          small_batch_product<scalar_t>(pp + t * hidden, hs, hp, h_stride, pw, hidden, batch, hidden, col0, col1);
        });
      } else {
        const at::Tensor h_prev = t == 0 ? h0 : hiddens.select(1, t - 1);  // [batch, H]
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
