/* Attention of T new queries over one sequence's KV cache (CPU).
 *
 * Built at first use by models/native.py (cc -O3 -march=native -ffp-contract=off, with
 * -fopenmp where it links) and called through ctypes; models/attention.py says when.
 *
 * Every query row's result is computed from its own query and the keys it may see, taken
 * in slot order, by the same steps whatever else the call holds: never depending on how
 * many other rows, keys or threads there are. So a decode step and a verify pass (chain or
 * tree) score a position bit for bit alike, with no padding of key or row counts.
 * Fixed reduction orders make that hold under vectorization:
 *   - the score q.k: lane l of a 16-lane accumulator takes elements l, l + 16, ... (one
 *     fused multiply-add per chunk, chunk by chunk), then the lanes are halved in a fixed
 *     tree (score16: 16 keys at a time, each key in its own lanes, so a block's other keys
 *     change nothing);
 *   - the softmax denominator sums 16 lanes by the key's ordinal among the visible keys
 *     (not its slot, so a tree node and the decode step after compaction agree);
 *   - the value sum runs over the visible keys in order.
 * -ffp-contract=off keeps every other multiply and add a separate IEEE operation.
 *
 * Work sharing, which changes no result: the heads of one KV group are scored against
 * each block of 16 keys together (with more than 4 rows the block is converted to float32
 * once, with fewer the rows read the cache), and their value sums share each value row's
 * load. Units of one KV group and a run of positions are spread over the threads (OpenMP;
 * loaded beside torch, the build resolves to torch's own libgomp and its thread pool).
 *
 * Layouts (element strides, so q can be a view of the fused qkv projection):
 *   q    [T, H, D]       row t, head h at q + t * q_tok + h * q_head
 *   k, v [H_kv, S, D]    key j of KV head g at k + g * kv_head + j * D
 *   out  [T, H, D]       contiguous
 * Query t sits at slot start + t. Causal (mask NULL): it sees slots [0, start + t]. With a
 * mask over the last W = mask_keys slots (T <= W <= start + T; W = T masks the new tokens
 * only), first = start + T - W: it sees slots [0, first) and, among slots first + u, those
 * with mask[t * W + u] != 0 (an EAGLE tree draft's earlier levels are such masked slots).
 * The ragged entry (specdec_attention_rows_*) takes such a mask per row, W = that row's
 * new-token count, or none (causal).
 * Head h reads KV head h / (H / H_kv) (grouped-query attention).
 * Scores, softmax and the value sum are float32; out is rounded once to the cache dtype.
 * work: specdec_attention_work_floats(...) floats. Head dims up to MAX_HEAD_DIM (256).
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

/* max(p[0 .. n)) by the gather loop's rule, m = x > m ? x : m from -3.4e38 (NaN never wins),
 * in 16 lanes: the maximum of the same values, so the same float. */
static float max_scores(const float *p, int n) {
    __m512 acc = _mm512_set1_ps(-3.4e38f);
    for (int i = 0; i < n; i += 16) /* vmaxps(x, m): x > m ? x : m */
        acc = _mm512_max_ps(_mm512_mask_loadu_ps(_mm512_set1_ps(-3.4e38f), tail_mask(n - i), p + i), acc);
    float lanes[16], m = -3.4e38f;
    _mm512_storeu_ps(lanes, acc);
    for (int l = 0; l < 16; l++) m = lanes[l] > m ? lanes[l] : m;
    return m;
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

/* One call's shape (the arguments every unit reads). */
struct call {
    int64_t q_tok, q_head, kv_head;
    int t_new, h, h_kv, d, start;
    const uint8_t *mask;
    int mask_keys; /* the mask's width W: it covers slots [start + t_new - W, start + t_new) */
    float scale;
};

/* The first slot the mask covers: every position sees the slots before it. */
static int mask_first(const struct call *a) { return a->mask ? a->start + a->t_new - a->mask_keys : a->start; }

/* The slots every position sees: [0, mask_first), written once per unit. */
static void prefix_slots(const struct call *a, int32_t *visible) {
    const int first = mask_first(a);
    for (int j = 0; j < first; j++) visible[j] = j;
}

/* The slots position t sees, in order: the prefix (prefix_slots), then the masked or new
 * ones it may see, written after it. Returns their count. */
static int visible_slots(const struct call *a, int t, int32_t *visible) {
    const int first = mask_first(a);
    int n = first;
    if (a->mask) {
        const uint8_t *row = a->mask + (int64_t)t * a->mask_keys;
        for (int u = 0; u < a->mask_keys; u++)
            if (row[u]) visible[n++] = first + u;
    } else {
        for (int u = 0; u <= t; u++) visible[n++] = first + u;
    }
    return n;
}

/* 1 when a row of the [t_new, mask_keys] mask allows no slot: with nothing before the
 * masked slots (mask_first 0) its query would see no key. */
static int mask_blind(const uint8_t *mask, int t_new, int mask_keys) {
    for (int t = 0; t < t_new; t++) {
        int seen = 0;
        for (int u = 0; u < mask_keys; u++) seen |= mask[(int64_t)t * mask_keys + u];
        if (!seen) return 1;
    }
    return 0;
}

static int64_t round16(int64_t n) { return (n + 15) / 16 * 16; }

/* Scratch of one unit of `chunk` positions, in floats (for both builds' units). */
static int64_t unit_work_floats(const struct call *a, int chunk) {
    int64_t rows = (int64_t)chunk * (a->h / a->h_kv), n16 = round16((int64_t)a->start + a->t_new), dp = round16(a->d);
    return n16 + rows * n16 + rows * dp + 16 * dp;
}

/* Units of one KV group and `chunk` positions: enough of them for every thread when the
 * call is big enough to share, one per group otherwise. */
struct split { int units, chunk, threads; };
#define MAX_UNIT_POSITIONS 32 /* a unit's scores take rep * 32 * (start + T) floats */
static struct split split_work(int t_new, int h_kv, int threads) {
    struct split sp;
#ifdef _OPENMP
    sp.threads = threads > 1 ? threads : 1;
#else
    (void)threads;
    sp.threads = 1;
#endif
    int per_group = (2 * sp.threads + h_kv - 1) / h_kv; /* ~2 units per thread */
    if (sp.threads == 1 || per_group < 1) per_group = 1;
    if (per_group < (t_new + MAX_UNIT_POSITIONS - 1) / MAX_UNIT_POSITIONS) /* bounded scratch */
        per_group = (t_new + MAX_UNIT_POSITIONS - 1) / MAX_UNIT_POSITIONS;
    if (per_group > t_new) per_group = t_new;
    sp.chunk = (t_new + per_group - 1) / per_group;
    sp.units = h_kv * ((t_new + sp.chunk - 1) / sp.chunk);
    if (sp.threads > sp.units) sp.threads = sp.units;
    return sp;
}

int64_t specdec_attention_work_floats(int t_new, int h, int h_kv, int d, int start, int threads) {
    if (h_kv <= 0 || t_new <= 0) return 0;
    struct call a = {0, 0, 0, t_new, h, h_kv, d, start, 0, 0, 0.0f};
    struct split sp = split_work(t_new, h_kv, threads);
    return sp.threads * unit_work_floats(&a, sp.chunk);
}

#ifdef _OPENMP
#include <omp.h>
static int thread_index(void) { return omp_get_thread_num(); }
#else
static int thread_index(void) { return 0; }
#endif

#define MAX_HEAD_DIM 256
#ifdef HAVE_AVX512
/* The scores of one query row against a block of 16 keys, computed for every key by the
 * same steps: lane l of key j's accumulator sums q[e] * k_j[e] over e = l, l + 16, ... (one
 * fused multiply-add per chunk, in chunk order), then its 16 lanes are halved in a fixed
 * tree (l + 8, l + 4, l + 2, l + 1), here for 16 keys at once by shuffles, so no key's
 * result depends on the other 15. The result is permuted back to key order.
 * qv: the query, zero-padded vectors; key j at keys + j * stride (bfloat16 or float32),
 * keys j >= nb and elements e >= d read as zero. */
static inline __attribute__((always_inline)) __m512 key_chunk(const void *keys, int is_bf16, int64_t offset, __mmask16 m) {
    return is_bf16 ? bf16x16_load((const uint16_t *)keys + offset, m) : f32x16_load((const float *)keys + offset, m);
}
/* The fixed tree over each key's 16 lane partials a[j], for 16 keys at once, back in key order. */
static inline __attribute__((always_inline)) __m512 reduce16(const __m512 *a) {
    __m512 b[8], c[4], e[2];
    for (int i = 0; i < 8; i++) /* lanes l + 8: [key 2i | key 2i+1], 8 partials each */
        b[i] = _mm512_add_ps(_mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], 0x44), _mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], 0xEE));
    for (int i = 0; i < 4; i++) /* l + 4: keys 4i..4i+3, one per 128-bit lane, 4 partials each */
        c[i] = _mm512_add_ps(_mm512_shuffle_f32x4(b[2 * i], b[2 * i + 1], 0x88), _mm512_shuffle_f32x4(b[2 * i], b[2 * i + 1], 0xDD));
    for (int i = 0; i < 2; i++) /* l + 2: lane L holds keys 8i+L and 8i+4+L, 2 partials each */
        e[i] = _mm512_add_ps(_mm512_shuffle_ps(c[2 * i], c[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm512_shuffle_ps(c[2 * i], c[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    /* l + 1: element 4L + m is key 4m + L */
    __m512 f = _mm512_add_ps(_mm512_shuffle_ps(e[0], e[1], _MM_SHUFFLE(2, 0, 2, 0)), _mm512_shuffle_ps(e[0], e[1], _MM_SHUFFLE(3, 1, 3, 1)));
    const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    return _mm512_permutexvar_ps(order, f);
}

static inline __attribute__((always_inline)) __m512 score16(const __m512 *qv, const void *keys, int is_bf16, int64_t stride, int nb, int d) {
    const int nch = (d + 15) / 16;
    __m512 a[16];
    for (int j = 0; j < 16; j++) {
        __m512 s = _mm512_setzero_ps();
        for (int ch = 0; ch < nch; ch++)
            s = _mm512_fmadd_ps(qv[ch], key_chunk(keys, is_bf16, j * stride + 16 * ch, j < nb ? tail_mask(d - 16 * ch) : 0), s);
        a[j] = s;
    }
    return reduce16(a);
}

/* score16 for up to 4 rows at once: each key chunk is loaded (and widened) once for all of
 * them; every row's sums are the same operations in the same order, so the same bits.
 * qv: rows x MAX_HEAD_DIM / 16 vectors; out: rows. */
static inline __attribute__((always_inline)) void score16_rows(const __m512 (*qv)[MAX_HEAD_DIM / 16], int rows, const void *keys,
                                                               int is_bf16, int64_t stride, int nb, int d, __m512 *out) {
    const int nch = (d + 15) / 16;
    __m512 a[4][16];
    for (int j = 0; j < 16; j++) {
        __m512 kc[MAX_HEAD_DIM / 16];
        for (int ch = 0; ch < nch; ch++) kc[ch] = key_chunk(keys, is_bf16, j * stride + 16 * ch, j < nb ? tail_mask(d - 16 * ch) : 0);
        for (int r = 0; r < rows; r++) {
            __m512 s = _mm512_setzero_ps();
            for (int ch = 0; ch < nch; ch++) s = _mm512_fmadd_ps(qv[r][ch], kc[ch], s);
            a[r][j] = s;
        }
    }
    for (int r = 0; r < rows; r++) out[r] = reduce16(a[r]);
}

/* Up to 4 query rows that see the same keys (the heads of one KV group at one position):
 * out_r = sum_i p_r[i] * v[visible[i]] / denom_r, keys in order, one fused multiply-add per
 * key and chunk; the value rows are loaded and converted once for all of them. */
#define DEFINE_VALUE_SUM(SUFFIX, ELEM, LOAD16)                                                  \
    static inline __attribute__((always_inline)) void value_sum_##SUFFIX##_d(                   \
        const ELEM *vh, const int32_t *visible, int n, float *const *p, const float *denom,      \
        int rows, float *const *outf, int d) {                                                  \
        const int nch = (d + 15) / 16;                                                          \
        __m512 acc[4][MAX_HEAD_DIM / 16];                                                       \
        for (int r = 0; r < rows; r++)                                                          \
            for (int c = 0; c < nch; c++) acc[r][c] = _mm512_setzero_ps();                      \
        for (int i = 0; i < n; i++) {                                                           \
            const ELEM *vrow = vh + (int64_t)visible[i] * d;                                    \
            for (int c = 0; c < nch; c++) {                                                     \
                __m512 vc = LOAD16(vrow + 16 * c, tail_mask(d - 16 * c));                       \
                for (int r = 0; r < rows; r++)                                                  \
                    acc[r][c] = _mm512_fmadd_ps(_mm512_set1_ps(p[r][i]), vc, acc[r][c]);        \
            }                                                                                   \
        }                                                                                       \
        for (int r = 0; r < rows; r++) {                                                        \
            __m512 dv = _mm512_set1_ps(denom[r]);                                               \
            for (int c = 0; c < nch; c++)                                                       \
                _mm512_mask_storeu_ps(outf[r] + 16 * c, tail_mask(d - 16 * c), _mm512_div_ps(acc[r][c], dv)); \
        }                                                                                       \
    }                                                                                           \
    static void value_sum_##SUFFIX(const ELEM *vh, const int32_t *visible, int n, float *const *p, \
                                   const float *denom, int rows, float *const *outf, int d) {    \
        if (d == 64) value_sum_##SUFFIX##_d(vh, visible, n, p, denom, rows, outf, 64);          \
        else if (d == 128) value_sum_##SUFFIX##_d(vh, visible, n, p, denom, rows, outf, 128);   \
        else value_sum_##SUFFIX##_d(vh, visible, n, p, denom, rows, outf, d);                   \
    }
DEFINE_VALUE_SUM(bf16, uint16_t, bf16x16_load)
DEFINE_VALUE_SUM(f32, float, f32x16_load)

/* Scores of the KV group's rows against all n_all slots, 16 keys at a time. With more than a
 * few rows each block of keys is converted to float32 once (kf: 16 x dp) and scored by every
 * row; with a few (a decode step) the rows read the cache directly. Both compute the same
 * values. qf: rows x dp; s: rows x round16(n_all). */
static inline __attribute__((always_inline)) void group_scores_d(const float *qf, int rows, int n_all, float scale, float *s,
                                                                 float *kf, const void *kg, int is_bf16, int d) {
    const int nch = (d + 15) / 16, dp = 16 * nch;
    const int64_t n16 = round16(n_all);
    const __m512 sv = _mm512_set1_ps(scale);
    const int staged = rows > 4;
    __m512 qv[4][MAX_HEAD_DIM / 16];
    if (!staged)
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < nch; c++) qv[r][c] = _mm512_loadu_ps(qf + (int64_t)r * dp + 16 * c);
    for (int b = 0; b < n_all; b += 16) {
        int nb = n_all - b < 16 ? n_all - b : 16;
        const void *keys = is_bf16 ? (const void *)((const uint16_t *)kg + (int64_t)b * d) : (const void *)((const float *)kg + (int64_t)b * d);
        if (!staged) { /* a few rows (a decode step's heads of one KV group): keys loaded once for all */
            __m512 sc[4];
            score16_rows(qv, rows, keys, is_bf16, d, nb, d, sc);
            for (int r = 0; r < rows; r++) _mm512_storeu_ps(s + r * n16 + b, _mm512_mul_ps(sc[r], sv));
            continue;
        }
        for (int j = 0; j < 16; j++)
            for (int c = 0; c < nch; c++)
                _mm512_storeu_ps(kf + j * dp + 16 * c, key_chunk(keys, is_bf16, (int64_t)j * d + 16 * c, j < nb ? tail_mask(d - 16 * c) : 0));
        for (int r = 0; r < rows; r++) {
            __m512 q1[MAX_HEAD_DIM / 16];
            for (int c = 0; c < nch; c++) q1[c] = _mm512_loadu_ps(qf + (int64_t)r * dp + 16 * c);
            _mm512_storeu_ps(s + r * n16 + b, _mm512_mul_ps(score16(q1, kf, 0, dp, 16, dp), sv));
        }
    }
}
static void group_scores(const float *qf, int rows, int n_all, float scale, float *s, float *kf, const void *kg, int is_bf16, int d) {
    if (d == 64) group_scores_d(qf, rows, n_all, scale, s, kf, kg, is_bf16, 64);
    else if (d == 128) group_scores_d(qf, rows, n_all, scale, s, kf, kg, is_bf16, 128);
    else group_scores_d(qf, rows, n_all, scale, s, kf, kg, is_bf16, d);
}

/* One unit of work: KV group g at positions [t0, t1). Every row's scores over all slots
 * (block by block), then per position the visible slots in order, the softmax and the value
 * sum. A row's result depends only on its query and the keys it sees. */
#define DEFINE_UNIT(SUFFIX, ELEM, LOAD, STORE, IS_BF16)                                         \
    static void attend_unit_##SUFFIX(const struct call *a, const ELEM *q, const ELEM *k,         \
                                     const ELEM *v, ELEM *out, int g, int t0, int t1, float *work) { \
        const int rep = a->h / a->h_kv, d = a->d, dp = (int)round16(d), n_all = a->start + a->t_new; \
        const int rows = rep * (t1 - t0);                                                       \
        const int64_t n16 = round16(n_all);                                                     \
        int32_t *visible = (int32_t *)work; /* the slots a position sees, in order */           \
        float *s = work + n16;              /* rows x n16 scores, then weights */               \
        float *qf = s + rows * n16;         /* rows x dp queries in float32, zero-padded */     \
        float *kf = qf + (int64_t)rows * dp; /* 16 x dp keys in float32 */                      \
        for (int t = t0; t < t1; t++) /* row (t - t0) * rep + i is head g * rep + i at t */     \
            for (int i = 0; i < rep; i++) {                                                     \
                const ELEM *qrow = q + t * a->q_tok + (g * rep + i) * a->q_head;                \
                float *dst = qf + (int64_t)((t - t0) * rep + i) * dp;                           \
                for (int e = 0; e < dp; e++) dst[e] = e < d ? LOAD(qrow, e) : 0.0f;             \
            }                                                                                   \
        group_scores(qf, rows, n_all, a->scale, s, kf, k + g * a->kv_head, IS_BF16, d);         \
        prefix_slots(a, visible);                                                               \
        for (int t = t0; t < t1; t++) {                                                         \
            int n = visible_slots(a, t, visible);                                               \
            for (int i0 = 0; i0 < rep; i0 += 4) {                                               \
                int nr = rep - i0 < 4 ? rep - i0 : 4;                                           \
                float *p[4], denom[4], *of[4];                                                  \
                for (int r = 0; r < nr; r++) {                                                  \
                    int row = (t - t0) * rep + i0 + r;                                          \
                    p[r] = s + row * n16;                                                       \
                    float m = -3.4e38f;                                                         \
                    if (!a->mask) /* causal: slots 0 .. n - 1 in place, nothing to gather */    \
                        m = max_scores(p[r], n);                                                \
                    else                                                                        \
                        for (int i = 0; i < n; i++) { /* in place: visible[i] >= i */           \
                            float x = p[r][visible[i]];                                         \
                            p[r][i] = x;                                                        \
                            m = x > m ? x : m;                                                  \
                        }                                                                       \
                    denom[r] = exp_and_sum(p[r], n, m);                                         \
                    of[r] = qf + (int64_t)row * dp; /* its query is done with */                \
                }                                                                               \
                value_sum_##SUFFIX(v + g * a->kv_head, visible, n, p, denom, nr, of, d);        \
                for (int r = 0; r < nr; r++) {                                                  \
                    ELEM *orow = out + ((int64_t)t * a->h + g * rep + i0 + r) * d;              \
                    for (int e = 0; e < d; e++) orow[e] = STORE(of[r][e]);                      \
                }                                                                               \
            }                                                                                   \
        }                                                                                       \
    }
#else
/* Portable build: the same definition of every score, value sum and softmax, one row and
 * one head at a time. */
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

#define DEFINE_UNIT(SUFFIX, ELEM, LOAD, STORE, IS_BF16)                                         \
    static void attend_unit_##SUFFIX(const struct call *a, const ELEM *q, const ELEM *k,         \
                                     const ELEM *v, ELEM *out, int g, int t0, int t1, float *work) { \
        const int rep = a->h / a->h_kv, d = a->d;                                               \
        const int64_t n16 = round16(a->start + a->t_new);                                       \
        int32_t *visible = (int32_t *)work; /* the slots a row sees, in order */                \
        float *p = work + n16;              /* their scores, then their weights */              \
        float *qf = p + n16;                /* the query in float32 */                          \
        float *of = qf + d;                 /* one head's output in float32 */                  \
        prefix_slots(a, visible);                                                               \
        for (int t = t0; t < t1; t++) {                                                         \
            int n = visible_slots(a, t, visible);                                               \
            for (int hh = g * rep; hh < (g + 1) * rep; hh++) {                                  \
                const ELEM *qrow = q + t * a->q_tok + hh * a->q_head;                           \
                for (int e = 0; e < d; e++) qf[e] = LOAD(qrow, e);                              \
                attend_head_##SUFFIX(qf, k + g * a->kv_head, v + g * a->kv_head, visible, n,    \
                                     a->scale, p, of, d);                                       \
                ELEM *orow = out + ((int64_t)t * a->h + hh) * d;                                \
                for (int e = 0; e < d; e++) orow[e] = STORE(of[e]);                             \
            }                                                                                   \
        }                                                                                       \
    }
#endif

/* The work is split into units of one KV group and a run of positions, spread over the
 * threads (OpenMP, torch's own runtime when loaded beside it); which thread computes a row
 * changes nothing in it. */
#define DEFINE_ATTENTION(SUFFIX, ELEM, LOAD, STORE, IS_BF16)                                    \
    DEFINE_UNIT(SUFFIX, ELEM, LOAD, STORE, IS_BF16)                                             \
    int specdec_attention_##SUFFIX(const ELEM *q, int64_t q_tok, int64_t q_head, const ELEM *k, \
                                   const ELEM *v, int64_t kv_head, ELEM *out, int t_new, int h,  \
                                   int h_kv, int d, int start, const uint8_t *mask, int mask_keys, \
                                   float scale, float *work, int threads) {                     \
        struct call a = {q_tok, q_head, kv_head, t_new, h, h_kv, d, start, mask, mask_keys, scale}; \
        if (h_kv <= 0 || h % h_kv != 0 || d <= 0 || d > MAX_HEAD_DIM || t_new <= 0 || start < 0) return 1; \
        if (mask && (mask_keys < t_new || mask_keys > start + t_new)) return 1;                 \
        if (mask && mask_first(&a) == 0 && mask_blind(mask, t_new, mask_keys)) return 2;       \
        struct split sp = split_work(t_new, h_kv, threads);                                     \
        const int64_t per_thread = unit_work_floats(&a, sp.chunk);                              \
        _Pragma("omp parallel for schedule(static) num_threads(sp.threads) if (sp.threads > 1)") \
        for (int u = 0; u < sp.units; u++) {                                                    \
            int g = u % h_kv, t0 = (u / h_kv) * sp.chunk;                                       \
            int t1 = t0 + sp.chunk < t_new ? t0 + sp.chunk : t_new;                             \
            attend_unit_##SUFFIX(&a, q, k, v, out, g, t0, t1, work + thread_index() * per_thread); \
        }                                                                                       \
        return 0;                                                                               \
    }

/* A ragged batch: row r of the KV cache holds starts[r] tokens and takes the n_r packed
 * queries [offsets[r], offsets[r + 1]) at slots starts[r], starts[r] + 1, .... Each query
 * sees its row's whole cached prefix, slots [0, starts[r]), and among the row's new tokens:
 *   - causal (masks NULL, mask_offsets NULL or mask_offsets[r] < 0): itself and those before it;
 *   - a tree (mask_offsets[r] >= 0): the n_r x n_r uint8 mask at masks + mask_offsets[r],
 *     row-major, query t seeing new token u where mask[t * n_r + u] != 0 (an EAGLE-2 tree
 *     verified per row), i.e. the one-sequence call's mask with mask_keys = n_r.
 * Every row is computed by the units a one-sequence call would run on it, so a row's result
 * is, bit for bit, what specdec_attention_* gives that row alone with the same mask (or none).
 *   q    [N, H, D]          packed query t at q + t * q_tok + h * q_head
 *   k, v [B, H_kv, S, D]    row r's KV head g at k + r * kv_row + g * kv_head
 *   out  [N, H, D]          contiguous
 * Returns 0, 1 on bad arguments, 2 when a masked row with an empty prefix has a query that
 * sees no key (as the one-sequence entry). Units are (row, KV group, a run of up to
 * MAX_UNIT_POSITIONS queries), spread over the threads; work:
 * specdec_attention_rows_work_floats(...) floats. */
int64_t specdec_attention_rows_work_floats(int max_new, int h, int h_kv, int d, int max_keys, int threads) {
    if (h_kv <= 0 || max_new <= 0) return 0;
    int chunk = max_new < MAX_UNIT_POSITIONS ? max_new : MAX_UNIT_POSITIONS;
    struct call a = {0, 0, 0, max_new, h, h_kv, d, max_keys - max_new, 0, 0, 0.0f};
#ifdef _OPENMP
    int nt = threads > 1 ? threads : 1;
#else
    (void)threads;
    int nt = 1;
#endif
    return nt * unit_work_floats(&a, chunk);
}

/* A ragged batch's largest row (new tokens) and furthest slot reached; 1 when a row has a
 * negative count or start. Shared with layers.c's stack. */
int specdec_ragged_extent(int b, const int64_t *offsets, const int64_t *starts, int *max_new, int *max_keys) {
    *max_new = *max_keys = 0;
    for (int r = 0; r < b; r++) {
        int64_t n = offsets[r + 1] - offsets[r];
        if (n < 0 || starts[r] < 0) return 1;
        if (n > *max_new) *max_new = (int)n;
        if (starts[r] + n > *max_keys) *max_keys = (int)(starts[r] + n);
    }
    return 0;
}

/* Row r's tree mask (NULL: causal) of a ragged batch's masks / mask_offsets. */
static const uint8_t *row_mask(const uint8_t *masks, const int64_t *mask_offsets, int r) {
    return masks && mask_offsets && mask_offsets[r] >= 0 ? masks + mask_offsets[r] : 0;
}

/* A ragged batch's tree masks checked as the one-sequence entry checks its mask: 0 fine, 1 a
 * row's mask given as an offset without a buffer, 2 a masked row with an empty prefix
 * (starts[r] == 0) and a query that sees no key. Shared with layers.c's stack, which checks
 * before it writes the cache. */
int specdec_ragged_masks_check(int b, const int64_t *offsets, const int64_t *starts, const uint8_t *masks,
                               const int64_t *mask_offsets) {
    if (!mask_offsets) return 0;
    for (int r = 0; r < b; r++) {
        if (mask_offsets[r] < 0) continue;
        if (!masks) return 1;
        int n = (int)(offsets[r + 1] - offsets[r]);
        if (n > 0 && starts[r] == 0 && mask_blind(masks + mask_offsets[r], n, n)) return 2;
    }
    return 0;
}

#define DEFINE_ATTENTION_ROWS(SUFFIX, ELEM)                                                     \
    int specdec_attention_rows_##SUFFIX(const ELEM *q, int64_t q_tok, int64_t q_head, const ELEM *k, \
                                        const ELEM *v, int64_t kv_row, int64_t kv_head, ELEM *out, \
                                        int b, const int64_t *offsets, const int64_t *starts,     \
                                        const uint8_t *masks, const int64_t *mask_offsets, int h, \
                                        int h_kv, int d, float scale, float *work, int threads) { \
        if (b <= 0) return 0;                                                                   \
        if (h_kv <= 0 || h % h_kv != 0 || d <= 0 || d > MAX_HEAD_DIM) return 1;                 \
        int max_new, max_keys, units = 0;                                                       \
        if (specdec_ragged_extent(b, offsets, starts, &max_new, &max_keys)) return 1;           \
        if (max_new == 0) return 0;                                                             \
        int bad = specdec_ragged_masks_check(b, offsets, starts, masks, mask_offsets);          \
        if (bad) return bad;                                                                    \
        int *first_unit = (int *)__builtin_alloca(sizeof(int) * (b + 1));                       \
        for (int r = 0; r < b; r++) {                                                           \
            int n = (int)(offsets[r + 1] - offsets[r]);                                         \
            first_unit[r] = units;                                                              \
            units += h_kv * ((n + MAX_UNIT_POSITIONS - 1) / MAX_UNIT_POSITIONS);                \
        }                                                                                       \
        first_unit[b] = units;                                                                  \
        const int64_t per_thread = specdec_attention_rows_work_floats(max_new, h, h_kv, d, max_keys, 1); \
        int nt = threads > 1 ? threads : 1;                                                     \
        if (nt > units) nt = units;                                                             \
        (void)nt;                                                                               \
        _Pragma("omp parallel for schedule(dynamic, 4) num_threads(nt) if (nt > 1)")            \
        for (int u = 0; u < units; u++) {                                                       \
            int lo = 0, hi = b - 1; /* the row whose units hold u */                            \
            while (lo < hi) {                                                                   \
                int mid = (lo + hi + 1) / 2;                                                    \
                if (first_unit[mid] <= u) lo = mid; else hi = mid - 1;                          \
            }                                                                                   \
            int r = lo, j = u - first_unit[r];                                                  \
            int n = (int)(offsets[r + 1] - offsets[r]);                                         \
            const uint8_t *mask = row_mask(masks, mask_offsets, r);                             \
            struct call a = {q_tok, q_head, kv_head, n, h, h_kv, d, (int)starts[r], mask, mask ? n : 0, scale}; \
            int g = j % h_kv, t0 = (j / h_kv) * MAX_UNIT_POSITIONS;                             \
            int t1 = t0 + MAX_UNIT_POSITIONS < n ? t0 + MAX_UNIT_POSITIONS : n;                 \
            attend_unit_##SUFFIX(&a, q + offsets[r] * q_tok, k + r * kv_row, v + r * kv_row,    \
                                 out + offsets[r] * (int64_t)h * d, g, t0, t1,                  \
                                 work + thread_index() * per_thread);                           \
        }                                                                                       \
        return 0;                                                                               \
    }

#define F32_STORE(x) (x)
DEFINE_ATTENTION(bf16, uint16_t, bf16_load, bf16_round, 1)
DEFINE_ATTENTION(f32, float, f32_load, F32_STORE, 0)
DEFINE_ATTENTION_ROWS(bf16, uint16_t)
DEFINE_ATTENTION_ROWS(f32, float)

int specdec_abi_version(void) { return 10; }
