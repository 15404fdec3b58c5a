/* The decoder stack of a Llama-family model in one call (CPU, one sequence).
 *
 * A layer is eight kernels of this library (two RMSNorms, four linears, attention,
 * SwiGLU) and the glue between them: RoPE, the KV-cache writes and two residual adds.
 * Run from PyTorch, the glue is ~10 ATen calls per layer and the kernels are ctypes calls
 * with their own Python wrappers, ~130 us per layer of overhead against a decode step's
 * ~400 us of arithmetic (the default model, bfloat16, Intel Xeon, 2 threads). Here the
 * whole stack is one call; models/llama.py makes it when every piece is native.
 *
 * Every step computes what the PyTorch path computes, bit for bit, so the two paths are
 * interchangeable (tests/test_native.py compares them):
 *   - RoPE, x * cos + roll(x, D/2) * sin (sin signed, models/llama.py `apply_rope`): the
 *     two products and the sum are separate IEEE operations, each rounded to the model
 *     dtype as PyTorch's three elementwise kernels round them (bfloat16: products of two
 *     bfloat16 values are exact in float32, then rounded to nearest even);
 *   - the residual add x + y, rounded once to the model dtype;
 *   - the kernels are the ones the PyTorch path calls, with the same arguments.
 * Nothing depends on the row count or the thread count, as in each kernel.
 *
 * Layouts (element counts; E = the model dtype, float32 or bfloat16 as uint16_t):
 *   x        [T, hidden] E, the residual stream: embeddings in, the last layer's output out
 *   cos, sin [T, head_dim] E, the rows of the RoPE tables at the tokens' positions
 *   k, v     layer i, KV head g, slot j at base + i * layer_stride + g * kv_head_stride +
 *            j * head_dim; the T new tokens go to slots start .. start + T - 1
 *   mask     [T, W] uint8 over the last W = mask_keys slots (W = T: the new tokens), or NULL
 *            (causal): attention.c
 *   masks    ragged batches: row r's [n_r, n_r] uint8 tree mask over its own new tokens at
 *            masks + mask_offsets[r], or causal where mask_offsets[r] < 0 (or either is NULL)
 *   capture  NULL, or num_layers pointers; capture[i] != NULL receives x after layer i
 * Weights: packed panels (matmul.c) for the linears, E vectors for the norms, and an
 * optional float32 bias of the fused q/k/v projection. A NULL attn_norm is the identity
 * (the EAGLE-1 head's layer, models/eagle.py).
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bf16.h"

int specdec_linear_f32(const float *x, const float *packed, const float *bias, float *out, int64_t m, int64_t n,
                       int64_t k, int threads);
int specdec_linear_bf16(const uint16_t *x, const uint16_t *packed, const float *bias, uint16_t *out, int64_t m,
                        int64_t n, int64_t k, int threads);
int specdec_rms_norm_f32(const float *x, const float *w, float *out, int64_t rows, int dim, float eps);
int specdec_rms_norm_bf16(const uint16_t *x, const uint16_t *w, uint16_t *out, int64_t rows, int dim, float eps);
int specdec_swiglu_f32(const float *gu, float *out, int64_t rows, int64_t inter, int threads);
int specdec_swiglu_bf16(const uint16_t *gu, uint16_t *out, int64_t rows, int64_t inter, int threads);
int64_t specdec_attention_work_floats(int t_new, int h, int h_kv, int d, int start, int threads);
int specdec_attention_f32(const float *q, int64_t q_tok, int64_t q_head, const float *k, const float *v,
                          int64_t kv_head, float *out, int t_new, int h, int h_kv, int d, int start,
                          const uint8_t *mask, int mask_keys, float scale, float *work, int threads);
int specdec_attention_bf16(const uint16_t *q, int64_t q_tok, int64_t q_head, const uint16_t *k, const uint16_t *v,
                           int64_t kv_head, uint16_t *out, int t_new, int h, int h_kv, int d, int start,
                           const uint8_t *mask, int mask_keys, float scale, float *work, int threads);
int specdec_ragged_extent(int b, const int64_t *offsets, const int64_t *starts, int *max_new, int *max_keys);
int specdec_ragged_masks_check(int b, const int64_t *offsets, const int64_t *starts, const uint8_t *masks,
                               const int64_t *mask_offsets);
int64_t specdec_attention_rows_work_floats(int max_new, int h, int h_kv, int d, int max_keys, int threads);
int specdec_attention_rows_f32(const float *q, int64_t q_tok, int64_t q_head, const float *k, const float *v,
                               int64_t kv_row, int64_t kv_head, float *out, int b, const int64_t *offsets,
                               const int64_t *starts, const uint8_t *masks, const int64_t *mask_offsets, int h,
                               int h_kv, int d, float scale, float *work, int threads);
int specdec_attention_rows_bf16(const uint16_t *q, int64_t q_tok, int64_t q_head, const uint16_t *k, const uint16_t *v,
                                int64_t kv_row, int64_t kv_head, uint16_t *out, int b, const int64_t *offsets,
                                const int64_t *starts, const uint8_t *masks, const int64_t *mask_offsets, int h,
                                int h_kv, int d, float scale, float *work, int threads);

struct specdec_layer_weights {
    const void *attn_norm;
    const void *wqkv; /* packed [hidden -> (heads + 2 kv_heads) head_dim] */
    const float *wqkv_bias;
    const void *wo; /* packed [heads head_dim -> hidden] */
    const void *mlp_norm;
    const void *w13; /* packed [hidden -> 2 inter], gate then up */
    const void *w2;  /* packed [inter -> hidden] */
};

struct specdec_stack {
    int32_t num_layers, hidden, heads, kv_heads, head_dim, inter, is_bf16;
    float eps, scale; /* RMSNorm epsilon; attention scale 1 / sqrt(head_dim) as float */
    const struct specdec_layer_weights *layers;
};

/* ---- the glue, float32 ----------------------------------------------------------- */

/* dst[e] = x[e] * cos[e] + x[(e + d/2) % d] * sin[e] for one head of d (even) elements. */
static void rope_head_f32(const float *x, const float *cos, const float *sin, float *dst, int d) {
    const int half = d / 2;
    int e = 0;
#if defined(__AVX512F__)
    if (half % 16 == 0)
        for (; e < d; e += 16) {
            int r = e < half ? e + half : e - half;
            __m512 a = _mm512_mul_ps(_mm512_loadu_ps(x + e), _mm512_loadu_ps(cos + e));
            __m512 b = _mm512_mul_ps(_mm512_loadu_ps(x + r), _mm512_loadu_ps(sin + e));
            _mm512_storeu_ps(dst + e, _mm512_add_ps(a, b));
        }
#endif
    for (; e < d; e++) {
        float a = x[e] * cos[e];
        float b = x[e < half ? e + half : e - half] * sin[e];
        dst[e] = a + b;
    }
}

static void add_f32(float *x, const float *y, int64_t n) {
    int64_t i = 0;
#if defined(__AVX512F__)
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(x + i, _mm512_add_ps(_mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
#endif
    for (; i < n; i++) x[i] = x[i] + y[i];
}

/* ---- the glue, bfloat16: every product and sum rounded as PyTorch's kernels round it -- */

static inline float rounded_bf16(float f) {
    uint16_t h = bf16_round(f);
    return bf16_load(&h, 0);
}

static void rope_head_bf16(const uint16_t *x, const uint16_t *cos, const uint16_t *sin, uint16_t *dst, int d) {
    const int half = d / 2;
    int e = 0;
#if defined(__AVX512F__)
#define W16(p) widen16_bf16(_mm256_loadu_si256((const __m256i *)(p)))
#define R16(f) widen16_bf16(bf16_round16(f))
    if (half % 16 == 0)
        for (; e < d; e += 16) {
            int r = e < half ? e + half : e - half;
            __m512 a = R16(_mm512_mul_ps(W16(x + e), W16(cos + e)));
            __m512 b = R16(_mm512_mul_ps(W16(x + r), W16(sin + e)));
            _mm256_storeu_si256((__m256i *)(dst + e), bf16_round16(_mm512_add_ps(a, b)));
        }
#endif
    for (; e < d; e++) {
        float a = bf16_load(x, e) * bf16_load(cos, e);
        float b = bf16_load(x, e < half ? e + half : e - half) * bf16_load(sin, e);
        dst[e] = bf16_round(rounded_bf16(a) + rounded_bf16(b));
    }
}

static void add_bf16(uint16_t *x, const uint16_t *y, int64_t n) {
    int64_t i = 0;
#if defined(__AVX512F__)
    for (; i + 16 <= n; i += 16) _mm256_storeu_si256((__m256i *)(x + i), bf16_round16(_mm512_add_ps(W16(x + i), W16(y + i))));
#undef W16
#undef R16
#endif
    for (; i < n; i++) x[i] = bf16_round(bf16_load(x, i) + bf16_load(y, i));
}

/* ---- dispatch on the model dtype -------------------------------------------------- */

static int linear(int bf16, const void *x, const void *w, const float *bias, void *out, int64_t m, int64_t n, int64_t k,
                  int threads) {
    return bf16 ? specdec_linear_bf16(x, w, bias, out, m, n, k, threads) : specdec_linear_f32(x, w, bias, out, m, n, k, threads);
}

static int rms_norm(int bf16, const void *x, const void *w, void *out, int64_t rows, int dim, float eps) {
    return bf16 ? specdec_rms_norm_bf16(x, w, out, rows, dim, eps) : specdec_rms_norm_f32(x, w, out, rows, dim, eps);
}

static int swiglu(int bf16, const void *gu, void *out, int64_t rows, int64_t inter, int threads) {
    return bf16 ? specdec_swiglu_bf16(gu, out, rows, inter, threads) : specdec_swiglu_f32(gu, out, rows, inter, threads);
}

static void rope_head(int bf16, const void *x, const void *cos, const void *sin, void *dst, int d) {
    if (bf16)
        rope_head_bf16(x, cos, sin, dst, d);
    else
        rope_head_f32(x, cos, sin, dst, d);
}

static void add(int bf16, void *x, const void *y, int64_t n) {
    if (bf16)
        add_bf16(x, y, n);
    else
        add_f32(x, y, n);
}

#define MAX_HEAD_DIM 256 /* attention.c's */
#define AT(p, i) ((void *)((char *)(p) + (int64_t)(i) * es)) /* element i of an E array */

/* The stack over T tokens: one sequence (rows == NULL: slots start .. start + T - 1, the
 * mask or causal), or a ragged batch (rows: the tokens of cache row r are x's rows
 * [offsets[r], offsets[r + 1]) at slots starts[r], starts[r] + 1, ..., each row causal or
 * under its own tree mask (masks, mask_offsets: attention.c's ragged entry); row r's cache
 * at + r * row_stride). Attention is attention.c's one-sequence or ragged entry; everything
 * else is per token, so a ragged row is, bit for bit, the same sequence alone with the same
 * mask. 0 on success; 1 bad arguments (a ragged row's mask that leaves a query no key
 * included, found before the cache is written), 2 out of memory, 3 a kernel rejected its
 * arguments. */
struct ragged {
    int b;
    const int64_t *offsets, *starts;
    const uint8_t *masks;        /* tree masks of the rows, packed; NULL: every row causal */
    const int64_t *mask_offsets; /* [b]: row r's mask at masks + mask_offsets[r]; < 0 or NULL: causal */
    int64_t row_stride;
};

static int stack_forward(const struct specdec_stack *s, void *x, int t, int start, const void *cos, const void *sin,
                         const uint8_t *mask, int mask_keys, const struct ragged *rows, void *k_base, void *v_base, int64_t layer_stride,
                         int64_t kv_head_stride, void *const *capture, int threads) {
    if (!s || !x || t <= 0 || start < 0 || threads < 1 || s->head_dim <= 0 || s->head_dim > MAX_HEAD_DIM ||
        s->head_dim % 2 || s->heads <= 0 || s->kv_heads <= 0 || s->heads % s->kv_heads)
        return 1;
    const int bf16 = s->is_bf16, hid = s->hidden, h = s->heads, h_kv = s->kv_heads, d = s->head_dim;
    const int64_t es = bf16 ? 2 : 4, nqkv = (int64_t)(h + 2 * h_kv) * d, inter = s->inter;
    int max_new = 0, max_keys = 0;
    if (rows && (rows->b <= 0 || rows->offsets[0] != 0 || rows->offsets[rows->b] != t ||
                 specdec_ragged_extent(rows->b, rows->offsets, rows->starts, &max_new, &max_keys) ||
                 specdec_ragged_masks_check(rows->b, rows->offsets, rows->starts, rows->masks, rows->mask_offsets)))
        return 1;
    /* scratch: normed x, qkv, attention out, projection out, gate/up, activation */
    const int64_t sizes[6] = {t * (int64_t)hid, t * nqkv, t * (int64_t)h * d, t * (int64_t)hid, t * 2 * inter, t * inter};
    int64_t total = 0;
    for (int i = 0; i < 6; i++) total += (sizes[i] * es + 63) / 64 * 64;
    const int64_t work_floats = rows ? specdec_attention_rows_work_floats(max_new, h, h_kv, d, max_keys, threads)
                                     : specdec_attention_work_floats(t, h, h_kv, d, start, threads);
    char *scratch = aligned_alloc(64, (size_t)(total + (work_floats * 4 + 63) / 64 * 64 + 64));
    if (!scratch) return 2;
    void *buf[6];
    char *p = scratch;
    for (int i = 0; i < 6; i++) buf[i] = p, p += (sizes[i] * es + 63) / 64 * 64;
    float *work = (float *)p;
    void *normed = buf[0], *qkv = buf[1], *attn = buf[2], *proj = buf[3], *gate_up = buf[4], *act = buf[5];
    int rc = 0;
    for (int i = 0; i < s->num_layers && rc == 0; i++) {
        const struct specdec_layer_weights *w = &s->layers[i];
        char *kc = (char *)k_base + i * layer_stride * es, *vc = (char *)v_base + i * layer_stride * es;
        if (w->attn_norm) rc |= rms_norm(bf16, x, w->attn_norm, normed, t, hid, s->eps);
        rc |= linear(bf16, w->attn_norm ? normed : x, w->wqkv, w->wqkv_bias, qkv, t, nqkv, hid, threads);
        if (rc) break;
        char tmp[MAX_HEAD_DIM * 4]; /* one query head */
        int row = 0;
        for (int r = 0; r < t; r++) {
            int64_t slot = start + r, row_base = 0; /* the token's cache slot and row */
            if (rows) {
                while (rows->offsets[row + 1] <= r) row++;
                slot = rows->starts[row] + (r - rows->offsets[row]);
                row_base = row * rows->row_stride;
            }
            const void *c = AT(cos, (int64_t)r * d), *sn = AT(sin, (int64_t)r * d);
            char *q = AT(qkv, r * nqkv);
            for (int hh = 0; hh < h; hh++) { /* queries: rotated in place */
                memcpy(tmp, q + (int64_t)hh * d * es, d * es);
                rope_head(bf16, tmp, c, sn, q + (int64_t)hh * d * es, d);
            }
            for (int g = 0; g < h_kv; g++) { /* keys rotated into the cache, values copied */
                int64_t at = row_base + g * kv_head_stride + slot * d;
                rope_head(bf16, q + (int64_t)(h + g) * d * es, c, sn, kc + at * es, d);
                memcpy(vc + at * es, q + (int64_t)(h + h_kv + g) * d * es, d * es);
            }
        }
        if (rows)
            rc |= bf16 ? specdec_attention_rows_bf16(qkv, nqkv, d, (const uint16_t *)kc, (const uint16_t *)vc, rows->row_stride,
                                                     kv_head_stride, attn, rows->b, rows->offsets, rows->starts, rows->masks,
                                                     rows->mask_offsets, h, h_kv, d, s->scale, work, threads)
                       : specdec_attention_rows_f32(qkv, nqkv, d, (const float *)kc, (const float *)vc, rows->row_stride,
                                                    kv_head_stride, attn, rows->b, rows->offsets, rows->starts, rows->masks,
                                                    rows->mask_offsets, h, h_kv, d, s->scale, work, threads);
        else
            rc |= bf16 ? specdec_attention_bf16(qkv, nqkv, d, (const uint16_t *)kc, (const uint16_t *)vc, kv_head_stride, attn,
                                                t, h, h_kv, d, start, mask, mask_keys, s->scale, work, threads)
                       : specdec_attention_f32(qkv, nqkv, d, (const float *)kc, (const float *)vc, kv_head_stride, attn, t, h,
                                               h_kv, d, start, mask, mask_keys, s->scale, work, threads);
        rc |= linear(bf16, attn, w->wo, 0, proj, t, hid, (int64_t)h * d, threads);
        if (rc) break;
        add(bf16, x, proj, t * (int64_t)hid);
        rc |= rms_norm(bf16, x, w->mlp_norm, normed, t, hid, s->eps);
        rc |= linear(bf16, normed, w->w13, 0, gate_up, t, 2 * inter, hid, threads);
        rc |= swiglu(bf16, gate_up, act, t, inter, threads);
        rc |= linear(bf16, act, w->w2, 0, proj, t, hid, inter, threads);
        if (rc) break;
        add(bf16, x, proj, t * (int64_t)hid);
        if (capture && capture[i]) memcpy(capture[i], x, (size_t)(t * (int64_t)hid * es));
    }
    free(scratch);
    return rc ? 3 : 0;
}

int specdec_stack_forward(const struct specdec_stack *s, void *x, int t, int start, const void *cos, const void *sin,
                          const uint8_t *mask, int mask_keys, void *k_base, void *v_base, int64_t layer_stride,
                          int64_t kv_head_stride, void *const *capture, int threads) {
    return stack_forward(s, x, t, start, cos, sin, mask, mask_keys, 0, k_base, v_base, layer_stride, kv_head_stride, capture, threads);
}

/* The ragged batch: b rows, tokens packed by row (offsets [b + 1], starts [b]), each causal
 * or under its tree mask (masks, mask_offsets [b]; both NULL: every row causal). */
int specdec_stack_forward_rows(const struct specdec_stack *s, void *x, int t, int b, const int64_t *offsets,
                               const int64_t *starts, const uint8_t *masks, const int64_t *mask_offsets,
                               const void *cos, const void *sin, void *k_base, void *v_base, int64_t layer_stride,
                               int64_t row_stride, int64_t kv_head_stride, void *const *capture, int threads) {
    if (!offsets || !starts) return 1;
    struct ragged rows = {b, offsets, starts, masks, mask_offsets, row_stride};
    return stack_forward(s, x, t, 0, cos, sin, 0, 0, &rows, k_base, v_base, layer_stride, kv_head_stride, capture, threads);
}
