/* Exact, mergeable sums of x x^T over calibration tokens per linear input. */
#include "bitplan/hessian.h"

#include <cblas.h>
#include <omp.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bitplan/model.h"
#include "calib_internal.h"

#define FORMAT_NAME "bitplan.hessian.v1"
#define MAX_DIM (1 << 20)
#define MAX_LAYERS 4096
#define MAX_HASH_LEN 200
/* Thread-local accumulators are used only below this total size (bytes). */
#define PAR_ACC_BYTES ((uint64_t)512 << 20)
/* Loops over fewer elements than this run on one thread: waking a team
 * costs more than the work. */
#define PAR_MIN (1 << 17)
/* Rows per forward pass while accumulating. */
#define BATCH_TOKENS 4096

typedef struct hslot {
    int layer;                 /* -1 for lm_head */
    bp_linear_input which;
    int64_t dim;
    int64_t count;             /* tokens */
    char *name;                /* owned */
    bp__i128 *diag;            /* dim, units of 2^-BP_HESSIAN_FX_SHIFT */
    bp__i128 *upper;           /* full mode: strict upper triangle, row-major */
} hslot;

typedef struct seq_range {
    int64_t a, b;              /* sequences [a, b) */
} seq_range;

struct bp_hessian {
    bp_hessian_mode mode;
    int64_t ctx;
    char *calib_hash;          /* NULL until the first sequence */
    char *model_hash;          /* NULL when unknown */
    int64_t n_seq_total;       /* sequences in the calibration stream; 0 unknown */
    hslot *slots;
    int n_slots;
    seq_range *ranges;         /* sorted, disjoint, coalesced */
    size_t n_ranges;
    size_t cap_ranges;
    /* Serial-path scratch kept between bp_hessian_accumulate calls, so a
     * large model does not allocate (and fault in) a dim x dim matrix per
     * work unit. */
    float *scratch_C;
    double *scratch_d;
    double busy;               /* seconds spent adding contributions */
};

static int64_t n_upper(int64_t dim) { return dim * (dim - 1) / 2; }
/* Index of (i, j), i < j, in the packed strict upper triangle. */
static int64_t upper_row(int64_t dim, int64_t i) { return i * dim - i * (i + 1) / 2; }

void bp_hessian_options_default(bp_hessian_options *o)
{
    if (!o)
        return;
    memset(o, 0, sizeof *o);
    o->mode = BP_HESSIAN_FULL;
    o->layer_first = 0;
    o->layer_count = -1;
    o->lm_head = 1;
    o->ctx = 2048;
    o->model_hash = NULL;
}

void bp_hessian_destroy(bp_hessian **ph)
{
    if (!ph || !*ph)
        return;
    bp_hessian *h = *ph;
    for (int i = 0; h->slots && i < h->n_slots; i++) {
        free(h->slots[i].name);
        free(h->slots[i].diag);
        free(h->slots[i].upper);
    }
    free(h->slots);
    free(h->ranges);
    free(h->scratch_C);
    free(h->scratch_d);
    free(h->calib_hash);
    free(h->model_hash);
    free(h);
    *ph = NULL;
}

static char *slot_name(int layer, bp_linear_input which)
{
    char buf[96];
    switch (which) {
    case BP_LINEAR_ATTN_QKV:
        snprintf(buf, sizeof buf, "model.layers.%d.self_attn.qkv", layer);
        break;
    case BP_LINEAR_ATTN_O:
        snprintf(buf, sizeof buf, "model.layers.%d.self_attn.o", layer);
        break;
    case BP_LINEAR_MLP_GATE_UP:
        snprintf(buf, sizeof buf, "model.layers.%d.mlp.gate_up", layer);
        break;
    case BP_LINEAR_MLP_DOWN:
        snprintf(buf, sizeof buf, "model.layers.%d.mlp.down", layer);
        break;
    default:
        snprintf(buf, sizeof buf, "lm_head");
        break;
    }
    return strdup(buf);
}

/* Allocate the slot arrays (zeroed). */
static int slot_alloc(hslot *s, bp_hessian_mode mode, bp_error *err)
{
    if (!s->name)
        s->name = slot_name(s->layer, s->which);
    s->diag = calloc((size_t)s->dim, sizeof *s->diag);
    if (mode == BP_HESSIAN_FULL)
        s->upper = calloc((size_t)n_upper(s->dim), sizeof *s->upper);
    if (!s->name || !s->diag || (mode == BP_HESSIAN_FULL && !s->upper))
        return bp_error_set(err, BP_ENOMEM,
                            "hessian: out of memory for input '%s' (dim %lld)",
                            s->name ? s->name : "?", (long long)s->dim);
    return BP_OK;
}

static bp_hessian *hessian_empty(bp_hessian_mode mode, int64_t ctx, int n_slots)
{
    bp_hessian *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    h->mode = mode;
    h->ctx = ctx;
    h->n_slots = n_slots;
    h->slots = calloc((size_t)(n_slots > 0 ? n_slots : 1), sizeof *h->slots);
    if (!h->slots) {
        free(h);
        return NULL;
    }
    return h;
}

int bp_hessian_new(const bp_llama_config *cfg, const bp_hessian_options *opt,
                   bp_hessian **out, bp_error *err)
{
    if (!cfg || !out)
        return bp_error_set(err, BP_EINVAL, "hessian: NULL argument");
    *out = NULL;
    bp_hessian_options o;
    if (opt)
        o = *opt;
    else
        bp_hessian_options_default(&o);
    if (o.mode != BP_HESSIAN_FULL && o.mode != BP_HESSIAN_DIAG)
        return bp_error_set(err, BP_EINVAL, "hessian: unknown mode %d", (int)o.mode);
    int64_t count = o.layer_count < 0 ? cfg->n_layers - o.layer_first : o.layer_count;
    if (o.layer_first < 0 || o.layer_first > cfg->n_layers || count < 0 ||
        count > cfg->n_layers - o.layer_first)
        return bp_error_set(err, BP_EINVAL,
                            "hessian: layers [%lld, %lld) outside the model's %lld",
                            (long long)o.layer_first, (long long)(o.layer_first + count),
                            (long long)cfg->n_layers);
    if (count == 0 && !o.lm_head)
        return bp_error_set(err, BP_EINVAL, "hessian: no inputs selected");
    if (o.ctx < 1 || o.ctx > cfg->max_position_embeddings)
        return bp_error_set(err, BP_EINVAL,
                            "hessian: ctx %lld must be in [1, max_position_embeddings "
                            "%lld]",
                            (long long)o.ctx, (long long)cfg->max_position_embeddings);
    if (o.model_hash && strlen(o.model_hash) > MAX_HASH_LEN)
        return bp_error_set(err, BP_EINVAL, "hessian: model hash too long");

    int n = (int)(count * 4 + (o.lm_head ? 1 : 0));
    bp_hessian *h = hessian_empty(o.mode, o.ctx, n);
    if (!h)
        return bp_error_set(err, BP_ENOMEM, "hessian: out of memory");
    int rc = BP_OK;
    if (o.model_hash && !(h->model_hash = strdup(o.model_hash))) {
        rc = bp_error_set(err, BP_ENOMEM, "hessian: out of memory");
        goto out;
    }
    int k = 0;
    for (int64_t layer = o.layer_first; layer < o.layer_first + count; layer++) {
        for (int w = 0; w < 4; w++) {
            hslot *s = &h->slots[k++];
            s->layer = (int)layer;
            s->which = (bp_linear_input)w;
            s->dim = bp_llama_input_dim(cfg, s->which);
            if ((rc = slot_alloc(s, o.mode, err)) < 0)
                goto out;
        }
    }
    if (o.lm_head) {
        hslot *s = &h->slots[k++];
        s->layer = -1;
        s->which = BP_LINEAR_LM_HEAD;
        s->dim = cfg->hidden_size;
        if ((rc = slot_alloc(s, o.mode, err)) < 0)
            goto out;
    }
    *out = h;
    return BP_OK;
out:
    bp_hessian_destroy(&h);
    return rc;
}

/* --- sequence ranges ------------------------------------------------------ */

static int ranges_overlap(const bp_hessian *h, int64_t a, int64_t b)
{
    for (size_t i = 0; i < h->n_ranges; i++)
        if (a < h->ranges[i].b && h->ranges[i].a < b)
            return 1;
    return 0;
}

static int ranges_reserve(bp_hessian *h, size_t n)
{
    if (n <= h->cap_ranges)
        return BP_OK;
    seq_range *r = realloc(h->ranges, sizeof *r * n);
    if (!r)
        return BP_ENOMEM;
    h->ranges = r;
    h->cap_ranges = n;
    return BP_OK;
}

/* Insert [a, b) (no overlap), keeping the list sorted and coalesced. Fails
 * only when it cannot grow the list, before changing anything. */
static int ranges_add(bp_hessian *h, int64_t a, int64_t b)
{
    if (a >= b)
        return BP_OK;
    if (ranges_reserve(h, h->n_ranges + 1) < 0)
        return BP_ENOMEM;
    seq_range *r = h->ranges;
    size_t pos = 0;
    while (pos < h->n_ranges && r[pos].a < a)
        pos++;
    memmove(r + pos + 1, r + pos, sizeof *r * (h->n_ranges - pos));
    r[pos].a = a;
    r[pos].b = b;
    h->n_ranges++;
    size_t w = 0;
    for (size_t i = 1; i < h->n_ranges; i++) {
        if (r[i].a == r[w].b)
            r[w].b = r[i].b;
        else
            r[++w] = r[i];
    }
    h->n_ranges = w + 1;
    return BP_OK;
}

int64_t bp_hessian_n_sequences(const bp_hessian *h)
{
    int64_t n = 0;
    for (size_t i = 0; h && i < h->n_ranges; i++)
        n += h->ranges[i].b - h->ranges[i].a;
    return n;
}

/* --- accumulation ------------------------------------------------------------ */

static int find_slot(const bp_hessian *h, int layer, bp_linear_input which)
{
    for (int i = 0; i < h->n_slots; i++)
        if (h->slots[i].layer == layer && h->slots[i].which == which)
            return i;
    return -1;
}

int bp_hessian_find(const bp_hessian *h, int layer, bp_linear_input which)
{
    if (!h)
        return -1;
    if (which == BP_LINEAR_LM_HEAD)
        layer = -1;
    return find_slot(h, layer, which);
}

typedef struct acc_ctx {
    bp_hessian *h;
    int64_t T;          /* tokens per sequence */
    float *C;           /* dim x dim scratch for ssyrk (full mode) */
    double *d;          /* dim scratch for the diagonal */
    double busy;        /* seconds in add_sequence */
    int rc;             /* sticky: first failure */
    char what[160];     /* slot name of the failure */
} acc_ctx;

_Static_assert(BP_HESSIAN_FX_SHIFT == 40, "FX_SCALE below must be 2^BP_HESSIAN_FX_SHIFT");
#define FX_SCALE 0x1p40

static inline int fx_add(bp__i128 *acc, double v)
{
    bp__i128 x;
    if (bp__fx_from_scaled(v * FX_SCALE, &x) < 0)
        return -1;
    return __builtin_add_overflow(*acc, x, acc) ? -1 : 0;
}

/* Add one sequence's X^T X (X: T x dim) to slot s. */
static int add_sequence(acc_ctx *c, hslot *s, const float *X)
{
    const int64_t T = c->T, dim = s->dim;
    int bad = 0;
    /* Diagonal: per column, a double sum over tokens in order. Squares of
     * floats are exact in double, so this is also the more accurate value. */
    const int64_t blk = 64, nblk = (dim + blk - 1) / blk;
#pragma omp parallel for schedule(static) if (T * dim >= PAR_MIN)
    for (int64_t b = 0; b < nblk; b++) {
        const int64_t j0 = b * blk, j1 = j0 + blk < dim ? j0 + blk : dim;
        double *d = c->d;
        for (int64_t j = j0; j < j1; j++)
            d[j] = 0.0;
        for (int64_t t = 0; t < T; t++) {
            const float *xr = X + t * dim;
            for (int64_t j = j0; j < j1; j++)
                d[j] += (double)xr[j] * (double)xr[j];
        }
        for (int64_t j = j0; j < j1; j++) {
            if (fx_add(&s->diag[j], d[j]) < 0) {
#pragma omp atomic write
                bad = 1;
            }
        }
    }
    if (s->upper) {
        cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)dim, (int)T, 1.0f, X,
                    (int)dim, 0.0f, c->C, (int)dim);
        const float *C = c->C;
        bp__i128 *U = s->upper;
#pragma omp parallel for schedule(dynamic, 16) if (dim * dim >= 2 * PAR_MIN)
        for (int64_t i = 0; i < dim - 1; i++) {
            const float *row = C + i * dim;
            bp__i128 *u = U + upper_row(dim, i);
            int rbad = 0;
            for (int64_t j = i + 1; j < dim; j++)
                rbad |= fx_add(&u[j - i - 1], (double)row[j]);
            if (rbad) {
#pragma omp atomic write
                bad = 1;
            }
        }
    }
    s->count += T;
    return bad ? -1 : 0;
}

static void acc_hook(void *p, int layer, bp_linear_input which, const float *x,
                     int64_t n_tokens, int64_t dim)
{
    acc_ctx *c = p;
    if (c->rc < 0)
        return;
    int i = bp_hessian_find(c->h, layer, which);
    if (i < 0)
        return;
    hslot *s = &c->h->slots[i];
    if (dim != s->dim || n_tokens % c->T != 0) {
        c->rc = BP_EMISMATCH;
        snprintf(c->what, sizeof c->what, "%s: dim %lld, expected %lld", s->name,
                 (long long)dim, (long long)s->dim);
        return;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int64_t q = 0; q < n_tokens / c->T; q++) {
        if (add_sequence(c, s, x + q * c->T * dim) < 0) {
            c->rc = BP_EINVAL;
            snprintf(c->what, sizeof c->what,
                     "%s: sum out of the fixed-point range (about 2^87)", s->name);
            return;
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    c->busy += (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
}

/* Bytes of h's integer arrays. */
static uint64_t acc_bytes(const bp_hessian *h)
{
    uint64_t n = 0;
    for (int i = 0; i < h->n_slots; i++)
        n += (uint64_t)(h->slots[i].dim + (h->slots[i].upper ? n_upper(h->slots[i].dim) : 0)) *
             sizeof(bp__i128);
    return n;
}

/* Same slots, zero sums, no provenance. */
static bp_hessian *clone_empty(const bp_hessian *h)
{
    bp_hessian *c = hessian_empty(h->mode, h->ctx, h->n_slots);
    if (!c)
        return NULL;
    for (int i = 0; i < h->n_slots; i++) {
        c->slots[i].layer = h->slots[i].layer;
        c->slots[i].which = h->slots[i].which;
        c->slots[i].dim = h->slots[i].dim;
        if (slot_alloc(&c->slots[i], h->mode, NULL) < 0) {
            bp_hessian_destroy(&c);
            return NULL;
        }
    }
    return c;
}

/* 1 if dst + src would overflow anywhere (same layout assumed). */
static int sums_overflow(const bp_hessian *dst, const bp_hessian *src)
{
    int bad = 0;
    for (int i = 0; i < dst->n_slots && !bad; i++) {
        const hslot *d = &dst->slots[i], *s = &src->slots[i];
        int64_t cnt;
        bad |= __builtin_add_overflow(d->count, s->count, &cnt);
        for (int64_t j = 0; j < d->dim; j++) {
            bp__i128 t;
            bad |= __builtin_add_overflow(d->diag[j], s->diag[j], &t);
        }
        if (d->upper) {
            const int64_t n = n_upper(d->dim);
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
            for (int64_t j = 0; j < n; j++) {
                bp__i128 t;
                if (__builtin_add_overflow(d->upper[j], s->upper[j], &t)) {
#pragma omp atomic write
                    bad = 1;
                }
            }
        }
    }
    return bad;
}

/* dst += src for every sum; check sums_overflow first. */
static void sums_add(bp_hessian *dst, const bp_hessian *src)
{
    for (int i = 0; i < dst->n_slots; i++) {
        hslot *d = &dst->slots[i];
        const hslot *s = &src->slots[i];
        d->count += s->count;
        for (int64_t j = 0; j < d->dim; j++)
            d->diag[j] += s->diag[j];
        if (d->upper) {
            const int64_t n = n_upper(d->dim);
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
            for (int64_t j = 0; j < n; j++)
                d->upper[j] += s->upper[j];
        }
    }
}

int bp_hessian_accumulate(bp_hessian *h, bp_llama *l, const bp_tokens *calib,
                          int64_t seq_first, int64_t n_seq, bp_error *err)
{
    if (!h || !l || !calib)
        return bp_error_set(err, BP_EINVAL, "hessian accumulate: NULL argument");
    const bp_llama_config *cfg = bp_llama_get_config(l);
    for (int i = 0; i < h->n_slots; i++) {
        const hslot *s = &h->slots[i];
        if (s->layer >= cfg->n_layers || s->dim != bp_llama_input_dim(cfg, s->which))
            return bp_error_set(err, BP_EMISMATCH,
                                "hessian accumulate: input '%s' (dim %lld) does not "
                                "match the model",
                                s->name, (long long)s->dim);
    }
    const int64_t ctx = h->ctx;
    if (ctx > cfg->max_position_embeddings)
        return bp_error_set(err, BP_EINVAL, "hessian accumulate: ctx %lld exceeds "
                            "max_position_embeddings %lld",
                            (long long)ctx, (long long)cfg->max_position_embeddings);
    const int64_t total = bp_tokens_count(calib) / ctx;
    if (seq_first < 0 || n_seq < 1 || seq_first > total || n_seq > total - seq_first)
        return bp_error_set(err, BP_EINVAL,
                            "hessian accumulate: sequences [%lld, %lld) outside the "
                            "%lld sequences of %lld tokens in %s",
                            (long long)seq_first, (long long)(seq_first + n_seq),
                            (long long)total, (long long)ctx, bp_tokens_source(calib));
    const char *hash = bp_tokens_hash(calib);
    if (h->calib_hash && strcmp(h->calib_hash, hash) != 0)
        return bp_error_set(err, BP_EMISMATCH,
                            "hessian accumulate: %s has hash %s, but the accumulator "
                            "holds sequences of %s",
                            bp_tokens_source(calib), hash, h->calib_hash);
    if (ranges_overlap(h, seq_first, seq_first + n_seq))
        return bp_error_set(err, BP_EINVAL,
                            "hessian accumulate: sequences [%lld, %lld) overlap "
                            "sequences already accumulated",
                            (long long)seq_first, (long long)(seq_first + n_seq));
    int rc = bp_tokens_check(calib, cfg->vocab_size, seq_first * ctx, n_seq * ctx, err);
    if (rc < 0)
        return rc;
    char *hash_copy = h->calib_hash ? NULL : strdup(hash);
    if (!h->calib_hash && !hash_copy)
        return bp_error_set(err, BP_ENOMEM, "hessian: out of memory");
    acc_ctx *cs = NULL;
    int threads = 1;

    int64_t maxdim = 1, last_layer = -1, want_head = 0;
    for (int i = 0; i < h->n_slots; i++) {
        if (h->slots[i].dim > maxdim)
            maxdim = h->slots[i].dim;
        if (h->slots[i].layer > last_layer)
            last_layer = h->slots[i].layer;
        if (h->slots[i].which == BP_LINEAR_LM_HEAD)
            want_head = 1;
    }
    bp_llama_hooks hooks;
    memset(&hooks, 0, sizeof hooks);
    hooks.linear_input = acc_hook;
    /* Stop after the last block collected unless the lm_head input is wanted. */
    hooks.layer_limit = want_head ? 0 : (int)(last_layer + 1);

    /* Small models: batches of sequences in parallel, each thread with its
     * own integer accumulator (added exactly at the end) and single-threaded
     * BLAS, so no barriers inside forward passes. Large models: batches in
     * order, each forward pass parallel inside, accumulating into h. */
    threads = omp_get_max_threads();
    int64_t nb = BATCH_TOKENS / ctx;
    if (nb < 1)
        nb = 1;
    const uint64_t scratch = sizeof(float) * (uint64_t)maxdim * (uint64_t)maxdim *
                                 (h->mode == BP_HESSIAN_FULL) +
                             sizeof(double) * (uint64_t)maxdim;
    if (threads > 1) {
        int64_t even = (n_seq + threads - 1) / threads;
        if (n_seq < 2 || (acc_bytes(h) + scratch) * (uint64_t)threads > PAR_ACC_BYTES ||
            !bp__llama_cache_all(l))
            threads = 1;
        else if (even < nb)
            nb = even;
    }
    const int64_t n_batches = (n_seq + nb - 1) / nb;
    if (threads > n_batches)
        threads = (int)n_batches;
    cs = calloc((size_t)threads, sizeof *cs);
    if (!cs) {
        rc = bp_error_set(err, BP_ENOMEM, "hessian: out of memory");
        goto out;
    }
    if (threads == 1) {
        if (!h->scratch_d)
            h->scratch_d = malloc(sizeof(double) * (size_t)maxdim);
        if (h->mode == BP_HESSIAN_FULL && !h->scratch_C)
            h->scratch_C = malloc(sizeof(float) * (size_t)maxdim * (size_t)maxdim);
    }
    for (int t = 0; t < threads; t++) {
        cs[t].T = ctx;
        if (threads == 1) {
            cs[t].h = h;
            cs[t].d = h->scratch_d;
            cs[t].C = h->scratch_C;
        } else {
            cs[t].h = clone_empty(h);
            cs[t].d = malloc(sizeof(double) * (size_t)maxdim);
            if (h->mode == BP_HESSIAN_FULL)
                cs[t].C = malloc(sizeof(float) * (size_t)maxdim * (size_t)maxdim);
        }
        if (!cs[t].h || !cs[t].d || (h->mode == BP_HESSIAN_FULL && !cs[t].C)) {
            rc = bp_error_set(err, BP_ENOMEM,
                              "hessian: out of memory for a %lld x %lld scratch matrix",
                              (long long)maxdim, (long long)maxdim);
            goto out;
        }
    }
    const uint32_t *ids = bp_tokens_data(calib);
    if (threads == 1) {
        hooks.ctx = &cs[0];
        for (int64_t b = 0; b < n_batches; b++) {
            const int64_t s = seq_first + b * nb;
            const int64_t n = seq_first + n_seq - s < nb ? seq_first + n_seq - s : nb;
            if ((rc = bp_llama_forward_batch(l, ids + s * ctx, n, ctx, NULL, &hooks, err)) < 0)
                goto out;
            if (cs[0].rc < 0) {
                rc = bp_error_set(err, cs[0].rc, "hessian accumulate: %s", cs[0].what);
                goto out;
            }
        }
    } else {
        int64_t bad = -1;
        bp_error first;
        bp_error_clear(&first);
        const int saved = openblas_get_num_threads();
        openblas_set_num_threads(1);
#pragma omp parallel num_threads(threads)
        {
            acc_ctx *c = &cs[omp_get_thread_num()];
            bp_llama_hooks hk = hooks;
            hk.ctx = c;
#pragma omp for schedule(dynamic, 1)
            for (int64_t b = 0; b < n_batches; b++) {
                const int64_t s = seq_first + b * nb;
                const int64_t n = seq_first + n_seq - s < nb ? seq_first + n_seq - s : nb;
                bp_error e;
                bp_error_clear(&e);
                int r = bp_llama_forward_batch(l, ids + s * ctx, n, ctx, NULL, &hk, &e);
                if (r == BP_OK && c->rc < 0)
                    r = bp_error_set(&e, c->rc, "hessian accumulate: %s", c->what);
                if (r < 0) {
#pragma omp critical(bp_calib_hessian)
                    {
                        if (bad < 0 || b < bad) {
                            bad = b;
                            first = e;
                            first.code = r;
                        }
                    }
                }
            }
        }
        openblas_set_num_threads(saved);
        if (bad >= 0) {
            if (err)
                *err = first;
            rc = first.code;
            goto out;
        }
        for (int t = 0; t < threads; t++) {
            if (sums_overflow(h, cs[t].h)) {
                rc = bp_error_set(err, BP_EINVAL,
                                  "hessian accumulate: fixed-point sum overflows");
                goto out;
            }
            sums_add(h, cs[t].h);
        }
    }
    for (int t = 0; t < threads; t++)
        h->busy += cs[t].busy;
    if (ranges_add(h, seq_first, seq_first + n_seq) < 0) {
        rc = bp_error_set(err, BP_ENOMEM, "hessian: out of memory");
        goto out;
    }
    if (!h->calib_hash) {
        h->calib_hash = hash_copy;
        hash_copy = NULL;
    }
    h->n_seq_total = total;
    rc = BP_OK;
out:
    free(hash_copy);
    for (int t = 0; cs && t < threads; t++) {
        if (cs[t].h != h) {
            bp_hessian_destroy(&cs[t].h);
            free(cs[t].d);
            free(cs[t].C);
        }
    }
    free(cs);
    return rc;
}

/* --- merge, compare, read ------------------------------------------------------ */

static int same_layout(const bp_hessian *a, const bp_hessian *b)
{
    if (a->mode != b->mode || a->ctx != b->ctx || a->n_slots != b->n_slots)
        return 0;
    for (int i = 0; i < a->n_slots; i++)
        if (a->slots[i].layer != b->slots[i].layer ||
            a->slots[i].which != b->slots[i].which || a->slots[i].dim != b->slots[i].dim)
            return 0;
    return 1;
}

int bp_hessian_merge(bp_hessian *dst, const bp_hessian *src, bp_error *err)
{
    if (!dst || !src)
        return bp_error_set(err, BP_EINVAL, "hessian merge: NULL argument");
    if (!same_layout(dst, src))
        return bp_error_set(err, BP_EMISMATCH,
                            "hessian merge: different mode, ctx or inputs");
    if (dst->calib_hash && src->calib_hash && strcmp(dst->calib_hash, src->calib_hash))
        return bp_error_set(err, BP_EMISMATCH,
                            "hessian merge: calibration hashes differ (%s vs %s)",
                            dst->calib_hash, src->calib_hash);
    if (dst->model_hash && src->model_hash && strcmp(dst->model_hash, src->model_hash))
        return bp_error_set(err, BP_EMISMATCH,
                            "hessian merge: model hashes differ (%s vs %s)",
                            dst->model_hash, src->model_hash);
    if (dst->n_seq_total && src->n_seq_total && dst->n_seq_total != src->n_seq_total)
        return bp_error_set(err, BP_EMISMATCH,
                            "hessian merge: calibration streams hold %lld vs %lld "
                            "sequences",
                            (long long)dst->n_seq_total, (long long)src->n_seq_total);
    for (size_t i = 0; i < src->n_ranges; i++)
        if (ranges_overlap(dst, src->ranges[i].a, src->ranges[i].b))
            return bp_error_set(err, BP_EINVAL,
                                "hessian merge: sequences [%lld, %lld) are in both",
                                (long long)src->ranges[i].a, (long long)src->ranges[i].b);
    /* Check every sum first so that a failure leaves dst unchanged. */
    int bad = sums_overflow(dst, src);
    if (bad)
        return bp_error_set(err, BP_EINVAL, "hessian merge: fixed-point sum overflows");
    char *ch = NULL, *mh = NULL;
    if ((!dst->calib_hash && src->calib_hash && !(ch = strdup(src->calib_hash))) ||
        (!dst->model_hash && src->model_hash && !(mh = strdup(src->model_hash))) ||
        ranges_reserve(dst, dst->n_ranges + src->n_ranges) < 0) {
        free(ch);
        free(mh);
        return bp_error_set(err, BP_ENOMEM, "hessian merge: out of memory");
    }
    /* Cannot fail now: the capacity is reserved. */
    for (size_t i = 0; i < src->n_ranges; i++)
        ranges_add(dst, src->ranges[i].a, src->ranges[i].b);
    if (ch)
        dst->calib_hash = ch;
    if (mh)
        dst->model_hash = mh;
    if (!dst->n_seq_total)
        dst->n_seq_total = src->n_seq_total;
    sums_add(dst, src);
    return BP_OK;
}

int bp_hessian_equal(const bp_hessian *a, const bp_hessian *b)
{
    if (!a || !b || !same_layout(a, b) || a->n_ranges != b->n_ranges)
        return 0;
    for (size_t i = 0; i < a->n_ranges; i++)
        if (a->ranges[i].a != b->ranges[i].a || a->ranges[i].b != b->ranges[i].b)
            return 0;
    if ((a->calib_hash == NULL) != (b->calib_hash == NULL) ||
        (a->calib_hash && strcmp(a->calib_hash, b->calib_hash)))
        return 0;
    for (int i = 0; i < a->n_slots; i++) {
        const hslot *x = &a->slots[i], *y = &b->slots[i];
        if (x->count != y->count ||
            memcmp(x->diag, y->diag, sizeof *x->diag * (size_t)x->dim) != 0)
            return 0;
        if (x->upper &&
            memcmp(x->upper, y->upper, sizeof *x->upper * (size_t)n_upper(x->dim)) != 0)
            return 0;
    }
    return 1;
}

bp_hessian_mode bp_hessian_get_mode(const bp_hessian *h)
{
    return h ? h->mode : BP_HESSIAN_FULL;
}

int bp_hessian_slot_count(const bp_hessian *h) { return h ? h->n_slots : 0; }

int bp_hessian_slot(const bp_hessian *h, int slot, bp_hessian_slot_info *out,
                    bp_error *err)
{
    if (!h || !out || slot < 0 || slot >= h->n_slots)
        return bp_error_set(err, BP_EINVAL, "hessian: slot %d out of range", slot);
    const hslot *s = &h->slots[slot];
    out->layer = s->layer;
    out->which = s->which;
    out->dim = s->dim;
    out->count = s->count;
    out->name = s->name;
    return BP_OK;
}

int bp_hessian_get_diag(const bp_hessian *h, int slot, double *out, bp_error *err)
{
    if (!h || !out || slot < 0 || slot >= h->n_slots)
        return bp_error_set(err, BP_EINVAL, "hessian: slot %d out of range", slot);
    const hslot *s = &h->slots[slot];
    for (int64_t j = 0; j < s->dim; j++)
        out[j] = bp__fx_to_double(s->diag[j], BP_HESSIAN_FX_SHIFT);
    return BP_OK;
}

int bp_hessian_get_full(const bp_hessian *h, int slot, double *out, bp_error *err)
{
    if (!h || !out || slot < 0 || slot >= h->n_slots)
        return bp_error_set(err, BP_EINVAL, "hessian: slot %d out of range", slot);
    const hslot *s = &h->slots[slot];
    if (!s->upper)
        return bp_error_set(err, BP_EUNSUPPORTED,
                            "hessian '%s': only the diagonal was collected (diag mode)",
                            s->name);
    const int64_t dim = s->dim;
#pragma omp parallel for schedule(dynamic, 16)
    for (int64_t i = 0; i < dim; i++) {
        out[i * dim + i] = bp__fx_to_double(s->diag[i], BP_HESSIAN_FX_SHIFT);
        const bp__i128 *u = s->upper + upper_row(dim, i);
        for (int64_t j = i + 1; j < dim; j++) {
            double v = bp__fx_to_double(u[j - i - 1], BP_HESSIAN_FX_SHIFT);
            out[i * dim + j] = v;
            out[j * dim + i] = v;
        }
    }
    return BP_OK;
}

const char *bp_hessian_calib_hash(const bp_hessian *h) { return h ? h->calib_hash : NULL; }
const char *bp_hessian_model_hash(const bp_hessian *h) { return h ? h->model_hash : NULL; }
int64_t bp_hessian_ctx(const bp_hessian *h) { return h ? h->ctx : 0; }
double bp_hessian_busy_seconds(const bp_hessian *h) { return h ? h->busy : 0.0; }

/* --- save ---------------------------------------------------------------------- */

static char *ranges_string(const bp_hessian *h)
{
    size_t cap = 1 + h->n_ranges * 44;
    char *s = malloc(cap);
    if (!s)
        return NULL;
    size_t off = 0;
    s[0] = '\0';
    for (size_t i = 0; i < h->n_ranges; i++)
        off += (size_t)snprintf(s + off, cap - off, "%s%lld:%lld", i ? "," : "",
                                (long long)h->ranges[i].a, (long long)h->ranges[i].b);
    return s;
}

static int write_all(bp_st_writer *w, const void *p, size_t n, bp_error *err)
{
    /* Bounded chunks keep each call's size reasonable for any writer. */
    const unsigned char *b = p;
    while (n) {
        size_t k = n < ((size_t)1 << 26) ? n : ((size_t)1 << 26);
        int rc = bp_st_writer_write(w, b, k, err);
        if (rc < 0)
            return rc;
        b += k;
        n -= k;
    }
    return BP_OK;
}

int bp_hessian_save(const bp_hessian *h, const char *path, unsigned flags, bp_error *err)
{
    if (!h || !path)
        return bp_error_set(err, BP_EINVAL, "hessian save: NULL argument");
    bp_st_writer *w = NULL;
    char *ranges = NULL;
    double *row = NULL;
    int rc = bp_st_writer_new(path, &w, err);
    if (rc < 0)
        return rc;
    char num[64];
    ranges = ranges_string(h);
    int64_t maxdim = 1;
    for (int i = 0; i < h->n_slots; i++)
        if (h->slots[i].dim > maxdim)
            maxdim = h->slots[i].dim;
    row = malloc(sizeof(double) * (size_t)maxdim);
    if (!ranges || !row) {
        rc = bp_error_set(err, BP_ENOMEM, "%s: out of memory", path);
        goto out;
    }
    if ((rc = bp_st_writer_metadata(w, "format", FORMAT_NAME, err)) < 0 ||
        (rc = bp_st_writer_metadata(w, "mode", h->mode == BP_HESSIAN_FULL ? "full" : "diag",
                                    err)) < 0)
        goto out;
    snprintf(num, sizeof num, "%d", BP_HESSIAN_FX_SHIFT);
    if ((rc = bp_st_writer_metadata(w, "fx_shift", num, err)) < 0)
        goto out;
    snprintf(num, sizeof num, "%lld", (long long)h->ctx);
    if ((rc = bp_st_writer_metadata(w, "ctx", num, err)) < 0)
        goto out;
    snprintf(num, sizeof num, "%lld", (long long)bp_hessian_n_sequences(h));
    if ((rc = bp_st_writer_metadata(w, "n_sequences", num, err)) < 0)
        goto out;
    snprintf(num, sizeof num, "%lld", (long long)h->n_seq_total);
    if ((rc = bp_st_writer_metadata(w, "n_sequences_total", num, err)) < 0 ||
        (rc = bp_st_writer_metadata(w, "sequences", ranges, err)) < 0)
        goto out;
    if (h->calib_hash && (rc = bp_st_writer_metadata(w, "calib_hash", h->calib_hash, err)) < 0)
        goto out;
    if (h->model_hash && (rc = bp_st_writer_metadata(w, "model_hash", h->model_hash, err)) < 0)
        goto out;

    char name[200];
    for (int i = 0; i < h->n_slots; i++) {
        const hslot *s = &h->slots[i];
        int64_t one = 1, dshape[2] = {s->dim, 16}, ushape[2] = {n_upper(s->dim), 16};
        int64_t full[2] = {s->dim, s->dim};
        snprintf(name, sizeof name, "%s.count", s->name);
        if ((rc = bp_st_writer_declare(w, name, BP_DTYPE_F64, 1, &one, err)) < 0)
            goto out;
        snprintf(name, sizeof name, "%s.diag", s->name);
        if ((rc = bp_st_writer_declare(w, name, BP_DTYPE_F64, 1, &s->dim, err)) < 0)
            goto out;
        snprintf(name, sizeof name, "%s.diag_fx", s->name);
        if ((rc = bp_st_writer_declare(w, name, BP_DTYPE_U8, 2, dshape, err)) < 0)
            goto out;
        if (s->upper) {
            snprintf(name, sizeof name, "%s.hessian_fx", s->name);
            if ((rc = bp_st_writer_declare(w, name, BP_DTYPE_U8, 2, ushape, err)) < 0)
                goto out;
            if (flags & BP_HESSIAN_SAVE_DENSE) {
                snprintf(name, sizeof name, "%s.hessian", s->name);
                if ((rc = bp_st_writer_declare(w, name, BP_DTYPE_F64, 2, full, err)) < 0)
                    goto out;
            }
        }
    }
    for (int i = 0; i < h->n_slots; i++) {
        const hslot *s = &h->slots[i];
        double cnt = (double)s->count;
        if ((rc = write_all(w, &cnt, sizeof cnt, err)) < 0)
            goto out;
        bp_hessian_get_diag(h, i, row, NULL);
        if ((rc = write_all(w, row, sizeof(double) * (size_t)s->dim, err)) < 0 ||
            (rc = write_all(w, s->diag, sizeof *s->diag * (size_t)s->dim, err)) < 0)
            goto out;
        if (s->upper) {
            if ((rc = write_all(w, s->upper, sizeof *s->upper * (size_t)n_upper(s->dim),
                                err)) < 0)
                goto out;
            if (flags & BP_HESSIAN_SAVE_DENSE) {
                for (int64_t r = 0; r < s->dim; r++) {
                    /* Row r of the symmetric matrix: column entries above the
                     * diagonal come from earlier rows' upper parts. */
                    for (int64_t c = 0; c < s->dim; c++) {
                        bp__i128 v;
                        if (c == r)
                            v = s->diag[r];
                        else if (c > r)
                            v = s->upper[upper_row(s->dim, r) + c - r - 1];
                        else
                            v = s->upper[upper_row(s->dim, c) + r - c - 1];
                        row[c] = bp__fx_to_double(v, BP_HESSIAN_FX_SHIFT);
                    }
                    if ((rc = write_all(w, row, sizeof(double) * (size_t)s->dim, err)) < 0)
                        goto out;
                }
            }
        }
    }
    rc = bp_st_writer_finish(w, err);
out:
    bp_st_writer_destroy(&w);
    free(ranges);
    free(row);
    return rc;
}

/* --- load ------------------------------------------------------------------------ */

/* Strict decimal integer in [lo, hi]. */
static int parse_i64(const char *s, int64_t lo, int64_t hi, int64_t *out)
{
    if (!s || !*s || (*s == '0' && s[1]) || !(*s >= '0' && *s <= '9'))
        return -1;
    int64_t v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || v > (INT64_MAX - 9) / 10)
            return -1;
        v = v * 10 + (*s - '0');
    }
    if (v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

/* "a:b,c:d" with a < b < c < d (coalesced). Empty = no sequences. */
static int parse_ranges(bp_hessian *h, const char *s)
{
    if (!*s)
        return 0;
    int64_t prev_end = -1;
    const char *p = s;
    while (*p) {
        char buf[48];
        size_t n = strcspn(p, ",");
        if (n == 0 || n >= sizeof buf)
            return -1;
        memcpy(buf, p, n);
        buf[n] = '\0';
        char *colon = strchr(buf, ':');
        if (!colon)
            return -1;
        *colon = '\0';
        int64_t a, b;
        if (parse_i64(buf, 0, INT64_MAX / 2, &a) < 0 ||
            parse_i64(colon + 1, 0, INT64_MAX / 2, &b) < 0 || a >= b || a <= prev_end)
            return -1;
        if (ranges_reserve(h, h->n_ranges + 1) < 0)
            return -2;
        seq_range *r = h->ranges;
        r[h->n_ranges].a = a;
        r[h->n_ranges].b = b;
        h->n_ranges++;
        prev_end = b;
        p += n;
        if (*p == ',') {
            p++;
            if (!*p)
                return -1;
        }
    }
    return 0;
}

/* "model.layers.N.self_attn.qkv" etc. (n bytes of s) -> (layer, which). */
static int parse_slot(const char *s, size_t n, int *layer, bp_linear_input *which)
{
    char buf[128];
    if (n >= sizeof buf)
        return -1;
    memcpy(buf, s, n);
    buf[n] = '\0';
    if (strcmp(buf, "lm_head") == 0) {
        *layer = -1;
        *which = BP_LINEAR_LM_HEAD;
        return 0;
    }
    static const char pre[] = "model.layers.";
    if (strncmp(buf, pre, sizeof pre - 1) != 0)
        return -1;
    char *p = buf + sizeof pre - 1;
    char *dot = strchr(p, '.');
    if (!dot)
        return -1;
    *dot = '\0';
    int64_t l;
    if (parse_i64(p, 0, MAX_LAYERS - 1, &l) < 0)
        return -1;
    const char *rest = dot + 1;
    static const struct {
        const char *suffix;
        bp_linear_input which;
    } map[] = {{"self_attn.qkv", BP_LINEAR_ATTN_QKV},
               {"self_attn.o", BP_LINEAR_ATTN_O},
               {"mlp.gate_up", BP_LINEAR_MLP_GATE_UP},
               {"mlp.down", BP_LINEAR_MLP_DOWN}};
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
        if (strcmp(rest, map[i].suffix) == 0) {
            *layer = (int)l;
            *which = map[i].which;
            return 0;
        }
    }
    return -1;
}

static int cmp_slot(const void *pa, const void *pb)
{
    const hslot *a = pa, *b = pb;
    /* Blocks ascending, lm_head (layer -1) last. */
    int64_t la = a->layer < 0 ? INT64_MAX : a->layer, lb = b->layer < 0 ? INT64_MAX : b->layer;
    if (la != lb)
        return la < lb ? -1 : 1;
    return (int)a->which - (int)b->which;
}

static int ends_with(const char *s, const char *suf)
{
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && memcmp(s + n - m, suf, m) == 0;
}

static const bp_tensor_info *need(const bp_safetensors *f, const char *path,
                                  const char *slot, const char *part, bp_dtype dt,
                                  int ndim, int64_t d0, int64_t d1, bp_error *err)
{
    char name[200];
    snprintf(name, sizeof name, "%s.%s", slot, part);
    const bp_tensor_info *t = bp_safetensors_find(f, name);
    if (!t) {
        bp_error_set(err, BP_EFORMAT, "%s: missing tensor '%s'", path, name);
        return NULL;
    }
    if (t->dtype != dt || t->ndim != ndim || t->shape[0] != d0 ||
        (ndim == 2 && t->shape[1] != d1)) {
        if (ndim == 1)
            bp_error_set(err, BP_EFORMAT, "%s: tensor '%s' must be %s [%lld]", path, name,
                         bp_dtype_name(dt), (long long)d0);
        else
            bp_error_set(err, BP_EFORMAT, "%s: tensor '%s' must be %s [%lld, %lld]", path,
                         name, bp_dtype_name(dt), (long long)d0, (long long)d1);
        return NULL;
    }
    return t;
}

int bp_hessian_load(const char *path, bp_hessian **out, bp_error *err)
{
    if (!path || !out)
        return bp_error_set(err, BP_EINVAL, "hessian load: NULL argument");
    *out = NULL;
    bp_safetensors *f = NULL;
    bp_hessian *h = NULL;
    int rc = bp_safetensors_open(path, &f, err);
    if (rc < 0)
        return rc;
    const char *fmt = bp_safetensors_metadata(f, "format");
    const char *mode = bp_safetensors_metadata(f, "mode");
    const char *shift = bp_safetensors_metadata(f, "fx_shift");
    const char *ctxs = bp_safetensors_metadata(f, "ctx");
    const char *seqs = bp_safetensors_metadata(f, "sequences");
    const char *nseq = bp_safetensors_metadata(f, "n_sequences");
    const char *ntot = bp_safetensors_metadata(f, "n_sequences_total");
    const char *ch = bp_safetensors_metadata(f, "calib_hash");
    const char *mh = bp_safetensors_metadata(f, "model_hash");
    int64_t ctx, shift_v, nseq_v, ntot_v;
    if (!fmt || strcmp(fmt, FORMAT_NAME) != 0) {
        rc = bp_error_set(err, BP_EFORMAT, "%s: metadata 'format' is not \"%s\"", path,
                          FORMAT_NAME);
        goto out;
    }
    if (!mode || (strcmp(mode, "full") && strcmp(mode, "diag"))) {
        rc = bp_error_set(err, BP_EFORMAT, "%s: metadata 'mode' must be full or diag", path);
        goto out;
    }
    if (!shift || parse_i64(shift, 0, 1000, &shift_v) < 0 || shift_v != BP_HESSIAN_FX_SHIFT) {
        rc = bp_error_set(err, BP_EFORMAT, "%s: metadata 'fx_shift' must be %d", path,
                          BP_HESSIAN_FX_SHIFT);
        goto out;
    }
    if (!ctxs || parse_i64(ctxs, 1, INT32_MAX, &ctx) < 0) {
        rc = bp_error_set(err, BP_EFORMAT, "%s: metadata 'ctx' is not a positive integer",
                          path);
        goto out;
    }
    if (!nseq || parse_i64(nseq, 0, INT64_MAX / 2, &nseq_v) < 0 || !ntot ||
        parse_i64(ntot, 0, INT64_MAX / 2, &ntot_v) < 0) {
        rc = bp_error_set(err, BP_EFORMAT,
                          "%s: metadata 'n_sequences'/'n_sequences_total' missing or "
                          "not integers",
                          path);
        goto out;
    }
    if ((ch && strlen(ch) > MAX_HASH_LEN) || (mh && strlen(mh) > MAX_HASH_LEN)) {
        rc = bp_error_set(err, BP_EFORMAT, "%s: metadata hash too long", path);
        goto out;
    }

    /* Slots are the prefixes of the .count tensors. */
    size_t nt = bp_safetensors_count(f);
    int nslots = 0;
    for (size_t i = 0; i < nt; i++)
        if (ends_with(bp_safetensors_tensor(f, i)->name, ".count"))
            nslots++;
    if (nslots == 0) {
        rc = bp_error_set(err, BP_EFORMAT, "%s: no '<input>.count' tensors", path);
        goto out;
    }
    bp_hessian_mode m = strcmp(mode, "full") == 0 ? BP_HESSIAN_FULL : BP_HESSIAN_DIAG;
    h = hessian_empty(m, ctx, nslots);
    if (!h) {
        rc = bp_error_set(err, BP_ENOMEM, "%s: out of memory", path);
        goto out;
    }
    h->n_seq_total = ntot_v;
    if ((ch && !(h->calib_hash = strdup(ch))) || (mh && !(h->model_hash = strdup(mh)))) {
        rc = bp_error_set(err, BP_ENOMEM, "%s: out of memory", path);
        goto out;
    }
    int pr = seqs ? parse_ranges(h, seqs) : -1;
    if (pr < 0 || bp_hessian_n_sequences(h) != nseq_v ||
        (ntot_v && h->n_ranges && h->ranges[h->n_ranges - 1].b > ntot_v) ||
        (nseq_v > 0 && !ch)) {
        rc = bp_error_set(err, pr == -2 ? BP_ENOMEM : BP_EFORMAT,
                          "%s: metadata 'sequences' is malformed or disagrees with "
                          "'n_sequences'/'calib_hash'",
                          path);
        goto out;
    }
    int k = 0;
    size_t expected_tensors = 0;
    for (size_t i = 0; i < nt; i++) {
        const char *tn = bp_safetensors_tensor(f, i)->name;
        if (!ends_with(tn, ".count"))
            continue;
        hslot *s = &h->slots[k++];
        if (parse_slot(tn, strlen(tn) - 6, &s->layer, &s->which) < 0) {
            rc = bp_error_set(err, BP_EFORMAT, "%s: tensor '%s' does not name a linear "
                              "input (model.layers.N.{self_attn.qkv,self_attn.o,"
                              "mlp.gate_up,mlp.down} or lm_head)",
                              path, tn);
            goto out;
        }
        s->dim = 0;
    }
    qsort(h->slots, (size_t)nslots, sizeof *h->slots, cmp_slot);
    for (int i = 0; i < nslots; i++) {
        hslot *s = &h->slots[i];
        s->name = slot_name(s->layer, s->which);
        if (!s->name) {
            rc = bp_error_set(err, BP_ENOMEM, "%s: out of memory", path);
            goto out;
        }
        const bp_tensor_info *tc = need(f, path, s->name, "count", BP_DTYPE_F64, 1, 1, 0, err);
        if (!tc) {
            rc = BP_EFORMAT;
            goto out;
        }
        double cnt;
        memcpy(&cnt, tc->data, sizeof cnt);
        if (!isfinite(cnt) || cnt < 0 || cnt > 0x1p53 || cnt != floor(cnt) ||
            (int64_t)cnt != nseq_v * ctx) {
            rc = bp_error_set(err, BP_EFORMAT,
                              "%s: tensor '%s.count' = %g is not n_sequences * ctx = "
                              "%lld",
                              path, s->name, cnt, (long long)(nseq_v * ctx));
            goto out;
        }
        s->count = (int64_t)cnt;
        char dn[200];
        snprintf(dn, sizeof dn, "%s.diag_fx", s->name);
        const bp_tensor_info *td = bp_safetensors_find(f, dn);
        if (!td || td->dtype != BP_DTYPE_U8 || td->ndim != 2 || td->shape[1] != 16 ||
            td->shape[0] < 1 || td->shape[0] > MAX_DIM ||
            (m == BP_HESSIAN_FULL && td->shape[0] < 2)) {
            rc = bp_error_set(err, BP_EFORMAT,
                              "%s: tensor '%s' missing or not U8 [dim, 16] with dim in "
                              "[%d, 2^20]",
                              path, dn, m == BP_HESSIAN_FULL ? 2 : 1);
            goto out;
        }
        s->dim = td->shape[0];
        if (!need(f, path, s->name, "diag", BP_DTYPE_F64, 1, s->dim, 0, err)) {
            rc = BP_EFORMAT;
            goto out;
        }
        expected_tensors += 3;
        if ((rc = slot_alloc(s, m, err)) < 0)
            goto out;
        memcpy(s->diag, td->data, sizeof *s->diag * (size_t)s->dim);
        char hn[200];
        snprintf(hn, sizeof hn, "%s.hessian", s->name);
        const bp_tensor_info *dense = bp_safetensors_find(f, hn);
        if (m == BP_HESSIAN_FULL) {
            const bp_tensor_info *tu = need(f, path, s->name, "hessian_fx", BP_DTYPE_U8, 2,
                                            n_upper(s->dim), 16, err);
            if (!tu) {
                rc = BP_EFORMAT;
                goto out;
            }
            memcpy(s->upper, tu->data, sizeof *s->upper * (size_t)n_upper(s->dim));
            expected_tensors++;
            if (dense) {
                if (!need(f, path, s->name, "hessian", BP_DTYPE_F64, 2, s->dim, s->dim,
                          err)) {
                    rc = BP_EFORMAT;
                    goto out;
                }
                expected_tensors++;
            }
        }
        /* Diagonal sums of squares cannot be negative. */
        for (int64_t j = 0; j < s->dim; j++) {
            if (s->diag[j] < 0) {
                rc = bp_error_set(err, BP_EFORMAT,
                                  "%s: tensor '%s' holds a negative diagonal entry %lld",
                                  path, dn, (long long)j);
                goto out;
            }
        }
    }
    for (int i = 1; i < nslots; i++) {
        if (cmp_slot(&h->slots[i - 1], &h->slots[i]) == 0) {
            rc = bp_error_set(err, BP_EFORMAT, "%s: input '%s' appears twice", path,
                              h->slots[i].name);
            goto out;
        }
    }
    if (expected_tensors != nt) {
        rc = bp_error_set(err, BP_EFORMAT,
                          "%s: holds %zu tensors, expected %zu for its %d inputs "
                          "(unknown or misplaced tensors)",
                          path, nt, expected_tensors, nslots);
        goto out;
    }
    *out = h;
    h = NULL;
    rc = BP_OK;
out:
    bp_hessian_destroy(&h);
    bp_safetensors_destroy(&f);
    return rc;
}
