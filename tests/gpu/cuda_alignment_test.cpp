// tests/gpu/cuda_alignment_test.cpp — every op with a 16-byte vector path, given views that
// start one element past a 16-byte boundary (as a row of an odd-width matrix does: GPT-2's
// 50257-wide logits, unpadded), takes its element-wise path and gives the values the aligned
// views give. A GPU faults on a misaligned vector access; x86 does not, so on the emulator
// such an access is caught by its check (tests/simt, ACCUM_VECTOR_ACCESS), which makes a
// launcher that forgets an alignment test fail here.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tests/gpu/op_harness.h"

namespace accum::kernels::gpu_testing {
namespace {

// `values` as activations `shift` elements past the start of a fresh (aligned) allocation.
struct ActView {
  Buffer buffer;
  void* ptr;
};
ActView act_view(Backend& be, const std::vector<float>& values, size_t shift) {
  const Buffer staging = upload_f32(be, values);
  Buffer buffer(be, (values.size() + 8) * be.act_bytes());
  void* ptr = static_cast<char*>(buffer.get()) + shift * be.act_bytes();
  be.f32_to_act(ptr, staging.f32(), values.size());
  return {std::move(buffer), ptr};
}

// Every op whose CUDA launcher chooses a Packed128 path by alignment, on views `shift`
// elements off (C, V and the row strides are multiples of 8, so only the start decides).
Outputs run_ops(Backend& be, size_t shift) {
  const int N = 5, C = 64, V = 60, ld = 64;
  const size_t n = size_t(N) * C;
  const ActView x = act_view(be, random_bf16_values(n, 1), shift);
  const ActView y = act_view(be, random_bf16_values(n, 2), shift);
  const ActView weight = act_view(be, random_bf16_values(C, 3, 0.1f, 1.f), shift);
  const ActView bias = act_view(be, random_bf16_values(C, 4), shift);
  const ActView out = act_view(be, std::vector<float>(n, 0.f), shift);
  Outputs outputs;

  be.gelu_forward(out.ptr, x.ptr, n);
  outputs["gelu"] = download_act(be, out.ptr, n);
  be.residual_forward(out.ptr, x.ptr, y.ptr, n);
  outputs["residual"] = download_act(be, out.ptr, n);

  Buffer mean(be, N * sizeof(float)), rstd(be, N * sizeof(float));
  be.layernorm_forward(out.ptr, mean.f32(), rstd.f32(), x.ptr, weight.ptr, bias.ptr, N, C);
  outputs["layernorm"] = download_act(be, out.ptr, n);
  Buffer dweight(be, C * sizeof(float)), dbias(be, C * sizeof(float));
  const ActView dinp = act_view(be, std::vector<float>(n, 0.f), shift);
  be.layernorm_backward(dinp.ptr, dweight.f32(), dbias.f32(), nullptr, y.ptr, x.ptr, weight.ptr,
                        mean.f32(), rstd.f32(), N, C, GradMode::kWrite);
  outputs["layernorm dinp"] = download_act(be, dinp.ptr, n);
  outputs["layernorm dweight"] = download_f32(be, dweight.get(), C);
  outputs["layernorm dbias"] = download_f32(be, dbias.get(), C);

  // The bias gradient's column sums over dout rows: y as (N, C) rows of ld = C.
  Buffer column_sums(be, C * sizeof(float));
  be.matmul_backward(nullptr, nullptr, column_sums.f32(), y.ptr, x.ptr, weight.ptr, N, C, C,
                     WeightLayout::kInOut, GradMode::kWrite);
  outputs["bias gradient"] = download_f32(be, column_sums.get(), C);

  const ActView logits = act_view(be, random_bf16_values(size_t(N) * ld, 5), shift);
  const Buffer targets = upload_ints(be, random_ints(N, V, 6));
  Buffer losses(be, N * sizeof(float));
  be.crossentropy_forward_backward(losses.f32(), logits.ptr, logits.ptr,
                                   static_cast<const int32_t*>(targets.get()), nullptr, 1.f, N, V,
                                   ld);
  outputs["losses"] = download_f32(be, losses.get(), N);
  outputs["dlogits"] = download_act(be, logits.ptr, size_t(N) * ld);

  const ActView wte = act_view(be, random_bf16_values(size_t(V) * C, 7), shift);
  const ActView wpe = act_view(be, random_bf16_values(n, 8), shift);
  const Buffer tokens = upload_ints(be, random_ints(N, V, 9));
  be.encoder_forward(out.ptr, static_cast<const int32_t*>(tokens.get()), wte.ptr, wpe.ptr, 1, N, C);
  outputs["encoder"] = download_act(be, out.ptr, n);
  return outputs;
}

TEST(CudaOps, VectorPathsFallBackForViewsOffA16ByteBoundary) {
  ACCUM_REQUIRE_CUDA();
  auto be = make_backend(DeviceKind::kCuda);
  const Outputs aligned = run_ops(*be, 0);
  const Outputs shifted = run_ops(*be, 1);  // 2 bytes past a boundary
  for (const auto& [name, want] : aligned) {
    ASSERT_EQ(shifted.at(name).size(), want.size()) << name;
    EXPECT_LT(rel_l2(shifted.at(name), want), kBf16Tolerance) << name;
  }
}

}  // namespace
}  // namespace accum::kernels::gpu_testing
