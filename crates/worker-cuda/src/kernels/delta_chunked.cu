// The gated delta rule over a run of one sequence's tokens in chunks of
// DELTA_CHUNK (a prompt), in the chunked form of worker_compute's
// `delta_head_chunked`: within a chunk the state's contributions are
// products with the state at the chunk's start S0, and the tokens'
// updates to each other a triangular system over the chunk. With G the
// chunk's summed log-decays, token t's update is
//   delta_t = beta_t (v_t - e^{G_t} S0^T k_t - sum_{s<t} e^{G_t-G_s} (k_t.k_s) delta_s),
// its output (e^{G_t} S0^T q_t + sum_{s<=t} e^{G_t-G_s} (q_t.k_s) delta_s) / sqrt(d),
// and the state after the chunk e^{G_C} S0 + sum_s e^{G_C-G_s} k_s delta_s^T;
// each sum in the host's order (index order), so the two agree to the
// rounding of exp and of the dot products.
//
// Thread j owns column j of S (row j of the stored transpose) in
// registers, as in `delta_net`, and solves column j of the triangular
// system: delta_t[j] needs only delta_s[j] of the same column, so the
// columns are independent. A chunk's normed keys live in shared memory
// (the products with S0, the token pairs' dot products and the state
// update read them); each token's query is normed into shared memory in
// turn, and thread s computes its pair weights with token t.

// Tokens per chunk, as worker_compute's `recurrent::CHUNK`.
#define DELTA_CHUNK 64

// Grid (n_v_heads, n_groups); at least head_dim threads (a multiple of 32;
// the backend gives it at least DELTA_CHUNK, so each token of a chunk has
// a thread for its scalars and pair weights); dynamic shared memory:
// DELTA_CHUNK * head_dim + head_dim + 6 * DELTA_CHUNK floats. Block (h, g) runs value head h of
// the batch's g-th sequence when it has `chunked_from` tokens or more
// (the others are `delta_net`'s). Inputs, table and state as `delta_net`.
extern "C" __global__ void delta_net_chunked(const float* qkv, const float* alpha,
                                             const float* beta, const float* a, float* state,
                                             float* out, const int* groups, int n_groups,
                                             int n_k_heads, int head_dim, float eps,
                                             long long state_len, int conv_len,
                                             int chunked_from) {
    LLORCH_DYNAMIC_SHARED(float, sh);
    int h = blockIdx.x, g = blockIdx.y, hv = gridDim.x, d = head_dim, j = threadIdx.x;
    const int* gr = groups + GROUP_FIELDS * g;
    if (gr[3] < chunked_from) return;
    const int* rows = groups + GROUP_FIELDS * n_groups + gr[2];
    // Shared: the chunk's normed keys, one query, then per token of the
    // chunk its pair weights with the current token (k.k and q.k), its
    // summed log-decay, update strength, and the query's inverse norm.
    float* ks = sh;
    float* qs = ks + DELTA_CHUNK * d;
    float* wk = qs + d;
    float* wq = wk + DELTA_CHUNK;
    float* cum = wq + DELTA_CHUNK;
    float* bt = cum + DELTA_CHUNK;
    float* qinv = bt + DELTA_CHUNK;
    float* kinv = qinv + DELTA_CHUNK;
    int kh = h % n_k_heads, nt = blockDim.x;
    long long c = (long long)(2 * n_k_heads + hv) * d;
    long long q_at = (long long)kh * d, k_at = (long long)(n_k_heads + kh) * d;
    long long v_at = (long long)(2 * n_k_heads + h) * d;
    bool owner = j < d;
    float* m = state + (long long)gr[0] * state_len + conv_len + ((long long)h * d + j) * d;
    float row[DELTA_MAX_DIM];
#pragma unroll
    for (int i = 0; i < DELTA_MAX_DIM; i++) row[i] = owner && i < d && !gr[1] ? m[i] : 0.0f;
    float scale = 1.0f / sqrtf((float)d);
    // Column j of the chunk's updates.
    float delta[DELTA_CHUNK];
    for (int c0 = 0; c0 < gr[3]; c0 += DELTA_CHUNK) {
        int cn = min(DELTA_CHUNK, gr[3] - c0);
        // Every thread is done with the last chunk's keys.
        __syncthreads();
        for (int e = j; e < cn * d; e += nt) {
            int t = e / d;
            ks[e] = qkv[(long long)rows[c0 + t] * c + k_at + (e - t * d)];
        }
        // Thread t: token t's scalars and its query's and key's norms,
        // each summed in index order.
        for (int t = j; t < cn; t += nt) {
            long long r = rows[c0 + t];
            const float* xr = qkv + r * c;
            cum[t] = softplus_f32(alpha[r * hv + h]) * a[h];
            bt[t] = 1.0f / (1.0f + expf(-beta[r * hv + h]));
            qinv[t] = inv_l2(xr + q_at, d, eps);
            kinv[t] = inv_l2(xr + k_at, d, eps);
        }
        __syncthreads();
        if (j == 0) {
            float sum = 0.0f;
            for (int t = 0; t < cn; t++) {
                sum += cum[t];
                cum[t] = sum;
            }
        }
        for (int e = j; e < cn * d; e += nt) ks[e] *= kinv[e / d];
        __syncthreads();
        for (int t = 0; t < cn; t++) {
            long long r = rows[c0 + t];
            const float* kt = ks + (long long)t * d;
            for (int i = j; i < d; i += nt) qs[i] = qkv[r * c + q_at + i] * qinv[t];
            __syncthreads();
            // Thread s: token t's weights with token s.
            for (int s = j; s <= t; s += nt) {
                const float* kss = ks + (long long)s * d;
                float kk = 0.0f, qk = 0.0f;
                for (int i = 0; i < d; i++) {
                    kk += kt[i] * kss[i];
                    qk += qs[i] * kss[i];
                }
                float e = expf(cum[t] - cum[s]);
                wk[s] = e * kk;
                wq[s] = e * qk;
            }
            __syncthreads();
            if (owner) {
                float sk = 0.0f, sq = 0.0f;
#pragma unroll
                for (int i = 0; i < DELTA_MAX_DIM; i++) {
                    if (i < d) {
                        sk += row[i] * kt[i];
                        sq += row[i] * qs[i];
                    }
                }
                float decay = expf(cum[t]);
                float acc = qkv[r * c + v_at + j] - decay * sk;
                for (int s = 0; s < t; s++) acc -= wk[s] * delta[s];
                delta[t] = bt[t] * acc;
                float o = decay * sq;
                for (int s = 0; s <= t; s++) o += wq[s] * delta[s];
                out[(r * hv + h) * d + j] = o * scale;
            }
            // Every thread is done with this token's query and weights.
            __syncthreads();
        }
        if (owner) {
            float last = cum[cn - 1];
            float decay = expf(last);
#pragma unroll
            for (int i = 0; i < DELTA_MAX_DIM; i++) {
                if (i < d) row[i] *= decay;
            }
            for (int s = 0; s < cn; s++) {
                float coef = expf(last - cum[s]) * delta[s];
                const float* kss = ks + (long long)s * d;
#pragma unroll
                for (int i = 0; i < DELTA_MAX_DIM; i++) {
                    if (i < d) row[i] += coef * kss[i];
                }
            }
        }
    }
    if (owner) {
#pragma unroll
        for (int i = 0; i < DELTA_MAX_DIM; i++) {
            if (i < d) m[i] = row[i];
        }
    }
}
