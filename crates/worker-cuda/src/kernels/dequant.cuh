// Decoding 32 consecutive weights of a row, for every supported type.
//
// A row is a run of GGUF blocks. Every type here splits into independent
// groups of 32 values (a whole Q4_0/Q5_0/Q8_0 block, or one of the eight
// 32-value groups of a K-quant super-block), so one thread decodes group `g`
// of a row without looking at its neighbours. The layouts and arithmetic
// are those of the CPU decoders in worker-gguf.

// Scale and min of group j (0..8) of a Q4_K/Q5_K super-block.
__device__ __forceinline__ void kq_scale_min(const u8* s, int j, float* sc, float* m) {
    if (j < 4) {
        *sc = (float)(s[j] & 63);
        *m = (float)(s[j + 4] & 63);
    } else {
        *sc = (float)((s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4));
        *m = (float)((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
    }
}

// The value a 4-bit IQ4_NL/IQ4_XS index selects from the non-linear table
// -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113:
// each half of the table is one 64-bit word of bytes (little-endian), so the
// lookup is arithmetic, with no memory access.
__device__ __forceinline__ int iq4_value(int i) {
    unsigned long long t = i < 8 ? 0xF6EADDCFBFAD9881ull : 0x7159453526190D01ull;
    return (int)(i8)(u8)(t >> (8 * (i & 7)));
}

// The value a 4-bit MXFP4 (E2M1) code selects, doubled so that it is an
// integer: 0, 1, 2, 3, 4, 6, 8, 12 for codes 0..8, negated for 8..16 (bit 3
// is the sign). The magnitudes are the bytes of one 64-bit word.
__device__ __forceinline__ int fp4_value(int i) {
    int m = (int)(u8)(0x0C08060403020100ull >> (8 * (i & 7)));
    return (i & 8) ? -m : m;
}

// An MXFP4 block's scale from its E8M0 exponent byte, halved to match the
// doubled codes: 2^(e - 128), exactly, for every byte (0 and 1 are
// subnormal; 255 is 2^127).
__device__ __forceinline__ float e8m0_half(u8 e) {
    return __uint_as_float(e < 2 ? 0x00200000u << e : (u32)(e - 1) << 23);
}

// Scale of group s (0..8) of an IQ4_XS super-block, offset removed: six bits,
// the low four a nibble of `scales_l` (at byte 4), the high two from the
// little-endian u16 `scales_h` (at byte 2).
__device__ __forceinline__ int iq4xs_scale(const u8* b, int s) {
    u32 high = (u32)b[2] | ((u32)b[3] << 8);
    int ls = ((b[4 + (s >> 1)] >> (4 * (s & 1))) & 0x0F) | (((high >> (2 * s)) & 3) << 4);
    return ls - 32;
}

// Signed 6-bit scale i (0..16) of a Q3_K super-block, from its 12 packed
// bytes at `sc`: the low four bits a nibble of bytes 0..8, the high two a
// bit pair of bytes 8..12.
__device__ __forceinline__ int q3k_scale(const u8* sc, int i) {
    int low = (sc[i & 7] >> (4 * (i >> 3))) & 0x0F;
    int high = (sc[8 + (i & 3)] >> (2 * (i >> 2))) & 3;
    return (low | (high << 4)) - 32;
}

// Where group g (0..8 of each 256) of a Q6_K row lives: its low four bits
// in `ql` (shifted by `lshift`), its high two in `qh` (by `hshift`), the
// scales of its two halves of 16 at `sc`, and the block's f16 factor.
struct Q6kGroup {
    const u8* ql;
    const u8* qh;
    const i8* sc;
    int lshift, hshift;
    float d;
};

__device__ __forceinline__ Q6kGroup q6k_group(const u8* row, int g) {
    const u8* b = row + (g >> 3) * 210;
    int s8 = g & 7, half = s8 >> 2, s = s8 & 3;
    Q6kGroup q;
    q.ql = b + half * 64 + (s & 1) * 32;
    q.qh = b + 128 + half * 32;
    q.sc = (const i8*)(b + 192) + 2 * s8;
    q.lshift = 4 * (s >> 1);
    q.hshift = 2 * s;
    q.d = ld_h(b + 208);
    return q;
}

__device__ __forceinline__ void dq32(int ty, const u8* row, int g, float* y) {
    switch (ty) {
    case TY_F32: {
        const float* p = (const float*)row + g * 32;
#pragma unroll
        for (int i = 0; i < 32; i++) y[i] = p[i];
        break;
    }
    case TY_F16: {
        const u16* p = (const u16*)row + g * 32;
#pragma unroll
        for (int i = 0; i < 32; i++) y[i] = h2f(p[i]);
        break;
    }
    case TY_BF16: {
        const u16* p = (const u16*)row + g * 32;
#pragma unroll
        for (int i = 0; i < 32; i++) y[i] = __uint_as_float(((u32)p[i]) << 16);
        break;
    }
    case TY_Q4_0: {
        const u8* b = row + g * 18;
        float d = ld_h(b);
#pragma unroll
        for (int j = 0; j < 16; j++) {
            u8 q = b[2 + j];
            y[j] = d * (float)((int)(q & 0x0F) - 8);
            y[j + 16] = d * (float)((int)(q >> 4) - 8);
        }
        break;
    }
    case TY_Q4_1: {
        const u8* b = row + g * 20;
        float d = ld_h(b), m = ld_h(b + 2);
#pragma unroll
        for (int j = 0; j < 16; j++) {
            u8 q = b[4 + j];
            y[j] = d * (float)(q & 0x0F) + m;
            y[j + 16] = d * (float)(q >> 4) + m;
        }
        break;
    }
    case TY_Q5_0: {
        const u8* b = row + g * 22;
        float d = ld_h(b);
        u32 qh = (u32)b[2] | ((u32)b[3] << 8) | ((u32)b[4] << 16) | ((u32)b[5] << 24);
#pragma unroll
        for (int j = 0; j < 16; j++) {
            u8 q = b[6 + j];
            int lo = (q & 0x0F) | (((qh >> j) & 1) << 4);
            int hi = (q >> 4) | (((qh >> (j + 16)) & 1) << 4);
            y[j] = d * (float)(lo - 16);
            y[j + 16] = d * (float)(hi - 16);
        }
        break;
    }
    case TY_Q5_1: {
        const u8* b = row + g * 24;
        float d = ld_h(b), m = ld_h(b + 2);
        u32 qh = (u32)b[4] | ((u32)b[5] << 8) | ((u32)b[6] << 16) | ((u32)b[7] << 24);
#pragma unroll
        for (int j = 0; j < 16; j++) {
            u8 q = b[8 + j];
            int lo = (q & 0x0F) | (((qh >> j) & 1) << 4);
            int hi = (q >> 4) | (((qh >> (j + 16)) & 1) << 4);
            y[j] = d * (float)lo + m;
            y[j + 16] = d * (float)hi + m;
        }
        break;
    }
    case TY_Q8_0: {
        const u8* b = row + g * 34;
        float d = ld_h(b);
        const i8* q = (const i8*)(b + 2);
#pragma unroll
        for (int j = 0; j < 32; j++) y[j] = d * (float)q[j];
        break;
    }
    case TY_Q4_K: {
        const u8* b = row + (g >> 3) * 144;
        int s = g & 7;
        float sc, mn;
        kq_scale_min(b + 4, s, &sc, &mn);
        float d1 = ld_h(b) * sc, m1 = ld_h(b + 2) * mn;
        const u8* q = b + 16 + (s >> 1) * 32;
        int shift = 4 * (s & 1);
#pragma unroll
        for (int l = 0; l < 32; l++) y[l] = d1 * (float)((q[l] >> shift) & 0x0F) - m1;
        break;
    }
    case TY_Q5_K: {
        const u8* b = row + (g >> 3) * 176;
        int s = g & 7;
        float sc, mn;
        kq_scale_min(b + 4, s, &sc, &mn);
        float d1 = ld_h(b) * sc, m1 = ld_h(b + 2) * mn;
        const u8* qh = b + 16;
        const u8* q = b + 48 + (s >> 1) * 32;
        int shift = 4 * (s & 1);
#pragma unroll
        for (int l = 0; l < 32; l++) {
            int v = ((q[l] >> shift) & 0x0F) | (((qh[l] >> s) & 1) << 4);
            y[l] = d1 * (float)v - m1;
        }
        break;
    }
    case TY_Q6_K: {
        Q6kGroup q6 = q6k_group(row, g);
#pragma unroll
        for (int l = 0; l < 32; l++) {
            int low = (q6.ql[l] >> q6.lshift) & 0x0F;
            int high = (q6.qh[l] >> q6.hshift) & 3;
            y[l] = q6.d * (float)q6.sc[l >> 4] * (float)((low | (high << 4)) - 32);
        }
        break;
    }
    case TY_Q2_K: {
        // Groups of 32 are two runs of 16, each with a 4-bit scale (low
        // nibble) and min (high nibble); group s takes bit pair s % 4 of
        // the 32 bytes of its half.
        const u8* b = row + (g >> 3) * 84;
        int s = g & 7, shift = 2 * (s & 3);
        float d = ld_h(b + 80), dmin = ld_h(b + 82);
        const u8* q = b + 16 + (s >> 2) * 32;
#pragma unroll
        for (int h = 0; h < 2; h++) {
            u8 sc = b[2 * s + h];
            float dl = d * (float)(sc & 0x0F), ml = dmin * (float)(sc >> 4);
#pragma unroll
            for (int l = 16 * h; l < 16 * h + 16; l++)
                y[l] = dl * (float)((q[l] >> shift) & 3) - ml;
        }
        break;
    }
    case TY_Q3_K: {
        // As Q2_K for the low two bits, with signed 6-bit scales and a
        // high bit in bit s of `hmask`: clear, it takes 4 off.
        const u8* b = row + (g >> 3) * 110;
        int s = g & 7, shift = 2 * (s & 3);
        float d = ld_h(b + 108);
        const u8* q = b + 32 + (s >> 2) * 32;
#pragma unroll
        for (int h = 0; h < 2; h++) {
            float dl = d * (float)q3k_scale(b + 96, 2 * s + h);
#pragma unroll
            for (int l = 16 * h; l < 16 * h + 16; l++) {
                int v = ((q[l] >> shift) & 3) - (((b[l] >> s) & 1) ? 0 : 4);
                y[l] = dl * (float)v;
            }
        }
        break;
    }
    case TY_IQ4_NL: {
        const u8* b = row + g * 18;
        float d = ld_h(b);
#pragma unroll
        for (int j = 0; j < 16; j++) {
            u8 q = b[2 + j];
            y[j] = d * (float)iq4_value(q & 0x0F);
            y[j + 16] = d * (float)iq4_value(q >> 4);
        }
        break;
    }
    case TY_IQ4_XS: {
        const u8* b = row + (g >> 3) * 136;
        int s = g & 7;
        float dl = ld_h(b) * (float)iq4xs_scale(b, s);
        const u8* qs = b + 8 + 16 * s;
#pragma unroll
        for (int j = 0; j < 16; j++) {
            u8 q = qs[j];
            y[j] = dl * (float)iq4_value(q & 0x0F);
            y[j + 16] = dl * (float)iq4_value(q >> 4);
        }
        break;
    }
    case TY_MXFP4: {
        // 17-byte blocks: the exponent, then 16 bytes of codes, low nibbles
        // first. Blocks start at any byte, so everything is read bytewise.
        const u8* b = row + g * 17;
        float d = e8m0_half(b[0]);
#pragma unroll
        for (int j = 0; j < 16; j++) {
            u8 q = b[1 + j];
            y[j] = (float)fp4_value(q & 0x0F) * d;
            y[j + 16] = (float)fp4_value(q >> 4) * d;
        }
        break;
    }
    default:
#pragma unroll
        for (int i = 0; i < 32; i++) y[i] = 0.0f;
    }
}

// ---- Groups of 32 weights as 8-bit integers, for products with 8-bit
// activations (`mm_q8`): Q4_0, Q5_0, Q8_0, Q3_K, Q4_K, Q6_K, IQ4_NL,
// IQ4_XS and MXFP4 (the host's `q8_decodes` lists them). Weight i of group
// g is d0 * q[i] + m for i < 16 and d1 * q[i] + m after (Q3_K and Q6_K
// have two scales per group; Q2_K, with two mins, is not decoded this way).
// `q` packs four values per int, the layout `__dp4a` takes. Words are read
// as two 16-bit halves: block fields are 2-aligned, not 4-aligned (MXFP4's
// 17-byte blocks are not even that, and are read byte by byte).

__device__ __forceinline__ u32 ld_w(const u8* p) {
    const u16* h = (const u16*)p;
    return (u32)h[0] | ((u32)h[1] << 16);
}

// Four IQ4 indices (the low nibble of each byte of `v`) to their table
// values, as four signed bytes.
__device__ __forceinline__ int iq4_word(u32 v) {
    u32 r = 0;
#pragma unroll
    for (int i = 0; i < 4; i++) r |= (u32)(u8)iq4_value((v >> (8 * i)) & 0x0F) << (8 * i);
    return (int)r;
}

// Four MXFP4 codes (the low nibble of each byte of `v`) to their doubled
// values, as four signed bytes.
__device__ __forceinline__ int fp4_word(u32 v) {
    u32 r = 0;
#pragma unroll
    for (int i = 0; i < 4; i++) r |= (u32)(u8)fp4_value((v >> (8 * i)) & 0x0F) << (8 * i);
    return (int)r;
}

// Bits 0..3 of `b` to bit 4 of bytes 0..3.
__device__ __forceinline__ u32 spread4(u32 b) {
    return ((b & 1u) << 4) | ((b & 2u) << 11) | ((b & 4u) << 18) | ((b & 8u) << 25);
}

__device__ __forceinline__ void dq32_q8(int ty, const u8* row, int g, int* q, float* d0,
                                        float* d1, float* m) {
    switch (ty) {
    case TY_Q4_0: {
        const u8* b = row + g * 18;
        float d = ld_h(b);
#pragma unroll
        for (int k = 0; k < 4; k++) {
            u32 v = ld_w(b + 2 + 4 * k);
            q[k] = (int)(v & 0x0F0F0F0Fu);
            q[k + 4] = (int)((v >> 4) & 0x0F0F0F0Fu);
        }
        *d0 = d;
        *d1 = d;
        *m = -8.0f * d;
        break;
    }
    case TY_Q5_0: {
        const u8* b = row + g * 22;
        float d = ld_h(b);
        u32 qh = ld_w(b + 2);
#pragma unroll
        for (int k = 0; k < 4; k++) {
            u32 v = ld_w(b + 6 + 4 * k);
            q[k] = (int)((v & 0x0F0F0F0Fu) | spread4(qh >> (4 * k)));
            q[k + 4] = (int)(((v >> 4) & 0x0F0F0F0Fu) | spread4(qh >> (16 + 4 * k)));
        }
        *d0 = d;
        *d1 = d;
        *m = -16.0f * d;
        break;
    }
    case TY_Q8_0: {
        const u8* b = row + g * 34;
        float d = ld_h(b);
#pragma unroll
        for (int k = 0; k < 8; k++) q[k] = (int)ld_w(b + 2 + 4 * k);
        *d0 = d;
        *d1 = d;
        *m = 0.0f;
        break;
    }
    case TY_Q4_K: {
        const u8* b = row + (g >> 3) * 144;
        int s = g & 7;
        float sc, mn;
        kq_scale_min(b + 4, s, &sc, &mn);
        const u8* qs = b + 16 + (s >> 1) * 32;
        int shift = 4 * (s & 1);
#pragma unroll
        for (int k = 0; k < 8; k++) q[k] = (int)((ld_w(qs + 4 * k) >> shift) & 0x0F0F0F0Fu);
        *d0 = ld_h(b) * sc;
        *d1 = *d0;
        *m = -(ld_h(b + 2) * mn);
        break;
    }
    case TY_Q6_K: {
        Q6kGroup q6 = q6k_group(row, g);
#pragma unroll
        for (int k = 0; k < 8; k++) {
            u32 lo = (ld_w(q6.ql + 4 * k) >> q6.lshift) & 0x0F0F0F0Fu;
            u32 hi = ((ld_w(q6.qh + 4 * k) >> q6.hshift) & 0x03030303u) << 4;
            // Six-bit values minus 32, byte by byte (no borrow between bytes).
            q[k] = (int)__vsub4(lo | hi, 0x20202020u);
        }
        *d0 = q6.d * (float)q6.sc[0];
        *d1 = q6.d * (float)q6.sc[1];
        *m = 0.0f;
        break;
    }
    case TY_Q3_K: {
        const u8* b = row + (g >> 3) * 110;
        int s = g & 7, shift = 2 * (s & 3);
        float d = ld_h(b + 108);
        const u8* qs = b + 32 + (s >> 2) * 32;
#pragma unroll
        for (int k = 0; k < 8; k++) {
            u32 lo = (ld_w(qs + 4 * k) >> shift) & 0x03030303u;
            u32 hi = ((ld_w(b + 4 * k) >> s) & 0x01010101u) << 2;
            // Three-bit values minus 4, byte by byte (no borrow between bytes).
            q[k] = (int)__vsub4(lo | hi, 0x04040404u);
        }
        *d0 = d * (float)q3k_scale(b + 96, 2 * s);
        *d1 = d * (float)q3k_scale(b + 96, 2 * s + 1);
        *m = 0.0f;
        break;
    }
    case TY_IQ4_NL: {
        const u8* b = row + g * 18;
#pragma unroll
        for (int k = 0; k < 4; k++) {
            u32 v = ld_w(b + 2 + 4 * k);
            q[k] = iq4_word(v);
            q[k + 4] = iq4_word(v >> 4);
        }
        *d0 = ld_h(b);
        *d1 = *d0;
        *m = 0.0f;
        break;
    }
    case TY_IQ4_XS: {
        const u8* b = row + (g >> 3) * 136;
        int s = g & 7;
        const u8* qs = b + 8 + 16 * s;
#pragma unroll
        for (int k = 0; k < 4; k++) {
            u32 v = ld_w(qs + 4 * k);
            q[k] = iq4_word(v);
            q[k + 4] = iq4_word(v >> 4);
        }
        *d0 = ld_h(b) * (float)iq4xs_scale(b, s);
        *d1 = *d0;
        *m = 0.0f;
        break;
    }
    case TY_MXFP4: {
        const u8* b = row + g * 17;
#pragma unroll
        for (int k = 0; k < 4; k++) {
            const u8* p = b + 1 + 4 * k;
            u32 v = (u32)p[0] | ((u32)p[1] << 8) | ((u32)p[2] << 16) | ((u32)p[3] << 24);
            q[k] = fp4_word(v);
            q[k + 4] = fp4_word(v >> 4);
        }
        *d0 = e8m0_half(b[0]);
        *d1 = *d0;
        *m = 0.0f;
        break;
    }
    default:
#pragma unroll
        for (int k = 0; k < 8; k++) q[k] = 0;
        *d0 = 0.0f;
        *d1 = 0.0f;
        *m = 0.0f;
    }
}
