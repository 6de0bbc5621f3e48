/* The plan: in-memory model, validation, and the bitplan.plan/v1 JSON writer
 * and reader (docs/plan-format.md). */
#include "bitplan/plan.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "bitplan/format.h"
#include "plan_internal.h"

/* Per-tensor weight counts above 2^53 would make bits-per-weight inexact;
 * no real tensor comes close. */
#define MAX_TENSOR_PARAMS (1ull << 53)

typedef struct iblocks {
    bp_block_axis axis;
    int64_t size;
    char **formats;
    size_t n_formats;
    bp_plan_run *runs;
    size_t n_runs;
    bp_plan_blocks view; /* points at the arrays above */
} iblocks;

typedef struct itensor {
    char *name;
    int64_t rows, cols;
    char *dtype;
    char format[BP_FORMAT_NAME_MAX];
    bp_quant_method method;
    double predicted_error; /* NaN = unknown */
    uint64_t bytes;
    double bpw;
    iblocks *blocks;
} itensor;

struct bp_plan {
    itensor *t; /* sorted by name */
    size_t n, cap;
    char *tool_name, *tool_version;
    char *model_path, *model_hash;
    char *calib_hash, *calib_source;
    int metric; /* -1 unset */
    bp_budget_kind given;
    double asked_bits;
    uint64_t asked_bytes;
    int solver_set;
    char *solver_name, *solver_status;
    double objective, bound, gap;
    char **timing_key;
    double *timing_val;
    size_t n_timing, cap_timing;
    int deterministic;
    json_t *search; /* object or NULL */
    int has_kv;
    bp_plan_kv_cache kv;        /* layers points at kv_layers */
    bp_plan_kv_layer *kv_layers;
};

/* ---- small helpers ------------------------------------------------------- */

/* Text that can go into the JSON file: no control characters and valid
 * UTF-8 (json_string refuses anything else). */
static int valid_text(const char *s)
{
    if (!s || bp__has_control(s))
        return 0;
    json_t *j = json_string(s);
    if (!j)
        return 0;
    json_decref(j);
    return 1;
}

/* Replace *dst with a copy of src (NULL allowed). */
static int set_str(char **dst, const char *src)
{
    char *c = NULL;
    if (src && !(c = strdup(src)))
        return BP_ENOMEM;
    free(*dst);
    *dst = c;
    return BP_OK;
}

static int close_rel(double a, double b)
{
    double m = fmax(fabs(a), fabs(b));
    return fabs(a - b) <= 1e-9 * (m > 1 ? m : 1);
}

static void free_blocks(iblocks *b)
{
    if (!b)
        return;
    for (size_t i = 0; i < b->n_formats; i++)
        free(b->formats[i]);
    free(b->formats);
    free(b->runs);
    free(b);
}

static void free_tensor(itensor *t)
{
    free(t->name);
    free(t->dtype);
    free_blocks(t->blocks);
}

bp_plan *bp_plan_new(void)
{
    bp_plan *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->metric = -1;
    p->deterministic = 1;
    p->objective = p->bound = p->gap = NAN;
    return p;
}

void bp_plan_destroy(bp_plan **pp)
{
    if (!pp || !*pp)
        return;
    bp_plan *p = *pp;
    for (size_t i = 0; i < p->n; i++)
        free_tensor(&p->t[i]);
    free(p->t);
    free(p->tool_name);
    free(p->tool_version);
    free(p->model_path);
    free(p->model_hash);
    free(p->calib_hash);
    free(p->calib_source);
    free(p->solver_name);
    free(p->solver_status);
    for (size_t i = 0; i < p->n_timing; i++)
        free(p->timing_key[i]);
    free(p->timing_key);
    free(p->timing_val);
    json_decref(p->search);
    free(p->kv_layers);
    free(p);
    *pp = NULL;
}

/* ---- blocks -------------------------------------------------------------- */

/* ctx prefixes every message, e.g. "plan.json: tensors[3].blocks." */
static int blocks_check(const bp_plan_blocks *b, int64_t rows, int64_t cols,
                        const char *ctx, uint64_t *bytes_out, size_t *dominant,
                        bp_error *err)
{
    int rc = BP_OK;
    uint64_t *per = NULL;
    if (!b)
        return bp_error_set(err, BP_EINVAL, "%sNULL blocks", ctx);
    if (b->axis != BP_BLOCK_AXIS_COLS && b->axis != BP_BLOCK_AXIS_ROWS)
        return bp_error_set(err, BP_EINVAL, "%saxis: must be \"cols\" or \"rows\"", ctx);
    int64_t dim = b->axis == BP_BLOCK_AXIS_COLS ? cols : rows;
    if (b->size <= 0 || dim % b->size != 0)
        return bp_error_set(err, BP_EINVAL,
                            "%ssize: %" PRId64 " must be > 0 and divide the %s dimension %"
                            PRId64,
                            ctx, b->size, b->axis == BP_BLOCK_AXIS_COLS ? "cols" : "rows",
                            dim);
    uint64_t n_blocks = (uint64_t)(dim / b->size);
    int64_t brows = b->axis == BP_BLOCK_AXIS_COLS ? rows : b->size;
    int64_t bcols = b->axis == BP_BLOCK_AXIS_COLS ? b->size : cols;
    if (b->n_formats == 0 || !b->formats)
        return bp_error_set(err, BP_EINVAL, "%sformats: must list at least one format",
                            ctx);
    if (b->n_runs == 0 || !b->runs)
        return bp_error_set(err, BP_EINVAL, "%sruns: must have at least one run", ctx);
    per = calloc(b->n_formats, sizeof *per);
    if (!per)
        return bp_error_set(err, BP_ENOMEM, "%sout of memory", ctx);
    for (size_t i = 0; i < b->n_formats; i++) {
        const char *name = b->formats[i];
        bp_format f;
        bp_error fe;
        if (!name || bp_format_parse(name, &f, &fe) != BP_OK) {
            rc = bp_error_set(err, BP_EINVAL, "%sformats[%zu]: unknown format \"%s\"", ctx,
                              i, name ? name : "(null)");
            goto out;
        }
        if (strcmp(f.name, name) != 0) {
            rc = bp_error_set(err, BP_EINVAL,
                              "%sformats[%zu]: \"%s\" is not canonical (write \"%s\")", ctx,
                              i, name, f.name);
            goto out;
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(b->formats[j], name) == 0) {
                rc = bp_error_set(err, BP_EINVAL, "%sformats[%zu]: \"%s\" listed twice",
                                  ctx, i, name);
                goto out;
            }
        if (!bp_format_supports(&f, brows, bcols)) {
            rc = bp_error_set(err, BP_EINVAL,
                              "%sformats[%zu]: %s does not support blocks of [%" PRId64
                              ", %" PRId64 "]",
                              ctx, i, name, brows, bcols);
            goto out;
        }
    }
    uint64_t sum = 0;
    for (size_t r = 0; r < b->n_runs; r++) {
        const bp_plan_run *run = &b->runs[r];
        if (run->format >= b->n_formats) {
            rc = bp_error_set(err, BP_EINVAL,
                              "%sruns[%zu]: format index %" PRIu32
                              " out of range (%zu formats)",
                              ctx, r, run->format, b->n_formats);
            goto out;
        }
        if (run->count == 0 || run->count > n_blocks - sum) {
            rc = bp_error_set(err, BP_EINVAL,
                              run->count == 0
                                  ? "%sruns[%zu]: count must be >= 1"
                                  : "%sruns[%zu]: counts exceed the %" PRIu64 " blocks",
                              ctx, r, n_blocks);
            goto out;
        }
        sum += run->count;
        per[run->format] += run->count;
    }
    if (sum != n_blocks) {
        rc = bp_error_set(err, BP_EINVAL,
                          "%sruns: counts sum to %" PRIu64 ", but there are %" PRIu64
                          " blocks",
                          ctx, sum, n_blocks);
        goto out;
    }
    uint64_t total = 0;
    size_t dom = 0;
    for (size_t i = 0; i < b->n_formats; i++) {
        bp_format f;
        bp_format_parse(b->formats[i], &f, NULL);
        uint64_t fb = bp_format_bytes(&f, brows, bcols);
        if (per[i] && (fb == 0 || fb > (UINT64_MAX - total) / per[i])) {
            rc = bp_error_set(err, BP_EINVAL, "%sformats[%zu]: byte count overflows", ctx,
                              i);
            goto out;
        }
        total += per[i] * fb;
        if (per[i] > per[dom])
            dom = i;
    }
    if (bytes_out)
        *bytes_out = total;
    if (dominant)
        *dominant = dom;
out:
    free(per);
    return rc;
}

int bp_plan_blocks_validate(const bp_plan_blocks *b, int64_t rows, int64_t cols,
                            uint64_t *bytes, size_t *dominant, bp_error *err)
{
    if (rows <= 0 || cols <= 0)
        return bp_error_set(err, BP_EINVAL, "blocks: tensor shape must be positive");
    return blocks_check(b, rows, cols, "blocks.", bytes, dominant, err);
}

static iblocks *copy_blocks(const bp_plan_blocks *b)
{
    iblocks *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->axis = b->axis;
    c->size = b->size;
    c->formats = calloc(b->n_formats, sizeof *c->formats);
    c->runs = malloc(b->n_runs * sizeof *c->runs);
    if (!c->formats || !c->runs) {
        free_blocks(c);
        return NULL;
    }
    for (size_t i = 0; i < b->n_formats; i++) {
        c->n_formats = i + 1;
        if (!(c->formats[i] = strdup(b->formats[i]))) {
            free_blocks(c);
            return NULL;
        }
    }
    memcpy(c->runs, b->runs, b->n_runs * sizeof *c->runs);
    c->n_runs = b->n_runs;
    c->view.axis = c->axis;
    c->view.size = c->size;
    c->view.formats = (const char *const *)c->formats;
    c->view.n_formats = c->n_formats;
    c->view.runs = c->runs;
    c->view.n_runs = c->n_runs;
    return c;
}

/* ---- tensors ---------------------------------------------------------------- */

/* Position of name in the sorted array: *found = 1 when present. */
static size_t find_pos(const bp_plan *p, const char *name, int *found)
{
    size_t lo = 0, hi = p->n;
    *found = 0;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(p->t[mid].name, name);
        if (c == 0) {
            *found = 1;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* ctx prefixes messages: "tensor \"x\": " from the API, "plan.json:
 * tensors[3]." from the reader, so field names follow directly. */
static int add_tensor_ctx(bp_plan *p, const bp_plan_tensor *t, const char *ctx,
                          bp_error *err)
{
    if (!t->name || !*t->name || !valid_text(t->name))
        return bp_error_set(err, BP_EINVAL,
                            "%sname: must be non-empty UTF-8 without control characters",
                            ctx);
    if (t->rows <= 0 || t->cols <= 0 ||
        (uint64_t)t->rows > MAX_TENSOR_PARAMS / (uint64_t)t->cols)
        return bp_error_set(err, BP_EINVAL,
                            "%sshape: [%" PRId64 ", %" PRId64 "] must be positive (and "
                            "at most 2^53 weights)",
                            ctx, t->rows, t->cols);
    if (!t->dtype || !*t->dtype || !valid_text(t->dtype))
        return bp_error_set(err, BP_EINVAL, "%sdtype: must be a non-empty string", ctx);
    if (!bp_table_method_name(t->method))
        return bp_error_set(err, BP_EINVAL, "%smethod: must be \"rtn\", \"gptq\" or \"gptq_act\"", ctx);
    if (!isnan(t->predicted_error) && !(isfinite(t->predicted_error) &&
                                        t->predicted_error >= 0))
        return bp_error_set(err, BP_EINVAL,
                            "%spredicted_error: must be finite and >= 0, or null", ctx);
    bp_format f;
    bp_error fe;
    if (!t->format || bp_format_parse(t->format, &f, &fe) != BP_OK)
        return bp_error_set(err, BP_EINVAL, "%sformat: unknown format \"%s\"", ctx,
                            t->format ? t->format : "(null)");
    if (strcmp(f.name, t->format) != 0)
        return bp_error_set(err, BP_EINVAL,
                            "%sformat: \"%s\" is not canonical (write \"%s\")", ctx,
                            t->format, f.name);
    uint64_t bytes;
    if (t->blocks) {
        char bctx[BP_ERROR_MSG_MAX];
        snprintf(bctx, sizeof bctx, "%sblocks.", ctx);
        size_t dom;
        int rc = blocks_check(t->blocks, t->rows, t->cols, bctx, &bytes, &dom, err);
        if (rc)
            return rc;
        if (strcmp(t->blocks->formats[dom], t->format) != 0)
            return bp_error_set(err, BP_EINVAL,
                                "%sformat: \"%s\" must be the format covering the most "
                                "blocks (\"%s\")",
                                ctx, t->format, t->blocks->formats[dom]);
    } else {
        if (!bp_format_supports(&f, t->rows, t->cols))
            return bp_error_set(err, BP_EINVAL,
                                "%sformat: %s does not support shape [%" PRId64 ", %" PRId64
                                "]",
                                ctx, t->format, t->rows, t->cols);
        bytes = bp_format_bytes(&f, t->rows, t->cols);
        if (bytes == 0)
            return bp_error_set(err, BP_EINVAL, "%sformat: %s gives 0 bytes", ctx,
                                t->format);
    }
    int found;
    size_t pos = find_pos(p, t->name, &found);
    if (found)
        return bp_error_set(err, BP_EINVAL, "%sname: duplicate tensor \"%s\"", ctx,
                            t->name);
    if (p->n == p->cap) {
        size_t nc = p->cap ? 2 * p->cap : 64;
        itensor *nt = realloc(p->t, nc * sizeof *nt);
        if (!nt)
            return bp_error_set(err, BP_ENOMEM, "plan: out of memory");
        p->t = nt;
        p->cap = nc;
    }
    itensor it = {0};
    it.name = strdup(t->name);
    it.dtype = strdup(t->dtype);
    it.blocks = t->blocks ? copy_blocks(t->blocks) : NULL;
    if (!it.name || !it.dtype || (t->blocks && !it.blocks)) {
        free_tensor(&it);
        return bp_error_set(err, BP_ENOMEM, "plan: out of memory");
    }
    it.rows = t->rows;
    it.cols = t->cols;
    memcpy(it.format, f.name, sizeof it.format);
    it.method = t->method;
    it.predicted_error = t->predicted_error;
    it.bytes = bytes;
    it.bpw = 8.0 * (double)bytes / ((double)t->rows * (double)t->cols);
    memmove(&p->t[pos + 1], &p->t[pos], (p->n - pos) * sizeof *p->t);
    p->t[pos] = it;
    p->n++;
    return BP_OK;
}

int bp_plan_add_tensor(bp_plan *p, const bp_plan_tensor *t, bp_error *err)
{
    if (!p || !t)
        return bp_error_set(err, BP_EINVAL, "bp_plan_add_tensor: NULL argument");
    char ctx[300];
    snprintf(ctx, sizeof ctx, "tensor \"%.256s\": ", t->name ? t->name : "(null)");
    return add_tensor_ctx(p, t, ctx, err);
}

size_t bp_plan_tensor_count(const bp_plan *p)
{
    return p ? p->n : 0;
}

int bp_plan_tensor_get(const bp_plan *p, size_t i, bp_plan_tensor *out)
{
    if (!p || !out || i >= p->n)
        return BP_EINVAL;
    const itensor *t = &p->t[i];
    out->name = t->name;
    out->rows = t->rows;
    out->cols = t->cols;
    out->dtype = t->dtype;
    out->format = t->format;
    out->method = t->method;
    out->predicted_error = t->predicted_error;
    out->blocks = t->blocks ? &t->blocks->view : NULL;
    out->bytes = t->bytes;
    out->bits_per_weight = t->bpw;
    return BP_OK;
}

long bp_plan_tensor_find(const bp_plan *p, const char *name)
{
    if (!p || !name)
        return -1;
    int found;
    size_t pos = find_pos(p, name, &found);
    return found ? (long)pos : -1;
}

/* ---- header setters ---------------------------------------------------------- */

int bp_plan_set_tool(bp_plan *p, const char *name, const char *version, bp_error *err)
{
    if (!p || !name || !*name || !valid_text(name) || !version || !*version ||
        !valid_text(version))
        return bp_error_set(err, BP_EINVAL, "tool: name and version must be non-empty text");
    if (set_str(&p->tool_name, name) || set_str(&p->tool_version, version))
        return bp_error_set(err, BP_ENOMEM, "plan: out of memory");
    return BP_OK;
}

int bp_plan_set_model(bp_plan *p, const char *path, const char *hash, bp_error *err)
{
    if (!p || !path || !*path || !valid_text(path))
        return bp_error_set(err, BP_EINVAL, "model.path: must be non-empty text");
    if (hash && (!*hash || !valid_text(hash)))
        return bp_error_set(err, BP_EINVAL, "model.hash: must be non-empty text or null");
    if (set_str(&p->model_path, path) || set_str(&p->model_hash, hash))
        return bp_error_set(err, BP_ENOMEM, "plan: out of memory");
    return BP_OK;
}

int bp_plan_set_calibration(bp_plan *p, const char *hash, const char *source,
                            bp_error *err)
{
    if (!p)
        return bp_error_set(err, BP_EINVAL, "bp_plan_set_calibration: NULL plan");
    if (hash && (!*hash || !valid_text(hash)))
        return bp_error_set(err, BP_EINVAL,
                            "calibration.hash: must be non-empty text or null");
    if (source && !valid_text(source))
        return bp_error_set(err, BP_EINVAL, "calibration.source: must be text or null");
    if (set_str(&p->calib_hash, hash) || set_str(&p->calib_source, source))
        return bp_error_set(err, BP_ENOMEM, "plan: out of memory");
    return BP_OK;
}

int bp_plan_set_metric(bp_plan *p, bp_metric m, bp_error *err)
{
    if (!p || (int)m < 0 || m >= BP_METRIC_N_ERROR)
        return bp_error_set(err, BP_EINVAL,
                            "metric: must be one of mse, hdiag, hfull, gptq, dkl");
    p->metric = (int)m;
    return BP_OK;
}

int bp_plan_set_budget(bp_plan *p, bp_budget_kind given, double bits, uint64_t bytes,
                       bp_error *err)
{
    if (!p || (given != BP_BUDGET_BITS && given != BP_BUDGET_BYTES))
        return bp_error_set(err, BP_EINVAL, "budget.given: must be \"bits\" or \"bytes\"");
    if (!isfinite(bits) || bits <= 0)
        return bp_error_set(err, BP_EINVAL, "budget.asked.bits: must be finite and > 0");
    if (bytes == 0 || bytes > INT64_MAX)
        return bp_error_set(err, BP_EINVAL,
                            "budget.asked.bytes: must be > 0 and < 2^63");
    p->given = given;
    p->asked_bits = bits;
    p->asked_bytes = bytes;
    return BP_OK;
}

int bp_plan_set_solver(bp_plan *p, const char *name, const char *status,
                       double objective, double bound, double gap, bp_error *err)
{
    if (!p || !name || !*name || !valid_text(name))
        return bp_error_set(err, BP_EINVAL, "solver.name: must be non-empty text");
    if (!status || (strcmp(status, "optimal") && strcmp(status, "feasible")))
        return bp_error_set(err, BP_EINVAL,
                            "solver.status: must be \"optimal\" or \"feasible\" (got "
                            "\"%s\")",
                            status ? status : "(null)");
    if (!isfinite(objective))
        return bp_error_set(err, BP_EINVAL, "solver.objective: must be finite");
    if (!isnan(bound) && !isfinite(bound))
        return bp_error_set(err, BP_EINVAL, "solver.bound: must be finite or null");
    if (!isnan(gap) && !(isfinite(gap) && gap >= 0))
        return bp_error_set(err, BP_EINVAL, "solver.gap: must be finite and >= 0, or null");
    if (set_str(&p->solver_name, name) || set_str(&p->solver_status, status))
        return bp_error_set(err, BP_ENOMEM, "plan: out of memory");
    p->objective = objective;
    p->bound = bound;
    p->gap = gap;
    p->solver_set = 1;
    return BP_OK;
}

int bp_plan_set_timing(bp_plan *p, const char *key, double seconds, bp_error *err)
{
    if (!p || !key || !*key || !valid_text(key))
        return bp_error_set(err, BP_EINVAL, "timing: key must be non-empty text");
    if (!isfinite(seconds) || seconds < 0)
        return bp_error_set(err, BP_EINVAL, "timing.%s: must be finite and >= 0", key);
    for (size_t i = 0; i < p->n_timing; i++)
        if (strcmp(p->timing_key[i], key) == 0) {
            p->timing_val[i] = seconds;
            return BP_OK;
        }
    if (p->n_timing == p->cap_timing) {
        size_t nc = p->cap_timing ? 2 * p->cap_timing : 4;
        char **nk = realloc(p->timing_key, nc * sizeof *nk);
        if (nk)
            p->timing_key = nk;
        double *nv = nk ? realloc(p->timing_val, nc * sizeof *nv) : NULL;
        if (!nv)
            return bp_error_set(err, BP_ENOMEM, "plan: out of memory");
        p->timing_val = nv;
        p->cap_timing = nc;
    }
    if (!(p->timing_key[p->n_timing] = strdup(key)))
        return bp_error_set(err, BP_ENOMEM, "plan: out of memory");
    p->timing_val[p->n_timing++] = seconds;
    return BP_OK;
}

void bp_plan_set_deterministic(bp_plan *p, int deterministic)
{
    if (p)
        p->deterministic = deterministic != 0;
}

int bp_plan_set_search_json(bp_plan *p, const char *json_text, bp_error *err)
{
    if (!p)
        return bp_error_set(err, BP_EINVAL, "bp_plan_set_search_json: NULL plan");
    json_t *j = NULL;
    if (json_text) {
        json_error_t je;
        j = json_loads(json_text, JSON_REJECT_DUPLICATES, &je);
        if (!j)
            return bp_error_set(err, BP_EINVAL, "search: invalid JSON: %s", je.text);
        if (!json_is_object(j)) {
            json_decref(j);
            return bp_error_set(err, BP_EINVAL, "search: must be a JSON object");
        }
    }
    json_decref(p->search);
    p->search = j;
    return BP_OK;
}

char *bp_plan_search_json(const bp_plan *p)
{
    if (!p || !p->search)
        return NULL;
    return json_dumps(p->search, JSON_COMPACT | JSON_REAL_PRECISION(17));
}

/* ---- KV cache -------------------------------------------------------------- */

/* Validate a section and compute every layer's bytes (per, n_layers
 * entries) and the total. ctx prefixes messages ("kv_cache." from the API,
 * "plan.json: kv_cache." from the reader). */
static int kv_check(const bp_plan_kv_cache *kv, const char *ctx, uint64_t *per,
                    uint64_t *total, bp_error *err)
{
    const struct {
        const char *name;
        int64_t v;
    } dims[] = {{"context", kv->context},
                {"batch", kv->batch},
                {"n_kv_heads", kv->n_kv_heads},
                {"head_dim", kv->head_dim}};
    for (size_t i = 0; i < sizeof dims / sizeof *dims; i++)
        if (dims[i].v < 1)
            return bp_error_set(err, BP_EINVAL, "%s%s: %" PRId64 " must be >= 1", ctx,
                                dims[i].name, dims[i].v);
    if (kv->n_layers == 0 || !kv->layers)
        return bp_error_set(err, BP_EINVAL, "%slayers: must list at least one layer", ctx);
    const bp_kv_shape shape = {1, kv->n_kv_heads, kv->head_dim};
    uint64_t sum = 0;
    for (size_t i = 0; i < kv->n_layers; i++) {
        const bp_plan_kv_layer *l = &kv->layers[i];
        if (l->layer < 0)
            return bp_error_set(err, BP_EINVAL, "%slayers[%zu].layer: %" PRId64
                                " must be >= 0", ctx, i, l->layer);
        if (i > 0 && l->layer <= kv->layers[i - 1].layer)
            return bp_error_set(err, BP_EINVAL,
                                "%slayers[%zu].layer: %" PRId64 " does not follow %" PRId64
                                " (layers must be unique and increasing)",
                                ctx, i, l->layer, kv->layers[i - 1].layer);
        if (!bp_kv_format_name(l->format))
            return bp_error_set(err, BP_EINVAL, "%slayers[%zu].format: unknown KV format %d",
                                ctx, i, (int)l->format);
        bp_error be;
        if (bp_kv_bytes(&shape, l->format, kv->context, kv->batch, &per[i], &be) != BP_OK)
            return bp_error_set(err, BP_EINVAL, "%slayers[%zu].bytes: %s", ctx, i, be.msg);
        if (per[i] > UINT64_MAX - sum)
            return bp_error_set(err, BP_EINVAL, "%sbytes: total overflows 64 bits", ctx);
        sum += per[i];
    }
    if (sum > INT64_MAX)
        return bp_error_set(err, BP_EINVAL, "%sbytes: total %" PRIu64 " exceeds 2^63", ctx,
                            sum);
    *total = sum;
    return BP_OK;
}

static int set_kv_ctx(bp_plan *p, const bp_plan_kv_cache *kv, const char *ctx, bp_error *err)
{
    if (!kv) {
        free(p->kv_layers);
        p->kv_layers = NULL;
        memset(&p->kv, 0, sizeof p->kv);
        p->has_kv = 0;
        return BP_OK;
    }
    bp_plan_kv_layer *layers =
        kv->n_layers && kv->n_layers <= SIZE_MAX / sizeof *layers
            ? malloc(kv->n_layers * sizeof *layers)
            : NULL;
    uint64_t *per = kv->n_layers ? calloc(kv->n_layers, sizeof *per) : NULL;
    if (kv->n_layers && (!layers || !per)) {
        free(layers);
        free(per);
        return bp_error_set(err, BP_ENOMEM, "plan: out of memory");
    }
    uint64_t total = 0;
    int rc = kv_check(kv, ctx, per, &total, err);
    if (rc == BP_OK) {
        for (size_t i = 0; i < kv->n_layers; i++) {
            layers[i] = kv->layers[i];
            layers[i].bytes = per[i];
        }
        free(p->kv_layers);
        p->kv_layers = layers;
        p->kv = *kv;
        p->kv.layers = layers;
        p->kv.bytes = total;
        p->has_kv = 1;
        layers = NULL;
    }
    free(layers);
    free(per);
    return rc;
}

int bp_plan_set_kv_cache(bp_plan *p, const bp_plan_kv_cache *kv, bp_error *err)
{
    if (!p)
        return bp_error_set(err, BP_EINVAL, "bp_plan_set_kv_cache: NULL plan");
    return set_kv_ctx(p, kv, "kv_cache.", err);
}

int bp_plan_get_kv_cache(const bp_plan *p, bp_plan_kv_cache *out)
{
    if (!p || !p->has_kv)
        return 0;
    if (out)
        *out = p->kv;
    return 1;
}

static void totals(const bp_plan *p, uint64_t *params, uint64_t *bytes)
{
    uint64_t pa = 0, by = 0;
    for (size_t i = 0; i < p->n; i++) {
        pa += (uint64_t)p->t[i].rows * (uint64_t)p->t[i].cols;
        by += p->t[i].bytes;
    }
    *params = pa;
    *bytes = by;
}

void bp_plan_get_info(const bp_plan *p, bp_plan_info *o)
{
    memset(o, 0, sizeof *o);
    o->metric = -1;
    o->asked_bits = o->achieved_bits = o->objective = o->bound = o->gap = NAN;
    if (!p)
        return;
    o->tool_name = p->tool_name;
    o->tool_version = p->tool_version;
    o->model_path = p->model_path;
    o->model_hash = p->model_hash;
    o->calibration_hash = p->calib_hash;
    o->calibration_source = p->calib_source;
    o->metric = p->metric;
    o->budget_given = p->given;
    if (p->given != BP_BUDGET_NONE) {
        o->asked_bits = p->asked_bits;
        o->asked_bytes = p->asked_bytes;
    }
    totals(p, &o->params, &o->achieved_bytes);
    if (o->params)
        o->achieved_bits = 8.0 * (double)o->achieved_bytes / (double)o->params;
    o->solver_name = p->solver_name;
    o->solver_status = p->solver_status;
    o->objective = p->objective;
    o->bound = p->bound;
    o->gap = p->gap;
    o->deterministic = p->deterministic;
    o->n_timing = p->n_timing;
    o->kv_bytes = p->has_kv ? p->kv.bytes : 0;
}

int bp_plan_timing_at(const bp_plan *p, size_t i, const char **key, double *seconds)
{
    if (!p || i >= p->n_timing)
        return BP_EINVAL;
    if (key)
        *key = p->timing_key[i];
    if (seconds)
        *seconds = p->timing_val[i];
    return BP_OK;
}

/* ---- validation ----------------------------------------------------------------- */

int bp_plan_validate(const bp_plan *p, bp_error *err)
{
    if (!p)
        return bp_error_set(err, BP_EINVAL, "plan: NULL");
    if (!p->tool_name)
        return bp_error_set(err, BP_EINVAL, "tool: not set");
    if (!p->model_path)
        return bp_error_set(err, BP_EINVAL, "model: not set");
    if (p->metric < 0)
        return bp_error_set(err, BP_EINVAL, "metric: not set");
    if (p->given == BP_BUDGET_NONE)
        return bp_error_set(err, BP_EINVAL, "budget: not set");
    if (!p->solver_set)
        return bp_error_set(err, BP_EINVAL, "solver: not set");
    if (p->n == 0)
        return bp_error_set(err, BP_EINVAL, "tensors: the plan has no tensor");
    uint64_t params = 0, bytes = 0;
    for (size_t i = 0; i < p->n; i++) {
        uint64_t tp = (uint64_t)p->t[i].rows * (uint64_t)p->t[i].cols;
        if (tp > UINT64_MAX - params || p->t[i].bytes > UINT64_MAX - bytes)
            return bp_error_set(err, BP_EINVAL, "tensors: totals overflow");
        params += tp;
        bytes += p->t[i].bytes;
    }
    if (bytes > p->asked_bytes)
        return bp_error_set(err, BP_EINVAL,
                            "budget: achieved %" PRIu64 " bytes exceed the asked %" PRIu64,
                            bytes, p->asked_bytes);
    if (p->has_kv && p->kv.bytes > p->asked_bytes - bytes)
        return bp_error_set(err, BP_EINVAL,
                            "budget: achieved %" PRIu64 " weight bytes + %" PRIu64
                            " KV-cache bytes exceed the asked %" PRIu64,
                            bytes, p->kv.bytes, p->asked_bytes);
    double exact = p->asked_bits * (double)params / 8.0; /* bytes */
    if (p->given == BP_BUDGET_BITS) {
        if (fabs((double)p->asked_bytes - exact) > 1.0 + 1e-9 * exact)
            return bp_error_set(err, BP_EINVAL,
                                "budget.asked.bytes: %" PRIu64 " does not match %.17g bits "
                                "x %" PRIu64 " weights / 8",
                                p->asked_bytes, p->asked_bits, params);
    } else {
        double bits = 8.0 * (double)p->asked_bytes / (double)params;
        if (!close_rel(bits, p->asked_bits))
            return bp_error_set(err, BP_EINVAL,
                                "budget.asked.bits: %.17g does not match 8 x %" PRIu64
                                " bytes / %" PRIu64 " weights",
                                p->asked_bits, p->asked_bytes, params);
    }
    return BP_OK;
}

/* ---- writer -------------------------------------------------------------------- */

static json_t *real_or_null(double x)
{
    return isnan(x) ? json_null() : json_real(x);
}

static json_t *str_or_null(const char *s)
{
    return s ? json_string(s) : json_null();
}

/* json_object_set_new that remembers a failure instead of checking each. */
static void put(json_t *obj, const char *key, json_t *v, int *bad)
{
    if (!v || !obj || json_object_set_new(obj, key, v) != 0)
        *bad = 1;
}

static json_t *blocks_json(const iblocks *b, int *bad)
{
    json_t *o = json_object();
    put(o, "axis", json_string(b->axis == BP_BLOCK_AXIS_COLS ? "cols" : "rows"), bad);
    put(o, "size", json_integer(b->size), bad);
    json_t *fa = json_array();
    for (size_t i = 0; i < b->n_formats; i++)
        if (!fa || json_array_append_new(fa, json_string(b->formats[i])))
            *bad = 1;
    put(o, "formats", fa, bad);
    json_t *ra = json_array();
    for (size_t i = 0; i < b->n_runs; i++) {
        json_t *pair = json_array();
        if (!pair || json_array_append_new(pair, json_integer(b->runs[i].format)) ||
            json_array_append_new(pair, json_integer((json_int_t)b->runs[i].count)) ||
            !ra || json_array_append_new(ra, pair))
            *bad = 1;
    }
    put(o, "runs", ra, bad);
    return o;
}

static json_t *kv_json(const bp_plan_kv_cache *kv, int *bad)
{
    json_t *o = json_object();
    put(o, "context", json_integer(kv->context), bad);
    put(o, "batch", json_integer(kv->batch), bad);
    put(o, "n_kv_heads", json_integer(kv->n_kv_heads), bad);
    put(o, "head_dim", json_integer(kv->head_dim), bad);
    put(o, "bytes", json_integer((json_int_t)kv->bytes), bad);
    json_t *la = json_array();
    for (size_t i = 0; i < kv->n_layers; i++) {
        json_t *e = json_object();
        put(e, "layer", json_integer(kv->layers[i].layer), bad);
        put(e, "format", json_string(bp_kv_format_name(kv->layers[i].format)), bad);
        put(e, "bytes", json_integer((json_int_t)kv->layers[i].bytes), bad);
        if (!la || json_array_append_new(la, e))
            *bad = 1;
    }
    put(o, "layers", la, bad);
    return o;
}

char *bp_plan_to_string(const bp_plan *p, bp_error *err)
{
    int rc = bp_plan_validate(p, err);
    if (rc)
        return NULL;
    uint64_t params, bytes;
    totals(p, &params, &bytes);
    int bad = 0;
    json_t *root = json_object();
    put(root, "schema", json_string(BP_PLAN_SCHEMA), &bad);

    json_t *o = json_object();
    put(o, "name", json_string(p->tool_name), &bad);
    put(o, "version", json_string(p->tool_version), &bad);
    put(root, "tool", o, &bad);

    o = json_object();
    put(o, "path", json_string(p->model_path), &bad);
    put(o, "hash", str_or_null(p->model_hash), &bad);
    put(root, "model", o, &bad);

    o = json_object();
    put(o, "hash", str_or_null(p->calib_hash), &bad);
    put(o, "source", str_or_null(p->calib_source), &bad);
    put(root, "calibration", o, &bad);

    put(root, "metric", json_string(bp_table_metric_name((bp_metric)p->metric)), &bad);

    o = json_object();
    put(o, "given", json_string(p->given == BP_BUDGET_BITS ? "bits" : "bytes"), &bad);
    json_t *a = json_object();
    put(a, "bytes", json_integer((json_int_t)p->asked_bytes), &bad);
    put(a, "bits", json_real(p->asked_bits), &bad);
    put(o, "asked", a, &bad);
    a = json_object();
    put(a, "bytes", json_integer((json_int_t)bytes), &bad);
    put(a, "bits", json_real(8.0 * (double)bytes / (double)params), &bad);
    put(o, "achieved", a, &bad);
    put(o, "params", json_integer((json_int_t)params), &bad);
    put(root, "budget", o, &bad);

    o = json_object();
    put(o, "name", json_string(p->solver_name), &bad);
    put(o, "status", json_string(p->solver_status), &bad);
    put(o, "objective", json_real(p->objective), &bad);
    put(o, "bound", real_or_null(p->bound), &bad);
    put(o, "gap", real_or_null(p->gap), &bad);
    put(root, "solver", o, &bad);

    json_t *ta = json_array();
    for (size_t i = 0; i < p->n; i++) {
        const itensor *t = &p->t[i];
        json_t *e = json_object();
        put(e, "name", json_string(t->name), &bad);
        json_t *shape = json_array();
        if (!shape || json_array_append_new(shape, json_integer(t->rows)) ||
            json_array_append_new(shape, json_integer(t->cols)))
            bad = 1;
        put(e, "shape", shape, &bad);
        put(e, "dtype", json_string(t->dtype), &bad);
        put(e, "format", json_string(t->format), &bad);
        put(e, "bits_per_weight", json_real(t->bpw), &bad);
        put(e, "bytes", json_integer((json_int_t)t->bytes), &bad);
        put(e, "predicted_error", real_or_null(t->predicted_error), &bad);
        put(e, "method", json_string(bp_table_method_name(t->method)), &bad);
        if (t->blocks)
            put(e, "blocks", blocks_json(t->blocks, &bad), &bad);
        if (!ta || json_array_append_new(ta, e))
            bad = 1;
    }
    put(root, "tensors", ta, &bad);
    if (p->has_kv)
        put(root, "kv_cache", kv_json(&p->kv, &bad), &bad);
    if (p->search)
        put(root, "search", json_deep_copy(p->search), &bad);
    if (!p->deterministic && p->n_timing) {
        o = json_object();
        for (size_t i = 0; i < p->n_timing; i++)
            put(o, p->timing_key[i], json_real(p->timing_val[i]), &bad);
        put(root, "timing", o, &bad);
    }
    char *text = NULL;
    if (!bad)
        text = json_dumps(root, JSON_INDENT(2) | JSON_REAL_PRECISION(17));
    json_decref(root);
    if (!text) {
        bp_error_set(err, BP_ENOMEM, "plan: out of memory while serializing");
        return NULL;
    }
    size_t n = strlen(text);
    char *withnl = realloc(text, n + 2);
    if (!withnl) {
        free(text);
        bp_error_set(err, BP_ENOMEM, "plan: out of memory while serializing");
        return NULL;
    }
    withnl[n] = '\n';
    withnl[n + 1] = '\0';
    return withnl;
}

int bp_plan_write(const bp_plan *p, const char *path, bp_error *err)
{
    if (!path)
        return bp_error_set(err, BP_EINVAL, "bp_plan_write: NULL path");
    char *text = bp_plan_to_string(p, err);
    if (!text)
        return bp_error_prefix(err, "%s", path);
    bp__atomic_file af;
    int rc = bp__atomic_open(&af, path, err);
    if (rc == BP_OK) {
        size_t n = strlen(text);
        int ok = fwrite(text, 1, n, af.fp) == n;
        rc = bp__atomic_commit(&af, ok, err);
        if (rc == BP_OK && !ok)
            rc = bp_error_set(err, BP_EIO, "%s: write failed", path);
    }
    free(text);
    return rc;
}

/* ---- reader -------------------------------------------------------------------- */

typedef struct rd {
    const char *src;
    bp_error *err;
} rd;

static int fail(const rd *r, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(const rd *r, const char *path, const char *fmt, ...)
{
    char msg[BP_ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (path && *path)
        return bp_error_set(r->err, BP_EFORMAT, "%s: %s: %s", r->src, path, msg);
    return bp_error_set(r->err, BP_EFORMAT, "%s: %s", r->src, msg);
}

/* obj must be an object whose keys are all in allowed (NULL-terminated). */
static int check_object(const rd *r, json_t *obj, const char *path,
                        const char *const *allowed)
{
    if (!json_is_object(obj))
        return fail(r, path, "must be an object");
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v)
    {
        int ok = 0;
        for (const char *const *a = allowed; *a && !ok; a++)
            ok = strcmp(*a, key) == 0;
        if (!ok)
            return fail(r, path, "unknown key \"%s\"", key);
    }
    return BP_OK;
}

static void child(char *buf, size_t n, const char *parent, const char *key)
{
    if (parent && *parent)
        snprintf(buf, n, "%s.%s", parent, key);
    else
        snprintf(buf, n, "%s", key);
}

/* String member; nullable: JSON null gives *out = NULL. */
static int get_str(const rd *r, json_t *obj, const char *parent, const char *key,
                   int nullable, const char **out)
{
    char path[256];
    child(path, sizeof path, parent, key);
    json_t *v = json_object_get(obj, key);
    *out = NULL;
    if (!v)
        return fail(r, path, "missing");
    if (nullable && json_is_null(v))
        return BP_OK;
    if (!json_is_string(v))
        return fail(r, path, nullable ? "must be a string or null" : "must be a string");
    *out = json_string_value(v);
    return BP_OK;
}

/* Finite number (integer or real); nullable: null gives NaN. */
static int get_num(const rd *r, json_t *obj, const char *parent, const char *key,
                   int nullable, double *out)
{
    char path[256];
    child(path, sizeof path, parent, key);
    json_t *v = json_object_get(obj, key);
    *out = NAN;
    if (!v)
        return fail(r, path, "missing");
    if (nullable && json_is_null(v))
        return BP_OK;
    if (!json_is_number(v))
        return fail(r, path, nullable ? "must be a number or null" : "must be a number");
    double d = json_number_value(v);
    if (!isfinite(d))
        return fail(r, path, "must be finite");
    *out = d;
    return BP_OK;
}

/* Integer >= min. */
static int get_u64(const rd *r, json_t *obj, const char *parent, const char *key,
                   json_int_t min, uint64_t *out)
{
    char path[256];
    child(path, sizeof path, parent, key);
    json_t *v = json_object_get(obj, key);
    *out = 0;
    if (!v)
        return fail(r, path, "missing");
    if (!json_is_integer(v))
        return fail(r, path, "must be an integer");
    json_int_t x = json_integer_value(v);
    if (x < min)
        return fail(r, path, "must be >= %lld", (long long)min);
    *out = (uint64_t)x;
    return BP_OK;
}

static int read_blocks(const rd *r, json_t *jb, const char *path, bp_plan_blocks *b,
                       const char ***names, bp_plan_run **runs)
{
    static const char *const keys[] = {"axis", "size", "formats", "runs", NULL};
    int rc = check_object(r, jb, path, keys);
    if (rc)
        return rc;
    const char *axis;
    if ((rc = get_str(r, jb, path, "axis", 0, &axis)))
        return rc;
    char fp[300];
    if (strcmp(axis, "cols") && strcmp(axis, "rows")) {
        child(fp, sizeof fp, path, "axis");
        return fail(r, fp, "must be \"cols\" or \"rows\"");
    }
    b->axis = strcmp(axis, "cols") == 0 ? BP_BLOCK_AXIS_COLS : BP_BLOCK_AXIS_ROWS;
    uint64_t size;
    if ((rc = get_u64(r, jb, path, "size", 1, &size)))
        return rc;
    b->size = (int64_t)size;
    json_t *fa = json_object_get(jb, "formats");
    child(fp, sizeof fp, path, "formats");
    if (!json_is_array(fa) || json_array_size(fa) == 0)
        return fail(r, fp, "must be a non-empty array of format names");
    size_t nf = json_array_size(fa);
    *names = calloc(nf, sizeof **names);
    if (!*names)
        return bp_error_set(r->err, BP_ENOMEM, "%s: out of memory", r->src);
    for (size_t i = 0; i < nf; i++) {
        json_t *e = json_array_get(fa, i);
        if (!json_is_string(e)) {
            char ep[340];
            snprintf(ep, sizeof ep, "%s[%zu]", fp, i);
            return fail(r, ep, "must be a string");
        }
        (*names)[i] = json_string_value(e);
    }
    b->formats = *names;
    b->n_formats = nf;
    json_t *ra = json_object_get(jb, "runs");
    child(fp, sizeof fp, path, "runs");
    if (!json_is_array(ra) || json_array_size(ra) == 0)
        return fail(r, fp, "must be a non-empty array of [format_index, count] pairs");
    size_t nr = json_array_size(ra);
    *runs = calloc(nr, sizeof **runs);
    if (!*runs)
        return bp_error_set(r->err, BP_ENOMEM, "%s: out of memory", r->src);
    for (size_t i = 0; i < nr; i++) {
        json_t *pr = json_array_get(ra, i);
        json_t *a = json_array_get(pr, 0), *c = json_array_get(pr, 1);
        char ep[340];
        snprintf(ep, sizeof ep, "%s[%zu]", fp, i);
        if (!json_is_array(pr) || json_array_size(pr) != 2 || !json_is_integer(a) ||
            !json_is_integer(c))
            return fail(r, ep, "must be a pair [format_index, count] of integers");
        json_int_t fi = json_integer_value(a), cnt = json_integer_value(c);
        if (fi < 0 || (uint64_t)fi >= nf)
            return fail(r, ep, "format index %lld out of range (%zu formats)", (long long)fi,
                        nf);
        if (cnt < 1)
            return fail(r, ep, "count must be >= 1");
        (*runs)[i].format = (uint32_t)fi;
        (*runs)[i].count = (uint64_t)cnt;
    }
    b->runs = *runs;
    b->n_runs = nr;
    return BP_OK;
}

static int read_tensor(const rd *r, bp_plan *p, json_t *e, size_t i)
{
    static const char *const keys[] = {"name",   "shape",           "dtype",  "format",
                                       "bits_per_weight", "bytes", "predicted_error",
                                       "method", "blocks",          NULL};
    char path[64];
    snprintf(path, sizeof path, "tensors[%zu]", i);
    int rc = check_object(r, e, path, keys);
    if (rc)
        return rc;
    bp_plan_tensor t = {0};
    const char *method;
    if ((rc = get_str(r, e, path, "name", 0, &t.name)) ||
        (rc = get_str(r, e, path, "dtype", 0, &t.dtype)) ||
        (rc = get_str(r, e, path, "format", 0, &t.format)) ||
        (rc = get_str(r, e, path, "method", 0, &method)) ||
        (rc = get_num(r, e, path, "predicted_error", 1, &t.predicted_error)))
        return rc;
    int m = bp_table_method_from_name(method);
    char fp[128];
    if (m < 0) {
        snprintf(fp, sizeof fp, "%s.method", path);
        return fail(r, fp, "must be \"rtn\", \"gptq\" or \"gptq_act\" (got \"%s\")", method);
    }
    t.method = (bp_quant_method)m;
    json_t *shape = json_object_get(e, "shape");
    snprintf(fp, sizeof fp, "%s.shape", path);
    if (!shape)
        return fail(r, fp, "missing");
    json_t *s0 = json_array_get(shape, 0), *s1 = json_array_get(shape, 1);
    if (!json_is_array(shape) || json_array_size(shape) != 2 || !json_is_integer(s0) ||
        !json_is_integer(s1))
        return fail(r, fp, "must be [rows, cols] integers");
    t.rows = (int64_t)json_integer_value(s0);
    t.cols = (int64_t)json_integer_value(s1);
    if (t.rows <= 0 || t.cols <= 0)
        return fail(r, fp, "dimensions must be positive");
    double bpw;
    uint64_t bytes;
    if ((rc = get_num(r, e, path, "bits_per_weight", 0, &bpw)) ||
        (rc = get_u64(r, e, path, "bytes", 1, &bytes)))
        return rc;
    bp_plan_blocks blocks;
    const char **names = NULL;
    bp_plan_run *runs = NULL;
    json_t *jb = json_object_get(e, "blocks");
    if (jb) {
        snprintf(fp, sizeof fp, "%s.blocks", path);
        rc = read_blocks(r, jb, fp, &blocks, &names, &runs);
        t.blocks = &blocks;
    }
    if (rc == BP_OK) {
        char ctx[BP_ERROR_MSG_MAX];
        snprintf(ctx, sizeof ctx, "%s: %s.", r->src, path);
        rc = add_tensor_ctx(p, &t, ctx, r->err);
        if (rc == BP_EINVAL)
            rc = r->err ? (r->err->code = BP_EFORMAT) : BP_EFORMAT;
    }
    free(names);
    free(runs);
    if (rc)
        return rc;
    long k = bp_plan_tensor_find(p, t.name);
    const itensor *it = &p->t[k];
    if (it->bytes != bytes) {
        snprintf(fp, sizeof fp, "%s.bytes", path);
        return fail(r, fp, "%" PRIu64 " does not match %s on [%" PRId64 ", %" PRId64
                    "] (%" PRIu64 " bytes)",
                    bytes, it->format, t.rows, t.cols, it->bytes);
    }
    if (!close_rel(bpw, it->bpw)) {
        snprintf(fp, sizeof fp, "%s.bits_per_weight", path);
        return fail(r, fp, "%.17g does not match 8 x bytes / weights = %.17g", bpw, it->bpw);
    }
    return BP_OK;
}

/* The kv_cache section: shape, then layers; bytes recomputed and compared. */
static int read_kv_cache(const rd *r, bp_plan *p, json_t *o)
{
    static const char *const keys[] = {"context", "batch", "n_kv_heads", "head_dim",
                                       "bytes",   "layers", NULL};
    static const char *const layer_keys[] = {"layer", "format", "bytes", NULL};
    int rc = check_object(r, o, "kv_cache", keys);
    if (rc)
        return rc;
    uint64_t context, batch, heads, dim, total;
    if ((rc = get_u64(r, o, "kv_cache", "context", 1, &context)) ||
        (rc = get_u64(r, o, "kv_cache", "batch", 1, &batch)) ||
        (rc = get_u64(r, o, "kv_cache", "n_kv_heads", 1, &heads)) ||
        (rc = get_u64(r, o, "kv_cache", "head_dim", 1, &dim)) ||
        (rc = get_u64(r, o, "kv_cache", "bytes", 0, &total)))
        return rc;
    json_t *la = json_object_get(o, "layers");
    if (!json_is_array(la) || json_array_size(la) == 0)
        return fail(r, "kv_cache.layers", la ? "must be a non-empty array" : "missing");
    const size_t n = json_array_size(la);
    bp_plan_kv_layer *layers = calloc(n, sizeof *layers);
    uint64_t *file_bytes = calloc(n, sizeof *file_bytes);
    if (!layers || !file_bytes) {
        free(layers);
        free(file_bytes);
        return bp_error_set(r->err, BP_ENOMEM, "%s: out of memory", r->src);
    }
    char path[64], fp[96];
    for (size_t i = 0; i < n && rc == BP_OK; i++) {
        json_t *e = json_array_get(la, i);
        snprintf(path, sizeof path, "kv_cache.layers[%zu]", i);
        uint64_t layer;
        const char *fmt;
        if ((rc = check_object(r, e, path, layer_keys)) ||
            (rc = get_u64(r, e, path, "layer", 0, &layer)) ||
            (rc = get_str(r, e, path, "format", 0, &fmt)) ||
            (rc = get_u64(r, e, path, "bytes", 0, &file_bytes[i])))
            break;
        layers[i].layer = (int64_t)layer;
        bp_error fe;
        if (bp_kv_format_parse(fmt, &layers[i].format, &fe) != BP_OK) {
            snprintf(fp, sizeof fp, "%s.format", path);
            rc = fail(r, fp, "%s", fe.msg);
        }
    }
    if (rc == BP_OK) {
        bp_plan_kv_cache kv = {(int64_t)context, (int64_t)batch, (int64_t)heads,
                               (int64_t)dim,     layers,          n,
                               0};
        char ctx[BP_ERROR_MSG_MAX];
        snprintf(ctx, sizeof ctx, "%s: kv_cache.", r->src);
        rc = set_kv_ctx(p, &kv, ctx, r->err);
        if (rc == BP_EINVAL)
            rc = r->err ? (r->err->code = BP_EFORMAT) : BP_EFORMAT;
    }
    for (size_t i = 0; i < n && rc == BP_OK; i++) {
        if (p->kv.layers[i].bytes != file_bytes[i]) {
            snprintf(fp, sizeof fp, "kv_cache.layers[%zu].bytes", i);
            rc = fail(r, fp, "%" PRIu64 " does not match %s at context %" PRIu64
                      ", batch %" PRIu64 ", %" PRIu64 " x %" PRIu64 " (%" PRIu64 " bytes)",
                      file_bytes[i], bp_kv_format_name(p->kv.layers[i].format), context,
                      batch, heads, dim, p->kv.layers[i].bytes);
        }
    }
    if (rc == BP_OK && p->kv.bytes != total)
        rc = fail(r, "kv_cache.bytes", "%" PRIu64 " does not match the sum of layer bytes %"
                  PRIu64, total, p->kv.bytes);
    free(layers);
    free(file_bytes);
    return rc;
}

int bp_plan_from_string(const char *text, const char *source, bp_plan **out,
                        bp_error *err)
{
    rd r = {source ? source : "plan", err};
    if (!out)
        return bp_error_set(err, BP_EINVAL, "bp_plan_from_string: NULL out");
    *out = NULL;
    if (!text)
        return bp_error_set(err, BP_EINVAL, "%s: NULL text", r.src);
    json_error_t je;
    json_t *root = json_loads(text, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return bp_error_set(err, BP_EFORMAT, "%s:%d:%d: invalid JSON: %s", r.src, je.line,
                            je.column, je.text);
    int rc = BP_OK;
    bp_plan *p = bp_plan_new();
    if (!p) {
        rc = bp_error_set(err, BP_ENOMEM, "%s: out of memory", r.src);
        goto out;
    }
    static const char *const root_keys[] = {"schema", "tool",    "model",   "calibration",
                                            "metric", "budget",  "solver",  "tensors",
                                            "kv_cache", "search", "timing", NULL};
    if ((rc = check_object(&r, root, "", root_keys)))
        goto out;
    const char *s;
    if ((rc = get_str(&r, root, "", "schema", 0, &s)))
        goto out;
    if (strcmp(s, BP_PLAN_SCHEMA) != 0) {
        rc = strncmp(s, "bitplan.plan/", 13) == 0
                 ? fail(&r, "schema", "unsupported version \"%s\" (this bitplan reads \"%s\")",
                        s, BP_PLAN_SCHEMA)
                 : fail(&r, "schema", "must be \"%s\" (got \"%s\")", BP_PLAN_SCHEMA, s);
        goto out;
    }
    bp_error e2;
#define SETTER(call, field)                                        \
    do {                                                           \
        if ((rc = (call))) {                                       \
            if (rc == BP_ENOMEM)                                   \
                rc = bp_error_set(err, rc, "%s: out of memory", r.src); \
            else                                                   \
                rc = fail(&r, NULL, "%s", e2.msg);                 \
            goto out;                                              \
        }                                                          \
    } while (0)

    /* tool */
    static const char *const tool_keys[] = {"name", "version", NULL};
    json_t *o = json_object_get(root, "tool");
    const char *a, *b;
    if (!o) {
        rc = fail(&r, "tool", "missing");
        goto out;
    }
    if ((rc = check_object(&r, o, "tool", tool_keys)) ||
        (rc = get_str(&r, o, "tool", "name", 0, &a)) ||
        (rc = get_str(&r, o, "tool", "version", 0, &b)))
        goto out;
    SETTER(bp_plan_set_tool(p, a, b, &e2), "tool");

    static const char *const model_keys[] = {"path", "hash", NULL};
    o = json_object_get(root, "model");
    if (!o) {
        rc = fail(&r, "model", "missing");
        goto out;
    }
    if ((rc = check_object(&r, o, "model", model_keys)) ||
        (rc = get_str(&r, o, "model", "path", 0, &a)) ||
        (rc = get_str(&r, o, "model", "hash", 1, &b)))
        goto out;
    SETTER(bp_plan_set_model(p, a, b, &e2), "model");

    static const char *const calib_keys[] = {"hash", "source", NULL};
    o = json_object_get(root, "calibration");
    if (!o) {
        rc = fail(&r, "calibration", "missing");
        goto out;
    }
    if ((rc = check_object(&r, o, "calibration", calib_keys)) ||
        (rc = get_str(&r, o, "calibration", "hash", 1, &a)) ||
        (rc = get_str(&r, o, "calibration", "source", 1, &b)))
        goto out;
    SETTER(bp_plan_set_calibration(p, a, b, &e2), "calibration");

    if ((rc = get_str(&r, root, "", "metric", 0, &a)))
        goto out;
    int m = bp_table_metric_from_name(a);
    if (m < 0 || m >= BP_METRIC_N_ERROR) {
        rc = fail(&r, "metric", "unknown metric \"%s\" (mse, hdiag, hfull, gptq or dkl)", a);
        goto out;
    }
    p->metric = m;

    /* budget */
    static const char *const budget_keys[] = {"given", "asked", "achieved", "params", NULL};
    static const char *const amount_keys[] = {"bytes", "bits", NULL};
    o = json_object_get(root, "budget");
    if (!o) {
        rc = fail(&r, "budget", "missing");
        goto out;
    }
    if ((rc = check_object(&r, o, "budget", budget_keys)) ||
        (rc = get_str(&r, o, "budget", "given", 0, &a)))
        goto out;
    if (strcmp(a, "bits") && strcmp(a, "bytes")) {
        rc = fail(&r, "budget.given", "must be \"bits\" or \"bytes\"");
        goto out;
    }
    bp_budget_kind given = strcmp(a, "bits") == 0 ? BP_BUDGET_BITS : BP_BUDGET_BYTES;
    json_t *asked = json_object_get(o, "asked"), *ach = json_object_get(o, "achieved");
    uint64_t asked_bytes, ach_bytes, params;
    double asked_bits, ach_bits;
    if (!asked || !ach) {
        rc = fail(&r, asked ? "budget.achieved" : "budget.asked", "missing");
        goto out;
    }
    if ((rc = check_object(&r, asked, "budget.asked", amount_keys)) ||
        (rc = get_u64(&r, asked, "budget.asked", "bytes", 1, &asked_bytes)) ||
        (rc = get_num(&r, asked, "budget.asked", "bits", 0, &asked_bits)) ||
        (rc = check_object(&r, ach, "budget.achieved", amount_keys)) ||
        (rc = get_u64(&r, ach, "budget.achieved", "bytes", 0, &ach_bytes)) ||
        (rc = get_num(&r, ach, "budget.achieved", "bits", 0, &ach_bits)) ||
        (rc = get_u64(&r, o, "budget", "params", 1, &params)))
        goto out;
    SETTER(bp_plan_set_budget(p, given, asked_bits, asked_bytes, &e2), "budget");

    /* solver */
    static const char *const solver_keys[] = {"name", "status", "objective", "bound", "gap",
                                              NULL};
    o = json_object_get(root, "solver");
    double obj, bound, gap;
    if (!o) {
        rc = fail(&r, "solver", "missing");
        goto out;
    }
    if ((rc = check_object(&r, o, "solver", solver_keys)) ||
        (rc = get_str(&r, o, "solver", "name", 0, &a)) ||
        (rc = get_str(&r, o, "solver", "status", 0, &b)) ||
        (rc = get_num(&r, o, "solver", "objective", 0, &obj)) ||
        (rc = get_num(&r, o, "solver", "bound", 1, &bound)) ||
        (rc = get_num(&r, o, "solver", "gap", 1, &gap)))
        goto out;
    SETTER(bp_plan_set_solver(p, a, b, obj, bound, gap, &e2), "solver");

    /* tensors */
    json_t *ta = json_object_get(root, "tensors");
    if (!json_is_array(ta) || json_array_size(ta) == 0) {
        rc = fail(&r, "tensors", ta ? "must be a non-empty array" : "missing");
        goto out;
    }
    for (size_t i = 0; i < json_array_size(ta); i++)
        if ((rc = read_tensor(&r, p, json_array_get(ta, i), i)))
            goto out;

    /* optional sections */
    json_t *kvj = json_object_get(root, "kv_cache");
    if (kvj && (rc = read_kv_cache(&r, p, kvj)))
        goto out;
    json_t *search = json_object_get(root, "search");
    if (search) {
        if (!json_is_object(search)) {
            rc = fail(&r, "search", "must be an object");
            goto out;
        }
        p->search = json_incref(search);
    }
    json_t *timing = json_object_get(root, "timing");
    if (timing) {
        if (!json_is_object(timing)) {
            rc = fail(&r, "timing", "must be an object");
            goto out;
        }
        const char *key;
        json_t *v;
        json_object_foreach(timing, key, v)
        {
            double d;
            if ((rc = get_num(&r, timing, "timing", key, 0, &d)))
                goto out;
            SETTER(bp_plan_set_timing(p, key, d, &e2), "timing");
        }
        p->deterministic = 0; /* keep it on a re-write */
    }
#undef SETTER

    /* derived totals must agree with the tensors */
    bp_plan_info info;
    bp_plan_get_info(p, &info);
    if (info.params != params) {
        rc = fail(&r, "budget.params", "%" PRIu64 " does not match the tensors' %" PRIu64
                  " weights", params, info.params);
        goto out;
    }
    if (info.achieved_bytes != ach_bytes) {
        rc = fail(&r, "budget.achieved.bytes",
                  "%" PRIu64 " does not match the sum of tensor bytes %" PRIu64, ach_bytes,
                  info.achieved_bytes);
        goto out;
    }
    if (!close_rel(ach_bits, info.achieved_bits)) {
        rc = fail(&r, "budget.achieved.bits", "%.17g does not match %.17g", ach_bits,
                  info.achieved_bits);
        goto out;
    }
    if ((rc = bp_plan_validate(p, &e2))) {
        rc = fail(&r, NULL, "%s", e2.msg);
        goto out;
    }
out:
    json_decref(root);
    if (rc)
        bp_plan_destroy(&p);
    else
        *out = p;
    return rc;
}

int bp_plan_read(const char *path, bp_plan **out, bp_error *err)
{
    if (!out)
        return bp_error_set(err, BP_EINVAL, "bp_plan_read: NULL out");
    *out = NULL;
    if (!path)
        return bp_error_set(err, BP_EINVAL, "bp_plan_read: NULL path");
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return bp_error_set(err, errno == ENOENT ? BP_ENOTFOUND : BP_EIO, "%s: %s", path,
                            strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    int rc = BP_OK;
    while (buf) {
        if (n + 1 >= cap) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, fp);
        n += got;
        if (got == 0)
            break;
    }
    if (!buf)
        rc = bp_error_set(err, BP_ENOMEM, "%s: out of memory", path);
    else if (ferror(fp))
        rc = bp_error_set(err, BP_EIO, "%s: read error", path);
    else if (memchr(buf, '\0', n))
        rc = bp_error_set(err, BP_EFORMAT, "%s: contains a NUL byte", path);
    fclose(fp);
    if (rc == BP_OK) {
        buf[n] = '\0';
        rc = bp_plan_from_string(buf, path, out, err);
    }
    free(buf);
    return rc;
}

/* ---- summary --------------------------------------------------------------------- */

void bp_plan_print_summary(const bp_plan *p, FILE *fp)
{
    if (!p || !fp)
        return;
    int w = 6;
    for (size_t i = 0; i < p->n; i++) {
        int l = (int)strlen(p->t[i].name);
        if (l > w)
            w = l;
    }
    fprintf(fp, "%-*s  %-13s %-16s %7s %14s  %s\n", w, "tensor", "shape", "format",
            "bits", "bytes", "predicted error");
    for (size_t i = 0; i < p->n; i++) {
        const itensor *t = &p->t[i];
        char shape[48];
        snprintf(shape, sizeof shape, "%" PRId64 "x%" PRId64, t->rows, t->cols);
        char errs[32];
        if (isnan(t->predicted_error))
            snprintf(errs, sizeof errs, "-");
        else
            snprintf(errs, sizeof errs, "%.6g", t->predicted_error);
        fprintf(fp, "%-*s  %-13s %-16s %7.4f %14" PRIu64 "  %s%s%s%s\n", w, t->name, shape,
                t->format, t->bpw, t->bytes, errs, t->method == BP_METHOD_RTN ? "" : "  ",
                t->method == BP_METHOD_RTN ? "" : bp_table_method_name(t->method),
                t->blocks ? "  (blocks)" : "");
    }
    bp_plan_info in;
    bp_plan_get_info(p, &in);
    fprintf(fp, "total: %zu tensors, %" PRIu64 " weights, %" PRIu64 " bytes, %.4f bits/weight\n",
            p->n, in.params, in.achieved_bytes, in.achieved_bits);
    if (p->has_kv) {
        const bp_plan_kv_cache *kv = &p->kv;
        fprintf(fp, "kv cache: context %" PRId64 ", batch %" PRId64 ", %" PRId64
                    " kv heads x %" PRId64 ", %zu layers, %" PRIu64 " bytes\n",
                kv->context, kv->batch, kv->n_kv_heads, kv->head_dim, kv->n_layers, kv->bytes);
        for (size_t i = 0; i < kv->n_layers; i++)
            fprintf(fp, "  kv layer %-5" PRId64 " %-9s %14" PRIu64 "\n", kv->layers[i].layer,
                    bp_kv_format_name(kv->layers[i].format), kv->layers[i].bytes);
    }
    const uint64_t used = in.achieved_bytes + in.kv_bytes;
    if (in.budget_given != BP_BUDGET_NONE)
        fprintf(fp, "budget: %" PRIu64 " bytes (%.4f bits/weight, given as %s), %.2f%% used%s\n",
                in.asked_bytes, in.asked_bits,
                in.budget_given == BP_BUDGET_BITS ? "bits" : "bytes",
                in.asked_bytes ? 100.0 * (double)used / (double)in.asked_bytes : 0.0,
                p->has_kv ? " (weights + KV cache)" : "");
    if (in.solver_name) {
        fprintf(fp, "solver: %s, %s, %s objective %.6g", in.solver_name, in.solver_status,
                in.metric >= 0 ? bp_table_metric_name((bp_metric)in.metric) : "?",
                in.objective);
        if (!isnan(in.bound))
            fprintf(fp, ", bound %.6g", in.bound);
        if (!isnan(in.gap))
            fprintf(fp, ", gap %.3g%%", 100.0 * in.gap);
        fputc('\n', fp);
    }
}
