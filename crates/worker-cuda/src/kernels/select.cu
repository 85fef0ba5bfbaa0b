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

// One pass: grid (chunks, rows); row r of `in` has n values (logits, on
// the first pass) or keys (later passes); writes k keys per chunk to
// out[(r * chunks + c) * k].
template <typename T>
__device__ void topk_pass(const T* in, int n, int k, u64* out) {
    __shared__ u64 s[TOPK_CHUNK];
    int c = blockIdx.x, r = blockIdx.y;
    const T* row = in + (long long)r * n;
    long long base = (long long)c * TOPK_CHUNK;
    for (int i = threadIdx.x; i < TOPK_CHUNK; i += blockDim.x) {
        long long g = base + i;
        u64 key = 0ull;  // padding sorts below every real key
        if (g < n) {
            if constexpr (sizeof(T) == sizeof(float)) {
                key = topk_key(row[g], (unsigned)g);
            } else {
                key = row[g];
            }
        }
        s[i] = key;
    }
    __syncthreads();
    topk_sort_chunk(s, k, out + ((long long)r * gridDim.x + c) * k);
}

extern "C" __global__ void topk_first(const float* x, int n, int k, u64* out) {
    topk_pass(x, n, k, out);
}

extern "C" __global__ void topk_merge(const u64* in, int n, int k, u64* out) {
    topk_pass(in, n, k, out);
}

// A draw from each row at its temperature (0: the argmax), with a uniform
// number from the host's sampler, as worker_compute::draw defines it:
// p(i) ~ exp((l_i - max) / T), walked in order of id. One block of
// DRAW_THREADS per row; each thread sums the weights of a contiguous range,
// thread 0 walks those sums to the range holding the draw, and that thread
// walks its range. Sums are f32 in another order than the host's, so a
// draw right at a boundary may land on the neighbouring id.
#define DRAW_THREADS 256

// e^x for x <= 0, as worker_compute::draw::exp_neg computes it.
__device__ __forceinline__ float draw_exp(float x) {
    const float ln2_hi = 0.693359375f, ln2_lo = -2.12194440e-4f;
    x = x > -87.0f ? x : -87.0f;
    x = x < 0.0f ? x : 0.0f;
    float t = x * 1.44269504088896341f + 0.5f;
    int ti = (int)t;
    int i = ti - ((float)ti > t ? 1 : 0);
    float fi = (float)i;
    float r = (x - fi * ln2_hi) - fi * ln2_lo;
    float p = 1.0f + r * (1.0f + r * (0.5f + r * (1.0f / 6.0f + r * (1.0f / 24.0f + r * (1.0f / 120.0f + r * (1.0f / 720.0f))))));
    return __uint_as_float((unsigned)(i + 127) << 23) * p;
}

extern "C" __global__ void draw_rows(const float* x, int dim, const float* temps, const float* us,
                                     int* out) {
    __shared__ float red_v[DRAW_THREADS];
    __shared__ int red_i[DRAW_THREADS];
    __shared__ float sums[DRAW_THREADS];
    __shared__ int chosen;
    __shared__ float rest;
    const float* row = x + (long long)blockIdx.x * dim;
    const int tid = threadIdx.x, nt = blockDim.x;
    const float temp = temps[blockIdx.x];
    // The largest value and its lowest index (the argmax, and the max).
    float best = -3.402823466e38f;
    int idx = 0x7fffffff;
    for (int i = tid; i < dim; i += nt) {
        float v = row[i];
        if (v > best || (v == best && i < idx)) {
            best = v;
            idx = i;
        }
    }
    red_v[tid] = best;
    red_i[tid] = idx;
    __syncthreads();
    for (int s = nt / 2; s > 0; s >>= 1) {
        if (tid < s) {
            float ov = red_v[tid + s];
            int oi = red_i[tid + s];
            if (ov > red_v[tid] || (ov == red_v[tid] && oi < red_i[tid])) {
                red_v[tid] = ov;
                red_i[tid] = oi;
            }
        }
        __syncthreads();
    }
    const float mx = red_v[0];
    const int arg = red_i[0] == 0x7fffffff ? 0 : red_i[0];
    if (!(temp > 0.0f)) {
        if (tid == 0) out[blockIdx.x] = arg;
        return;
    }
    const float inv_t = 1.0f / temp;
    const int per = (dim + nt - 1) / nt;
    const int lo = min(dim, tid * per), hi = min(dim, lo + per);
    float s = 0.0f;
    for (int i = lo; i < hi; i++) s += draw_exp((row[i] - mx) * inv_t);
    sums[tid] = s;
    __syncthreads();
    if (tid == 0) {
        float total = 0.0f;
        for (int j = 0; j < nt; j++) total += sums[j];
        chosen = -1;
        if (total > 0.0f && total < 3.402823466e38f) {
            float target = us[blockIdx.x] * total, cum = 0.0f;
            int last = -1;
            for (int j = 0; j < nt; j++) {
                if (sums[j] > 0.0f) last = j;
                if (target < cum + sums[j]) {
                    chosen = j;
                    rest = target - cum;
                    break;
                }
                cum += sums[j];
            }
            if (chosen < 0 && last >= 0) {
                // Rounding left the target at the very end.
                chosen = last;
                rest = sums[last];
            }
        }
        if (chosen < 0) out[blockIdx.x] = arg;
    }
    __syncthreads();
    if (tid == chosen) {
        float cum = 0.0f;
        int pick = -1, last = lo;
        for (int i = lo; i < hi; i++) {
            float w = draw_exp((row[i] - mx) * inv_t);
            if (w > 0.0f) last = i;
            cum += w;
            if (rest < cum) {
                pick = i;
                break;
            }
        }
        out[blockIdx.x] = pick >= 0 ? pick : last;
    }
}
