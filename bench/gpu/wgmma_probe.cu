// bench/gpu/wgmma_probe.cu — which shared-memory layouts Hopper's warpgroup MMA (wgmma,
// sm_90a) reads as which matrix, measured on the card instead of assumed. A wgmma attention
// (the step RESULTS 4.9 names for the 50% MFU goal) needs two operand layouts in shared
// memory without swizzling, and the PTX ISA's words for their descriptor fields (the
// "leading" and "stride" byte offsets, LBO and SBO) are easy to misread:
//   K-major B  (S = Q K^T: K rows as stored, [key][d], d contiguous)      trans-b = 0
//   MN-major B (O = P V:   V rows as stored, [key][d], n = d contiguous)  trans-b = 1
// The probe runs one wgmma.mma_async m64n16k16 (bf16 in, fp32 out) per case: A (64 x 16)
// from registers, as the mma.sync m16n8k16 A fragment of warp w for rows 16w..16w+15; B
// (16 x 16) from shared memory as four 8 x 8 "core matrices" of 16-byte rows, core (r, c) at
// r * stride_r + c * stride_c bytes, with the rows of a core running along N and its 16
// bytes along K for K-major B, and the other way round for MN-major B. Each layout is
// tried with LBO and SBO both ways; the case whose product equals the CPU's exactly tells
// which field is which. Two first cases check the A and D fragment layouts and the
// instruction plumbing whatever the descriptor means: every B element 1, and every 8 x 8
// core matrix the same (K-major: its row i, along N, all i + 1), so that any reading of LBO
// and SBO gives B[k][n] = n % 8 + 1 and the columns of D differ within each n8 tile.
//
//   wgmma_probe    one line per case; exit 0 if the fragments and every layout had a match,
//                  and the reading the attention kernels use (wgmma.cuh) was the match
//
// Small integers in A and B keep every product exact in fp32. Needs an sm_90 GPU (exit 2
// otherwise); built for sm_90a only (bench/gpu/CMakeLists.txt).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <vector>

namespace {

constexpr int kM = 64, kN = 16, kK = 16;
constexpr int kSmemBytes = 2048;  // room for strides up to 512 bytes

// 64-bit shared-memory matrix descriptor (PTX ISA, "Matrix Descriptor Format"): start
// address, LBO and SBO in 16-byte units; bits 62-63 = 0: no swizzle; base offset 0.
__device__ uint64_t make_descriptor(const void* smem, int lbo, int sbo) {
  const uint64_t address = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  return ((address & 0x3FFFF) >> 4) | ((static_cast<uint64_t>(lbo >> 4) & 0x3FFF) << 16) |
         ((static_cast<uint64_t>(sbo >> 4) & 0x3FFF) << 32);
}

// d = a b with b at `descriptor`; d is this thread's 8 accumulators (scale-d = 0: D is
// written, not added to).
template <int kTransB>
__device__ void wgmma_m64n16k16(float (&d)[8], const uint32_t (&a)[4], uint64_t descriptor) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "setp.ne.b32 p, %14, 0;\n"
      "wgmma.fence.sync.aligned;\n"
      "wgmma.mma_async.sync.aligned.m64n16k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7}, {%8, %9, %10, %11}, %12, p, 1, 1, %13;\n"
      "wgmma.commit_group.sync.aligned;\n"
      "wgmma.wait_group.sync.aligned 0;\n"
      "}\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3]), "=f"(d[4]), "=f"(d[5]), "=f"(d[6]),
        "=f"(d[7])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(descriptor), "n"(kTransB), "r"(0));
#else
  (void)a;
  (void)descriptor;
  for (float& x : d) x = NAN;
  __trap();  // wgmma needs sm_90a
#endif
}

__device__ uint32_t pack(__nv_bfloat16 lo, __nv_bfloat16 hi) {
  return static_cast<uint32_t>(__bfloat16_as_ushort(lo)) |
         (static_cast<uint32_t>(__bfloat16_as_ushort(hi)) << 16);
}

// One warpgroup (128 threads). a: 64 x 16 row-major; b: 16 x 16 row-major (b[k][n]);
// d: 64 x 16 row-major. fill: 0 = b in the layout of the strides; 1 = every element of the
// shared buffer bf16 1; 2 = every 128-byte core the same, its 16-byte row i all i + 1.
template <int kTransB>
__global__ void probe_kernel(const __nv_bfloat16* a, const __nv_bfloat16* b, float* d, int stride_r,
                             int stride_c, int lbo, int sbo, int fill) {
  __shared__ __align__(1024) __nv_bfloat16 smem[kSmemBytes / 2];
  const int tid = threadIdx.x;
  for (int i = tid; i < kSmemBytes / 2; i += blockDim.x) {
    const float value = fill == 1 ? 1.f : fill == 2 ? static_cast<float>((i % 64) / 8 + 1) : 0.f;
    smem[i] = __float2bfloat16(value);
  }
  __syncthreads();
  if (fill == 0) {
    // Core (r, c), row i, element j: K-major: n = 8r + i, k = 8c + j; MN-major: k = 8r + i,
    // n = 8c + j.
    for (int e = tid; e < kK * kN; e += blockDim.x) {
      const int core = e / 64, r = core / 2, c = core % 2, i = (e % 64) / 8, j = e % 8;
      const int n = kTransB ? 8 * c + j : 8 * r + i, k = kTransB ? 8 * r + i : 8 * c + j;
      const int byte = r * stride_r + c * stride_c + i * 16 + j * 2;
      smem[byte / 2] = b[k * kN + n];
    }
  }
  // Generic-proxy stores, then the async proxy (wgmma) reads: fence between them.
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
  __syncthreads();

  const int warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
  const int row = 16 * warp + g;
  auto at = [&](int m, int k) { return a[m * kK + k]; };
  const uint32_t frag[4] = {pack(at(row, 2 * t), at(row, 2 * t + 1)),
                            pack(at(row + 8, 2 * t), at(row + 8, 2 * t + 1)),
                            pack(at(row, 2 * t + 8), at(row, 2 * t + 9)),
                            pack(at(row + 8, 2 * t + 8), at(row + 8, 2 * t + 9))};
  float acc[8];
  wgmma_m64n16k16<kTransB>(acc, frag, make_descriptor(smem, lbo, sbo));
  // Accumulators as mma.sync's C fragment, one n8 tile after the other.
  for (int tile = 0; tile < 2; ++tile) {
    const int col = 8 * tile + 2 * t;
    d[row * kN + col] = acc[4 * tile + 0];
    d[row * kN + col + 1] = acc[4 * tile + 1];
    d[(row + 8) * kN + col] = acc[4 * tile + 2];
    d[(row + 8) * kN + col + 1] = acc[4 * tile + 3];
  }
}

bool check(cudaError_t status, const char* what) {
  if (status == cudaSuccess) return true;
  std::printf("wgmma probe: %s: %s\n", what, cudaGetErrorString(status));
  return false;
}

struct Case {
  const char* name;
  int trans_b, stride_r, stride_c, lbo, sbo, fill;  // fill: as probe_kernel's
  bool kernels_reading;  // LBO along K, SBO along N: what kernels/cuda/wgmma.cuh assumes
};

}  // namespace

int main() {
  int device = 0, major = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess ||
      major != 9) {
    std::printf("wgmma probe: SKIPPED (needs an sm_90 GPU)\n");
    return 2;
  }
  std::vector<float> a(kM * kK), b(kK * kN), want(kM * kN);
  for (int i = 0; i < kM * kK; ++i) a[i] = static_cast<float>((i * 7) % 5 - 2);
  for (int i = 0; i < kK * kN; ++i) b[i] = static_cast<float>((i * 3) % 7 - 3);
  std::vector<__nv_bfloat16> a16(a.size()), b16(b.size());
  for (size_t i = 0; i < a.size(); ++i) a16[i] = __float2bfloat16(a[i]);
  for (size_t i = 0; i < b.size(); ++i) b16[i] = __float2bfloat16(b[i]);
  __nv_bfloat16 *a_dev = nullptr, *b_dev = nullptr;
  float* d_dev = nullptr;
  if (!check(cudaMalloc(&a_dev, a16.size() * 2), "cudaMalloc") ||
      !check(cudaMalloc(&b_dev, b16.size() * 2), "cudaMalloc") ||
      !check(cudaMalloc(&d_dev, want.size() * 4), "cudaMalloc")) {
    return 1;
  }
  cudaMemcpy(a_dev, a16.data(), a16.size() * 2, cudaMemcpyHostToDevice);
  cudaMemcpy(b_dev, b16.data(), b16.size() * 2, cudaMemcpyHostToDevice);

  // Each layout twice, LBO and SBO swapped (for K-major the first of each pair is the PTX
  // ISA's reading: LBO = the K-direction core stride, SBO = the N-direction one).
  const Case cases[] = {
      {"all-ones B (A and D fragments)", 0, 128, 256, 128, 256, 1, false},
      {"B[k][n] = n % 8 + 1 (D's columns)", 0, 128, 256, 128, 256, 2, false},
      {"K-major B, K cores 128 B apart, N cores 256 B", 0, 256, 128, 128, 256, 0, true},
      {"K-major B, K cores 128 B apart, N cores 256 B", 0, 256, 128, 256, 128, 0, false},
      {"K-major B, K cores 512 B apart, N cores 128 B", 0, 128, 512, 512, 128, 0, true},
      {"K-major B, K cores 512 B apart, N cores 128 B", 0, 128, 512, 128, 512, 0, false},
      {"MN-major B, N cores 128 B apart, K cores 256 B", 1, 256, 128, 128, 256, 0, false},
      {"MN-major B, N cores 128 B apart, K cores 256 B", 1, 256, 128, 256, 128, 0, true},
      {"MN-major B, N cores 512 B apart, K cores 128 B", 1, 128, 512, 512, 128, 0, false},
      {"MN-major B, N cores 512 B apart, K cores 128 B", 1, 128, 512, 128, 512, 0, true},
  };
  int layouts_matched = 0, layouts = 0, status = 0, kernels_cases = 0, kernels_exact = 0;
  bool previous_matched = false, first_of_pair = false;
  for (size_t index = 0; index < sizeof(cases) / sizeof(cases[0]); ++index) {
    const Case& c = cases[index];
    for (int m = 0; m < kM; ++m) {
      for (int n = 0; n < kN; ++n) {
        double sum = 0;
        for (int k = 0; k < kK; ++k) {
          const double bkn = c.fill == 1 ? 1.0 : c.fill == 2 ? n % 8 + 1 : b[k * kN + n];
          sum += a[m * kK + k] * bkn;
        }
        want[m * kN + n] = static_cast<float>(sum);
      }
    }
    cudaMemset(d_dev, 0xFF, want.size() * 4);  // NaN: an unwritten element fails
    if (c.trans_b) {
      probe_kernel<1>
          <<<1, 128>>>(a_dev, b_dev, d_dev, c.stride_r, c.stride_c, c.lbo, c.sbo, c.fill);
    } else {
      probe_kernel<0>
          <<<1, 128>>>(a_dev, b_dev, d_dev, c.stride_r, c.stride_c, c.lbo, c.sbo, c.fill);
    }
    if (!check(cudaGetLastError(), c.name) || !check(cudaDeviceSynchronize(), c.name)) return 1;
    std::vector<float> got(want.size());
    cudaMemcpy(got.data(), d_dev, got.size() * 4, cudaMemcpyDeviceToHost);
    int wrong = 0, first = -1;
    for (size_t i = 0; i < got.size(); ++i) {
      if (!(got[i] == want[i])) {
        if (first < 0) first = static_cast<int>(i);
        ++wrong;
      }
    }
    std::printf("wgmma probe: %-48s LBO %3d SBO %3d: ", c.name, c.lbo, c.sbo);
    if (wrong == 0) {
      std::printf("exact\n");
    } else {
      std::printf("%d of %d wrong (first D[%d][%d] = %g, want %g)\n", wrong, kM * kN, first / kN,
                  first % kN, got[first], want[first]);
    }
    if (c.fill != 0) {
      if (wrong != 0) status = 1;  // the fragment layouts themselves are off
      continue;
    }
    if (c.kernels_reading) {
      ++kernels_cases;
      if (wrong == 0) ++kernels_exact;
    }
    // Cases come in pairs (the same layout, LBO and SBO swapped): one of them should match.
    first_of_pair = !first_of_pair;
    if (first_of_pair) {
      previous_matched = wrong == 0;
    } else {
      ++layouts;
      if (previous_matched || wrong == 0) ++layouts_matched;
    }
  }
  std::printf("wgmma probe: %d of %d layouts matched by one of the two readings\n", layouts_matched,
              layouts);
  std::printf(
      "wgmma probe: the reading of kernels/cuda/wgmma.cuh (LBO along K, SBO along N, both "
      "majors): %d of %d cases exact: %s\n",
      kernels_exact, kernels_cases, kernels_exact == kernels_cases ? "RIGHT" : "WRONG");
  cudaFree(a_dev);
  cudaFree(b_dev);
  cudaFree(d_dev);
  return status != 0 || layouts_matched != layouts || kernels_exact != kernels_cases ? 1 : 0;
}
