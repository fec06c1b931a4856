// tests/simt/simt_runtime.h — what the emulated CUDA runtime (cuda_runtime.cpp) and the
// scheduler (simt.cpp) share: launch errors, streams, per-kernel shared-memory limits,
// and the device-memory registry the emulated cuBLASLt checks its pointers against.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <functional>
#include <string>

namespace accum::simt {

// The error the next cudaGetLastError() returns (a failed launch), with why.
void set_launch_error(cudaError_t error, const std::string& why);
// Aborts unless `stream` is null (the default stream) or a live cudaStreamCreate* stream.
void check_stream(cudaStream_t stream);
// cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes).
void set_dynamic_shared_limit(const void* kernel, size_t bytes);
size_t max_dynamic_shared_opt_in();
// Aborts, naming `what`, unless [ptr, ptr + bytes) lies inside one cudaMalloc allocation.
void check_device_range(const void* ptr, size_t bytes, const char* what);
// Aborts if anything wrote past the end of an allocation (its guard bytes changed).
void check_guards();
// What a GPU host would wait for, counted since the process started: stream and device
// synchronizations, event synchronizations, device->host copies, and host->device copies
// from pageable memory (the driver may drain the stream for those; pinned memory is
// what cudaMallocHost returned). Lets a test check that a code path never waits.
struct HostWaits {
  long stream_syncs = 0, event_syncs = 0, device_to_host = 0, pageable_to_device = 0;
};
HostWaits host_waits();

// Stream capture (cudaStreamBeginCapture .. cudaStreamEndCapture, one capture at a time):
// work queued on the capturing stream is recorded into the graph, with its arguments as
// they are now, instead of run; cudaGraphLaunch runs the recorded work in order. A stream
// that waits for an event recorded on the capturing stream joins the capture (a fork); its
// work is held back and enters the graph where the capturing stream waits for an event
// recorded after it (a join), so it runs as late as the graph allows and a missing join
// changes the results. A fork not joined back fails cudaStreamEndCapture with
// cudaErrorStreamCaptureUnjoined, as on a GPU. Returns true when `op` was recorded or held
// (the caller then does nothing else).
bool capture_if_capturing(cudaStream_t stream, std::function<void()> op);
// Aborts, naming `what`, while a stream captures: what a real capture refuses (a wait for
// the device, an allocation, work on another stream) or what the emulator does not record.
void refuse_while_capturing(const char* what);

// A collective that never completes (the emulated NCCL's test-only fault, nccl.cpp): work
// queued on `stream` from now on never finishes. Events recorded on it stay not ready, a
// stream made to wait for one of them hangs as well, and a host wait for any of them aborts
// the process naming it (a GPU would wait for ever). release_hung_streams(): the
// communicator was aborted, which ends its kernels: everything hung completes (and stderr
// says how many streams were released, so a test sees the abort).
void hang_stream(cudaStream_t stream);
void release_hung_streams();

// How many cublasLtMatmul calls ran with `epilogue` (a cublasLtEpilogue_t) so far: lets a
// test see that a fused path was taken rather than its fallback.
int matmul_calls_with_epilogue(int epilogue);

}  // namespace accum::simt
