// Attention over the KV cache.
//
// The cache of a layer holds, per sequence, `cap` slots of `kv_dim` values
// (f16 or f32); position p lives in slot p % cap, so windowed layers keep a
// ring of the window plus one batch. `kv_store` writes a batch's K and V.
//
// `attention` runs one block per (head, token, split): the split's share of
// the token's visible keys, in tiles of ATTN_TILE keys, with an online
// softmax (a running max and sum, the output rescaled when the max grows),
// so no score row is stored and the context length costs no memory. Each
// warp scores one key at a time, its lanes reading the key row together;
// each thread then accumulates its output dimensions over the tile's
// values. With one split the block writes the output; with several (decode:
// few tokens, long contexts, so the device fills up) each writes its max,
// sum and unnormalized output to `part`, and `attention_merge` combines
// them. As on the CPU with an f16 cache, the query is rounded to f16 before
// its products (the CPU also rounds the final softmax weights, which split
// sums cannot; the difference is far below the f16 tolerance).
//
// `sinks`, when not null, holds a logit per query head that joins the
// softmax as a key whose value is zero: it raises the max when larger and
// adds its exponential to the sum, and nothing to the output. It is applied
// where the sum is final: at the end of a single split, or in the merge.

#define ATTN_TILE 64
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

// Grid (n_head, n_tok, n_split); dynamic shared memory: 2 * head_dim +
// ATTN_TILE floats. Split s covers visible keys [s * split_len, (s + 1) *
// split_len). `part` holds, per (token, head, split), head_dim + 2 floats:
// max, sum, then the unnormalized output.
extern "C" __global__ void attention(const float* q, const void* kc, const void* vc, int is_f16,
                                     float* out, float* part, const int* seq, const int* pos,
                                     int n_head, int n_head_kv, int head_dim, int kv_dim, int cap,
                                     int window, float scale, float softcap, int split_len,
                                     const float* sinks) {
    LLORCH_DYNAMIC_SHARED(float, sh);
    float* qh = sh;
    float* acc = sh + head_dim;
    float* sc = sh + 2 * head_dim;
    int h = blockIdx.x, t = blockIdx.y, s = blockIdx.z, n_split = gridDim.z;
    int g = h / (n_head / n_head_kv);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    long long qoff = ((long long)t * n_head + h) * head_dim;
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float v = q[qoff + d];
        qh[d] = is_f16 ? round_h(v) : v;
        acc[d] = 0.0f;
    }
    __syncthreads();

    int p = pos[t];
    int first = window > 0 ? max(0, p - window + 1) : 0;
    int nk = p - first + 1;
    int lo = min(nk, s * split_len), hi = min(nk, lo + split_len);
    long long base = (long long)seq[t] * cap;
    long long col = (long long)g * head_dim;

    float m = -3.402823466e38f, l = 0.0f;
    for (int j0 = lo; j0 < hi; j0 += ATTN_TILE) {
        int tn = min(ATTN_TILE, hi - j0);
        for (int jj = warp; jj < tn; jj += nw) {
            long long kr = (base + (first + j0 + jj) % cap) * kv_dim + col;
            float dot = 0.0f;
            for (int d = lane; d < head_dim; d += 32) dot += qh[d] * kv_at(kc, is_f16, kr + d);
            dot = warp_sum(dot);
            if (lane == 0) {
                float x = dot * scale;
                if (softcap > 0.0f) x = softcap * tanhf(x / softcap);
                sc[jj] = x;
            }
        }
        __syncthreads();
        float mt = m;
        for (int jj = 0; jj < tn; jj++) mt = fmaxf(mt, sc[jj]);
        __syncthreads();
        if ((int)threadIdx.x < tn) sc[threadIdx.x] = expf(sc[threadIdx.x] - mt);
        __syncthreads();
        float alpha = expf(m - mt);
        float sum = 0.0f;
        for (int jj = 0; jj < tn; jj++) sum += sc[jj];
        l = l * alpha + sum;
        m = mt;
        for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
            float a = acc[d] * alpha;
            for (int jj = 0; jj < tn; jj++) {
                long long vr = (base + (first + j0 + jj) % cap) * kv_dim + col;
                a += sc[jj] * kv_at(vc, is_f16, vr + d);
            }
            acc[d] = a;
        }
        __syncthreads();
    }

    if (n_split == 1) {
        float inv = 1.0f / l;
        if (sinks) {
            // Rescaled to the larger of the max and the sink.
            float ms = fmaxf(m, sinks[h]);
            float a = expf(m - ms);
            inv = a / (l * a + expf(sinks[h] - ms));
        }
        for (int d = threadIdx.x; d < head_dim; d += blockDim.x) out[qoff + d] = acc[d] * inv;
    } else {
        float* pr = part + (((long long)t * n_head + h) * n_split + s) * (head_dim + 2);
        if (threadIdx.x == 0) {
            pr[0] = m;
            pr[1] = l;
        }
        for (int d = threadIdx.x; d < head_dim; d += blockDim.x) pr[2 + d] = acc[d];
    }
}

// Grid (n_head, n_tok): combines the n_split partial results of each
// (token, head) into the output, each rescaled to the largest max (the
// head's sink included).
extern "C" __global__ void attention_merge(const float* part, float* out, int n_head, int head_dim,
                                           int n_split, const float* sinks) {
    int h = blockIdx.x, t = blockIdx.y;
    const float* pr = part + ((long long)t * n_head + h) * n_split * (head_dim + 2);
    float m = -3.402823466e38f;
    for (int s = 0; s < n_split; s++) m = fmaxf(m, pr[s * (head_dim + 2)]);
    if (sinks) m = fmaxf(m, sinks[h]);
    float l = sinks ? expf(sinks[h] - m) : 0.0f;
    for (int s = 0; s < n_split; s++) {
        const float* ps = pr + s * (head_dim + 2);
        l += ps[1] * expf(ps[0] - m);
    }
    float inv = 1.0f / l;
    long long qoff = ((long long)t * n_head + h) * head_dim;
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float a = 0.0f;
        for (int s = 0; s < n_split; s++) {
            const float* ps = pr + s * (head_dim + 2);
            a += ps[2 + d] * expf(ps[0] - m);
        }
        out[qoff + d] = a * inv;
    }
}
