// kernels/cuda/device_peak.h — a GPU's dense bf16 tensor-core peak, for the MFU the trainer
// reports (StepMetrics.mfu) and bench/gpu's (gpt2_bench's peak_tflops, read by summarize.py).
#pragma once

#include <string>

namespace accum::kernels::cuda {

// TFLOP/s without sparsity for a CUDA device name (cudaDeviceProp::name), 0 when the card is
// not in the table. The most specific names are matched first ("H100 PCIe" before "H100").
double dense_bf16_peak_tflops(const std::string& device_name);

// $ACCUM_PEAK_TFLOPS when set (for a card the table lacks, or a clock-capped one), else the
// table's. Throws std::runtime_error naming the variable when it is not a positive number.
double peak_tflops_for(const std::string& device_name);

}  // namespace accum::kernels::cuda
