// Shared helpers of the llorch CUDA kernels. Compiled with NVRTC at run
// time, so no system header is included: the few types and conversions the
// kernels need are defined here. The same sources also compile as host C++
// on top of tests/host/cuda_host.h, which is how CI checks them without a
// GPU (tests/emulated.rs).

typedef unsigned char u8;
typedef signed char i8;
typedef unsigned short u16;
typedef unsigned int u32;

// Weight type codes, as the host passes them (`type_code` in src/weight.rs).
#define TY_F32 0
#define TY_F16 1
#define TY_BF16 2
#define TY_Q4_0 3
#define TY_Q4_1 4
#define TY_Q5_0 5
#define TY_Q5_1 6
#define TY_Q8_0 7
#define TY_Q4_K 8
#define TY_Q5_K 9
#define TY_Q6_K 10
#define TY_Q2_K 11
#define TY_Q3_K 12
#define TY_IQ4_NL 13
#define TY_IQ4_XS 14
#define TY_MXFP4 15

// Half-precision conversions (the host emulation of the tests brings its own).
#ifndef LLORCH_HOST_HALF
__device__ __forceinline__ float h2f(u16 h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

__device__ __forceinline__ u16 f2h(float f) {
    u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}
#endif

// The dynamic shared memory of a launch (the host emulation defines its own).
#ifndef LLORCH_DYNAMIC_SHARED
#define LLORCH_DYNAMIC_SHARED(T, name) extern __shared__ T name[]
#endif

// Rounds through f16 and back, as the CPU backend does where ggml computes
// in half precision.
__device__ __forceinline__ float round_h(float f) { return h2f(f2h(f)); }

// A little-endian f16 at any byte offset (block fields are 2-aligned only
// relative to the block, so read bytewise).
__device__ __forceinline__ float ld_h(const u8* p) {
    return h2f((u16)p[0] | ((u16)p[1] << 8));
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

__device__ __forceinline__ double warp_sum_d(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Block-wide reductions; `red` holds one value per warp (32 entries). Every
// thread of the block must call them, and every thread gets the result.
__device__ float block_sum(float v, float* red) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) red[warp] = v;
    __syncthreads();
    v = lane < nw ? red[lane] : 0.0f;
    return warp_sum(v);
}

__device__ float block_max(float v, float* red) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) red[warp] = v;
    __syncthreads();
    v = lane < nw ? red[lane] : -3.402823466e38f;
    return warp_max(v);
}

__device__ double block_sum_d(double v, double* red) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = warp_sum_d(v);
    __syncthreads();
    if (lane == 0) red[warp] = v;
    __syncthreads();
    v = lane < nw ? red[lane] : 0.0;
    return warp_sum_d(v);
}
