// Attention over the KV cache.
//
// The cache of a layer holds, per sequence, `cap` slots of `kv_dim` values
// (f16 or f32); position p lives in slot p % cap, so windowed layers keep a
// ring of the window plus one batch. `kv_store` writes a batch's K and V;
// `attention` then runs one block per (head, token): scores of the token's
// query against every visible key go to a scratch row, a block-wide max and
// sum give the softmax, and each thread sums one output dimension over the
// values. As on the CPU with an f16 cache, the query and the softmax weights
// are rounded to f16 before their products.

extern "C" __global__ void kv_store(const float* k, const float* v, void* kc, void* vc, int is_f16,
                                    const int* seq, const int* pos, int n, int kv_dim, int cap) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)n * kv_dim) return;
    int t = (int)(i / kv_dim), d = (int)(i % kv_dim);
    long long at = ((long long)seq[t] * cap + pos[t] % cap) * kv_dim + d;
    if (is_f16) {
        ((u16*)kc)[at] = f2h(k[i]);
        ((u16*)vc)[at] = f2h(v[i]);
    } else {
        ((float*)kc)[at] = k[i];
        ((float*)vc)[at] = v[i];
    }
}

__device__ __forceinline__ float kv_at(const void* c, int is_f16, long long i) {
    return is_f16 ? h2f(((const u16*)c)[i]) : ((const float*)c)[i];
}

// Grid (n_head, n_tok); dynamic shared memory: head_dim floats.
// `scratch` holds n_tok * n_head rows of `max_keys` scores.
extern "C" __global__ void attention(const float* q, const void* kc, const void* vc, int is_f16,
                                     float* out, float* scratch, const int* seq, const int* pos,
                                     int n_head, int n_head_kv, int head_dim, int kv_dim, int cap,
                                     int window, float scale, float softcap, int max_keys) {
    LLORCH_DYNAMIC_SHARED(float, qh);
    __shared__ float red[32];
    int h = blockIdx.x, t = blockIdx.y;
    int g = h / (n_head / n_head_kv);
    long long qoff = ((long long)t * n_head + h) * head_dim;
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float v = q[qoff + d];
        qh[d] = is_f16 ? round_h(v) : v;
    }
    __syncthreads();

    int p = pos[t];
    int first = window > 0 ? max(0, p - window + 1) : 0;
    int nk = p - first + 1;
    long long base = (long long)seq[t] * cap;
    float* sc = scratch + ((long long)t * n_head + h) * max_keys;

    float m = -3.402823466e38f;
    for (int j = threadIdx.x; j < nk; j += blockDim.x) {
        long long kr = (base + (first + j) % cap) * kv_dim + (long long)g * head_dim;
        float dot = 0.0f;
        for (int d = 0; d < head_dim; d++) dot += qh[d] * kv_at(kc, is_f16, kr + d);
        float s = dot * scale;
        if (softcap > 0.0f) s = softcap * tanhf(s / softcap);
        sc[j] = s;
        m = fmaxf(m, s);
    }
    m = block_max(m, red);
    float sum = 0.0f;
    for (int j = threadIdx.x; j < nk; j += blockDim.x) {
        float e = expf(sc[j] - m);
        sc[j] = e;
        sum += e;
    }
    sum = block_sum(sum, red);
    __syncthreads();
    float inv = 1.0f / sum;
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float acc = 0.0f;
        for (int j = 0; j < nk; j++) {
            float w = sc[j] * inv;
            if (is_f16) w = round_h(w);
            long long vr = (base + (first + j) % cap) * kv_dim + (long long)g * head_dim;
            acc += w * kv_at(vc, is_f16, vr + d);
        }
        out[qoff + d] = acc;
    }
}

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
