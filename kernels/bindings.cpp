// Python bindings of the compiled CPU kernels: one module, the functions declared here and defined
// in selective_scan.cpp, rnn_recording.cpp and linear_scan.cpp.
#include <torch/extension.h>

void selective_scan_forward(torch::Tensor u, torch::Tensor delta, torch::Tensor A, torch::Tensor B,
                            torch::Tensor C, torch::Tensor D, c10::optional<torch::Tensor> state0,
                            torch::Tensor y, torch::Tensor states, torch::Tensor last,
                            bool write_states, int64_t groups);
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

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("selective_scan_forward", &selective_scan_forward);
  m.def("causal_conv_silu_forward", &causal_conv_silu_forward);
  m.def("lstm_recording_forward", &lstm_recording_forward);
  m.def("gru_recording_forward", &gru_recording_forward);
  m.def("linear_scan_forward", &linear_scan_forward);
  m.def("minimal_gates_scan_forward", &minimal_gates_scan_forward);
  m.def("elman_recording_forward", &elman_recording_forward);
}
