// Choosing tokens on the device, so only token ids (greedy) or a few
// candidates per row (top-k sampling) cross to the host instead of the
// vocabulary's logits.

// The index of the largest value of each row (greedy sampling on the device,
// so only token ids cross to the host); the lowest index among equals, as
// the host's argmax. One block per row.
extern "C" __global__ void argmax_rows(const float* x, int dim, int* out) {
    __shared__ float bv[32];
    __shared__ int bi[32];
    const float* row = x + (long long)blockIdx.x * dim;
    float best = -3.402823466e38f;
    int idx = 0x7fffffff;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        float v = row[i];
        if (v > best || (v == best && i < idx)) {
            best = v;
            idx = i;
        }
    }
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, best, o);
        int oi = __shfl_xor_sync(0xffffffffu, idx, o);
        if (ov > best || (ov == best && oi < idx)) {
            best = ov;
            idx = oi;
        }
    }
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    if (lane == 0) {
        bv[warp] = best;
        bi[warp] = idx;
    }
    __syncthreads();
    if (warp == 0) {
        best = lane < nw ? bv[lane] : -3.402823466e38f;
        idx = lane < nw ? bi[lane] : 0x7fffffff;
        for (int o = 16; o > 0; o >>= 1) {
            float ov = __shfl_xor_sync(0xffffffffu, best, o);
            int oi = __shfl_xor_sync(0xffffffffu, idx, o);
            if (ov > best || (ov == best && oi < idx)) {
                best = ov;
                idx = oi;
            }
        }
        if (lane == 0) out[blockIdx.x] = idx == 0x7fffffff ? 0 : idx;
    }
}

// Top-k: every value becomes a 64-bit key, its f32 order key (the order of
// Rust's total_cmp: negative values with every bit flipped, others with the
// sign bit set) above its inverted index, so that sorting keys downwards
// orders by value, largest first, and by the lowest index among equal
// values: the host's order exactly (worker_compute::select).
//
// A pass sorts chunks of TOPK_CHUNK keys in shared memory (one block per
// chunk and row, a bitonic network) and keeps the first k of each. The
// first pass reads the logits; later ones merge the kept keys of the
// previous pass, each shrinking the row by TOPK_CHUNK / k (16 or more, as
// k <= 256), until one chunk is left per row: its first k keys, in order.
#define TOPK_CHUNK 4096

typedef unsigned long long u64;

__device__ __forceinline__ u64 topk_key(float v, unsigned idx) {
    unsigned b = __float_as_uint(v);
    unsigned ord = b ^ ((unsigned)((int)b >> 31) | 0x80000000u);
    return ((u64)ord << 32) | (u64)(0xffffffffu - idx);
}

// Sorts the block's chunk downwards and writes its first k keys.
__device__ void topk_sort_chunk(u64* s, int k, u64* out) {
    for (int size = 2; size <= TOPK_CHUNK; size <<= 1) {
        for (int stride = size >> 1; stride > 0; stride >>= 1) {
            for (int t = threadIdx.x; t < TOPK_CHUNK / 2; t += blockDim.x) {
                int i = 2 * t - (t & (stride - 1));
                int j = i + stride;
                u64 a = s[i], b = s[j];
                // Downwards within runs whose `size` bit is clear, upwards
                // in the others; the last merge (size = TOPK_CHUNK) sorts
                // everything downwards.
                bool down = (i & size) == 0;
                if ((a < b) == down) {
                    s[i] = b;
                    s[j] = a;
                }
            }
            __syncthreads();
        }
    }
    for (int i = threadIdx.x; i < k; i += blockDim.x) out[i] = s[i];
}

// First pass: grid (chunks, rows); row r of x has n values; writes k keys
// per chunk to out[(r * chunks + c) * k].
extern "C" __global__ void topk_first(const float* x, int n, int k, u64* out) {
    __shared__ u64 s[TOPK_CHUNK];
    int c = blockIdx.x, r = blockIdx.y;
    const float* row = x + (long long)r * n;
    long long base = (long long)c * TOPK_CHUNK;
    for (int i = threadIdx.x; i < TOPK_CHUNK; i += blockDim.x) {
        long long g = base + i;
        // Padding sorts below every real key.
        s[i] = g < n ? topk_key(row[g], (unsigned)g) : 0ull;
    }
    __syncthreads();
    topk_sort_chunk(s, k, out + ((long long)r * gridDim.x + c) * k);
}

// Later passes: the same over n keys per row.
extern "C" __global__ void topk_merge(const u64* in, int n, int k, u64* out) {
    __shared__ u64 s[TOPK_CHUNK];
    int c = blockIdx.x, r = blockIdx.y;
    const u64* row = in + (long long)r * n;
    long long base = (long long)c * TOPK_CHUNK;
    for (int i = threadIdx.x; i < TOPK_CHUNK; i += blockDim.x) {
        long long g = base + i;
        s[i] = g < n ? row[g] : 0ull;
    }
    __syncthreads();
    topk_sort_chunk(s, k, out + ((long long)r * gridDim.x + c) * k);
}
