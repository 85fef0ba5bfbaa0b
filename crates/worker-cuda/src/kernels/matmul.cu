// Matrix products against weights in their GGUF encoding.
//
// `mm_small`: out[t][r] = W[r] . x[t] for up to MM_MAX_T tokens at once. One
// warp per weight row; each lane decodes 32-value groups of the row and
// dots them with every token's activations, so the weights are read once per
// call. This is the decode path (one token per sequence) and the path for
// small batches; it is bound by the weight bytes read.
//
// `dq_rows`: rows of W decoded to f32, for large batches, which the host
// then multiplies with cuBLAS.

#define MM_MAX_T 8

// The end of a warp-per-row product: each token's lane sums added across
// the warp, written by lane 0.
__device__ __forceinline__ void mm_store(const float* acc, int n, int lane, float* out, int rows,
                                         int r) {
#pragma unroll
    for (int t = 0; t < MM_MAX_T; t++) {
        if (t < n) {
            float s = warp_sum(acc[t]);
            if (lane == 0) out[(long long)t * rows + r] = s;
        }
    }
}

extern "C" __global__ void mm_small(int ty, const u8* __restrict__ w, long long row_bytes,
                                    int rows, int cols, const float* __restrict__ x, int n,
                                    float* __restrict__ out) {
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int r = blockIdx.x * (blockDim.x >> 5) + warp;
    if (r >= rows) return;
    const u8* row = w + (long long)r * row_bytes;
    int groups = cols >> 5;
    float acc[MM_MAX_T];
#pragma unroll
    for (int t = 0; t < MM_MAX_T; t++) acc[t] = 0.0f;
    float y[32];
    for (int g = lane; g < groups; g += 32) {
        dq32(ty, row, g, y);
#pragma unroll
        for (int t = 0; t < MM_MAX_T; t++) {
            if (t < n) {
                const float4* xs = (const float4*)(x + (long long)t * cols + g * 32);
                float a = 0.0f;
#pragma unroll
                for (int i = 0; i < 8; i++) {
                    float4 v = xs[i];
                    a += y[4 * i] * v.x + y[4 * i + 1] * v.y + y[4 * i + 2] * v.z +
                         y[4 * i + 3] * v.w;
                }
                acc[t] += a;
            }
        }
    }
    mm_store(acc, n, lane, out, rows, r);
}

// Decodes rows [r0, r0 + nrows) of W into `out` (nrows x cols, row-major).
extern "C" __global__ void dq_rows(int ty, const u8* __restrict__ w, long long row_bytes, int r0,
                                   int nrows, int cols, float* __restrict__ out) {
    long long groups = cols >> 5;
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)nrows * groups) return;
    int r = (int)(i / groups), g = (int)(i % groups);
    float y[32];
    dq32(ty, w + (long long)(r0 + r) * row_bytes, g, y);
    float* o = out + (long long)r * cols + g * 32;
#pragma unroll
    for (int j = 0; j < 32; j++) o[j] = y[j];
}

// Embedding lookup: out[i] = W[ids[i]], decoded.
extern "C" __global__ void get_rows(int ty, const u8* __restrict__ w, long long row_bytes,
                                    int cols, const int* __restrict__ ids, int n,
                                    float* __restrict__ out) {
    long long groups = cols >> 5;
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)n * groups) return;
    int t = (int)(i / groups), g = (int)(i % groups);
    float y[32];
    dq32(ty, w + (long long)ids[t] * row_bytes, g, y);
    float* o = out + (long long)t * cols + g * 32;
#pragma unroll
    for (int j = 0; j < 32; j++) o[j] = y[j];
}

// ---- Decode with 8-bit activations (LLORCH_CUDA_DECODE=q8).
//
// `quantize_q8`: each 32 activations become int8 values with one scale
// (max |x| / 127, values rounded to nearest even) and their sum, one warp
// per 32. `mm_q8` is then `mm_small` with the weights decoded to 8-bit
// integers (`dq32_q8`) and four products per `__dp4a`: per group and token
// `da * (d0 * Σ q·a [first 16] + d1 * Σ q·a [last 16] + m * Σ a)`.

__device__ __forceinline__ int warp_sum_i(int v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

extern "C" __global__ void quantize_q8(const float* __restrict__ x, long long n_groups,
                                       i8* __restrict__ xq, float* __restrict__ xd,
                                       int* __restrict__ xs) {
    long long grp = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    int lane = threadIdx.x & 31;
    // Whole warps leave together: `grp` is the same across a warp.
    if (grp >= n_groups) return;
    float v = x[grp * 32 + lane];
    float amax = warp_max(fabsf(v));
    float d = amax / 127.0f;
    // As the CPU backend (and ggml) round: 127 / max, not 1 / d.
    float id = amax != 0.0f ? 127.0f / amax : 0.0f;
    int q = (int)rintf(v * id);
    xq[grp * 32 + lane] = (i8)q;
    int s = warp_sum_i(q);
    if (lane == 0) {
        xd[grp] = d;
        xs[grp] = s;
    }
}

// Four signed byte products added to `c`: `__dp4a` from compute
// capability 6.1 on (and in the host emulation), by hand before it.
__device__ __forceinline__ int dot4_i8(int a, int b, int c) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 610
    return __dp4a(a, b, c);
#else
    for (int i = 0; i < 4; i++) c += (int)(i8)(a >> (8 * i)) * (int)(i8)(b >> (8 * i));
    return c;
#endif
}

extern "C" __global__ void mm_q8(int ty, const u8* __restrict__ w, long long row_bytes, int rows,
                                 int cols, const i8* __restrict__ xq, const float* __restrict__ xd,
                                 const int* __restrict__ xs, int n, float* __restrict__ out) {
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int r = blockIdx.x * (blockDim.x >> 5) + warp;
    if (r >= rows) return;
    const u8* row = w + (long long)r * row_bytes;
    int groups = cols >> 5;
    float acc[MM_MAX_T];
#pragma unroll
    for (int t = 0; t < MM_MAX_T; t++) acc[t] = 0.0f;
    for (int g = lane; g < groups; g += 32) {
        int q[8];
        float d0, d1, m;
        dq32_q8(ty, row, g, q, &d0, &d1, &m);
#pragma unroll
        for (int t = 0; t < MM_MAX_T; t++) {
            if (t < n) {
                long long gi = (long long)t * groups + g;
                const int* a = (const int*)(xq + gi * 32);
                int s0 = 0, s1 = 0;
#pragma unroll
                for (int k = 0; k < 4; k++) {
                    s0 = dot4_i8(q[k], a[k], s0);
                    s1 = dot4_i8(q[k + 4], a[k + 4], s1);
                }
                acc[t] += xd[gi] * (d0 * (float)s0 + d1 * (float)s1 + m * (float)xs[gi]);
            }
        }
    }
    mm_store(acc, n, lane, out, rows, r);
}
