// Recurrent layers (gated delta nets): the token-by-token recurrence of
// worker_compute's `recurrent` module, operation for operation, each sum
// taken in index order (the CPU backend may sum in lanes, or a prompt in
// chunks, so the two agree to rounding). A run of a sequence's tokens (a
// prompt) takes the chunked form instead (delta_chunked.cu).
//
// Both kernels walk the batch by sequence. `groups` holds, per sequence of
// the batch, [seq, fresh, start, count] (GROUP_FIELDS ints), then the batch
// rows of every sequence in turn: rows[start .. start + count] are that
// sequence's tokens, oldest first (`group_table` in src/kv.rs). `fresh`
// (the sequence starts at position 0) means its state starts from zero.
// A sequence's state is `state_len` floats: the convolution's taps - 1 last
// inputs (rows of `channels`, oldest first), then one head_dim x head_dim
// matrix per value head, stored transposed (row j is column j of S).

#define GROUP_FIELDS 4
// The widest head `delta_net` keeps in registers.
#define DELTA_MAX_DIM 128

// One thread per (sequence, channel): for each of the sequence's tokens in
// order, the channel's taps over its last inputs (the state's column) and
// the new one; the column then shifts by one and keeps the new input.
extern "C" __global__ void ssm_conv(const float* x, const float* w, float* state, float* out,
                                    const int* groups, int n_groups, int channels, int taps,
                                    long long state_len) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)n_groups * channels) return;
    int g = (int)(i / channels), ch = (int)(i % channels);
    const int* gr = groups + GROUP_FIELDS * g;
    const int* rows = groups + GROUP_FIELDS * n_groups + gr[2];
    int keep = taps > 0 ? taps - 1 : 0;
    // The channel's column of the state: input k (oldest first) at st[k * channels].
    float* st = state + (long long)gr[0] * state_len + ch;
    const float* wc = w + (long long)ch * taps;
    if (gr[1]) {
        for (int k = 0; k < keep; k++) st[(long long)k * channels] = 0.0f;
    }
    for (int t = 0; t < gr[3]; t++) {
        long long at = (long long)rows[t] * channels + ch;
        float v = x[at];
        float sum = 0.0f;
        for (int k = 0; k < keep; k++) sum += st[(long long)k * channels] * wc[k];
        if (taps > 0) sum += v * wc[keep];
        out[at] = sum;
        for (int k = 0; k + 1 < keep; k++) {
            st[(long long)k * channels] = st[(long long)(k + 1) * channels];
        }
        if (keep > 0) st[(long long)(keep - 1) * channels] = v;
    }
}

// ln(1 + e^x), linear above 20.
__device__ __forceinline__ float softplus_f32(float x) {
    return x > 20.0f ? x : logf(1.0f + expf(x));
}

// 1 / sqrt(sum(x^2) + eps) over `d` values, summed in order.
__device__ __forceinline__ float inv_l2(const float* v, int d, float eps) {
    float s = 0.0f;
    for (int i = 0; i < d; i++) s += v[i] * v[i];
    return 1.0f / sqrtf(s + eps);
}

// Token row `xr`'s query and key of key head `kh`, L2-normed, into the
// block's shared `sh` (q, then k, then the two inverse norms). Every thread
// of the block calls it; the norms are summed by threads of different
// warps.
__device__ void load_normed_qk(const float* xr, int kh, int n_k_heads, int d, float eps,
                               float* sh) {
    float *qs = sh, *ks = sh + d, *inv = sh + 2 * d;
    int j = threadIdx.x, k_summer = blockDim.x > 32 ? 32 : 1;
    // Every thread is done with the last token's q and k.
    __syncthreads();
    for (int i = j; i < d; i += blockDim.x) {
        qs[i] = xr[(long long)kh * d + i];
        ks[i] = xr[(long long)(n_k_heads + kh) * d + i];
    }
    __syncthreads();
    if (j == 0) inv[0] = inv_l2(qs, d, eps);
    if (j == k_summer) inv[1] = inv_l2(ks, d, eps);
    __syncthreads();
    for (int i = j; i < d; i += blockDim.x) {
        qs[i] *= inv[0];
        ks[i] *= inv[1];
    }
    __syncthreads();
}

// Grid (n_v_heads, n_groups); at least head_dim threads (a multiple of 32);
// dynamic shared memory: 2 * head_dim + 2 floats. Block (h, g) runs value
// head h of the batch's g-th sequence through its tokens, thread j owning
// row j of the head's transposed matrix in registers. Per token: q and k of
// key head h % n_k_heads L2-normed, decay = exp(softplus(alpha) * a[h]),
// beta = sigmoid(beta logit); S *= decay; delta_j = (v_j - row_j . k) *
// beta; row_j += delta_j * k; out_j = row_j . q / sqrt(head_dim).
// Sequences with `chunked_from` tokens or more are left to
// `delta_net_chunked` (delta_chunked.cu).
extern "C" __global__ void delta_net(const float* qkv, const float* alpha, const float* beta,
                                     const float* a, float* state, float* out,
                                     const int* groups, int n_groups, int n_k_heads,
                                     int head_dim, float eps, long long state_len,
                                     int conv_len, int chunked_from) {
    LLORCH_DYNAMIC_SHARED(float, sh);
    int h = blockIdx.x, g = blockIdx.y, hv = gridDim.x, d = head_dim, j = threadIdx.x;
    const float* qs = sh;
    const float* ks = sh + d;
    const int* gr = groups + GROUP_FIELDS * g;
    if (gr[3] >= chunked_from) return;
    const int* rows = groups + GROUP_FIELDS * n_groups + gr[2];
    int kh = h % n_k_heads;
    long long c = (long long)(2 * n_k_heads + hv) * d;
    bool owner = j < d;
    float* m = state + (long long)gr[0] * state_len + conv_len + ((long long)h * d + j) * d;
    float row[DELTA_MAX_DIM];
#pragma unroll
    for (int i = 0; i < DELTA_MAX_DIM; i++) row[i] = owner && i < d && !gr[1] ? m[i] : 0.0f;
    float scale = 1.0f / sqrtf((float)d);
    for (int t = 0; t < gr[3]; t++) {
        long long r = rows[t];
        const float* xr = qkv + r * c;
        load_normed_qk(xr, kh, n_k_heads, d, eps, sh);
        // Threads past head_dim only share the loads and the barriers.
        if (owner) {
            float decay = expf(softplus_f32(alpha[r * hv + h]) * a[h]);
            float b = 1.0f / (1.0f + expf(-beta[r * hv + h]));
            float sk = 0.0f;
#pragma unroll
            for (int i = 0; i < DELTA_MAX_DIM; i++) {
                if (i < d) {
                    row[i] *= decay;
                    sk += row[i] * ks[i];
                }
            }
            float delta = (xr[(long long)(2 * n_k_heads + h) * d + j] - sk) * b;
            float sq = 0.0f;
#pragma unroll
            for (int i = 0; i < DELTA_MAX_DIM; i++) {
                if (i < d) {
                    row[i] += delta * ks[i];
                    sq += row[i] * qs[i];
                }
            }
            out[(r * hv + h) * d + j] = sq * scale;
        }
    }
    if (owner) {
#pragma unroll
        for (int i = 0; i < DELTA_MAX_DIM; i++) {
            if (i < d) m[i] = row[i];
        }
    }
}
