// Row-wise and element-wise ops, computed as the CPU backend computes them
// where the choice shows in results: norms sum in double, GELU goes through
// f16, RoPE angles are iterated products of the same f32 factor.

// One block per row of `dim`.
extern "C" __global__ void rms_norm(float* x, int dim, const float* w, float eps) {
    __shared__ double red[32];
    float* row = x + (long long)blockIdx.x * dim;
    double s = 0.0;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        float v = row[i];
        s += (double)(v * v);
    }
    s = block_sum_d(s, red);
    float mean = (float)(s / (double)dim);
    float scale = 1.0f / sqrtf(mean + eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        float v = row[i] * scale;
        if (w) v = v * w[i];
        row[i] = v;
    }
}

extern "C" __global__ void layer_norm(float* x, int dim, const float* w, const float* b,
                                      float eps) {
    __shared__ double red[32];
    float* row = x + (long long)blockIdx.x * dim;
    double s = 0.0;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) s += (double)row[i];
    s = block_sum_d(s, red);
    float mean = (float)(s / (double)dim);
    double var = 0.0;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        float v = row[i] - mean;
        row[i] = v;
        var += (double)(v * v);
    }
    var = block_sum_d(var, red);
    float scale = 1.0f / sqrtf((float)(var / (double)dim) + eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        row[i] = row[i] * scale * w[i] + (b ? b[i] : 0.0f);
    }
}

// Grid (tokens, heads), n_rot/2 threads: pair i of every head. The angle is
// the CPU backend's (RopeParams::cos_sin): the iterated power, the factor,
// the linear scale, YaRN's blend below the correction range, then the
// attention factor on cos and sin.
extern "C" __global__ void rope(float* x, const int* pos, int n_head, int head_dim, int n_rot,
                                int neox, float theta_scale, float freq_scale, const float* ff,
                                float ext_factor, float corr_low, float corr_high,
                                float attn_factor) {
    int t = blockIdx.x, h = blockIdx.y, i = threadIdx.x;
    if (i >= n_rot / 2) return;
    float theta = (float)pos[t];
    for (int k = 0; k < i; k++) theta *= theta_scale;
    float extrap = theta / (ff ? ff[i] : 1.0f);
    float interp = freq_scale * extrap;
    float a = interp, mscale = attn_factor;
    if (ext_factor != 0.0f) {
        float y = ((float)i - corr_low) / fmaxf(0.001f, corr_high - corr_low);
        float mix = (1.0f - fminf(1.0f, fmaxf(0.0f, y))) * ext_factor;
        a = interp * (1.0f - mix) + extrap * mix;
        mscale = attn_factor * (1.0f + 0.1f * logf(1.0f / freq_scale));
    }
    float c = cosf(a) * mscale, s = sinf(a) * mscale;
    float* head = x + ((long long)t * n_head + h) * head_dim;
    int ia = neox ? i : 2 * i, ib = neox ? i + n_rot / 2 : 2 * i + 1;
    float x0 = head[ia], x1 = head[ib];
    head[ia] = x0 * c - x1 * s;
    head[ib] = x0 * s + x1 * c;
}

extern "C" __global__ void scale_f32(float* x, long long n, float s) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] *= s;
}

extern "C" __global__ void add_f32(float* a, const float* b, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) a[i] += b[i];
}

// x[t][c] += bias[c] for n rows of dim.
extern "C" __global__ void add_bias(float* x, const float* bias, long long n, int dim) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n * dim) x[i] += bias[i % dim];
}

__device__ __forceinline__ float silu(float v) { return v / (1.0f + expf(-v)); }

__device__ __forceinline__ float gelu_f32(float v) {
    const float k = 0.7978846f, a = 0.044715f;
    return 0.5f * v * (1.0f + tanhf(k * v * (1.0f + a * v * v)));
}

// GELU through f16, identity above 10 and zero below -10 (as ggml).
__device__ __forceinline__ float gelu_h(float v) {
    if (v <= -10.0f) return 0.0f;
    if (v >= 10.0f) return v;
    return round_h(gelu_f32(round_h(v)));
}

// gpt-oss's clamped SwiGLU (worker_compute's SWIGLU_OAI_ALPHA and
// SWIGLU_OAI_LIMIT): the gate capped at the limit, times the sigmoid of
// alpha times itself; the up value clamped to +-limit, plus one.
#define SWIGLU_OAI_ALPHA 1.702f
#define SWIGLU_OAI_LIMIT 7.0f

__device__ __forceinline__ float swiglu_oai_gate(float v) {
    float x = fminf(v, SWIGLU_OAI_LIMIT);
    return x / (1.0f + expf(SWIGLU_OAI_ALPHA * -x));
}

__device__ __forceinline__ float sigmoid(float v) {
    return 1.0f / (1.0f + expf(-v));
}

// act: 0 = SiLU, 1 = GELU, 2 = gpt-oss's SwiGLU (its gate side), 3 = sigmoid.
extern "C" __global__ void act_f32(float* x, long long n, int act) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float v = x[i];
    x[i] = act == 0 ? silu(v) : (act == 1 ? gelu_h(v) : (act == 2 ? swiglu_oai_gate(v) : sigmoid(v)));
}

extern "C" __global__ void glu_f32(float* g, const float* u, long long n, int act) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float v = g[i];
    if (act == 0) {
        g[i] = silu(v) * u[i];
    } else if (act == 1) {
        g[i] = v <= -10.0f ? 0.0f : (v >= 10.0f ? v * u[i] : gelu_h(v) * u[i]);
    } else if (act == 3) {
        g[i] = sigmoid(v) * u[i];
    } else {
        float y = fminf(fmaxf(u[i], -SWIGLU_OAI_LIMIT), SWIGLU_OAI_LIMIT);
        g[i] = swiglu_oai_gate(v) * (y + 1.0f);
    }
}

extern "C" __global__ void softcap_f32(float* x, long long n, float cap) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] = cap * tanhf(x[i] / cap);
}

// dst[rows[i]][c] += src[i][c] for n rows of dim (no row listed twice).
extern "C" __global__ void add_rows_f32(float* dst, const float* src, const int* rows, int n,
                                        int dim) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)n * dim) return;
    int r = (int)(i / dim), c = (int)(i % dim);
    dst[(long long)rows[r] * dim + c] += src[i];
}

// x[t][c] *= f[t] for n rows of width (a multiplier per token).
extern "C" __global__ void scale_rows_f32(float* x, const float* f, long long n, int width) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n * width) x[i] *= f[i / width];
}

// dst[t][c] = src[t][col + c] for n rows; src rows are `stride` wide.
extern "C" __global__ void copy_cols(const float* src, long long n, int stride, int col, int width,
                                     float* dst) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n * width) return;
    long long t = i / width;
    int c = (int)(i % width);
    dst[i] = src[t * stride + col + c];
}

// dst[i] = src[rows[i]] for rows of dim.
extern "C" __global__ void gather_rows(const float* src, const int* rows, int n, int dim,
                                       float* dst) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)n * dim) return;
    int r = (int)(i / dim), c = (int)(i % dim);
    dst[i] = src[(long long)rows[r] * dim + c];
}
