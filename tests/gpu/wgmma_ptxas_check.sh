#!/usr/bin/env bash
# tests/gpu/wgmma_ptxas_check.sh — the attention's wgmma kernels (kernels/cuda/attention_mma.cu,
# ACCUM_ATTENTION=wgmma) exist only in sm_90a code, which the product's default build
# (ACCUM_CUDA_ARCHS 80;90) does not make. This compiles the file for sm_90a as a lease does
# and checks what ptxas says of each of the three kernels: compiled, no spills, and no
# wgmma it had to serialize or fence itself (its "wgmma.mma_async instructions are
# serialized" warning, or its C7519 note that it injected a warpgroup.arrive because a
# register the tensor cores read was written after the batch's wgmma.fence).
#
# usage: wgmma_ptxas_check.sh NVCC REPO_ROOT WORK_DIR
set -euo pipefail
nvcc=$1 root=$2 work=$3
mkdir -p "$work"
log="$work/attention_mma_sm90a.ptxas.log"
"$nvcc" -I"$root" -O3 -DNDEBUG -std=c++17 --use_fast_math --expt-relaxed-constexpr \
  -gencode arch=compute_90a,code=sm_90a -Xptxas -v -x cu -c "$root/kernels/cuda/attention_mma.cu" \
  -o "$work/attention_mma_sm90a.o" > "$log" 2>&1 || { cat "$log"; echo "FAILED: nvcc for sm_90a"; exit 1; }
status=0
for kernel in attention_forward_wgmma_kernel attention_backward_dq_wgmma_kernel \
              attention_backward_dkdv_wgmma_kernel; do
  # ptxas prints "Compiling entry function 'NAME'", then its properties, the stack/spill line and the registers.
  info=$(grep -A3 "Compiling entry function '[^']*${kernel}" "$log" || true)
  if [[ -z $info ]]; then
    echo "FAILED: ptxas compiled no $kernel for sm_90a"; status=1; continue
  fi
  spills=$(grep -o '[0-9]* bytes spill stores' <<< "$info" | head -n1 || true)
  registers=$(grep -o 'Used [0-9]* registers' <<< "$info" | head -n1 || true)
  echo "$kernel: $registers, $spills"
  [[ $spills == "0 bytes spill stores" ]] || { echo "FAILED: $kernel spills"; status=1; }
  if grep -E "(injected|serialized).*${kernel}" "$log" > /dev/null; then
    grep -E "(injected|serialized).*${kernel}" "$log" | head -n 3
    echo "FAILED: ptxas had to fence or serialize the wgmma of $kernel"; status=1
  fi
done
exit "$status"
