// Every CUDA kernel of src/kernels, compiled for the host on top of the
// emulation in cuda_host.h, as a shared library that tests/emulated*.rs
// loads and drives.
#include "cuda_host.h"

#include "../../src/kernels/common.cuh"
#include "../../src/kernels/dequant.cuh"
#include "../../src/kernels/matmul.cu"
#include "../../src/kernels/ops.cu"
#include "../../src/kernels/attention.cu"
#include "../../src/kernels/recurrent.cu"
#include "../../src/kernels/delta_chunked.cu"
#include "../../src/kernels/select.cu"
