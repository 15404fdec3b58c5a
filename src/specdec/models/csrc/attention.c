/* Attention of T new queries over one sequence's KV cache, row by row (CPU).
 *
 * Built at first use by models/native.py (cc -O3 -march=native -ffp-contract=off) and
 * called through ctypes; models/attention.py says when.
 *
 * Every query row is computed alone, by the same code, over the keys it may see taken in
 * slot order: its result depends on its own query and those keys only, never on how many
 * other rows, keys or threads the call has. So a decode step and a verify pass (chain or
 * tree) score a position bit for bit alike, with no padding of key counts or row counts.
 * Fixed reduction orders make that hold under vectorization: the q.k dot product sums 16
 * lanes (lane l takes elements l, l+16, ...) and then halves them in a fixed tree; the
 * softmax denominator sums 16 lanes by the key's ordinal among the visible keys (not its
 * slot, so a tree node and the decode step after compaction agree); the value sum runs
 * over the visible keys in order. -ffp-contract=off keeps every multiply and add a
 * separate IEEE operation, so the vector body and the scalar tail round alike.
 *
 * Layouts (element strides, so q can be a view of the fused qkv projection):
 *   q    [T, H, D]       row t, head h at q + t * q_tok + h * q_head
 *   k, v [H_kv, S, D]    key j of KV head g at k + g * kv_head + j * D
 *   out  [T, H, D]       contiguous
 * Query t sits at slot start + t. It sees slots [0, start) and, among the new slots
 * start + u, those with mask[t * T + u] != 0, or u <= t when mask is NULL (causal).
 * Head h reads KV head h / (H / H_kv) (grouped-query attention).
 * Scores, softmax and the value sum are float32; out is rounded once to the cache dtype.
 * work: at least 2 * (start + T) + 2 * D floats. Head dims up to MAX_HEAD_DIM (256).
 */

#include <stdint.h>
#include <string.h>

#include "bf16.h"

#define LANES 16


/* exp(x) for x <= 0 (softmax after subtracting the max): Cody-Waite range reduction and
 * Cephes' degree-5 polynomial, ~1 ulp; branch-free so that the loop vectorizes. */
static inline float exp_nonpositive(float x) {
    x = x < -87.0f ? -87.0f : x;
    float n = __builtin_rintf(x * 1.44269504088896341f);
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    uint32_t bits = (uint32_t)((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

static inline float lane_sum(float *a) { /* fixed tree over LANES partial sums */
    for (int w = LANES / 2; w > 0; w /= 2)
        for (int l = 0; l < w; l++) a[l] += a[l + w];
    return a[0];
}

/* Per-row building blocks. Each has a portable version and, where the compiler targets
 * AVX-512, an intrinsics version; one build uses one of them for every row. */
#if defined(__AVX512F__) && defined(__AVX512BW__)
#include <immintrin.h>
#define HAVE_AVX512 1

static inline __m512 bf16x16_load(const uint16_t *p, __mmask16 m) {
    __m256i h = _mm256_maskz_loadu_epi16(m, p);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
static inline __m512 f32x16_load(const float *p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
static inline __mmask16 tail_mask(int remaining) { return remaining >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << remaining) - 1); }

/* exp for x <= 0, the same steps as exp_nonpositive, 16 lanes */
static inline __m512 exp16_nonpositive(__m512 x) {
    x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_sub_ps(x, _mm512_mul_ps(n, _mm512_set1_ps(0.693359375f)));
    r = _mm512_sub_ps(r, _mm512_mul_ps(n, _mm512_set1_ps(-2.12194440e-4f)));
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_add_ps(_mm512_add_ps(_mm512_mul_ps(p, _mm512_mul_ps(r, r)), r), _mm512_set1_ps(1.0f));
    __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    return _mm512_mul_ps(p, _mm512_castsi512_ps(e));
}

/* exp(p[i] - m) in place for i < n; returns their sum, 16 lanes by index then a fixed tree */
static float exp_and_sum(float *p, int n, float m) {
    __m512 acc = _mm512_setzero_ps(), mv = _mm512_set1_ps(m);
    for (int i = 0; i < n; i += 16) {
        __mmask16 k = tail_mask(n - i);
        __m512 e = exp16_nonpositive(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, p + i), mv));
        _mm512_mask_storeu_ps(p + i, k, e);
        acc = _mm512_add_ps(acc, _mm512_maskz_mov_ps(k, e));
    }
    float lanes[16];
    _mm512_storeu_ps(lanes, acc);
    return lane_sum(lanes);
}
#endif

/* One head of one query row: scores over the visible keys, softmax, the value sum.
 * qf: the query in float32 [d]; p: scratch [n]; outf: the result in float32 [d]. */
#define MAX_HEAD_DIM 256
#ifdef HAVE_AVX512
/* Query and value sum stay in registers (d / 16 vectors); always_inline with a literal d
 * (64 and 128 below) unrolls the chunk loops. */
#define DEFINE_HEAD(SUFFIX, ELEM, LOAD16)                                                       \
    static inline __attribute__((always_inline)) void attend_head_##SUFFIX##_d(                 \
        const float *qf, const ELEM *kh, const ELEM *vh, const int32_t *visible, int n,          \
        float scale, float *p, float *outf, int d) {                                            \
        const int nch = (d + 15) / 16;                                                          \
        __m512 qv[MAX_HEAD_DIM / 16], acc[MAX_HEAD_DIM / 16];                                   \
        for (int c = 0; c < nch; c++) qv[c] = _mm512_maskz_loadu_ps(tail_mask(d - 16 * c), qf + 16 * c); \
        float m = -3.4e38f;                                                                     \
        for (int i = 0; i < n; i++) {                                                           \
            const ELEM *krow = kh + (int64_t)visible[i] * d;                                    \
            __m512 a = _mm512_setzero_ps();                                                     \
            for (int c = 0; c < nch; c++)                                                       \
                a = _mm512_fmadd_ps(qv[c], LOAD16(krow + 16 * c, tail_mask(d - 16 * c)), a);    \
            float s = _mm512_reduce_add_ps(a) * scale;                                          \
            p[i] = s;                                                                           \
            m = s > m ? s : m;                                                                  \
        }                                                                                       \
        float denom = exp_and_sum(p, n, m);                                                     \
        for (int c = 0; c < nch; c++) acc[c] = _mm512_setzero_ps();                             \
        for (int i = 0; i < n; i++) {                                                           \
            const ELEM *vrow = vh + (int64_t)visible[i] * d;                                    \
            __m512 w = _mm512_set1_ps(p[i]);                                                    \
            for (int c = 0; c < nch; c++)                                                       \
                acc[c] = _mm512_fmadd_ps(w, LOAD16(vrow + 16 * c, tail_mask(d - 16 * c)), acc[c]); \
        }                                                                                       \
        __m512 dv = _mm512_set1_ps(denom);                                                      \
        for (int c = 0; c < nch; c++)                                                           \
            _mm512_mask_storeu_ps(outf + 16 * c, tail_mask(d - 16 * c), _mm512_div_ps(acc[c], dv)); \
    }                                                                                           \
    static void attend_head_##SUFFIX(const float *qf, const ELEM *kh, const ELEM *vh,           \
                                     const int32_t *visible, int n, float scale, float *p,       \
                                     float *outf, int d) {                                      \
        if (d == 64) attend_head_##SUFFIX##_d(qf, kh, vh, visible, n, scale, p, outf, 64);      \
        else if (d == 128) attend_head_##SUFFIX##_d(qf, kh, vh, visible, n, scale, p, outf, 128); \
        else attend_head_##SUFFIX##_d(qf, kh, vh, visible, n, scale, p, outf, d);               \
    }
DEFINE_HEAD(bf16, uint16_t, bf16x16_load)
DEFINE_HEAD(f32, float, f32x16_load)
#else
static float exp_and_sum(float *p, int n, float m) {
    float lanes[LANES] = {0};
    for (int i = 0; i < n; i++) {
        p[i] = exp_nonpositive(p[i] - m);
        lanes[i % LANES] += p[i];
    }
    return lane_sum(lanes);
}

#define DEFINE_HEAD(SUFFIX, ELEM, LOAD)                                                         \
    static void attend_head_##SUFFIX(const float *qf, const ELEM *kh, const ELEM *vh,           \
                                     const int32_t *visible, int n, float scale, float *p,       \
                                     float *outf, int d) {                                      \
        float m = -3.4e38f;                                                                     \
        for (int i = 0; i < n; i++) {                                                           \
            const ELEM *krow = kh + (int64_t)visible[i] * d;                                    \
            float acc[LANES] = {0};                                                             \
            int c = 0;                                                                          \
            for (; c + LANES <= d; c += LANES)                                                  \
                for (int l = 0; l < LANES; l++) acc[l] += qf[c + l] * LOAD(krow, c + l);        \
            for (int l = 0; c + l < d; l++) acc[l] += qf[c + l] * LOAD(krow, c + l);            \
            float s = lane_sum(acc) * scale;                                                    \
            p[i] = s;                                                                           \
            m = s > m ? s : m;                                                                  \
        }                                                                                       \
        float denom = exp_and_sum(p, n, m);                                                     \
        for (int e = 0; e < d; e++) outf[e] = 0.0f;                                             \
        for (int i = 0; i < n; i++) {                                                           \
            const ELEM *vrow = vh + (int64_t)visible[i] * d;                                    \
            for (int e = 0; e < d; e++) outf[e] += p[i] * LOAD(vrow, e);                        \
        }                                                                                       \
        for (int e = 0; e < d; e++) outf[e] /= denom;                                           \
    }
DEFINE_HEAD(bf16, uint16_t, bf16_load)
DEFINE_HEAD(f32, float, f32_load)
#endif

#define DEFINE_ATTENTION(SUFFIX, ELEM, LOAD, STORE)                                             \
    int specdec_attention_##SUFFIX(const ELEM *q, int64_t q_tok, int64_t q_head, const ELEM *k, \
                                   const ELEM *v, int64_t kv_head, ELEM *out, int t_new, int h,  \
                                   int h_kv, int d, int start, const uint8_t *mask, float scale, \
                                   float *work) {                                               \
        if (h_kv <= 0 || h % h_kv != 0 || d <= 0 || d > MAX_HEAD_DIM || t_new <= 0 || start < 0) return 1; \
        int rep = h / h_kv;                                                                     \
        int32_t *visible = (int32_t *)work; /* the slots a row sees, in order */                \
        float *p = work + (start + t_new);  /* their scores, then their weights */              \
        float *qf = p + (start + t_new);    /* the query in float32 */                          \
        float *of = qf + d;                 /* one head's output in float32 */                  \
        for (int t = 0; t < t_new; t++) {                                                       \
            int n = 0;                                                                          \
            for (int j = 0; j < start; j++) visible[n++] = j;                                   \
            for (int u = 0; u < t_new; u++)                                                     \
                if (mask ? mask[(int64_t)t * t_new + u] != 0 : u <= t) visible[n++] = start + u; \
            if (n == 0) return 2;                                                               \
            for (int hh = 0; hh < h; hh++) {                                                    \
                const ELEM *qrow = q + t * q_tok + hh * q_head;                                 \
                for (int e = 0; e < d; e++) qf[e] = LOAD(qrow, e);                              \
                attend_head_##SUFFIX(qf, k + (hh / rep) * kv_head, v + (hh / rep) * kv_head,    \
                                     visible, n, scale, p, of, d);                              \
                ELEM *orow = out + ((int64_t)t * h + hh) * d;                                   \
                for (int e = 0; e < d; e++) orow[e] = STORE(of[e]);                             \
            }                                                                                   \
        }                                                                                       \
        return 0;                                                                               \
    }

#define F32_STORE(x) (x)
DEFINE_ATTENTION(bf16, uint16_t, bf16_load, bf16_round)
DEFINE_ATTENTION(f32, float, f32_load, F32_STORE)

int specdec_abi_version(void) { return 2; }
