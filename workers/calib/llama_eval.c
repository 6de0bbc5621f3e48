/* Windowed next-token evaluation: mean NLL, and KL against a cached
 * reference run. */
#include "bitplan/llama.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>
#include <omp.h>

#include "calib_internal.h"

/* Batches are a throughput choice only: a window's logits do not depend on
 * which other windows share its forward pass (see bp_llama_forward_batch),
 * so neither do the sums. */
#define BATCH_TOKENS 4096                 /* rows per forward pass */
#define BATCH_LOGIT_BYTES (256u << 20)    /* logits buffers, all threads */

int64_t bp_eval_n_windows(int64_t n_tokens, int64_t ctx)
{
    if (n_tokens < 1 || ctx < 1)
        return 0;
    return (n_tokens - 1) / ctx;
}

/* --- sums ------------------------------------------------------------------- */

int bp_eval_sums_merge(bp_eval_sums *acc, const bp_eval_sums *add, bp_error *err)
{
    if (!acc || !add)
        return bp_error_set(err, BP_EINVAL, "eval sums merge: NULL argument");
    bp_eval_sums r;
    if (__builtin_add_overflow(acc->count, add->count, &r.count) ||
        __builtin_add_overflow(acc->nll_fx, add->nll_fx, &r.nll_fx) ||
        __builtin_add_overflow(acc->kl_fx, add->kl_fx, &r.kl_fx))
        return bp_error_set(err, BP_EINVAL, "eval sums merge: int64 overflow");
    *acc = r;
    return BP_OK;
}

double bp_eval_sums_mean_nll(const bp_eval_sums *s)
{
    if (!s || s->count <= 0)
        return NAN;
    return ldexp((double)s->nll_fx, -BP_EVAL_FX_SHIFT) / (double)s->count;
}

double bp_eval_sums_mean_kl(const bp_eval_sums *s)
{
    if (!s || s->count <= 0)
        return NAN;
    return ldexp((double)s->kl_fx, -BP_EVAL_FX_SHIFT) / (double)s->count;
}

double bp_eval_sums_ppl(const bp_eval_sums *s)
{
    return exp(bp_eval_sums_mean_nll(s));
}

/* Add one window's double sums, rounded once to fixed point. */
static int add_window(bp_eval_sums *acc, int64_t win, int64_t count, double nll,
                      double kl, bp_error *err)
{
    if (!isfinite(nll) || !isfinite(kl))
        return bp_error_set(err, BP_EINVAL,
                            "eval window %lld: non-finite loss (NLL sum %g, KL sum "
                            "%g); the model produced non-finite logits",
                            (long long)win, nll, kl);
    bp__i128 a, b;
    if (bp__fx_from_double(nll, BP_EVAL_FX_SHIFT, &a) < 0 ||
        bp__fx_from_double(kl, BP_EVAL_FX_SHIFT, &b) < 0 || a > INT64_MAX ||
        a < INT64_MIN || b > INT64_MAX || b < INT64_MIN)
        return bp_error_set(err, BP_EINVAL, "eval window %lld: loss sum out of range",
                            (long long)win);
    bp_eval_sums w = {count, (int64_t)a, (int64_t)b};
    int rc = bp_eval_sums_merge(acc, &w, err);
    if (rc < 0)
        bp_error_prefix(err, "eval window %lld", (long long)win);
    return rc;
}

/* --- per-row math ---------------------------------------------------------- */

/* log(sum_v exp(z_v)) in double, stable. */
static double logsumexp(const float *z, int64_t V)
{
    float m = z[0];
    for (int64_t v = 1; v < V; v++)
        if (z[v] > m)
            m = z[v];
    double s = 0.0;
    for (int64_t v = 0; v < V; v++)
        s += exp((double)z[v] - (double)m);
    return (double)m + log(s);
}

/* Mass of the tokens not in idx[0..k) (sorted ascending), given lse. */
static double rest_mass(const float *z, int64_t V, const uint32_t *idx, int64_t k,
                        double lse)
{
    double s = 0.0;
    int64_t p = 0;
    for (int64_t v = 0; v < V; v++) {
        if (p < k && (int64_t)idx[p] == v) {
            p++;
            continue;
        }
        s += exp((double)z[v] - lse);
    }
    return s;
}

/* Indices of the k largest logits (ties: lower index wins), sorted by
 * index. heap is scratch for k entries. */
static int heap_less(const float *z, uint32_t a, uint32_t b)
{
    /* "a ranks below b": smaller logit, or equal logit and larger index. */
    return z[a] < z[b] || (z[a] == z[b] && a > b);
}

static void sift_down(const float *z, uint32_t *h, int64_t k, int64_t i)
{
    for (;;) {
        int64_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < k && heap_less(z, h[l], h[m]))
            m = l;
        if (r < k && heap_less(z, h[r], h[m]))
            m = r;
        if (m == i)
            return;
        uint32_t t = h[i];
        h[i] = h[m];
        h[m] = t;
        i = m;
    }
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static void top_k(const float *z, int64_t V, int64_t k, uint32_t *out)
{
    /* out doubles as a min-heap (root = lowest ranked of the kept). */
    for (int64_t i = 0; i < k; i++)
        out[i] = (uint32_t)i;
    for (int64_t i = k / 2 - 1; i >= 0; i--)
        sift_down(z, out, k, i);
    for (int64_t v = k; v < V; v++) {
        if (heap_less(z, out[0], (uint32_t)v)) {
            out[0] = (uint32_t)v;
            sift_down(z, out, k, 0);
        }
    }
    qsort(out, (size_t)k, sizeof *out, cmp_u32);
}

/* --- the window loop --------------------------------------------------------- */

/* Per-window double sums, filled by the batch callbacks, turned into fixed
 * point in window order at the end. */
typedef struct win_sums {
    double *nll, *kl;      /* n_win each */
} win_sums;

/* Called with the logits of windows [w, w+nw) (relative to the `base`
 * given to run_windows), nw*ctx rows of V. Must only write state owned by
 * those windows: batches may run concurrently. */
typedef int (*batch_fn)(void *ctx, int64_t w, int64_t nw, const float *logits,
                        bp_error *err);

static int64_t batch_windows(int64_t ctx, int64_t V, int64_t n_win, int threads)
{
    int64_t nb = BATCH_TOKENS / ctx;
    int64_t by_mem = (int64_t)(BATCH_LOGIT_BYTES / sizeof(float)) / (ctx * V) / threads;
    if (by_mem < nb)
        nb = by_mem;
    /* Enough batches for every thread. */
    int64_t even = (n_win + threads - 1) / threads;
    if (even < nb)
        nb = even;
    if (nb < 1)
        nb = 1;
    return nb;
}

/* base[k*ctx .. k*ctx+ctx) is the input of relative window k.
 *
 * When every weight fits the model's cache, batches run concurrently, one
 * forward pass per thread with single-threaded BLAS: no barriers inside a
 * forward pass, which matters most for small models. Otherwise batches run
 * in order and each forward pass is parallel inside. Results are the same
 * either way, since a window's logits do not depend on its batch. */
static int run_windows(bp_llama *l, const uint32_t *base, int64_t ctx, int64_t n_win,
                       batch_fn fn, void *fctx, bp_error *err)
{
    if (n_win <= 0)
        return BP_OK;
    const int64_t V = bp_llama_get_config(l)->vocab_size;
    int threads = omp_get_max_threads();
    if (threads > 1 && (n_win < 2 || !bp__llama_cache_all(l)))
        threads = 1;
    const int64_t nb = batch_windows(ctx, V, n_win, threads);
    const int64_t n_batches = (n_win + nb - 1) / nb;
    if (threads > (int)n_batches)
        threads = (int)n_batches;
    const size_t per = sizeof(float) * (size_t)(nb * ctx) * (size_t)V;
    float *logits = malloc(per * (size_t)threads);
    if (!logits)
        return bp_error_set(err, BP_ENOMEM, "eval: out of memory for logits");
    int64_t bad = -1;
    bp_error first;
    bp_error_clear(&first);
    if (threads == 1) {
        for (int64_t b = 0; b < n_batches && bad < 0; b++) {
            const int64_t w = b * nb, n = n_win - w < nb ? n_win - w : nb;
            int rc = bp_llama_forward_batch(l, base + w * ctx, n, ctx, logits, NULL, &first);
            if (rc == BP_OK)
                rc = fn(fctx, w, n, logits, &first);
            if (rc < 0)
                bad = b;
        }
    } else {
        const int saved = openblas_get_num_threads();
        openblas_set_num_threads(1);
#pragma omp parallel num_threads(threads)
        {
            float *buf = (float *)((char *)logits + per * (size_t)omp_get_thread_num());
#pragma omp for schedule(dynamic, 1)
            for (int64_t b = 0; b < n_batches; b++) {
                const int64_t w = b * nb, n = n_win - w < nb ? n_win - w : nb;
                bp_error e;
                bp_error_clear(&e);
                int rc = bp_llama_forward_batch(l, base + w * ctx, n, ctx, buf, NULL, &e);
                if (rc == BP_OK)
                    rc = fn(fctx, w, n, buf, &e);
                if (rc < 0) {
#pragma omp critical(bp_calib_eval)
                    {
                        /* Report the earliest failing batch, whatever the schedule. */
                        if (bad < 0 || b < bad) {
                            bad = b;
                            first = e;
                            first.code = rc;
                        }
                    }
                }
            }
        }
        openblas_set_num_threads(saved);
    }
    free(logits);
    if (bad >= 0) {
        if (err)
            *err = first;
        return first.code < 0 ? first.code : BP_EINVAL;
    }
    return BP_OK;
}

/* Fixed-point totals from per-window sums, in window order (the order does
 * not change integer sums; it fixes which error is reported). */
static int finish_sums(const win_sums *ws, int64_t n_win, int64_t ctx, int64_t win_abs0,
                       bp_eval_sums *out, bp_error *err)
{
    bp_eval_sums acc = {0, 0, 0};
    for (int64_t k = 0; k < n_win; k++) {
        int rc = add_window(&acc, win_abs0 + k, ctx, ws->nll[k], ws->kl ? ws->kl[k] : 0.0,
                            err);
        if (rc < 0)
            return rc;
    }
    *out = acc;
    return BP_OK;
}

static int check_range(const bp_llama *l, int64_t n_tokens, int64_t ctx,
                       int64_t win_first, int64_t n_win, bp_error *err)
{
    const bp_llama_config *c = bp_llama_get_config(l);
    if (ctx < 1 || ctx > c->max_position_embeddings)
        return bp_error_set(err, BP_EINVAL,
                            "eval: ctx %lld must be in [1, max_position_embeddings "
                            "%lld]",
                            (long long)ctx, (long long)c->max_position_embeddings);
    int64_t total = bp_eval_n_windows(n_tokens, ctx);
    if (win_first < 0 || n_win < 0 || win_first > total || n_win > total - win_first)
        return bp_error_set(err, BP_EINVAL,
                            "eval: windows [%lld, %lld) outside the %lld windows of "
                            "%lld tokens at ctx %lld",
                            (long long)win_first, (long long)(win_first + n_win),
                            (long long)total, (long long)n_tokens, (long long)ctx);
    return BP_OK;
}

/* Sum rows [0, ctx) of each window in order. */
static void window_sums(const double *row, int64_t nw, int64_t ctx, double *out)
{
    for (int64_t k = 0; k < nw; k++) {
        double s = 0.0;
        for (int64_t t = 0; t < ctx; t++)
            s += row[k * ctx + t];
        out[k] = s;
    }
}

/* --- mean NLL ------------------------------------------------------------------ */

typedef struct nll_ctx {
    const uint32_t *base;
    int64_t ctx, V;
    win_sums ws;
} nll_ctx;

static int nll_batch(void *p, int64_t w, int64_t nw, const float *logits, bp_error *err)
{
    nll_ctx *c = p;
    const int64_t rows = nw * c->ctx, V = c->V;
    double *row = malloc(sizeof(double) * (size_t)rows);
    if (!row)
        return bp_error_set(err, BP_ENOMEM, "eval: out of memory");
#pragma omp parallel for schedule(static) if (rows * V >= (1 << 16))
    for (int64_t r = 0; r < rows; r++) {
        const float *z = logits + r * V;
        /* Row r predicts the token after its input position. */
        uint32_t target = c->base[w * c->ctx + r + 1];
        row[r] = logsumexp(z, V) - (double)z[target];
    }
    window_sums(row, nw, c->ctx, c->ws.nll + w);
    free(row);
    return BP_OK;
}

int bp_eval_nll(bp_llama *l, const uint32_t *tokens, int64_t n_tokens, int64_t ctx,
                int64_t win_first, int64_t n_win, bp_eval_sums *out, bp_error *err)
{
    if (!l || !out || (!tokens && n_tokens > 0))
        return bp_error_set(err, BP_EINVAL, "eval: NULL argument");
    memset(out, 0, sizeof *out);
    int rc = check_range(l, n_tokens, ctx, win_first, n_win, err);
    if (rc < 0 || n_win == 0)
        return rc;
    const int64_t V = bp_llama_get_config(l)->vocab_size;
    if ((rc = bp__check_ids(tokens, win_first * ctx, n_win * ctx + 1, V, "eval tokens",
                            err)) < 0)
        return rc;
    nll_ctx c = {tokens + win_first * ctx, ctx, V, {NULL, NULL}};
    c.ws.nll = malloc(sizeof(double) * (size_t)n_win);
    if (!c.ws.nll)
        return bp_error_set(err, BP_ENOMEM, "eval: out of memory");
    rc = run_windows(l, c.base, ctx, n_win, nll_batch, &c, err);
    if (rc == BP_OK)
        rc = finish_sums(&c.ws, n_win, ctx, win_first, out, err);
    free(c.ws.nll);
    return rc;
}

/* --- reference and KL ---------------------------------------------------------- */

struct bp_eval_reference {
    int64_t vocab, ctx, win_first, n_win;
    int64_t top_k;          /* 0: every logit kept */
    uint32_t *tokens;       /* n_win*ctx + 1 ids from position win_first*ctx */
    float *logits;          /* full: rows x vocab */
    uint32_t *idx;          /* top-k: rows x k, ascending token ids */
    float *top;             /* top-k: rows x k logits */
    double *lse;            /* rows: log-sum-exp of the row's logits */
    double *log_rest;       /* top-k: rows: log of the mass outside the top k */
    bp_eval_sums sums;      /* the reference model's NLL */
};

void bp_eval_reference_destroy(bp_eval_reference **pr)
{
    if (!pr || !*pr)
        return;
    bp_eval_reference *r = *pr;
    free(r->tokens);
    free(r->logits);
    free(r->idx);
    free(r->top);
    free(r->lse);
    free(r->log_rest);
    free(r);
    *pr = NULL;
}

uint64_t bp_eval_reference_bytes(int64_t vocab, int64_t ctx, int64_t n_win, int64_t top_k)
{
    if (vocab < 1 || ctx < 1 || n_win < 0)
        return 0;
    uint64_t rows = (uint64_t)ctx * (uint64_t)n_win;
    uint64_t per = (top_k <= 0 || top_k >= vocab) ? 4u * (uint64_t)vocab + 8u
                                                  : 8u * (uint64_t)top_k + 16u;
    return rows * per + 4u * (rows + 1u);
}

void bp_eval_reference_range(const bp_eval_reference *r, int64_t *win_first,
                             int64_t *n_win, int64_t *ctx)
{
    if (win_first)
        *win_first = r ? r->win_first : 0;
    if (n_win)
        *n_win = r ? r->n_win : 0;
    if (ctx)
        *ctx = r ? r->ctx : 0;
}

void bp_eval_reference_sums(const bp_eval_reference *r, bp_eval_sums *out)
{
    if (!out)
        return;
    if (r)
        *out = r->sums;
    else
        memset(out, 0, sizeof *out);
}

typedef struct ref_ctx {
    bp_eval_reference *r;
    win_sums ws;
} ref_ctx;

static int ref_batch(void *p, int64_t w, int64_t nw, const float *logits, bp_error *err)
{
    ref_ctx *c = p;
    bp_eval_reference *r = c->r;
    const int64_t ctx = r->ctx, V = r->vocab, k = r->top_k, rows = nw * ctx;
    const int64_t row0 = w * ctx;
    double *nll = malloc(sizeof(double) * (size_t)rows);
    if (!nll)
        return bp_error_set(err, BP_ENOMEM, "eval reference: out of memory");
#pragma omp parallel for schedule(static) if (rows * V >= (1 << 16))
    for (int64_t i = 0; i < rows; i++) {
        const float *z = logits + i * V;
        const int64_t g = row0 + i;
        double lse = logsumexp(z, V);
        r->lse[g] = lse;
        nll[i] = lse - (double)z[r->tokens[g + 1]];
        if (k == 0) {
            memcpy(r->logits + g * V, z, sizeof(float) * (size_t)V);
        } else {
            uint32_t *idx = r->idx + g * k;
            top_k(z, V, k, idx);
            for (int64_t j = 0; j < k; j++)
                r->top[g * k + j] = z[idx[j]];
            double rest = rest_mass(z, V, idx, k, lse);
            r->log_rest[g] = rest > 0 ? log(rest) : -INFINITY;
        }
    }
    window_sums(nll, nw, ctx, c->ws.nll + w);
    free(nll);
    return BP_OK;
}

int bp_eval_reference_new(bp_llama *l, const uint32_t *tokens, int64_t n_tokens,
                          int64_t ctx, int64_t win_first, int64_t n_win, int64_t top_k,
                          bp_eval_reference **out, bp_error *err)
{
    if (!l || !out || (!tokens && n_tokens > 0))
        return bp_error_set(err, BP_EINVAL, "eval reference: NULL argument");
    *out = NULL;
    int rc = check_range(l, n_tokens, ctx, win_first, n_win, err);
    if (rc < 0)
        return rc;
    if (n_win < 1)
        return bp_error_set(err, BP_EINVAL, "eval reference: no windows");
    if (top_k < 0)
        return bp_error_set(err, BP_EINVAL, "eval reference: top_k %lld < 0",
                            (long long)top_k);
    const int64_t V = bp_llama_get_config(l)->vocab_size;
    if ((rc = bp__check_ids(tokens, win_first * ctx, n_win * ctx + 1, V, "eval tokens",
                            err)) < 0)
        return rc;
    if (top_k >= V)
        top_k = 0;

    ref_ctx c = {NULL, {NULL, NULL}};
    bp_eval_reference *r = calloc(1, sizeof *r);
    if (!r)
        return bp_error_set(err, BP_ENOMEM, "eval reference: out of memory");
    r->vocab = V;
    r->ctx = ctx;
    r->win_first = win_first;
    r->n_win = n_win;
    r->top_k = top_k;
    const size_t rows = (size_t)(n_win * ctx);
    r->tokens = malloc(sizeof(uint32_t) * (rows + 1));
    r->lse = malloc(sizeof(double) * rows);
    if (top_k == 0) {
        r->logits = malloc(sizeof(float) * rows * (size_t)V);
    } else {
        r->idx = malloc(sizeof(uint32_t) * rows * (size_t)top_k);
        r->top = malloc(sizeof(float) * rows * (size_t)top_k);
        r->log_rest = malloc(sizeof(double) * rows);
    }
    c.r = r;
    c.ws.nll = malloc(sizeof(double) * (size_t)n_win);
    if (!r->tokens || !r->lse || !c.ws.nll ||
        (top_k == 0 ? !r->logits : (!r->idx || !r->top || !r->log_rest))) {
        rc = bp_error_set(err, BP_ENOMEM,
                          "eval reference: out of memory (%llu bytes needed)",
                          (unsigned long long)bp_eval_reference_bytes(V, ctx, n_win, top_k));
        goto out;
    }
    memcpy(r->tokens, tokens + win_first * ctx, sizeof(uint32_t) * (rows + 1));
    if ((rc = run_windows(l, r->tokens, ctx, n_win, ref_batch, &c, err)) < 0 ||
        (rc = finish_sums(&c.ws, n_win, ctx, win_first, &r->sums, err)) < 0)
        goto out;
    *out = r;
    r = NULL;
out:
    free(c.ws.nll);
    bp_eval_reference_destroy(&r);
    return rc;
}

typedef struct cmp_ctx {
    const bp_eval_reference *r;
    int64_t w0;            /* reference-relative window of this call's window 0 */
    win_sums ws;
} cmp_ctx;

static int cmp_batch(void *p, int64_t w, int64_t nw, const float *logits, bp_error *err)
{
    cmp_ctx *c = p;
    const bp_eval_reference *r = c->r;
    const int64_t ctx = r->ctx, V = r->vocab, k = r->top_k, rows = nw * ctx;
    const int64_t row0 = (c->w0 + w) * ctx;
    double *nll = malloc(sizeof(double) * (size_t)rows);
    double *kls = malloc(sizeof(double) * (size_t)rows);
    if (!nll || !kls) {
        free(nll);
        free(kls);
        return bp_error_set(err, BP_ENOMEM, "eval compare: out of memory");
    }
#pragma omp parallel for schedule(static) if (rows * V >= (1 << 16))
    for (int64_t i = 0; i < rows; i++) {
        const float *zq = logits + i * V;
        const int64_t g = row0 + i;
        const double lq = logsumexp(zq, V), lp = r->lse[g];
        nll[i] = lq - (double)zq[r->tokens[g + 1]];
        double kl = 0.0;
        if (k == 0) {
            const float *zp = r->logits + g * V;
            for (int64_t v = 0; v < V; v++) {
                double a = (double)zp[v] - lp, b = (double)zq[v] - lq;
                kl += exp(a) * (a - b);
            }
        } else {
            const uint32_t *idx = r->idx + g * k;
            const float *zp = r->top + g * k;
            for (int64_t j = 0; j < k; j++) {
                double a = (double)zp[j] - lp, b = (double)zq[idx[j]] - lq;
                kl += exp(a) * (a - b);
            }
            const double lrest = r->log_rest[g];
            if (lrest > -INFINITY) {
                double qrest = rest_mass(zq, V, idx, k, lq);
                /* A rest bucket the model gives no mass at all (underflow)
                 * is clamped to the smallest normal double. */
                double lq_rest = qrest > 0x1p-1022 ? log(qrest) : log(0x1p-1022);
                kl += exp(lrest) * (lrest - lq_rest);
            }
        }
        kls[i] = kl;
    }
    window_sums(nll, nw, ctx, c->ws.nll + w);
    window_sums(kls, nw, ctx, c->ws.kl + w);
    free(nll);
    free(kls);
    return BP_OK;
}

int bp_eval_compare(bp_llama *l, const bp_eval_reference *r, int64_t win_first,
                    int64_t n_win, bp_eval_sums *out, bp_error *err)
{
    if (!l || !r || !out)
        return bp_error_set(err, BP_EINVAL, "eval compare: NULL argument");
    memset(out, 0, sizeof *out);
    const bp_llama_config *cfg = bp_llama_get_config(l);
    if (cfg->vocab_size != r->vocab)
        return bp_error_set(err, BP_EMISMATCH,
                            "eval compare: model vocab_size %lld differs from the "
                            "reference's %lld",
                            (long long)cfg->vocab_size, (long long)r->vocab);
    if (win_first < r->win_first || n_win < 0 ||
        win_first - r->win_first > r->n_win - n_win)
        return bp_error_set(err, BP_EINVAL,
                            "eval compare: windows [%lld, %lld) are not inside the "
                            "reference's [%lld, %lld)",
                            (long long)win_first, (long long)(win_first + n_win),
                            (long long)r->win_first, (long long)(r->win_first + r->n_win));
    if (r->ctx > cfg->max_position_embeddings)
        return bp_error_set(err, BP_EINVAL, "eval compare: ctx exceeds the model's limit");
    if (n_win == 0)
        return BP_OK;
    cmp_ctx c = {r, win_first - r->win_first, {NULL, NULL}};
    c.ws.nll = malloc(sizeof(double) * (size_t)n_win);
    c.ws.kl = malloc(sizeof(double) * (size_t)n_win);
    int rc;
    if (!c.ws.nll || !c.ws.kl) {
        rc = bp_error_set(err, BP_ENOMEM, "eval compare: out of memory");
    } else {
        rc = run_windows(l, r->tokens + c.w0 * r->ctx, r->ctx, n_win, cmp_batch, &c, err);
        if (rc == BP_OK)
            rc = finish_sums(&c.ws, n_win, r->ctx, win_first, out, err);
    }
    free(c.ws.nll);
    free(c.ws.kl);
    return rc;
}
