/* Row-wise argmax, top-k labels, the SwiGLU product and the draft head's label cross-entropy
 * (CPU), for rows of float32 or bfloat16.
 *
 * argmax: torch.argmax over the last dim of a [17, 49152] bfloat16 logits block costs
 * ~1.8 ms here (a 17-token verify pass's greedy read-out; ~0.9 ms in float32), 6% of
 * the pass; it is one scalar loop per row. Two vector passes over each row do it in
 * microseconds: the maximum, then the first index holding it. The answer is torch's:
 * the first maximum; the first NaN where a row has one (torch ranks NaN above all).
 *
 * swiglu: out[r, i] = silu(gu[r, i]) * gu[r, I + i] for the MLP's fused gate/up output
 * [rows, 2I], in float32, rounded once (bfloat16). F.silu and the multiply are two ATen
 * kernels plus a chunk; for a verify pass's rows in bfloat16 they cost ~40 us per layer.
 * silu(g) = g / (1 + exp(-g)) with exp from a degree-6 polynomial after range reduction
 * to [-ln2/2, ln2/2] (error ~2 ulp, below bfloat16's rounding and F.silu's own); every
 * element is computed alone by the same steps in the vector and the portable loops.
 *
 * top_labels: a row's k largest values with their indices (descending; equal values by
 * index), its argmax (as above) and the softmax probabilities of the k, exp(x - max) / sum,
 * with the sum over the whole row in float32. The self-distillation data of draft-head
 * training (train/data.py) records these at every generated position: torch's
 * softmax + topk + argmax took ~25 ms per step of 128 rows over a 49k vocabulary here.
 */

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "bf16.h"

/* ---- argmax ---------------------------------------------------------------------- */

#define DEFINE_ARGMAX_SCALAR(SUFFIX, ELEM, LOAD)                                                 \
    static int64_t argmax_row_scalar_##SUFFIX(const ELEM *x, int64_t n) {                      \
        float best = -INFINITY;                                                                  \
        int64_t at = 0;                                                                          \
        for (int64_t i = 0; i < n; i++) {                                                        \
            float v = LOAD(x, i);                                                                \
            if (v != v) return i;                                                                \
            if (v > best) best = v, at = i;                                                      \
        }                                                                                        \
        return at;                                                                               \
    }

DEFINE_ARGMAX_SCALAR(f32, float, f32_load)
DEFINE_ARGMAX_SCALAR(bf16, uint16_t, bf16_load)

#if defined(__AVX512F__)
#include <immintrin.h>

static inline __m512 load16_f32(const float *x, __mmask16 m) {
    return _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), m, x);
}
static inline __m512 load16_bf16(const uint16_t *x, __mmask16 m) {
    return _mm512_mask_blend_ps(m, _mm512_set1_ps(-INFINITY), widen16_bf16(_mm256_maskz_loadu_epi16(m, x)));
}

/* Pass 1: the row's maximum, or a NaN seen; pass 2: the first index equal to it. */
#define DEFINE_ARGMAX_ROW(SUFFIX, ELEM)                                                          \
    static int64_t argmax_row_##SUFFIX(const ELEM *x, int64_t n) {                             \
        __m512 best = _mm512_set1_ps(-INFINITY);                                                 \
        __mmask16 nan = 0;                                                                       \
        for (int64_t i = 0; i < n; i += 16) {                                                    \
            __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);   \
            __m512 v = load16_##SUFFIX(x + i, m);                                                \
            nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);                                       \
            best = _mm512_max_ps(best, v);                                                       \
        }                                                                                        \
        if (nan) return argmax_row_scalar_##SUFFIX(x, n); /* the first NaN */                    \
        __m512 top = _mm512_set1_ps(_mm512_reduce_max_ps(best));                                 \
        for (int64_t i = 0; i < n; i += 16) {                                                    \
            __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);   \
            __mmask16 hit = _mm512_mask_cmp_ps_mask(m, load16_##SUFFIX(x + i, m), top, _CMP_EQ_OQ); \
            if (hit) return i + __builtin_ctz(hit);                                              \
        }                                                                                        \
        return 0; /* unreachable: the maximum is in the row */                                   \
    }
DEFINE_ARGMAX_ROW(f32, float)
DEFINE_ARGMAX_ROW(bf16, uint16_t)
#else
#define argmax_row_f32 argmax_row_scalar_f32
#define argmax_row_bf16 argmax_row_scalar_bf16
#endif

#define DEFINE_ARGMAX(SUFFIX, ELEM)                                                              \
    int specdec_argmax_##SUFFIX(const ELEM *x, int64_t rows, int64_t n, int64_t *out, int threads) { \
        if (rows < 0 || n <= 0 || threads < 1) return 1;                                         \
        _Pragma("omp parallel for schedule(static) num_threads(threads) if (rows * n > (1 << 18))") \
        for (int64_t r = 0; r < rows; r++) out[r] = argmax_row_##SUFFIX(x + r * n, n);           \
        return 0;                                                                                \
    }
DEFINE_ARGMAX(f32, float)
DEFINE_ARGMAX(bf16, uint16_t)

/* ---- swiglu ---------------------------------------------------------------------- */

/* exp(x) = 2^j * p(r), x = j ln2 + r; the input is clamped to where 2^j is a normal float.
 * Below g = -88 silu(g) = g e^g is under 5e-37: the kernel returns g * 0 (-0, or NaN for
 * -inf, as torch's x / (1 + exp(-x)) gives). */
#define EXP_LO -87.0f
#define EXP_HI 88.0f
#define LOG2E 1.44269504f
#define LN2_HI 0.693359375f /* ln 2 = LN2_HI + LN2_LO, LN2_HI exact in few bits */
#define LN2_LO -2.12194440e-4f
/* Taylor coefficients 1/6! .. 1/2!, then 1, 1 */
#define C6 1.3888889e-3f
#define C5 8.3333333e-3f
#define C4 4.1666667e-2f
#define C3 1.6666667e-1f
#define C2 0.5f

/* exp(x) after clamping x to [EXP_LO, EXP_HI]: 2^j * p(r), the same steps in both loops */
static inline float exp_clamped(float x) {
    x = fminf(fmaxf(x, EXP_LO), EXP_HI);
    float j = rintf(x * LOG2E);
    float r = fmaf(j, -LN2_LO, fmaf(j, -LN2_HI, x));
    float p = fmaf(fmaf(fmaf(fmaf(fmaf(C6, r, C5), r, C4), r, C3), r, C2), r, 1.0f);
    p = fmaf(p, r, 1.0f);
    uint32_t bits = (uint32_t)((int32_t)j + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

static inline float silu_scalar(float g) {
    if (-g > EXP_HI) return g * 0.0f;
    return g / (1.0f + exp_clamped(-g));
}

#if defined(__AVX512F__)
static inline __m512 exp16_clamped(__m512 x) { /* exp_clamped's steps, 16 lanes */
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(EXP_LO)), _mm512_set1_ps(EXP_HI));
    __m512 j = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(LOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fmadd_ps(j, _mm512_set1_ps(-LN2_LO), _mm512_fmadd_ps(j, _mm512_set1_ps(-LN2_HI), x));
    __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(C6), r, _mm512_set1_ps(C5));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(C4));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(C3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(C2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    __m512 scale = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(j), _mm512_set1_epi32(127)), 23));
    return _mm512_mul_ps(p, scale);
}

static inline __m512 silu16(__m512 g) { /* silu_scalar's steps, 16 lanes */
    __m512 neg = _mm512_sub_ps(_mm512_setzero_ps(), g);
    __mmask16 tiny = _mm512_cmp_ps_mask(neg, _mm512_set1_ps(EXP_HI), _CMP_GT_OQ);
    __m512 silu = _mm512_div_ps(g, _mm512_add_ps(_mm512_set1_ps(1.0f), exp16_clamped(neg)));
    return _mm512_mask_mul_ps(silu, tiny, g, _mm512_setzero_ps());
}
#endif

static void swiglu_row_f32(const float *gu, float *out, int64_t inter) {
    int64_t i = 0;
#if defined(__AVX512F__)
    for (; i + 16 <= inter; i += 16)
        _mm512_storeu_ps(out + i, _mm512_mul_ps(silu16(_mm512_loadu_ps(gu + i)), _mm512_loadu_ps(gu + inter + i)));
#endif
    for (; i < inter; i++) out[i] = silu_scalar(gu[i]) * gu[inter + i];
}

static void swiglu_row_bf16(const uint16_t *gu, uint16_t *out, int64_t inter) {
    int64_t i = 0;
#if defined(__AVX512F__)
    for (; i + 16 <= inter; i += 16) {
        __m512 g = widen16_bf16(_mm256_loadu_si256((const __m256i *)(gu + i)));
        __m512 u = widen16_bf16(_mm256_loadu_si256((const __m256i *)(gu + inter + i)));
        _mm256_storeu_si256((__m256i *)(out + i), bf16_round16(_mm512_mul_ps(silu16(g), u)));
    }
#endif
    for (; i < inter; i++) out[i] = bf16_round(silu_scalar(bf16_load(gu, i)) * bf16_load(gu, inter + i));
}

#define DEFINE_SWIGLU(SUFFIX, ELEM)                                                              \
    int specdec_swiglu_##SUFFIX(const ELEM *gu, ELEM *out, int64_t rows, int64_t inter, int threads) { \
        if (rows < 0 || inter <= 0 || threads < 1) return 1;                                     \
        _Pragma("omp parallel for schedule(static) num_threads(threads) if (rows * inter > (1 << 15))") \
        for (int64_t r = 0; r < rows; r++) swiglu_row_##SUFFIX(gu + r * 2 * inter, out + r * inter, inter); \
        return 0;                                                                                \
    }
DEFINE_SWIGLU(f32, float)
DEFINE_SWIGLU(bf16, uint16_t)

/* ---- top-k labels ------------------------------------------------------------------ */

#define MAX_TOP_K 64

/* Insert (v, i) into the descending top list of k (v > its last value). */
static inline void top_insert(float *vals, int32_t *ids, int k, float v, int64_t i) {
    int j = k - 1;
    while (j > 0 && vals[j - 1] < v) {
        vals[j] = vals[j - 1];
        ids[j] = ids[j - 1];
        j--;
    }
    vals[j] = v;
    ids[j] = (int32_t)i;
}

#if defined(__AVX512F__)
#define TOP_LOAD_f32(x, i, m) load16_f32((x) + (i), m)
#define TOP_LOAD_bf16(x, i, m) load16_bf16((x) + (i), m)
#endif

#define DEFINE_TOP_LABELS(SUFFIX, ELEM, LOAD)                                                      \
    static void top_labels_row_##SUFFIX(const ELEM *x, int64_t n, int k, int32_t *ids, float *probs, int64_t *greedy) { \
        int64_t at = argmax_row_##SUFFIX(x, n);                                                    \
        float m = LOAD(x, at), vals[MAX_TOP_K], lanes[16] = {0};                                   \
        *greedy = at;                                                                              \
        for (int j = 0; j < k; j++) vals[j] = -INFINITY, ids[j] = 0;                               \
        int64_t i = 0;                                                                             \
        TOP_VECTOR_##SUFFIX                                                                        \
        for (; i < n; i++) { /* the exp sum in 16 lanes by index, as the vector loop keeps it */   \
            float v = LOAD(x, i);                                                                  \
            lanes[i % 16] += exp_clamped(v - m);                                                    \
            if (v > vals[k - 1]) top_insert(vals, ids, k, v, i);                                   \
        }                                                                                          \
        for (int w = 8; w > 0; w /= 2)                                                             \
            for (int l = 0; l < w; l++) lanes[l] += lanes[l + w];                                  \
        for (int j = 0; j < k; j++) probs[j] = exp_clamped(vals[j] - m) / lanes[0];                 \
    }

#if defined(__AVX512F__)
/* 16 at a time: the exp sum in lanes, and only lanes above the k-th value go to top_insert */
#define TOP_VECTOR_BODY(SUFFIX)                                                                    \
    {                                                                                              \
        __m512 acc = _mm512_setzero_ps(), mv = _mm512_set1_ps(m);                                  \
        for (; i + 16 <= n; i += 16) {                                                             \
            __m512 v = TOP_LOAD_##SUFFIX(x, i, (__mmask16)0xffff);                                 \
            acc = _mm512_add_ps(acc, exp16_clamped(_mm512_sub_ps(v, mv)));                                 \
            __mmask16 above = _mm512_cmp_ps_mask(v, _mm512_set1_ps(vals[k - 1]), _CMP_GT_OQ);      \
            if (above) {                                                                           \
                float lane[16];                                                                    \
                _mm512_storeu_ps(lane, v);                                                         \
                for (; above; above &= above - 1) {                                                \
                    int l = __builtin_ctz(above);                                                  \
                    if (lane[l] > vals[k - 1]) top_insert(vals, ids, k, lane[l], i + l);           \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
        _mm512_storeu_ps(lanes, acc);                                                              \
    }
#define TOP_VECTOR_f32 TOP_VECTOR_BODY(f32)
#define TOP_VECTOR_bf16 TOP_VECTOR_BODY(bf16)
#else
#define TOP_VECTOR_f32
#define TOP_VECTOR_bf16
#endif

DEFINE_TOP_LABELS(f32, float, f32_load)
DEFINE_TOP_LABELS(bf16, uint16_t, bf16_load)

#define DEFINE_TOP_LABELS_ROWS(SUFFIX, ELEM)                                                       \
    int specdec_top_labels_##SUFFIX(const ELEM *x, int64_t rows, int64_t n, int k, int32_t *ids, float *probs, \
                                    int64_t *greedy, int threads) {                                \
        if (rows < 0 || n <= 0 || k < 1 || k > MAX_TOP_K || k > n || threads < 1) return 1;        \
        _Pragma("omp parallel for schedule(static) num_threads(threads) if (rows * n > (1 << 18))") \
        for (int64_t r = 0; r < rows; r++)                                                         \
            top_labels_row_##SUFFIX(x + r * n, n, k, ids + r * k, probs + r * k, greedy + r);      \
        return 0;                                                                                  \
    }
DEFINE_TOP_LABELS_ROWS(f32, float)
DEFINE_TOP_LABELS_ROWS(bf16, uint16_t)

/* ---- label cross-entropy (draft-head training) -------------------------------------- */

/* The draft head's token loss against the target's recorded top-k (train/trainer.py): per
 * row of logits x [n] with labels (ids [k], probs [k], probs zero where a label is unused),
 *   loss = sum_j p_j (lse - x[id_j]),  lse = log sum_i exp(x_i),
 *   dx_i = g (P softmax_i - sum_{j: id_j = i} p_j),  P = sum_j p_j,
 * and the row's argmax (the agreement metric). Through ATen the loss took a float32 copy of
 * the [M, V] logits, log_softmax, a gather, its zero-filled backward and a separate argmax:
 * seven passes over [M, V] and ~65 ms of each ~170 ms unrolled step here (M ~1500, V 8192).
 * Here the forward reads each row twice (argmax_row, then the exp sum in 16 lanes by index,
 * as top_labels) and the backward once, writing dx in the logits' dtype. */

static int labels_valid(const int64_t *ids, int64_t rows, int k, int64_t n) {
    for (int64_t j = 0; j < rows * k; j++)
        if (ids[j] < 0 || ids[j] >= n) return 0;
    return 1;
}

#define DEFINE_LABEL_CE(SUFFIX, ELEM, LOAD)                                                        \
    static float lse_row_##SUFFIX(const ELEM *x, int64_t n, int64_t *greedy) {                    \
        int64_t at = argmax_row_##SUFFIX(x, n);                                                    \
        float m = LOAD(x, at), lanes[16] = {0};                                                    \
        *greedy = at;                                                                              \
        int64_t i = 0;                                                                             \
        LSE_VECTOR_##SUFFIX                                                                        \
        for (; i < n; i++) lanes[i % 16] += exp_clamped(LOAD(x, i) - m);                           \
        for (int w = 8; w > 0; w /= 2)                                                             \
            for (int l = 0; l < w; l++) lanes[l] += lanes[l + w];                                  \
        return m + logf(lanes[0]);                                                                 \
    }                                                                                              \
    int specdec_label_ce_forward_##SUFFIX(const ELEM *x, int64_t rows, int64_t n, int k, const int64_t *ids, \
                                          const float *probs, float *lse, float *loss, int64_t *greedy, int threads) { \
        if (rows < 0 || n <= 0 || k < 1 || threads < 1) return 1;                                 \
        if (!labels_valid(ids, rows, k, n)) return 2;                                              \
        _Pragma("omp parallel for schedule(static) num_threads(threads) if (rows * n > (1 << 18))") \
        for (int64_t r = 0; r < rows; r++) {                                                       \
            const ELEM *row = x + r * n;                                                           \
            float s = lse_row_##SUFFIX(row, n, greedy + r), acc = 0.0f;                            \
            for (int j = 0; j < k; j++) acc += probs[r * k + j] * (s - LOAD(row, ids[r * k + j])); \
            lse[r] = s;                                                                            \
            loss[r] = acc;                                                                         \
        }                                                                                          \
        return 0;                                                                                  \
    }

#if defined(__AVX512F__)
#define LSE_VECTOR_BODY(SUFFIX)                                                                    \
    {                                                                                              \
        __m512 acc = _mm512_setzero_ps(), mv = _mm512_set1_ps(m);                                  \
        for (; i + 16 <= n; i += 16)                                                               \
            acc = _mm512_add_ps(acc, exp16_clamped(_mm512_sub_ps(TOP_LOAD_##SUFFIX(x, i, (__mmask16)0xffff), mv))); \
        _mm512_storeu_ps(lanes, acc);                                                              \
    }
#define LSE_VECTOR_f32 LSE_VECTOR_BODY(f32)
#define LSE_VECTOR_bf16 LSE_VECTOR_BODY(bf16)
#else
#define LSE_VECTOR_f32
#define LSE_VECTOR_bf16
#endif

DEFINE_LABEL_CE(f32, float, f32_load)
DEFINE_LABEL_CE(bf16, uint16_t, bf16_load)

static inline void store_f32(float *p, int64_t i, float v) { p[i] = v; }
static inline void store_bf16(uint16_t *p, int64_t i, float v) { p[i] = bf16_round(v); }

#define DEFINE_LABEL_CE_BACKWARD(SUFFIX, ELEM, LOAD, STORE)                                        \
    static void label_ce_backward_row_##SUFFIX(const ELEM *x, int64_t n, int k, const int64_t *ids, const float *probs, \
                                               float lse, float g, ELEM *dx) {                    \
        float psum = 0.0f;                                                                         \
        for (int j = 0; j < k; j++) psum += probs[j];                                              \
        float scale = g * psum;                                                                    \
        int64_t i = 0;                                                                             \
        CE_BACKWARD_VECTOR_##SUFFIX                                                                \
        for (; i < n; i++) STORE(dx, i, scale * exp_clamped(LOAD(x, i) - lse));                    \
        for (int j = 0; j < k; j++) { /* the label entries again, their probs subtracted once */    \
            int64_t at = ids[j];                                                                   \
            float p = 0.0f;                                                                        \
            for (int l = 0; l < k; l++) p += ids[l] == at ? probs[l] : 0.0f;                       \
            STORE(dx, at, scale * exp_clamped(LOAD(x, at) - lse) - g * p);                         \
        }                                                                                          \
    }                                                                                              \
    int specdec_label_ce_backward_##SUFFIX(const ELEM *x, int64_t rows, int64_t n, int k, const int64_t *ids, \
                                           const float *probs, const float *lse, const float *grad, ELEM *dx, int threads) { \
        if (rows < 0 || n <= 0 || k < 1 || threads < 1) return 1;                                  \
        if (!labels_valid(ids, rows, k, n)) return 2;                                              \
        _Pragma("omp parallel for schedule(static) num_threads(threads) if (rows * n > (1 << 18))") \
        for (int64_t r = 0; r < rows; r++)                                                         \
            label_ce_backward_row_##SUFFIX(x + r * n, n, k, ids + r * k, probs + r * k, lse[r], grad[r], dx + r * n); \
        return 0;                                                                                  \
    }

#if defined(__AVX512F__)
#define CE_BACKWARD_VECTOR_f32                                                                     \
    {                                                                                              \
        __m512 sv = _mm512_set1_ps(scale), lv = _mm512_set1_ps(lse);                               \
        for (; i + 16 <= n; i += 16)                                                               \
            _mm512_storeu_ps(dx + i, _mm512_mul_ps(sv, exp16_clamped(_mm512_sub_ps(_mm512_loadu_ps(x + i), lv)))); \
    }
#define CE_BACKWARD_VECTOR_bf16                                                                    \
    {                                                                                              \
        __m512 sv = _mm512_set1_ps(scale), lv = _mm512_set1_ps(lse);                               \
        for (; i + 16 <= n; i += 16) {                                                             \
            __m512 v = widen16_bf16(_mm256_loadu_si256((const __m256i *)(x + i)));                 \
            _mm256_storeu_si256((__m256i *)(dx + i), bf16_round16(_mm512_mul_ps(sv, exp16_clamped(_mm512_sub_ps(v, lv))))); \
        }                                                                                          \
    }
#else
#define CE_BACKWARD_VECTOR_f32
#define CE_BACKWARD_VECTOR_bf16
#endif

DEFINE_LABEL_CE_BACKWARD(f32, float, f32_load, store_f32)
DEFINE_LABEL_CE_BACKWARD(bf16, uint16_t, bf16_load, store_bf16)
